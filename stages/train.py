"""DVC stage `train`: train `train.model`, resumable, tracked in MLflow; writes `paths.model`."""

import logging
import sys

from pipeline.config import Params
from pipeline.runner import run_stage, show_progress
from pipeline.tracking import check_store

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    from pipeline.train.run import run_train

    metrics = run_train(params, progress=show_progress())
    log.info("validation accuracy %.1f%% after %d steps in %.0f s",
                 100 * metrics["validation_accuracy"], metrics["steps"], metrics["wall_seconds"])


if __name__ == "__main__":
    sys.exit(run_stage("train", run, preflight=check_store))

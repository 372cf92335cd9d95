"""DVC stage `features`: the shared frontend over the validation and testing sets."""

import logging
import sys

from pipeline.config import Params
from pipeline.features.extract import run_features
from pipeline.runner import run_stage, show_progress

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    log.info("features %s", run_features(params, progress=show_progress())["sets"])


if __name__ == "__main__":
    sys.exit(run_stage("features", run))

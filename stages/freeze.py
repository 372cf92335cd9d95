"""DVC stage `freeze`: SavedModel and TFLite exports with the frontend inside; registers an MLflow model version."""

import logging
import sys

from pipeline.config import Params
from pipeline.runner import run_stage
from pipeline.tracking import check_store

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    from pipeline.export.freeze import run_freeze

    report = run_freeze(params)
    log.info("exports: %s", report["bytes"])
    log.info("registered %s version %s as %s", report["registered"]["name"], report["registered"]["version"],
             report["registered"]["alias"])


if __name__ == "__main__":
    sys.exit(run_stage("freeze", run, preflight=check_store))

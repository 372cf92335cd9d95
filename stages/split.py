"""DVC stage `split`: partition, validate, quarantine and pack the raw clips into `paths.split`."""

import logging
import sys

from pipeline.config import Params
from pipeline.data.split import run_split
from pipeline.runner import run_stage, show_progress

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    result = run_split(params, progress=show_progress())
    sets = {name: counts["total"] for name, counts in result.summary["sets"].items()}
    log.info("sets %s; files %s (every file's fate: reports/files.csv)", sets, result.summary["files"])


if __name__ == "__main__":
    sys.exit(run_stage("split", run))

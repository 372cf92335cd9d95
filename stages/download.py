"""DVC stage `download`: materialise every source of `data.sources` into `paths.raw`."""

import logging
import sys

from pipeline.config import Params
from pipeline.data.sources import describe_import, fetch_sources
from pipeline.runner import run_stage, show_progress

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    for name, summary in fetch_sources(params, progress=show_progress()).items():
        log.info("%s: %s", name, describe_import(summary))


if __name__ == "__main__":
    sys.exit(run_stage("download", run))

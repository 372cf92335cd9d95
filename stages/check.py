"""DVC stage `check`: params.yaml is valid and the MLflow tracking store answers, before any stage deletes outputs."""

import sys

from pipeline.config import Params
from pipeline.preflight import run_check
from pipeline.runner import run_stage


def run(params: Params) -> None:
    run_check(params)


if __name__ == "__main__":
    sys.exit(run_stage("check", run))

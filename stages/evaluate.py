"""DVC stage `evaluate`: testing-set and real-speech metrics, confusion matrices, streaming accuracy."""

import logging
import sys

from pipeline.config import Params
from pipeline.runner import run_stage
from pipeline.tracking import check_store

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    from pipeline.evaluate.run import describe_set_streaming, describe_streaming, run_evaluate

    metrics = run_evaluate(params)
    log.info("accuracy: %s", {name: values.get("accuracy") for name, values in metrics.items() if "accuracy" in values})
    log.info(describe_streaming(metrics["streaming"], params.evaluate.streaming))
    for name, figures in metrics.items():
        if "streaming_matched_percentage" in figures:
            log.info(describe_set_streaming(name, figures, params.evaluate.streaming))


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", run, preflight=check_store))

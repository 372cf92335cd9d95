"""DVC stage `finetune`: the speech embedding's last convolutions tuned on the training clips (off by default)."""

import logging
import sys

from pipeline.config import Params
from pipeline.runner import run_stage, show_progress

log = logging.getLogger("pipeline.stages")


def run(params: Params) -> None:
    from pipeline.features.finetune import run_finetune

    report = run_finetune(params, progress=show_progress())
    if report["convs"]:
        log.info("finetune: the last %d convolutions tuned in %d steps (%.0f s), loss %.4f", report["convs"],
                 report["steps"], report["seconds"], report["loss"])  # fmt: skip
    else:
        log.info("finetune: off (features.embedding.finetune.convs 0): the pretrained backbone")


if __name__ == "__main__":
    sys.exit(run_stage("finetune", run))

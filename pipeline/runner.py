"""Entry-point plumbing shared by the DVC stages: logging, params loading, one-line errors."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from typing import TYPE_CHECKING

from pipeline.errors import KwsError
from pipeline.fileio import disk_full_message

if TYPE_CHECKING:
    from pipeline.config import Params

QUIET_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's start-up banners are not news to a user
}


def quiet_environment() -> None:
    """No analytics or telemetry: this tool must never wait on the network. Without a terminal, no MLflow artifact
    progress bars either: in a log they are carriage-return garble (our own steps log plain lines there)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not show_progress():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def show_progress() -> bool:
    """Progress bars for people at a terminal, not for CI logs."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in {"1", "true"}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stage(
    name: str, work: Callable[[Params], object], argv: list[str] | None = None,
    preflight: Callable[[Params], object] | None = None,
) -> int:  # fmt: skip
    """Load params.yaml (or argv[0]), run one stage function, turn user errors into one line and exit 1.

    `preflight` runs first, before the stage imports TensorFlow or does any work: e.g. the tracking-store check of the
    stages that talk to MLflow (`pipeline.tracking.check_store`), which fails in a few seconds at most.
    """
    from pipeline.config import load_params  # here, not at import: `kws` commands that need no params skip pydantic

    quiet_environment()
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)  # our progress, not every library's chatter
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` and DVC's cancel end a stage like Ctrl-C: runs are closed
    try:
        params = load_params(Path(args[0]) if args else Path("params.yaml"))
        if preflight is not None:
            preflight(params)
        work(params)
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    except Exception as error:  # a full disk, whoever noticed it (numpy, h5py, TensorFlow): one line, not a traceback
        message = disk_full_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0

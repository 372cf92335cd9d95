"""Entry-point plumbing shared by the DVC stages: logging, params loading, one-line errors."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.config import Params, load_params
from pipeline.errors import KwsError
from pipeline.fileio import disk_full_message

QUIET_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's start-up banners are not news to a user
}


def quiet_environment() -> None:
    """No analytics or telemetry: this tool must never wait on the network."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def show_progress() -> bool:
    """Progress bars for people at a terminal, not for CI logs."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in {"1", "true"}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stage(name: str, work: Callable[[Params], object], argv: list[str] | None = None, tracking: bool = False) -> int:
    """Load params.yaml (or argv[0]), run one stage function, turn user errors into one line and exit 1.

    `tracking`: the stage talks to MLflow, so the tracking store is checked first (a few seconds at most), before the
    stage imports TensorFlow or does any work.
    """
    quiet_environment()
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)  # our progress, not every library's chatter
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` and DVC's cancel end a stage like Ctrl-C: runs are closed
    try:
        params = load_params(Path(args[0]) if args else Path("params.yaml"))
        if tracking:
            from pipeline.tracking import check_tracking, tracking_uri

            check_tracking(tracking_uri())
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

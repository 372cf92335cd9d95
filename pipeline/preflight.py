"""The `check` stage: everything that can fail in a second is checked before DVC deletes any big output.

DVC removes a stage's outputs before running it, so a typo in params.yaml or an unreachable tracking server found by
the stage itself costs those outputs. `check` runs first (every stage is downstream of it) and touches nothing else.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.fileio import write_json
from pipeline.tracking import check_tracking, tracking_uri

CHECK_FILE = "params_check.json"  # in paths.reports; dvc.yaml names the same file


def run_check(params: Params) -> Path:
    """Params are valid (they were parsed to get here) and the tracking store answers; write the stage's marker.

    The marker's content never changes, so a passing check reruns no other stage. Raises TrackingError.
    """
    check_tracking(tracking_uri())
    out = params.paths.reports / CHECK_FILE
    write_json(out, {"params": "valid", "tracking": "reachable"})
    return out

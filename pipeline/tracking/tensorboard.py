"""TensorBoard runs named like their MLflow run, with the hyper-parameters in the HParams dashboard."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path


def tensorboard_dir(root: Path, run_name: str, run_id: str) -> Path:
    """`root/<run name>`, or `root/<run name>-<run id[:8]>` when another run of that name wrote there first.

    The folder is claimed with a `.mlflow_run_id` marker, so a resumed run writes on into the folder it began.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name) or run_id
    for folder in (root / safe, root / f"{safe}-{run_id[:8]}", root / f"{safe}-{run_id}"):
        marker = folder / ".mlflow_run_id"
        if not folder.exists() or (marker.is_file() and marker.read_text().strip() == run_id):
            folder.mkdir(parents=True, exist_ok=True)
            marker.write_text(run_id + "\n")
            return folder
    return root / f"{safe}-{run_id}"


def hparam_values(flat: Mapping[str, str]) -> dict[str, bool | int | float | str]:
    """Dotted params as the HParams plugin accepts them: numbers and booleans typed, the rest as text."""
    values: dict[str, bool | int | float | str] = {}
    for key, text in flat.items():
        if text in ("True", "False"):
            values[key] = text == "True"
            continue
        try:
            values[key] = int(text)
        except ValueError:
            try:
                values[key] = float(text)
            except ValueError:
                values[key] = text
    return values


def log_hparams(writer, hparams: Mapping[str, bool | int | float | str], run_name: str) -> None:
    """Write the hparams summary once at the start of a run (`writer`: a tf.summary file writer)."""
    from tensorboard.plugins.hparams import api as hp

    with writer.as_default():
        hp.hparams(dict(hparams), trial_id=run_name)
    writer.flush()

"""Checkpoints that survive interruption, kept outside DVC's outputs and keyed by params + data."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.fileio import atomic_path, write_json

log = logging.getLogger(__name__)


def fingerprint(config: dict, data_files: list[Path]) -> str:
    """A hash of everything a checkpoint depends on: training params and the bytes of the training data."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in sorted(data_files):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


class Checkpoints:
    """Model weights + optimizer state + step in `<root>/<fingerprint>/`; `latest.json` is written last."""

    def __init__(self, root: Path, key: str, keep: int = 2):
        self.dir = Path(root) / key
        self.keep = keep

    def latest_step(self) -> int:
        """The step of the newest complete checkpoint, 0 when there is none."""
        marker = self.dir / "latest.json"
        if not marker.exists():
            return 0
        return int(json.loads(marker.read_text())["step"])

    def save(self, step: int, model, optimizer) -> None:
        """Write the state after `step` steps atomically, then drop older checkpoints."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / f"step-{step:08d}.weights.h5", ".weights.h5") as tmp:
            model.save_weights(tmp)
        with atomic_path(self.dir / f"step-{step:08d}.optimizer.npz", ".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, *[np.asarray(v.numpy()) for v in optimizer.variables])
        write_json(self.dir / "latest.json", {"step": step})
        for old in sorted(self.dir.glob("step-*.weights.h5"))[: -self.keep]:
            old.unlink(missing_ok=True)
            old.with_name(old.name.replace(".weights.h5", ".optimizer.npz")).unlink(missing_ok=True)

    def restore(self, model, optimizer) -> int:
        """Load the newest checkpoint into `model` and `optimizer`; return its step (0: start fresh)."""
        step = self.latest_step()
        if not step:
            return 0
        model.load_weights(self.dir / f"step-{step:08d}.weights.h5")
        optimizer.build(model.trainable_variables)
        with np.load(self.dir / f"step-{step:08d}.optimizer.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise RuntimeError(f"{self.dir}: optimizer state does not match the model")
        for variable, value in zip(optimizer.variables, values, strict=True):
            variable.assign(value)
        log.info("resumed from %s at step %d", self.dir, step)
        return step

    def clear(self) -> None:
        """Forget this run's checkpoints once its model is saved."""
        shutil.rmtree(self.dir, ignore_errors=True)

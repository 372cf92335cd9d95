"""Checkpoints that survive interruption, kept outside DVC's outputs and keyed by params + data + code.

One checkpoint is one file, `<root>/<key>/step-XXXXXXXX.npz`, written atomically and fsynced: every model variable
(weights and the Dropout layers' random-generator states), every optimizer variable, and the loop's own state
(history so far, the running train loss/accuracy window, the MLflow run id). Restoring it makes the rest of the run
bit-identical to an uninterrupted one. The newest `keep` checkpoints are kept; an unreadable newest one (a power cut
during a write on a file system without ordered renames) falls back to the older one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.fileio import write_json, write_npz

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("train", "models", "features", "stream")  # what the train stage runs (its deps in dvc.yaml)


def fingerprint(config: dict, data_files: list[Path], code: str = "") -> str:
    """A hash of everything a checkpoint depends on: training params, the bytes of the training data, the code."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(code.encode())
    for path in sorted(data_files):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def code_fingerprint(architecture: str, package: Path = PACKAGE) -> str:
    """A hash of the built model's architecture (Keras JSON) and of the training, model and feature code."""
    digest = hashlib.sha256(architecture.encode())
    for folder in CODE_FOLDERS:
        for path in sorted((package / folder).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


@dataclass
class Resumed:
    """Where a restored run continues: the step done and the loop state saved with it."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    window: list[list[float]] = field(default_factory=list)
    run_id: str | None = None


class Checkpoints:
    """The checkpoints of one training configuration, in `<root>/<key>/`."""

    def __init__(self, root: Path, key: str, keep: int = 2):
        self.root = Path(root)
        self.dir = self.root / key
        self.keep = keep

    def files(self) -> list[Path]:
        """Checkpoint files, newest first."""
        return sorted(self.dir.glob("step-*.npz"), reverse=True)

    def save(self, step: int, model, optimizer, state: Resumed) -> Path:
        """Write everything needed to continue after `step` steps as one fsynced file; drop all but the newest `keep`."""
        loop = json.dumps({"step": step, "history": state.history, "window": state.window, "run_id": state.run_id})
        arrays = {f"m{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
        arrays.update({f"o{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
        arrays["loop"] = np.frombuffer(loop.encode(), dtype=np.uint8)
        path = self.save_arrays(f"step-{step:08d}", **arrays)
        for old in self.files()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def save_arrays(self, name: str, **arrays: np.ndarray) -> Path:
        """Write arrays into this run's folder as `<name>.npz`, atomically and fsynced: the checkpoints themselves,
        and what a later step needs (e.g. the mined hard negatives); they go with `clear()`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{name}.npz"
        write_npz(path, arrays, durable=True)
        return path

    def load_arrays(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of `save_arrays(name)`, or None when missing or unreadable."""
        try:
            with np.load(self.dir / f"{name}.npz") as saved:
                return {key: saved[key] for key in saved.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def remember_run(self, run_id: str) -> None:
        """Record the MLflow run as soon as it is opened, so a kill before the first checkpoint still finds it."""
        write_json(self.dir / "run.json", {"run_id": run_id})

    def _load(self, path: Path, model, optimizer) -> Resumed:
        with np.load(path) as saved:
            names = set(saved.files)
            model_names = sorted(n for n in names if n.startswith("m"))
            opt_names = sorted(n for n in names if n.startswith("o"))
            if len(model_names) != len(model.variables):
                raise ValueError(f"{len(model_names)} model variables saved, the model has {len(model.variables)}")
            optimizer.build(model.trainable_variables)
            if len(opt_names) != len(optimizer.variables):
                raise ValueError(f"{len(opt_names)} optimizer variables saved, the optimizer has {len(optimizer.variables)}")
            values = [saved[n] for n in model_names], [saved[n] for n in opt_names]
            loop = json.loads(saved["loop"].tobytes().decode())
        for variables, arrays in zip((model.variables, optimizer.variables), values, strict=True):
            for variable, value in zip(variables, arrays, strict=True):
                if tuple(variable.shape) != value.shape:
                    raise ValueError(f"{variable.path}: saved shape {value.shape}, the model has {tuple(variable.shape)}")
        for variables, arrays in zip((model.variables, optimizer.variables), values, strict=True):
            for variable, value in zip(variables, arrays, strict=True):
                variable.assign(value)
        return Resumed(int(loop["step"]), loop["history"], loop["window"], loop.get("run_id"))

    def restore(self, model, optimizer) -> Resumed:
        """Load the newest readable checkpoint into `model` and `optimizer` (step 0: none, start fresh).

        An unreadable checkpoint (truncated, corrupt, another shape) is skipped with one warning naming it.
        """
        bad: list[str] = []
        resumed = Resumed()
        for path in self.files():
            try:
                resumed = self._load(path, model, optimizer)
                break
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
                bad.append(f"{path} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unreadable'})")
        if bad:
            then = f"resuming from step {resumed.step}" if resumed.step else "training from step 0"
            log.warning("skipped unreadable checkpoint %s; %s", "; ".join(bad), then)
        elif resumed.step:
            log.info("resumed from %s at step %d", self.dir, resumed.step)
        return resumed

    def stale(self) -> list[Path]:
        """Checkpoint folders of other params, data or code (left by interrupted runs)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.dir)

    @staticmethod
    def run_id_of(folder: Path) -> str | None:
        """The MLflow run a checkpoint folder belongs to, if it recorded one."""
        try:
            return json.loads((folder / "run.json").read_text())["run_id"]
        except (OSError, ValueError, KeyError):
            return None

    def clear(self) -> None:
        """Forget this run's checkpoints once its model is saved."""
        shutil.rmtree(self.dir, ignore_errors=True)

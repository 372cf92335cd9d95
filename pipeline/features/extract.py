"""The features stage: fixed features of the validation and testing sets, and the frontend's description."""

from __future__ import annotations

import numpy as np

from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.fileio import atomic_path, write_json

EVAL_SETS = ("validation", "testing")


def run_features(params: Params) -> dict:
    """Compute the frontend on each evaluation set once; training features are made fresh every step."""
    from pipeline.features.frontend import compute_features

    split, out = params.paths.split, params.paths.features
    description = {"params": params.features.model_dump(mode="json"), "labels": params.labels, "sets": {}}
    for name in EVAL_SETS:
        source = split / f"{name}_audio.npy"
        if not source.exists():
            raise DataError(f"{source}: not found; run the split stage first")
        audio = np.load(source, mmap_mode="r")
        features = compute_features(np.asarray(audio), params.features)
        with atomic_path(out / f"{name}_features.npy", ".npy") as tmp:
            np.save(tmp, features.astype(np.float32))
        description["sets"][name] = {"clips": int(features.shape[0]), "shape": list(features.shape[1:])}
    write_json(out / "frontend.json", description)
    return description

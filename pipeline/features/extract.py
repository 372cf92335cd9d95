"""The features stage: fixed features of the evaluation sets and, for a frozen backbone, augmented training views.

Computed by `pipeline.compute.map_tasks` over chunk tasks (pipeline/features/tasks.py): in this process by
default (TensorFlow already spreads one process over the machine's cores, and starting Ray costs more than it
buys on 2 cores), on a local Ray instance with KWS_WORKERS > 1, or on RAY_ADDRESS's cluster.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from pipeline import artifacts
from pipeline.compute import map_tasks, plan_workers
from pipeline.config import Params
from pipeline.features.tasks import FeatureWorker, chunk_tasks, output_views
from pipeline.fileio import atomic_path, ensure_space, write_json
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)
EVAL_SETS = ("validation", "testing")


def _load(params: Params, name: str) -> np.ndarray:
    return np.load(artifacts.SET_AUDIO.require(params.paths, set=name), mmap_mode="r")


def compute_sets(params: Params, sets: dict[str, int], outputs: dict[str, np.ndarray], progress: bool = False,
                 workers: int | None = None) -> None:  # fmt: skip
    """Fill outputs[set] ([views, clips, *feature_shape]) for each set -> views; one pipeline for all sets."""
    tasks = [t for name, views in sets.items() for t in chunk_tasks(name, len(_load(params, name)), views)]
    count, in_process = plan_workers(len(tasks), workers, local_default=1)
    split = params.paths.model_copy(update={"split": params.paths.split.resolve(),  # workers may run elsewhere
                                            "features": params.paths.features.resolve()})
    args = (params.features, params.seed, split, None if in_process else 1)
    total = sum((stop - start) * output_views(params.features, name, views) for name, start, stop, views in tasks)
    with progress_bar(total, "features (clip views)", "clip", progress, mininterval=2) as bar:
        for index, result in map_tasks(FeatureWorker, args, tasks, count, local_default=1):
            name, start, stop, _ = tasks[index]
            outputs[name][:, start:stop] = result
            bar.update(result.shape[0] * result.shape[1])


def stored_views(params: Params) -> int:
    """Training views in training_features.npy: `embedding.views`, twice that with `embedding.integer_views`
    (the float views first, then the same waveforms through the int8 backbone)."""
    embedding = params.features.embedding
    return embedding.views * (2 if embedding.integer_views else 1)


def training_views(params: Params, progress: bool = False, workers: int | None = None) -> np.ndarray:
    """[stored_views, clips, *feature_shape]: view 0 clean, the others freshly shifted + noise-mixed (seeded)
    waveforms; with `embedding.integer_views` the int8 backbone's embeddings of the same waveforms follow."""
    feat = params.features
    _prepare_integer_backbone(params)
    views = np.empty((stored_views(params), len(_load(params, "training")), *feat.feature_shape), np.float32)
    compute_sets(params, {"training": feat.embedding.views}, {"training": views}, progress, workers)
    return views


def _prepare_integer_backbone(params: Params) -> bool:
    """Write `<features>/backbone_int8.tflite` when `embedding.integer_views` is on (True), else remove a stale one."""
    backbone = artifacts.INTEGER_BACKBONE.path(params.paths)
    if not (params.features.preprocess == "speech_embedding" and params.features.embedding.integer_views):
        backbone.unlink(missing_ok=True)
        return False
    from pipeline.export.integer import write_integer_backbone

    log.info("int8 backbone for the integer training views -> %s", backbone)
    write_integer_backbone(params, backbone)
    return True


def features_bytes(params: Params) -> int:
    """Bytes the features stage writes (float32 features of every evaluation clip and of every training view)."""
    feat = params.features
    per_clip = 4 * int(np.prod(feat.feature_shape))
    total = sum(len(_load(params, name)) for name in EVAL_SETS) * per_clip
    if feat.preprocess == "speech_embedding":
        total += stored_views(params) * len(_load(params, "training")) * per_clip
    return total


def run_features(params: Params, progress: bool = False, workers: int | None = None) -> dict:
    """Compute the feature layer once per evaluation clip (and per training view for speech_embedding); the
    training views go straight into a memory-mapped .npy that replaces the output only when complete. With
    `embedding.integer_views` the int8 backbone (pipeline/export/integer.py) is written first, then used."""
    feat = params.features
    ensure_space(params.paths.features, features_bytes(params), "the features")
    sets = {name: 1 for name in EVAL_SETS} | ({"training": feat.embedding.views} if feat.preprocess == "speech_embedding" else {})
    shapes = {name: (views, len(_load(params, name)), *feat.feature_shape) for name, views in sets.items()}
    # spec_augment is the train stage's (masks drawn per training step), so it does not belong to the features
    description = {"params": feat.model_dump(mode="json", exclude={"spec_augment"}), "labels": params.labels, "sets": {}}
    has_views = "training" in sets
    training = artifacts.SET_FEATURES.path(params.paths, set="training")
    integer = _prepare_integer_backbone(params)  # False (and no stale file) without the speech embedding
    if integer:
        shapes["training"] = (stored_views(params), *shapes["training"][1:])
    with atomic_path(training, ".npy") if has_views else contextlib.nullcontext() as train:
        arrays = {name: np.empty(shapes[name], np.float32) for name in EVAL_SETS}
        if has_views:
            arrays["training"] = np.lib.format.open_memmap(train, "w+", np.float32, shapes["training"])
        compute_sets(params, sets, arrays, progress, workers)
        for name in EVAL_SETS:  # stored [clips, *shape]
            with atomic_path(artifacts.SET_FEATURES.path(params.paths, set=name), ".npy") as tmp:
                np.save(tmp, arrays[name][0])
            description["sets"][name] = {"clips": shapes[name][1], "shape": list(shapes[name][2:])}
        if has_views:
            arrays.pop("training").flush()
            description["sets"]["training"] = {"clips": shapes["training"][1], "views": sets["training"],
                                               "integer_views": sets["training"] if integer else 0,
                                               "shape": list(shapes["training"][2:])}  # fmt: skip
    if not has_views:  # a stale file must not outlive its settings
        training.unlink(missing_ok=True)
    write_json(artifacts.FRONTEND.path(params.paths), description)
    return description

"""The finetune stage: the speech embedding's last convolutions fine-tuned on augmented training audio.

The backbone (pipeline/features/embedding.py) was trained on other speech and is frozen by default. Here its last
`features.embedding.finetune.convs` convolutions learn from this project's training clips, in two phases, the way
linear probing then fine-tuning works (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", arXiv:2202.10054): a head on the frozen backbone's clean embeddings first
(`head_steps` at `head_learning_rate`), so no random head sends its gradients into the backbone; then the head and
those convolutions together (`steps` at `learning_rate`) on fresh views of each batch: time shift and
`features.background_frequency` of them mixed with the training noise at up to `finetune.background_volume`, time
masks when `features.spec_augment` is on, the train stage's loss (class weights, label smoothing, the head's L2).

Only the tuned convolutions are kept (`<paths.backbone>/backbone.npz`, names `conv_<i>/kernel|bias`); the head is
thrown away: the features stage then embeds every set with the tuned backbone and the train stage trains the
model's head on those, as for the pretrained one; evaluate, freeze and the exported models carry the tuned weights.

Measured (docs/experiments.md, the default: the last nine convolutions, 500 joint steps, 211-218 s on 2 cores):
real_dev 92.23 % (91.82 % pretrained), the testing recording 83.3 % of keywords within 10 false alarms/h (54.5 %),
the real speakers' recording 69.0 % (52.0 %). Its calibrated integer backbone loses 1.14 pt, so freeze ships the
dynamic-range int8 file instead (pipeline/export/freeze.py int8_fallbacks): 462,586 B at 92.23 % (−0.00 pt).

Resumable: the joint phase writes a checkpoint every `checkpoint_every` steps (pipeline/train/checkpoint.py, keyed
by the params, the training data and the code); a rerun after a kill continues from the newest one to the same
weights. With `convs: 0` the stage writes a file without weights (only `convs`: 0) in a second, and every stage
uses the pretrained backbone. Every loader checks the file's `convs` against the params (read_tuned), so a file
of other params is an error, not a silently different backbone.
"""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np

from pipeline import artifacts
from pipeline.config import Params
from pipeline.fileio import write_json, write_npz

log = logging.getLogger(__name__)
HEAD_SEED_STREAM, VIEW_SEED_OFFSET = 3, 1000  # seed streams of the head phase's masks and of the joint phase's views
# The `features` keys this stage reads: the clips' geometry, the views' shift/noise/masks and the embedding's
# padding, alignment and finetune settings. dvc.yaml's finetune params list exactly these (tests/unit/
# test_dvc_contract.py) and so do the checkpoints' keys: the others (the features stage's views and integer views,
# the MFCC settings, the training views' noise) leave the tuned weights as they are, and changing them reruns
# the features stage, not these minutes.
FEATURES_READ = ("sample_rate", "clip_duration_ms", "preprocess", "time_shift_ms", "background_frequency",
                 "spec_augment", "embedding.pad_to_ms", "embedding.align", "embedding.finetune")  # fmt: skip


def features_read(params: Params) -> dict:
    """{dotted key: value} of FEATURES_READ from `params.features` (JSON types)."""
    dumped, found = params.features.model_dump(mode="json"), {}
    for key in FEATURES_READ:
        value = dumped
        for part in key.split("."):
            value = value[part]
        found[key] = value
    return found


def run_finetune(params: Params, progress: bool = False) -> dict:
    """Fine-tune the backbone's last `finetune.convs` convolutions (module docstring) and write BACKBONE and
    FINETUNE_REPORT; returns the report. Raises DataError without the split stage's training clips and noise."""
    cfg = params.features.embedding.finetune
    out, report_path = artifacts.BACKBONE.path(params.paths), artifacts.FINETUNE_REPORT.path(params.paths)
    if not cfg.convs:
        write_npz(out, {"convs": np.asarray(0, np.int64)})
        report = {"convs": 0}
        write_json(report_path, report)
        return report
    report = _finetune(params, progress)
    write_npz(out, report.pop("arrays"))
    write_json(report_path, report)
    return report


def _finetune(params: Params, progress: bool) -> dict:
    import keras
    import tensorflow as tf

    from pipeline.features.augment import derive_seed, make_augmenter, spec_augment
    from pipeline.features.embedding import EmbeddingFeatures, compute_embeddings, tuned_arrays
    from pipeline.models import build_model
    from pipeline.progress import progress_bar
    from pipeline.train.checkpoint import Checkpoints, Resumed, code_fingerprint, fingerprint
    from pipeline.train.loop import epoch_rows, objective
    from pipeline.train.schedule import epoch_batch

    feat, cfg, seed = params.features, params.features.embedding.finetune, params.seed
    files = [artifacts.SET_AUDIO.require(params.paths, set="training"),
             artifacts.SET_LABELS.require(params.paths, set="training"),
             artifacts.SET_BACKGROUND.require(params.paths, set="training")]  # fmt: skip
    audio = np.load(files[0], mmap_mode="r")
    labels = np.asarray(np.load(files[1]), np.int32)
    noise = np.load(files[2]).astype(np.float32) / 32768.0
    epoch = epoch_rows(params, len(labels))
    epoch = np.arange(len(labels)) if epoch is None else epoch
    batch = params.train.batch_size

    def rows(step: int, stream: int) -> np.ndarray:
        return epoch_batch(epoch, batch, seed + stream, step)

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    pad = feat.sample_rate * feat.embedding.pad_to_ms // 1000
    layer = EmbeddingFeatures(pad_to_samples=pad, align=feat.embedding.align, trainable_convs=cfg.convs)
    layer.build((None, feat.clip_samples))
    head = build_model(params.train.model, feat.feature_shape, len(params.labels))
    clip = keras.Input((feat.clip_samples,), dtype="float32")
    model = keras.Model(clip, head(layer(clip)))  # one variable list (backbone + head) for the checkpoints
    optimizer = keras.optimizers.Adam(learning_rate=cfg.learning_rate)
    config = {"seed": seed, "features": features_read(params),
              "train": params.train.model_dump(mode="json", include={"model", "batch_size", "label_smoothing",
                                                                    "unknown_weight", "neural_repeats"}),
              "labels": params.labels}  # fmt: skip
    root = params.paths.checkpoints / "finetune"
    checkpoints = Checkpoints(root, fingerprint(config, files, code_fingerprint(head.to_json())))
    for stale in checkpoints.stale():
        log.warning("%s: checkpoints of other params, data or code; removed", stale)
        shutil.rmtree(stale, ignore_errors=True)
    state = checkpoints.restore(model, optimizer)
    loss_fn, masks = objective(params), feat.spec_augment
    history = list(state.history)  # the head phase's entry first, then one per checkpoint of the joint phase
    started = time.monotonic() - (history[-1]["seconds"] if history else 0.0)  # seconds count across a resume
    if not state.step:  # phase 1: the head alone on the frozen backbone's clean embeddings
        clean = compute_embeddings(audio, pad_to_samples=pad, align=feat.embedding.align)
        head_optimizer = keras.optimizers.Adam(learning_rate=cfg.head_learning_rate)

        @tf.function(reduce_retracing=True)
        def head_step(x, y, step):
            if masks.enabled:
                x = spec_augment(x, masks, derive_seed(seed, step, HEAD_SEED_STREAM))
            with tf.GradientTape() as tape:
                value = loss_fn(head(x, training=True), y, head.losses)
            grads = tape.gradient(value, head.trainable_variables)
            head_optimizer.apply_gradients(zip(grads, head.trainable_variables, strict=True))
            return value

        losses = []
        with progress_bar(cfg.head_steps, "finetune: head", "step", progress) as bar:
            for step in range(cfg.head_steps):
                picked = rows(step, 1)
                losses.append(float(head_step(tf.constant(clean[picked]), tf.constant(labels[picked]),
                                              tf.constant(step, tf.int64))))  # fmt: skip
                bar.update(1)
        history.append({"phase": "head", "step": cfg.head_steps, "loss": float(np.mean(losses[-100:])),
                        "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
        log.info("finetune: head on the frozen backbone, loss %.4f after %d steps", history[0]["loss"], cfg.head_steps)
    else:
        log.info("finetune: resumed at step %d of %d", state.step, cfg.steps)
    views = feat.model_copy(update={"background_volume": cfg.background_volume})
    augment = make_augmenter(views, noise, seed + VIEW_SEED_OFFSET)
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def joint_step(clips, y, step):
        mixed = augment(clips, step)
        with tf.GradientTape() as tape:
            x = layer(mixed)
            if masks.enabled:
                x = spec_augment(x, masks, derive_seed(seed, step, 2))
            value = loss_fn(head(x, training=True), y, head.losses)
        grads = tape.gradient(value, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return value

    window: list[float] = list(state.window[0]) if state.window else []
    with progress_bar(cfg.steps, "finetune: backbone", "step", progress, initial=state.step) as bar:
        for step in range(state.step, cfg.steps):
            picked = rows(step, 0)
            clips = tf.constant(np.asarray(audio[picked], np.float32) / 32768.0)
            window.append(float(joint_step(clips, tf.constant(labels[picked]), tf.constant(step, tf.int64))))
            window = window[-cfg.checkpoint_every:]
            bar.update(1)
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                history.append({"phase": "backbone", "step": done, "loss": float(np.mean(window)),
                                "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
                checkpoints.save(done, model, optimizer, Resumed(done, history, [window]))
                log.info("finetune: step %d of %d, loss %.4f; checkpoint saved", done, cfg.steps, history[-1]["loss"])
    arrays = tuned_arrays(layer.embedding.convs, cfg.convs)
    checkpoints.clear()
    return {"convs": cfg.convs, "steps": cfg.steps, "head_steps": cfg.head_steps, "loss": history[-1]["loss"],
            "head_loss": history[0]["loss"], "seconds": history[-1]["seconds"], "history": history,
            "tuned_weights": int(sum(a.size for k, a in arrays.items() if k != "convs")), "arrays": arrays}  # fmt: skip

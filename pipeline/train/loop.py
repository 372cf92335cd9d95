"""The train stage: fresh augmentation every step, periodic validation, resumable checkpoints, MLflow + TensorBoard."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, Params
from pipeline.errors import DataError
from pipeline.metrics import accuracy, confusion_matrix, format_confusion
from pipeline.train.checkpoint import Checkpoints, Resumed, code_fingerprint, fingerprint
from pipeline.train.schedule import epoch_batch, learning_rate_at, total_steps

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training produced; `history` has one entry per evaluation."""

    model: object
    steps: int
    resumed_from: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    train_accuracy: float = 0.0
    train_loss: float = 0.0
    checkpoints: Checkpoints | None = None
    run: object | None = None  # the MLflow run the curve went to (continued when resumed)
    log_dir: Path | None = None  # TensorBoard folder, named like the MLflow run
    hard_negatives: dict[str, int] | None = None  # windows mined per label (train.hard_negatives), None when off


@dataclass
class TrainData:
    """Packed waveforms of the training set, fixed validation features and the training noise."""

    audio: np.ndarray
    labels: np.ndarray
    noise: np.ndarray
    val_features: np.ndarray
    val_labels: np.ndarray
    files: list[Path]
    views: np.ndarray | None = None  # [views, clips, ...] precomputed features of a frozen backbone
    epoch: np.ndarray | None = None  # rows of one epoch (epoch_rows); None: every clip once

    def batch_rows(self, batch_size: int, seed: int, step: int) -> np.ndarray:
        """Rows of training batch `step` [batch_size] int64: sorted places of seeded permutations of the epoch,
        so without repeats the rows themselves are sorted."""
        epoch = np.arange(len(self.labels)) if self.epoch is None else self.epoch
        return epoch_batch(epoch, batch_size, seed, step)

    def with_negatives(self, windows: np.ndarray, labels: np.ndarray) -> TrainData:
        """A copy whose every view ends with the hard negatives windows [K, *feature_shape] (labels [K]), each
        once in the epoch. Precomputed views only (a frozen backbone's features)."""
        if self.views is None:
            raise ValueError("hard negatives are embedding windows: they need precomputed training views")
        count, clips = len(self.views), len(self.labels)
        views = np.concatenate([self.views, np.broadcast_to(windows, (count, *windows.shape))], axis=1)
        epoch = np.arange(clips) if self.epoch is None else self.epoch
        return replace(self, views=views, labels=np.concatenate([self.labels, labels.astype(np.int32)]),
                       epoch=np.concatenate([epoch, np.arange(clips, clips + len(labels))]))  # fmt: skip


NEURAL_ENGINES = ("piper", "kokoro")


def epoch_rows(params: Params, clips: int) -> np.ndarray | None:
    """Rows of one training epoch [clips + (train.neural_repeats - 1) * neural clips] int64: every training clip
    once, then each clip a neural voice spoke (the split manifest's `engine`: piper or kokoro) `neural_repeats - 1`
    more times. None when `neural_repeats` is 1. Oversampling, not a loss weight: a batch holds that many more
    neural-voice clips, so their gradient is as steady as the espeak voices'.

    Raises DataError when the manifest predates the `engine` column or does not match the packed training set."""
    import pandas as pd

    from pipeline import artifacts

    repeats = params.train.neural_repeats
    if repeats == 1:
        return None
    path = artifacts.MANIFEST.require(params.paths)
    manifest = pd.read_parquet(path)
    if "engine" not in manifest.columns:
        raise DataError(f"{path}: no 'engine' column (written by an older split stage); rerun the split stage")
    training = manifest[manifest["set"] == "training"].sort_values("index")
    if len(training) != clips:
        raise DataError(f"{path}: {len(training)} training rows but {clips} packed training clips; rerun the split stage")
    neural = np.flatnonzero(training["engine"].isin(NEURAL_ENGINES).to_numpy())
    if not len(neural):
        raise DataError(f"train.neural_repeats is {repeats} but no training clip of {path} was spoken by a neural voice")
    return np.concatenate([np.arange(clips), np.tile(neural, repeats - 1)])


def load_train_data(params: Params) -> TrainData:
    split, feats = params.paths.split, params.paths.features
    files = [split / "training_audio.npy", split / "training_labels.npy", split / "background_training.npy",
             feats / "validation_features.npy", split / "validation_labels.npy"]  # fmt: skip
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise DataError(f"missing {', '.join(missing)}: run the split and features stages first")
    views = None
    if params.features.preprocess == "speech_embedding":
        files.append(feats / "training_features.npy")
        if not files[-1].exists():
            raise DataError(f"{files[-1]}: not found; run the features stage first")
        views = np.load(files[-1])
    audio, labels, noise, val_x, val_y = (np.load(p, mmap_mode="r") for p in files[:5])
    if len(audio) == 0:
        raise DataError(f"{files[0]}: the training set is empty")
    return TrainData(audio, np.asarray(labels, np.int32), np.asarray(noise, np.float32) / 32768.0,
                     np.asarray(val_x), np.asarray(val_y, np.int32), files, views, epoch_rows(params, len(labels)))  # fmt: skip


def _optimizer(params: Params):
    import keras

    train = params.train
    # the weights' moving average lives in the optimizer's variables, so checkpoints carry it and a resumed run
    # ends with the same average
    ema = {"use_ema": train.ema_momentum is not None, "ema_momentum": train.ema_momentum or 0.99}
    kinds = {
        "adam": lambda: keras.optimizers.Adam(learning_rate=train.learning_rate[0], **ema),
        "adamw": lambda: keras.optimizers.AdamW(learning_rate=train.learning_rate[0], weight_decay=train.weight_decay, **ema),
        "sgd": lambda: keras.optimizers.SGD(learning_rate=train.learning_rate[0], momentum=0.9, **ema),
    }
    return kinds[train.optimizer]()


def evaluate_features(model, features: np.ndarray, labels: np.ndarray, num_classes: int, batch: int = 500):
    """Confusion matrix and mean cross-entropy of a features->logits model."""
    import tensorflow as tf

    logits = np.concatenate([model(features[i : i + batch], training=False).numpy() for i in range(0, len(features), batch)])
    loss = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))
    return confusion_matrix(labels, logits.argmax(axis=1), num_classes), loss


def class_loss_weights(labels: list[str], unknown_weight: float) -> np.ndarray:
    """Loss weight per class [C] float32: `unknown_weight` for `_unknown_`, 1 for every other label.

    A batch's objective is the weighted mean sum(w_i * loss_i) / sum(w_i), so weight w on a class whose share of
    clips was raised k-fold keeps its share of the objective where it was at w = 1 / k, with k times as many
    different clips behind it (the same idea as Keras' `class_weight`, normalised per batch)."""
    return np.array([unknown_weight if label == UNKNOWN_LABEL else 1.0 for label in labels], np.float32)


def objective(params: Params):
    """loss(logits [B, classes], labels [B], extra_losses) -> the optimised scalar: cross-entropy on labels smoothed
    by `train.label_smoothing`, weighted per class (class_loss_weights), plus the architecture's regularisers."""
    import tensorflow as tf

    classes, smoothing = len(params.labels), params.train.label_smoothing
    class_weights = tf.constant(class_loss_weights(params.labels, params.train.unknown_weight))

    def loss(logits, y, extra):
        target = tf.one_hot(y, classes) * (1 - smoothing) + smoothing / classes
        weights = tf.gather(class_weights, y)
        per_clip = tf.nn.softmax_cross_entropy_with_logits(target, logits)
        value = tf.reduce_sum(per_clip * weights) / tf.reduce_sum(weights)
        if extra:  # weight regularisers declared by the architecture
            value += tf.add_n(extra)
        return value

    return loss


def make_step(params: Params, model, optimizer, noise: np.ndarray, precomputed: bool):
    """One training step: (fresh augmentation -> feature layer | a precomputed view) -> SpecAugment -> update.

    Returns (cross-entropy on the true labels, accuracy) of the batch: the optimised objective adds label smoothing
    and the architecture's L2 penalty, which the reported loss leaves out so it compares with validation_loss.
    """
    import tensorflow as tf

    from pipeline.features.augment import derive_seed, make_augmenter, spec_augment
    from pipeline.features.layers import feature_layer

    feat = params.features
    loss = objective(params)
    frontend = None if precomputed else feature_layer(feat)
    augment = make_augmenter(feat, noise, params.seed)

    @tf.function(reduce_retracing=True)
    def step_fn(inputs, y, step):
        if frontend is not None:  # raw audio; silence clips are noise excerpts, augmented like any other clip
            x = frontend(augment(inputs, step))
        else:  # a frozen backbone's features, one of the precomputed augmented views
            x = inputs
        if feat.spec_augment.enabled:
            x = spec_augment(x, feat.spec_augment, derive_seed(params.seed, step, 2))
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            value = loss(logits, y, model.losses)
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
        # reported loss: cross-entropy on the hard labels, no L2 and no smoothing, as the validation loss is computed
        cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return cross_entropy, correct

    return step_fn


def _log_step(run, checkpoints: Checkpoints, entry: dict, matrix: np.ndarray, labels: list[str]) -> None:
    """Log one evaluation to MLflow (metrics by group, the confusion matrix as PNG + JSON); a lost server ends training
    with one line saying what is kept and how to resume."""
    from pipeline.tracking import TrackingError

    done = entry["step"]
    try:
        run.step_metrics(entry, done)
        run.confusion(matrix, labels, done, "validation")
    except TrackingError as error:
        kept = checkpoints.files()
        where = f"the checkpoint of step {int(kept[0].stem.split('-')[1])} is kept in {checkpoints.dir}" if kept else "no checkpoint yet"
        raise TrackingError(f"{error} at step {done}; {where}: run the stage again (dvc repro) once it answers, to resume") from None


def _board(log_root: Path, run) -> Path:
    """The run's TensorBoard folder, named like the MLflow run (by its id if the store no longer answers: the first
    metric logged then ends training with the one-line message)."""
    from pipeline.tracking import TrackingError
    from pipeline.tracking.tensorboard import tensorboard_dir

    try:
        name = run.name
    except TrackingError:
        name = run.run_id
    return tensorboard_dir(log_root, name, run.run_id)


HARD_NEGATIVES = "hard_negatives"  # the mined windows, kept beside the checkpoints for a resumed second round


def _reset(model, values: list[np.ndarray]) -> None:
    """Give every model variable (weights and random-generator states) its value from `values`."""
    for variable, value in zip(model.variables, values, strict=True):
        variable.assign(value)


def train(params: Params, checkpoint_root: Path, log_root: Path, open_run=None, progress: bool = False,
          hparams: dict | None = None, close_stale=None) -> TrainResult:
    """Train `train.model` on the training set; resume from a matching checkpoint if one exists.

    With `train.hard_negatives.hours` there are two rounds of the `train.steps` schedule, numbered on one step
    axis (2 x the schedule): the first round's head mines hard negatives from training recordings
    (pipeline/train/hard_negatives.py), then the model restarts from its initial weights with a new optimizer and
    trains on the training set plus them. The mined windows are kept with the checkpoints, so a run interrupted in
    the second round resumes to the same model.

    `open_run(run_id | None)` returns the MLflow run to log to: the interrupted run's id when resuming (its curve
    continues), None for a fresh start. TensorBoard scalars (and `hparams`, for its HParams view) go to
    `log_root/<run name>/`. Checkpoints of other params,
    data or code are not used: they are removed with one warning; `close_stale(run_ids)` is given their MLflow
    runs before the folders go, so no run is left RUNNING once its checkpoint is gone
    (a failure there keeps the folders).
    """
    import keras
    import tensorflow as tf

    from pipeline.models import build_model
    from pipeline.tracking.tensorboard import log_hparams
    from pipeline.train.hard_negatives import Mined, mine, training_recordings

    cfg, feat, labels = params.train, params.features, params.labels
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    data = load_train_data(params)
    mining = cfg.hard_negatives
    per_round, rounds = total_steps(cfg.steps), 2 if mining.hours else 1
    model = build_model(cfg.model, feat.feature_shape, len(labels))
    initial = [v.numpy() for v in model.variables]
    # made before the first step, so a training set that cannot make them fails in seconds; after the model is
    # built, so the first round starts from the weights a run without hard negatives has (and ends at its model)
    recordings = training_recordings(params) if rounds > 1 else []
    optimizer = _optimizer(params)
    config = {"seed": params.seed, "train": cfg.model_dump(mode="json"), "features": feat.model_dump(mode="json"), "labels": labels}
    if rounds > 1:  # the recordings the negatives are mined from
        config["recordings"] = params.evaluate.streaming.model_dump(
            include={"word_interval_ms", "word_jitter_ms", "unknown_fraction", "background_volume"})
    checkpoints = Checkpoints(checkpoint_root, fingerprint(config, data.files, code_fingerprint(model.to_json())))
    state = checkpoints.restore(model, optimizer)
    round_data, mined = data, None
    if state.step > per_round:  # resumed in the second round: its training set holds the mined windows
        saved = checkpoints.load_arrays(HARD_NEGATIVES)
        if saved is None:
            log.warning("%s: the hard negatives of the second round are missing or unreadable; training from step 0",
                        checkpoints.dir / f"{HARD_NEGATIVES}.npz")  # fmt: skip
            checkpoints.clear()
            _reset(model, initial)
            optimizer, state = _optimizer(params), Resumed(run_id=state.run_id)
        else:
            mined = Mined(saved["windows"], saved["labels"])
            round_data = data.with_negatives(mined.windows, mined.labels)
    result = TrainResult(model=model, steps=rounds * per_round, resumed_from=state.step, seconds=0.0,
                         checkpoints=checkpoints, history=state.history,
                         hard_negatives=mined.counts(labels) if mined else None)  # fmt: skip
    if not state.step:
        stale = checkpoints.stale()
        if stale:
            log.warning("%d checkpoint folder(s) in %s were made with other params, data or code: not used, removed; "
                        "training from step 0", len(stale), checkpoint_root)  # fmt: skip
            run_ids = [r for r in map(Checkpoints.run_id_of, stale) if r]
            if close_stale is not None and run_ids:
                close_stale(run_ids)
            for folder in stale:
                shutil.rmtree(folder, ignore_errors=True)
    run = None
    if open_run is not None:
        run = open_run(state.run_id or Checkpoints.run_id_of(checkpoints.dir))
        checkpoints.remember_run(run.run_id)
    result.run = run
    step_fn = make_step(params, model, optimizer, data.noise, precomputed=data.views is not None)
    log_dir = _board(log_root, run) if run is not None else log_root / "local"
    result.log_dir = log_dir
    writer = tf.summary.create_file_writer(str(log_dir))
    if hparams is not None:
        log_hparams(writer, hparams, log_dir.name)
    began, window, total = time.perf_counter(), list(state.window), result.steps
    for step in range(state.step, total):
        round_index, local = divmod(step, per_round)  # batches, augmentation and learning rate follow the round
        if round_index and not local:  # the first round's model (just trained, or restored) mines; a new head starts
            mined = mine(model, recordings, params)
            checkpoints.save_arrays(HARD_NEGATIVES, windows=mined.windows, labels=mined.labels)
            result.hard_negatives = counts = mined.counts(labels)
            log.info("hard negatives: %d windows of %g h of training recordings where a keyword scored above %.2f "
                     "more than %g ms from every keyword (%d as %s, %d as %s); a new head trains with them for %d steps",
                     len(mined.labels), mining.hours, mining.min_score, mining.exclude_ms, counts[UNKNOWN_LABEL],
                     UNKNOWN_LABEL, counts[SILENCE_LABEL], SILENCE_LABEL, per_round)  # fmt: skip
            round_data = data.with_negatives(mined.windows, mined.labels)
            _reset(model, initial)
            optimizer = _optimizer(params)
            step_fn = make_step(params, model, optimizer, data.noise, precomputed=True)
        optimizer.learning_rate.assign(learning_rate_at(local, cfg.steps, cfg.learning_rate))
        rows = round_data.batch_rows(cfg.batch_size, params.seed, local)
        if round_data.views is None:
            inputs = tf.constant(round_data.audio[rows].astype(np.float32) / 32768.0)
        else:
            inputs = tf.constant(round_data.views[local % len(round_data.views), rows])
        loss, correct = step_fn(inputs, tf.constant(round_data.labels[rows]), tf.constant(local, tf.int64))
        window.append([float(loss), float(correct)])
        done = step + 1
        if done % per_round == 0:  # the weights become their moving average (a no-op without train.ema_momentum);
            optimizer.finalize_variable_values(model.trainable_variables)  # the evaluation and checkpoint hold them
        if done % cfg.eval_step_interval == 0 or done % per_round == 0:
            matrix, val_loss = evaluate_features(model, data.val_features, data.val_labels, len(labels))
            train_loss, train_acc = np.mean(window, axis=0)
            window = []
            entry = {"step": done, "validation_accuracy": accuracy(matrix), "validation_loss": val_loss,
                     "train_accuracy": float(train_acc), "train_loss": float(train_loss),
                     "learning_rate": learning_rate_at(local, cfg.steps, cfg.learning_rate)}  # fmt: skip
            result.history.append(entry)
            print(f"Step {done}: Validation accuracy = {entry['validation_accuracy']:.1%} (N={int(matrix.sum())})")
            print(format_confusion(matrix), flush=True)
            with writer.as_default(step=done):
                for name, value in entry.items():
                    if name != "step":
                        tf.summary.scalar(name, value)
            writer.flush()
            if run is not None:
                _log_step(run, checkpoints, entry, matrix, labels)
        if done % cfg.save_step_interval == 0 or done % per_round == 0:
            checkpoints.save(done, model, optimizer, Resumed(done, result.history, window, run.run_id if run else None))
    if result.history:
        result.train_accuracy, result.train_loss = result.history[-1]["train_accuracy"], result.history[-1]["train_loss"]
    result.seconds = time.perf_counter() - began
    return result

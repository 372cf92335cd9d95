"""The training loss reported per step (history.json, MLflow, TensorBoard) is plain cross-entropy, like validation_loss."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_params


def test_reported_training_loss_leaves_out_l2_and_label_smoothing(tmp_path):
    tf = pytest.importorskip("tensorflow")
    import keras

    from pipeline.models import build_model
    from pipeline.train.loop import make_step

    params = make_params(tmp_path, features={"preprocess": "speech_embedding"}, train={"label_smoothing": 0.2,
                                          "model": {"name": "embedding_head", "head": "conv", "dropout": 0.0, "l2": 10.0}})  # fmt: skip
    keras.utils.set_random_seed(1)
    classes = len(params.labels)
    model = build_model(params.train.model, params.features.feature_shape, classes)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8, *params.features.feature_shape)).astype(np.float32))
    y = tf.constant(rng.integers(0, classes, 8).astype(np.int32))
    logits = model(x, training=True)  # no dropout, no batch norm: the same logits the step computes before its update
    expected = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)))
    penalty = float(tf.add_n(model.losses))
    assert penalty > 1.0  # strong enough that including it would show

    step = make_step(params, model, keras.optimizers.Adam(1e-3), np.zeros(16000, np.float32), precomputed=True)
    loss, correct = step(x, y, tf.constant(0, tf.int64))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert 0.0 <= float(correct) <= 1.0


def test_unknown_weight_scales_the_unknown_clips_share_of_the_update(tmp_path):
    """With train.unknown_weight near 0 a batch of 7 `_unknown_` clips and one keyword clip moves the weights as the
    keyword clip alone would; at weight 1 it does not (plain SGD, so the update is the gradient)."""
    tf = pytest.importorskip("tensorflow")
    import keras

    from pipeline.models import build_model
    from pipeline.train.loop import class_loss_weights, make_step

    def update(unknown_weight: float, x, y) -> list[np.ndarray]:
        params = make_params(tmp_path, features={"preprocess": "speech_embedding"}, train={"unknown_weight": unknown_weight,
                             "model": {"name": "embedding_head", "head": "conv", "dropout": 0.0, "l2": 0.0}})  # fmt: skip
        keras.utils.set_random_seed(3)
        model = build_model(params.train.model, params.features.feature_shape, len(params.labels))
        before = [w.numpy().copy() for w in model.trainable_variables]
        step = make_step(params, model, keras.optimizers.SGD(0.1), np.zeros(16000, np.float32), precomputed=True)
        step(tf.constant(x), tf.constant(y), tf.constant(0, tf.int64))
        return [w.numpy() - b for w, b in zip(model.trainable_variables, before, strict=True)]

    params = make_params(tmp_path, features={"preprocess": "speech_embedding"})
    unknown, keyword = params.labels.index("_unknown_"), params.labels.index(params.data.keywords[0])
    np.testing.assert_array_equal(class_loss_weights(params.labels, 0.25),
                                  [0.25 if i == unknown else 1.0 for i in range(len(params.labels))])  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *params.features.feature_shape)).astype(np.float32)
    y = np.array([keyword] + [unknown] * 7, np.int32)
    alone = update(1.0, x[:1], y[:1])
    nearly_ignored = update(1e-6, x, y)
    plain = update(1.0, x, y)
    for a, b in zip(alone, nearly_ignored, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    assert max(float(np.abs(a - p).max()) for a, p in zip(alone, plain, strict=True)) > 1e-3


def _manifest(params, engines: list[str]) -> None:
    """A split manifest whose training set is `engines` (one row per packed clip), plus two validation rows."""
    import pandas as pd

    rows = [{"set": "training", "index": i, "engine": e} for i, e in enumerate(engines)]
    rows += [{"set": "validation", "index": i, "engine": "kokoro"} for i in range(2)]
    params.paths.split.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows[::-1]).to_parquet(params.paths.split / "manifest.parquet", index=False)  # stored out of order


def test_neural_repeats_puts_each_neural_voice_clip_that_many_times_in_every_epoch(tmp_path):
    """train.neural_repeats 3: a piper or kokoro clip is drawn 3 times per epoch, an espeak or imported clip once,
    in the manifest's training order; the batches of one epoch hold exactly that multiset, the same on a rerun."""
    from pipeline.train.loop import TrainData, epoch_rows

    source = [{"kind": "synthetic", "name": "synthetic", "kokoro_blends": 2, "piper": True}]
    params = make_params(tmp_path, sources=source, train={"neural_repeats": 3})
    engines = ["espeak", "kokoro", "espeak", "piper", "", "espeak", "kokoro", "espeak"]
    _manifest(params, engines)
    epoch = epoch_rows(params, len(engines))
    assert np.bincount(epoch, minlength=8).tolist() == [1, 3, 1, 3, 1, 1, 3, 1]
    data = TrainData(np.zeros((8, 1), np.int16), np.zeros(8, np.int32), np.zeros(1, np.float32), np.zeros((0, 1)),
                     np.zeros(0, np.int32), [], None, epoch)  # fmt: skip
    drawn = np.concatenate([data.batch_rows(7, params.seed, step) for step in range(2)])  # 14 rows: one epoch
    assert sorted(drawn.tolist()) == sorted(epoch.tolist())
    np.testing.assert_array_equal(data.batch_rows(7, params.seed, 5), data.batch_rows(7, params.seed, 5))
    assert epoch_rows(make_params(tmp_path, sources=source), len(engines)) is None  # 1 (the default): every clip once


def test_neural_repeats_refuses_a_manifest_it_cannot_read_the_engines_of(tmp_path):
    import pandas as pd

    from pipeline.errors import DataError
    from pipeline.train.loop import epoch_rows

    source = [{"kind": "synthetic", "name": "synthetic", "kokoro_blends": 2}]
    params = make_params(tmp_path, sources=source, train={"neural_repeats": 2})
    with pytest.raises(DataError, match="manifest.parquet: not found; run the split stage first"):
        epoch_rows(params, 3)
    _manifest(params, ["espeak", "espeak", "espeak"])
    with pytest.raises(DataError, match="no training clip of .* was spoken by a neural voice"):
        epoch_rows(params, 3)
    with pytest.raises(DataError, match="3 training rows but 4 packed training clips; rerun the split stage"):
        epoch_rows(params, 4)
    pd.DataFrame({"set": ["training"], "index": [0]}).to_parquet(params.paths.split / "manifest.parquet")
    with pytest.raises(DataError, match="no 'engine' column"):
        epoch_rows(params, 1)

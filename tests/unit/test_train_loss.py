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

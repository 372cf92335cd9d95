"""Metric computations against hand-computed values."""

import numpy as np
import pytest

from pipeline.metrics import accuracy, confusion_matrix, format_confusion, per_class, plot_confusion


def test_confusion_rows_are_actual_columns_predicted():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert accuracy(matrix) == pytest.approx(4 / 6)


def test_per_class_precision_recall_f1():
    matrix = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    scores = per_class(matrix, ["a", "b", "c"])
    assert scores["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert scores["b"]["precision"] == pytest.approx(0.5) and scores["b"]["recall"] == 1.0
    assert scores["b"]["f1"] == pytest.approx(2 / 3)
    assert scores["c"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})


def test_empty_class_scores_zero_not_nan():
    scores = per_class(np.array([[2, 0], [0, 0]]), ["a", "b"])
    assert scores["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert accuracy(np.zeros((2, 2))) == 0.0


def test_formatting_and_heat_map(tmp_path):
    assert format_confusion(np.array([[10, 0], [2, 7]])) == "[ 10  0]\n[  2  7]"
    plot_confusion(np.array([[3, 1], [0, 4]]), ["yes", "no"], tmp_path / "c.png", "test")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

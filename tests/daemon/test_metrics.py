"""Metrics against hand-computed confusion matrices; label -1 is ignored."""
from __future__ import annotations

import numpy as np
import pytest

from daemon.executor.training import metrics


def test_confusion_matrix_counts_pairs_and_ignores_unlabelled() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2, -1, -1])
    y_pred = np.array([0, 1, 1, 1, 0, 2, 2, 0])
    expected = np.array([[1, 1, 0],
                         [1, 2, 0],
                         [0, 0, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, 3), expected)


def test_confusion_matrix_works_on_segmentation_shapes() -> None:
    y_true = np.array([[[0, -1], [1, 1]]])
    y_pred = np.array([[[0, 1], [0, 1]]])
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, 2), [[1, 0], [1, 1]])


def test_precision_recall_f1_by_hand() -> None:
    cm = np.array([[1, 1, 0], [1, 2, 0], [0, 0, 1]])
    precision, recall, f1, support = metrics.precision_recall_f1(cm)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(recall, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(f1, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_array_equal(support, [2, 3, 1])
    assert metrics.pixel_accuracy(cm) == pytest.approx(4 / 6)
    assert metrics.mean_class_accuracy(cm) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)


def test_asymmetric_matrix_and_absent_class() -> None:
    # class 2 never occurs in the truth and is never predicted: it must not drag the means to zero
    cm = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    report = metrics.classification_report(cm, ["sand", "shale", "salt"])
    assert report["classes"]["sand"] == {"precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7),
                                         "support": 4}
    assert report["classes"]["shale"]["precision"] == pytest.approx(0.8)
    assert report["classes"]["salt"]["f1"] == 0.0
    assert report["mean_class_accuracy"] == pytest.approx((0.75 + 1.0) / 2)
    assert report["macro_f1"] == pytest.approx((6 / 7 + 8 / 9) / 2)
    assert report["pixel_accuracy"] == pytest.approx(7 / 8)
    assert "sand" in metrics.format_report(report)


def test_bad_labels_are_refused_with_the_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metrics.confusion_matrix(np.array([0, 5]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="differ in size"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0]), 2)


def test_nothing_labelled_gives_zero_figures() -> None:
    cm = metrics.confusion_matrix(np.array([-1, -1]), np.array([0, 1]), 2)
    assert cm.sum() == 0
    assert metrics.pixel_accuracy(cm) == 0.0 and metrics.mean_class_accuracy(cm) == 0.0

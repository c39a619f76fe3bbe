"""Classification metrics in plain numpy (no torch), so scoring scripts can use them too.

Label -1 means "unlabelled" everywhere and is ignored. Rows of a confusion matrix are true classes, columns are
predicted classes, as in scikit-learn.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

IGNORE = -1


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [n_classes, n_classes] of (true, predicted) pairs, skipping positions where y_true == -1."""
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in size: {t.size} vs {p.size}")
    keep = t != IGNORE
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"labels must be -1 (ignored) or in [0, {n_classes}); got values outside that range")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support (true count) from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    hits = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_divide(hits, predicted)
    recall = _safe_divide(hits, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1, support.astype(np.int64)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Share of labelled samples predicted correctly (0.0 when nothing is labelled)."""
    total = float(np.asarray(cm).sum())
    return float(np.trace(cm)) / total if total else 0.0


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that occur in the truth (absent classes do not count)."""
    _, recall, _, support = precision_recall_f1(cm)
    present = support > 0
    return float(recall[present].mean()) if present.any() else 0.0


def classification_report(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The seed's classification report as a dict: per class precision/recall/f1/support plus summary figures.

    macro_f1 averages over classes present in the truth; weighted_f1 weights by support.
    """
    precision, recall, f1, support = precision_recall_f1(cm)
    n = len(support)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    present = support > 0
    total = int(support.sum())
    return {
        "classes": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                           "support": int(support[i])} for i, name in enumerate(names)},
        "pixel_accuracy": pixel_accuracy(cm),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "support": total,
    }


def format_report(report: dict[str, Any]) -> str:
    """A text table like scikit-learn's, for logs."""
    rows = [f"{'':>20} precision    recall  f1-score   support"]
    for name, r in report["classes"].items():
        rows.append(f"{name:>20} {r['precision']:9.2f} {r['recall']:9.2f} {r['f1']:9.2f} {r['support']:9d}")
    rows.append(f"{'accuracy':>20} {'':9} {'':9} {report['pixel_accuracy']:9.2f} {report['support']:9d}")
    rows.append(f"{'mean class accuracy':>20} {report['mean_class_accuracy']:9.2f}   macro f1 {report['macro_f1']:.2f}")
    return "\n".join(rows)

"""Classification metrics on NumPy arrays: accuracy, top-k accuracy, the confusion matrix and
per-class precision and recall. The CLI (``eval``, ``predict``), the training history and the
report all compute them here.

The arguments follow scikit-learn's order, truth first: ``metric(labels, predictions)`` with
``labels`` the true class indices (N,) and ``predictions`` the predicted ones (N,), or ``scores``
(N, classes), one score per class (logits, probabilities or any scores ordered alike).

Conventions, as scikit-learn's (``sklearn.metrics``):
- ``confusion_matrix(labels, predictions)[i, j]`` counts the samples of true class i predicted
  as class j (rows true, columns predicted).
- A class never predicted has no precision (0/0), and a class with no sample no recall (0/0);
  ``zero_division`` says what they are then: 0.0 (the default, as scikit-learn's "warn", without
  the warning), 1.0, or ``nan``.
- Ties among scores: ``accuracy`` from scores takes the first of the highest (``argmax``), and
  ``top_k_accuracy`` ranks tied classes by class index, so its k = 1 equals ``accuracy``.
  scikit-learn's ``top_k_accuracy_score`` breaks ties the other way; without ties both agree.

Example::

    >>> labels, scores = np.array([0, 1, 2]), np.array([[.7, .2, .1], [.5, .4, .1], [.1, .3, .6]])
    >>> accuracy(labels, scores.argmax(1)), top_k_accuracy(labels, scores, k=2)
    (0.6666666666666666, 1.0)
"""

from __future__ import annotations

import numpy as np

from .errors import HandgradError

#: The k of the top-k accuracy a training run records, for datasets of more than k classes.
HISTORY_TOP_K = 5


def _check_labels(where, name: str, values, num_classes: int | None = None) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise HandgradError(where, f"expected {name} of shape (N,) (class indices), got shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise HandgradError(where, f"expected {name} of an integer dtype (class indices), got {values.dtype.name}")
    if values.size and values.min() < 0:
        raise HandgradError(where, f"expected {name} >= 0 (class indices), got {int(values.min())}")
    if num_classes is not None and values.size and values.max() >= num_classes:
        raise HandgradError(where, f"expected {name} < {num_classes} (the number of classes), got {int(values.max())}")
    return values.astype(np.int64, copy=False)


def _check_pair(where, labels, predictions, num_classes=None):
    labels = _check_labels(where, "labels", labels, num_classes)
    predictions = _check_labels(where, "predictions", predictions, num_classes)
    if len(labels) != len(predictions):
        raise HandgradError(
            where,
            f"expected as many predictions as labels, got {len(predictions)} predictions for {len(labels)} labels",
        )
    return labels, predictions


def _check_scores(where, labels, scores):
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise HandgradError(where, f"expected scores of shape (N, classes), got shape {scores.shape}")
    labels = _check_labels(where, "labels", labels, scores.shape[1])
    if len(labels) != len(scores):
        raise HandgradError(
            where, f"expected one row of scores per label, got {len(scores)} rows for {len(labels)} labels"
        )
    return labels, scores


def accuracy(labels, predictions) -> float:
    """The fraction of samples predicted right: mean(predictions == labels); nan for no sample."""
    labels, predictions = _check_pair("accuracy", labels, predictions)
    return float((labels == predictions).mean()) if len(labels) else float("nan")


def top_k_accuracy(labels, scores, k: int = 5) -> float:
    """The fraction of samples whose true class is among the k highest-scoring classes; nan for no
    sample. k larger than the number of classes counts every sample as right (as scikit-learn)."""
    labels, scores = _check_scores("top_k_accuracy", labels, scores)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise HandgradError("top_k_accuracy", f"expected k to be an integer >= 1, got {k!r}")
    if not len(labels):
        return float("nan")
    true_score = scores[np.arange(len(labels)), labels][:, None]
    # classes ranked before the true one: those scoring higher, and tied ones of lower index
    classes = np.arange(scores.shape[1])
    ahead = (scores > true_score) | ((scores == true_score) & (classes < labels[:, None]))
    return float((ahead.sum(axis=1) < k).mean())


def confusion_matrix(labels, predictions, num_classes: int | None = None) -> np.ndarray:
    """counts[i, j]: the samples of true class i predicted as class j, (num_classes, num_classes)
    int64. ``num_classes`` defaults to one more than the largest class index seen."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1
    ):
        raise HandgradError("confusion_matrix", f"expected num_classes to be an integer >= 1, got {num_classes!r}")
    labels, predictions = _check_pair("confusion_matrix", labels, predictions, num_classes)
    if num_classes is None:
        num_classes = int(max(labels.max(initial=-1), predictions.max(initial=-1))) + 1
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def _ratio(numerator, denominator, zero_division) -> np.ndarray:
    if not (zero_division in (0, 1) or (isinstance(zero_division, float) and np.isnan(zero_division))):
        raise HandgradError("zero_division", f"expected 0.0, 1.0 or nan, got {zero_division!r}")
    out = np.full(len(numerator), float(zero_division))
    some = denominator > 0
    out[some] = numerator[some] / denominator[some]
    return out


def precision(labels, predictions, num_classes: int | None = None, zero_division=0.0) -> np.ndarray:
    """Per class c: tp / (tp + fp), the fraction of the samples predicted as c that are c; a class
    never predicted gets ``zero_division``. Shape (num_classes,)."""
    counts = confusion_matrix(labels, predictions, num_classes)
    return _ratio(np.diag(counts), counts.sum(axis=0), zero_division)


def recall(labels, predictions, num_classes: int | None = None, zero_division=0.0) -> np.ndarray:
    """Per class c: tp / (tp + fn), the fraction of the samples of class c predicted as c (the
    per-class accuracy); a class with no sample gets ``zero_division``. Shape (num_classes,)."""
    counts = confusion_matrix(labels, predictions, num_classes)
    return _ratio(np.diag(counts), counts.sum(axis=1), zero_division)


def history_top_k(num_classes: int) -> int | None:
    """The k of the top-k accuracy a run's history records: HISTORY_TOP_K when there are more
    classes than that, else None (the top-k of k classes or fewer would always be 1)."""
    return HISTORY_TOP_K if num_classes > HISTORY_TOP_K else None

"""handgrad.metrics against scikit-learn's implementations on random data."""

import numpy as np
import pytest

from handgrad import metrics
from handgrad.errors import HandgradError

sk = pytest.importorskip("sklearn.metrics")


def random_case(seed, n, classes):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    scores = rng.normal(size=(n, classes))
    # about half the predictions right, so that every cell of the confusion matrix varies
    scores[np.arange(n), labels] += rng.random(n) * 2
    return labels, scores


@pytest.mark.parametrize("seed, n, classes", [(0, 50, 3), (1, 200, 10), (2, 7, 12), (3, 1000, 26)])
def test_accuracy_matches_sklearn(seed, n, classes):
    labels, scores = random_case(seed, n, classes)
    predictions = scores.argmax(axis=1)
    assert metrics.accuracy(labels, predictions) == pytest.approx(sk.accuracy_score(labels, predictions))


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal")  # scikit-learn's note on k >= classes
@pytest.mark.parametrize(
    "seed, n, classes, k", [(0, 50, 3, 1), (1, 200, 10, 5), (2, 300, 10, 3), (3, 100, 26, 5), (4, 30, 4, 6)]
)
def test_top_k_accuracy_matches_sklearn(seed, n, classes, k):
    labels, scores = random_case(seed, n, classes)
    expected = sk.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(classes))
    assert metrics.top_k_accuracy(labels, scores, k=k) == pytest.approx(expected)


def test_top_1_equals_accuracy_with_ties():
    labels = np.array([0, 1, 2, 1])
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 2.0, 2.0]])
    assert metrics.top_k_accuracy(labels, scores, k=1) == metrics.accuracy(labels, scores.argmax(axis=1)) == 0.5


@pytest.mark.parametrize("seed, n, classes", [(0, 50, 3), (1, 200, 10), (2, 7, 12)])
def test_confusion_matrix_matches_sklearn(seed, n, classes):
    labels, scores = random_case(seed, n, classes)
    predictions = scores.argmax(axis=1)
    expected = sk.confusion_matrix(labels, predictions, labels=np.arange(classes))
    np.testing.assert_array_equal(metrics.confusion_matrix(labels, predictions, classes), expected)


@pytest.mark.parametrize("seed, n, classes", [(0, 50, 3), (1, 200, 10), (2, 7, 12), (3, 15, 9)])
@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_precision_and_recall_match_sklearn(seed, n, classes, zero_division):
    """Small n against many classes leaves classes never predicted and classes with no sample: the
    zero_division cases."""
    labels, scores = random_case(seed, n, classes)
    predictions = scores.argmax(axis=1)
    kwargs = dict(labels=np.arange(classes), average=None, zero_division=zero_division)
    np.testing.assert_allclose(
        metrics.precision(labels, predictions, classes, zero_division=zero_division),
        sk.precision_score(labels, predictions, **kwargs),
    )
    np.testing.assert_allclose(
        metrics.recall(labels, predictions, classes, zero_division=zero_division),
        sk.recall_score(labels, predictions, **kwargs),
    )


def test_zero_division_cases_occur():
    labels, scores = random_case(2, 7, 12)
    counts = metrics.confusion_matrix(labels, scores.argmax(axis=1), 12)
    assert (counts.sum(axis=0) == 0).any() and (counts.sum(axis=1) == 0).any()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.accuracy(np.array([0, 1]), np.array([0])), "as many predictions as labels"),
        (lambda: metrics.accuracy(np.array([0.0, 1.0]), np.array([0, 1])), "integer dtype"),
        (lambda: metrics.top_k_accuracy(np.array([0, 3]), np.zeros((2, 3)), k=1), "labels < 3"),
        (lambda: metrics.top_k_accuracy(np.array([0, 1]), np.zeros((2, 3)), k=0), "k to be an integer >= 1"),
        (lambda: metrics.top_k_accuracy(np.array([0, 1]), np.zeros(2), k=1), "scores of shape (N, classes)"),
        (lambda: metrics.confusion_matrix(np.array([0, -1]), np.array([0, 1])), "labels >= 0"),
        (lambda: metrics.precision(np.array([0]), np.array([0]), zero_division="warn"), "0.0, 1.0 or nan"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(HandgradError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("classes, expected", [(2, None), (5, None), (6, 5), (10, 5)])
def test_history_top_k(classes, expected):
    assert metrics.history_top_k(classes) == expected

"""Seeded, stratified splits: a validation set carved from the training set, and smaller subsets.

Both keep each class's share: a class holding a fraction p of the samples gets round(p * size)
of the chosen ones (largest remainders take the leftover places, ties to the lower class), and
which members are chosen is a seeded random draw. Chosen and remaining samples keep their
original order.
"""

from __future__ import annotations

import numpy as np

from ..errors import HandgradError, check_array, fmt_shape


def _check_pair(where: str, images, labels) -> None:
    check_array(where, "images", images)
    check_array(where, "labels", labels)
    if labels.ndim != 1 or len(images) != len(labels):
        raise HandgradError(
            where, f"expected labels of shape (N,) with N = len(images) = {len(images)}, got {fmt_shape(labels.shape)}"
        )


def stratified_indices(labels: np.ndarray, size: int, seed=0) -> np.ndarray:
    """Sorted indices of ``size`` samples drawn per class in proportion to the class counts."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = size * counts / len(labels)
    take = np.floor(quota).astype(np.int64)
    leftover = size - int(take.sum())
    # stable sort on -remainder: equal remainders go to the lower class
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(inverse == k))[: take[k]] for k in range(len(classes))]
    return np.sort(np.concatenate(chosen))


def train_val_split(
    images: np.ndarray, labels: np.ndarray, val_fraction: float = 0.1, seed=0, val_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off a stratified validation set: ``(train_images, train_labels, val_images, val_labels)``.

    ``val_size`` (a count) overrides ``val_fraction``. The same seed gives the same split.
    """
    where = "train_val_split"
    _check_pair(where, images, labels)
    n = len(labels)
    if val_size is None:
        if not 0 < val_fraction < 1:
            raise HandgradError(where, f"expected 0 < val_fraction < 1, got {val_fraction}")
        val_size = int(round(val_fraction * n))
    if not 0 < val_size < n:
        raise HandgradError(where, f"expected a validation size between 1 and {n - 1} (of {n} samples), got {val_size}")
    val = np.zeros(n, dtype=bool)
    val[stratified_indices(labels, int(val_size), seed)] = True
    return images[~val], labels[~val], images[val], labels[val]


def stratified_subset(images: np.ndarray, labels: np.ndarray, size: int, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """``size`` samples with the class proportions of the whole (``--train-size``): ``(images, labels)``."""
    where = "stratified_subset"
    _check_pair(where, images, labels)
    if not 0 < size <= len(labels):
        raise HandgradError(where, f"expected a size between 1 and {len(labels)}, got {size}")
    chosen = stratified_indices(labels, int(size), seed)
    return images[chosen], labels[chosen]

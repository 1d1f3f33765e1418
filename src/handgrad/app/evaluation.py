"""What the tools read off a trained checkpoint: its test set, normalised as in training.
``handgrad eval``, ``predict``, ``explain`` and ``report`` share it, so a checkpoint is judged the
same way everywhere (the metrics themselves are ``handgrad.metrics``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import HandgradError

if TYPE_CHECKING:
    from ..data import Dataset


def stored_normalizer(metadata: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The Normalizer saved in a checkpoint's metadata (the training set's statistics); the identity
    for a checkpoint saved without one, whose model takes its inputs as they come."""
    from ..data import Normalizer

    stats = metadata.get("normalization")
    return Normalizer.from_dict(stats) if stats else (lambda x: x)


def checkpoint_test_set(model, dataset: str | None = None, data_dir=None) -> tuple[Dataset, np.ndarray]:
    """``(ds, x)``: the test split of ``dataset`` (default: the checkpoint's own, else digits) and its
    images normalised with the checkpoint's stored statistics. Images that do not fit the checkpoint's
    input shape raise HandgradError naming the dataset and both shapes."""
    from ..data import load_dataset

    meta = model.metadata
    ds = load_dataset(dataset or meta.get("dataset", "digits"), data_dir=data_dir)
    shape = tuple(ds.test_images.shape[1:])
    if shape != tuple(meta.get("input_shape", shape)):
        raise HandgradError(
            f"dataset {ds.name}",
            f"images of shape {shape} do not fit the checkpoint's input shape {tuple(meta['input_shape'])}",
        )
    return ds, stored_normalizer(meta)(ds.test_images)

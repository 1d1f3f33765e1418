"""Normalizer: (x - mean) / std with scalar statistics of the training set, as PyTorch's MNIST
``Normalize((0.1307,), (0.3081,))``."""

from __future__ import annotations

import numpy as np

from ..errors import HandgradError, check_array


class Normalizer:
    """y = (x - mean) / std, float32; ``mean`` and ``std`` are scalars fitted on training images only.

    ``to_dict()`` gives ``{"mean": float, "std": float}`` for a checkpoint's JSON metadata and
    ``from_dict`` restores it, so evaluation normalises with the training statistics.

    Example::

        >>> norm = Normalizer.fit(ds.train_images)   # mean 0.1307, std 0.3081 for MNIST
        >>> x = norm(ds.test_images)
    """

    def __init__(self, mean: float, std: float):
        mean, std = float(np.float32(mean)), float(np.float32(std))
        if not np.isfinite(mean) or not np.isfinite(std) or std <= 0:
            raise HandgradError("Normalizer", f"expected a finite mean and a positive std, got mean={mean}, std={std}")
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, train_images: np.ndarray, chunk: int = 8192) -> Normalizer:
        """Mean and (population) std over every pixel of ``train_images``, accumulated in float64."""
        check_array("Normalizer.fit", "train_images", train_images)
        if train_images.size == 0:
            raise HandgradError("Normalizer.fit", "expected a non-empty train_images array")
        flat = train_images.reshape(len(train_images), -1)
        mean = flat.mean(dtype=np.float64)
        # chunked so no float64 copy of the whole training set is made
        sq = sum(
            float(np.square(flat[i : i + chunk].astype(np.float64) - mean).sum()) for i in range(0, len(flat), chunk)
        )
        return cls(mean, np.sqrt(sq / flat.size))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        check_array(self, "images", images)
        return ((images - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, state: dict) -> Normalizer:
        if not isinstance(state, dict) or not {"mean", "std"} <= state.keys():
            raise HandgradError("Normalizer.from_dict", f"expected a dict with keys 'mean' and 'std', got {state!r}")
        return cls(state["mean"], state["std"])

    def __repr__(self):
        return f"Normalizer(mean={self.mean:.4f}, std={self.std:.4f})"

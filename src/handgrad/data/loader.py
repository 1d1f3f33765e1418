"""DataLoader: (x, y) mini-batches over in-memory arrays, with reproducible per-epoch shuffling."""

from __future__ import annotations

import numpy as np

from .._random import default_generator
from ..errors import HandgradError, check_array, fmt_shape


class DataLoader:
    """Iterate ``(images[batch], labels[batch])`` in batches of ``batch_size``.

    With ``shuffle``, epoch ``e`` visits the samples in the order of
    ``np.random.default_rng([seed, e]).permutation(N)``: a new order every epoch, the same for a
    given (seed, epoch). Each ``iter()`` uses the current epoch and then advances it; a resumed run
    calls ``set_epoch(e)`` to replay epoch ``e``'s order. ``seed=None`` draws the seed from
    handgrad's global generator (``handgrad.manual_seed``). ``len()`` is the number of batches;
    ``drop_last`` drops a final batch smaller than ``batch_size``.

    Example::

        >>> loader = DataLoader(x, y, batch_size=64, shuffle=True, seed=0)
        >>> for xb, yb in loader: ...
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
    ):
        check_array("DataLoader", "images", images)
        check_array("DataLoader", "labels", labels)
        if len(images) != len(labels):
            raise HandgradError(
                "DataLoader",
                f"expected as many labels as images ({len(images)}), got labels of shape {fmt_shape(labels.shape)}",
            )
        if int(batch_size) < 1:
            raise HandgradError("DataLoader", f"expected batch_size >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed = int(default_generator().integers(2**63)) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration uses ``epoch``'s order (and the one after it ``epoch + 1``)."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch`` in the order they are visited."""
        n = len(self.labels)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1  # advanced here, not at the end, so a loop left early still moves on
        return self._batches(order)

    def _batches(self, order):
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[index], self.labels[index]

    def __repr__(self):
        return (
            f"DataLoader(samples={len(self.labels)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})"
        )

"""The global random generator behind initialisation and dropout, seeded by ``manual_seed``."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed handgrad's global generator (weights init, dropout masks) and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator


def get_state() -> dict:
    """The global generator's state, for checkpoints that resume bit for bit."""
    return dict(_generator.bit_generator.state)


def set_state(state: dict) -> None:
    _generator.bit_generator.state = state

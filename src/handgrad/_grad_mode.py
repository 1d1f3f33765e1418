"""Whether layers keep what backward needs. Off inside ``handgrad.no_grad()``: inference then
stores no caches (less memory, a little faster), as ``torch.no_grad`` does."""

from __future__ import annotations

import contextlib
import functools

_enabled = True


def is_grad_enabled() -> bool:
    return _enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager (and decorator) that turns caching for backward on or off."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)

    def __enter__(self):
        global _enabled
        self.previous, _enabled = _enabled, self.mode
        return self

    def __exit__(self, *exc):
        global _enabled
        _enabled = self.previous
        return False


no_grad = functools.partial(set_grad_enabled, False)
enable_grad = functools.partial(set_grad_enabled, True)

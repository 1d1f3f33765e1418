"""The old names of the modules that moved into ``handgrad.app``.

``import handgrad.training`` (likewise ``handgrad.cli`` and ``handgrad.explain``, the names the
README and users' scripts have used) still works: it gives the very module ``handgrad.app.training``,
with a DeprecationWarning naming the new place. The names are resolved only when imported, so the
library itself never loads ``handgrad.app``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {f"handgrad.{name}": f"handgrad.app.{name}" for name in ("cli", "training", "explain")}


class _OldName(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name (after the ordinary finders, so a real file of that name would win) and
    loads it as the module at its new place."""

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} has moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # create_module returned the module at its new place, already run


def install() -> None:
    if not any(isinstance(finder, _OldName) for finder in sys.meta_path):
        sys.meta_path.append(_OldName())

"""Plug-ins: activations and layers of your own, from a Python file or an importable module.

A plug-in is ordinary Python that defines classes; each registers itself as it is defined::

    # my_acts.py
    import numpy as np
    from handgrad import nn

    class Swish(nn.ElementwiseActivation):          # y = x * sigmoid(x); registered as "swish"
        @staticmethod
        def function(x):
            return x / (1 + np.exp(-x))

        @staticmethod
        def derivative(x):
            s = 1 / (1 + np.exp(-x))
            return s * (1 + x * (1 - s))

``handgrad train --plugin my_acts.py --activation swish`` (or ``--plugin package.module``) imports
it before the options are read, so ``--activation``, ``--layers`` and the checkpoint loader know
its classes; from Python, ``handgrad.plugins.load_plugin("my_acts.py")`` or a plain ``import``.

A checkpoint that holds such a class records, under its metadata key ``plugins``, where each class
came from: ``[{"plugin": "/abs/path/my_acts.py", "classes": ["Swish"]}]`` (a module's name for a
module). Loading it without that plug-in fails with one line naming the class and the plug-in.
Loading a checkpoint never imports anything by itself: the record only says what to pass. Code
runs only from the plug-ins a user names on the command line or imports in Python.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from .errors import HandgradError

#: module name -> the source as the user gave it, resolved: an absolute path for a file, the
#: dotted name for a module. In load order; ``sweep`` hands it to its worker processes.
LOADED: dict[str, str] = {}

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PluginError(HandgradError):
    """A plug-in could not be found or imported, or a checkpoint needs one that is not loaded."""


def is_file_source(source: str) -> bool:
    """A file path (``my_acts.py``, ``./acts``, ``/abs/acts.py``) rather than a dotted module name."""
    return source.endswith(".py") or "/" in source or os.sep in source


def load_plugin(source: str):
    """Import the plug-in ``source``, a ``.py`` file or a module name, once per process, and return
    the module. Raises PluginError naming the plug-in and why: no such file or module, or the
    exception its import raised (a derivative that disagrees with finite differences, a syntax
    error with its line)."""
    source = str(source)
    if is_file_source(source):
        path = Path(source).expanduser().resolve()
        where = f"plugin {source}"
        if not path.is_file():
            raise PluginError(where, "no such file" if not path.exists() else "is not a file; expected a .py file")
        for name, loaded in LOADED.items():
            if loaded == str(path):
                return sys.modules[name]
        name = _free_module_name(path)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PluginError(where, "cannot be imported as Python; expected a .py file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # classes pickle by module name: sweep's workers load it again by path
        try:
            _run(where, lambda: spec.loader.exec_module(module), path)
        except BaseException:
            del sys.modules[name]
            raise
        LOADED[name] = str(path)
        return module
    where = f"plugin {source}"
    if not _MODULE_NAME.fullmatch(source):
        raise PluginError(where, "expected a .py file or a dotted module name such as mypackage.activations")
    if source in LOADED:
        return sys.modules[source]
    # As ``python -m`` does, the current folder is searched too (the console script's path lacks it).
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = _run(where, lambda: importlib.import_module(source), None)
    finally:
        if added:
            sys.path.remove(os.getcwd())
    LOADED[source] = source
    return module


def _free_module_name(path: Path) -> str:
    """The file's stem when no other module has that name, else the stem made unique."""
    stem = re.sub(r"\W", "_", path.stem)
    stem = stem if stem and not stem[0].isdigit() else "_" + stem
    name, n = stem, 1
    while name in sys.modules:
        n += 1
        name = f"{stem}_{n}"
    return name


def _run(where, do, path):
    """``do()``, with any exception it raises turned into one PluginError line."""
    try:
        return do()
    except HandgradError as e:
        raise PluginError(where, str(e)) from e
    except ModuleNotFoundError as e:
        module = where.split(" ", 1)[1]
        if path is None and e.name and (module == e.name or module.startswith(e.name + ".")):
            raise PluginError(
                where,
                "no such module (searched sys.path and the current folder); a file needs its path, e.g. ./my_acts.py",
            ) from None
        raise PluginError(where, f"importing it failed: {type(e).__name__}: {e}") from e
    except SyntaxError as e:
        raise PluginError(where, f"importing it failed: SyntaxError: {e.msg} (line {e.lineno})") from None
    except Exception as e:
        line = _line_in(e, path)
        raise PluginError(where, f"importing it failed: {type(e).__name__}: {e}{line}") from e


def _line_in(error, path) -> str:
    """`` (line N)``: the last line of the plug-in's own file the traceback passes through."""
    if path is None:
        return ""
    tb, line = error.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def load_plugins(sources) -> list:
    """``load_plugin`` each of ``sources`` in order (a sweep worker's initializer)."""
    return [load_plugin(s) for s in sources]


def is_builtin(cls) -> bool:
    """A class handgrad itself defines (nothing to record for it)."""
    return cls.__module__ == "handgrad" or cls.__module__.startswith("handgrad.")


def source_of(cls) -> str:
    """What to pass to ``--plugin`` for ``cls``: the loaded plug-in that defined it (its absolute
    path or module name); else its module's name, or the script's path for a class defined in the
    script that runs (``__main__``)."""
    module = cls.__module__
    if module in LOADED:
        return LOADED[module]
    if module == "__main__":
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        return str(Path(main_file).resolve()) if main_file else "__main__"
    return module


def plugins_of(model) -> list:
    """The checkpoint record of the layer classes in ``model`` that handgrad does not define:
    ``[{"plugin": source, "classes": [names in layer order]}]``, one entry per plug-in."""
    by_source: dict[str, list] = {}
    for layer in model.modules():
        cls = type(layer)
        if not is_builtin(cls):
            names = by_source.setdefault(source_of(cls), [])
            if cls.__name__ not in names:
                names.append(cls.__name__)
    return [{"plugin": source, "classes": names} for source, names in by_source.items()]


def how_to_load(source: str) -> str:
    """The advice that goes with a class whose plug-in is not loaded."""
    if source == "__main__":
        return (
            "it was defined in an interactive session: define it again (or put it in a file and pass "
            "--plugin FILE.py) before loading"
        )
    return (
        f"pass --plugin {source} (in Python: handgrad.plugins.load_plugin({source!r}) or import it, "
        f"before handgrad.load)"
    )


__all__ = [
    "LOADED",
    "PluginError",
    "load_plugin",
    "load_plugins",
    "plugins_of",
    "source_of",
    "is_builtin",
    "how_to_load",
]

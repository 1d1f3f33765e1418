"""Compiled kernels are cached across processes, also when the package folder is read-only, and
``import handgrad`` loads neither Numba nor threadpoolctl (the first kernel call does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "src"))

FIRST_STEP = """
import json, sys, numpy as np
import handgrad
loaded = sorted(m for m in ("numba", "threadpoolctl") if m in sys.modules)
from handgrad import nn
from handgrad.kernels import conv, fused, pool, activation
layer = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))  # run fused
out = layer(np.ones((2, 1, 6, 6), np.float32))
layer.backward(np.ones_like(out))
z = layer[0](np.ones((2, 1, 6, 6), np.float32))  # and one by one
layer[0].backward(layer[1].backward(layer[2].backward(np.ones_like(layer[2](layer[1](z))))))
kernels = [fused._direct, fused._direct_weight_grad, fused._direct_input_grad, conv.unfold, conv.fold,
           conv.columns_to_nchw, conv.nchw_to_columns, pool._max_pool, pool._max_pool_backward, activation._relu,
           activation._relu_backward]
hits = sum(sum(k.stats.cache_hits.values()) for k in kernels)
misses = sum(sum(k.stats.cache_misses.values()) for k in kernels)
print(json.dumps({"loaded_by_import": loaded, "hits": hits, "misses": misses}))
"""


def _run(src, env, base=None):
    done = subprocess.run(
        [sys.executable, "-c", FIRST_STEP],
        env={**(base or os.environ), "PYTHONPATH": src, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_handgrad_loads_neither_numba_nor_threadpoolctl():
    got = _run(SRC, {})
    assert got["loaded_by_import"] == []


def _make_read_only(folders):
    """Read-only folders even for root (who ignores the permission bits): the immutable attribute
    where root may set it, else the permission bits. Returns how to undo it."""
    if os.geteuid() != 0:
        for folder in folders:
            os.chmod(folder, 0o555)
        return lambda: [os.chmod(folder, 0o755) for folder in folders]
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: a read-only folder cannot be simulated")
    done = subprocess.run(["chattr", "+i", *folders], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed ({done.stderr.strip()}): no read-only folder")
    return lambda: subprocess.run(["chattr", "-i", *folders], check=True)


@pytest.mark.slow
def test_kernels_are_cached_in_the_user_cache_when_the_package_is_read_only(tmp_path):
    """A copy of the package in read-only folders: the first process compiles and writes its cache
    under the user's cache folder; the second loads every kernel from there."""
    package, cache = tmp_path / "site" / "handgrad", tmp_path / "cache"
    shutil.copytree(os.path.join(SRC, "handgrad"), package, ignore=shutil.ignore_patterns("__pycache__"))
    undo = _make_read_only([folder for folder, _, _ in os.walk(package)])
    try:
        env = {"XDG_CACHE_HOME": str(cache)}
        env_without_cache_dir = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        first = _run(str(tmp_path / "site"), env, base=env_without_cache_dir)
        second = _run(str(tmp_path / "site"), env, base=env_without_cache_dir)
    finally:
        undo()
    assert first["misses"] > 0 and first["hits"] == 0
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert not any(n.endswith(".nbi") for _, _, files in os.walk(package) for n in files)
    assert any(n.endswith(".nbi") for _, _, files in os.walk(cache) for n in files)

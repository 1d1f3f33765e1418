"""The one switch between the compiled kernels and the references: HANDGRAD_KERNELS (read once, at
the first op), and the ``reference()`` / ``use_kernels()`` blocks, which win over it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "src"))

SWITCH = """
import json, os
from handgrad import kernels, functional
def side():
    return "reference" if kernels.op("relu_forward") is functional.relu_forward else "kernel"
seen = [side(), kernels.enabled()]
with kernels.use_kernels():
    seen.append(side())
    with kernels.reference():
        seen.append(side())
os.environ["HANDGRAD_KERNELS"] = "kernels" if seen[0] == "reference" else "reference"
seen.append(side())  # read once: changing the variable later changes nothing
print(json.dumps(seen))
"""


@pytest.mark.parametrize(
    "value, expected",
    [("reference", "reference"), ("off", "reference"), ("0", "reference"), ("kernels", "kernel"), ("", "kernel")],
)
def test_handgrad_kernels_variable_is_read_once_and_blocks_win(value, expected):
    env = {**os.environ, "PYTHONPATH": SRC, "HANDGRAD_KERNELS": value}
    done = subprocess.run([sys.executable, "-c", SWITCH], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first, enabled, inside_kernels, inside_reference, after_change = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == expected and enabled == (expected == "kernel")
    assert inside_kernels == "kernel" and inside_reference == "reference"
    assert after_change == expected

"""Plug-ins: user activations and layers from a file or module, recorded in checkpoints, and the
one-line error for a checkpoint loaded without its plug-in; loading never imports code by itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad import nn
from handgrad.errors import HandgradError
from handgrad.plugins import LOADED, PluginError, load_plugin, plugins_of, source_of
from handgrad.serialization import _decode, check_checkpoint, read_header


def read_metadata(path):
    """The checkpoint's metadata, decoded, without reading a tensor."""
    return _decode(path, read_header(path)[0])


#: A plug-in as a user writes one: an element-wise activation and a full layer with its own backward.
PLUGIN = '''
import numpy as np
from handgrad import nn


class Swish(nn.ElementwiseActivation):
    """y = x * sigmoid(x);  f'(x) = s * (1 + x * (1 - s))"""

    @staticmethod
    def function(x):
        return x / (1 + np.exp(-x))

    @staticmethod
    def derivative(x):
        s = 1 / (1 + np.exp(-x))
        return s * (1 + x * (1 - s))


class Scale(nn.Module):
    """y = x * weight, one learnt factor per feature;  grad_weight = sum_n G * x,  dL/dx = G * weight"""

    arguments = {"features": ("size", True)}

    def __init__(self, features):
        super().__init__()
        self.features = features
        self.weight = nn.Parameter(np.ones(features, dtype=np.float32))

    def forward(self, x):
        self._save_for_backward(x, x.shape)
        return x * self.weight.data

    def backward(self, grad_output, input_grad=True):
        x = self._saved(grad_output)
        grad_weight = (grad_output * x).sum(0)
        self.weight.grad = grad_weight if self.weight.grad is None else self.weight.grad + grad_weight
        return grad_output * self.weight.data if input_grad else None

    def constructor_args(self):
        return {"features": self.features}
'''

#: Saves a model of both plug-in classes, trained 20 SGD steps on digits, then prints its outputs.
TRAIN_SCALE = """
import sys
import numpy as np
import handgrad
from handgrad import nn, optim
from handgrad.data import load_dataset
from handgrad.plugins import load_plugin

acts = load_plugin(sys.argv[1])
handgrad.manual_seed(0)
ds = load_dataset("digits")
x, y = ds.train_images[:200].astype(np.float32), ds.train_labels[:200]
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), acts.Scale(16), acts.Swish(), nn.Linear(16, 10))
loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1)
for step in range(20):
    batch = slice(10 * step, 10 * step + 10)
    loss_fn(model(x[batch]), y[batch])
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
handgrad.save(model, sys.argv[2], input_shape=[1, 8, 8])
print(model.eval()(x[:3]).tolist())
"""

LOAD_AND_PRINT = """
import sys
import numpy as np
import handgrad
from handgrad.data import load_dataset

if len(sys.argv) > 2:
    handgrad.plugins.load_plugin(sys.argv[2])
model = handgrad.load(sys.argv[1])
print(model.eval()(load_dataset("digits").train_images[:3].astype(np.float32)).tolist())
"""


def python(*args, cwd=None):
    """A fresh interpreter, with this handgrad first on its path."""
    src = str(Path(handgrad.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def handgrad_cli(*args, cwd=None):
    threads = [] if args[0] in ("info", "export") else ["--threads", "1"]
    return python("-m", "handgrad", *args, *threads, cwd=cwd)


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_acts.py"
    path.write_text(PLUGIN)
    return path


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# -- from the shell: --activation swish, recorded, loaded with and without the plug-in -------------------
def test_activation_from_a_plugin_trains_from_the_shell_and_loads_only_with_it(plugin_file, tmp_path):
    run = tmp_path / "run"
    trained = handgrad_cli(
        "train",
        "--plugin",
        str(plugin_file),
        "--dataset",
        "digits",
        "--hidden",
        "16",
        "--activation",
        "swish",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(run),
    )
    assert trained.returncode == 0, trained.stderr
    checkpoint = run / "best.safetensors"
    assert read_metadata(checkpoint)["plugins"] == [{"plugin": str(plugin_file), "classes": ["Swish"]}]
    assert [layer["type"] for layer in read_metadata(checkpoint)["architecture"]] == [
        "Flatten",
        "Linear",
        "Swish",
        "Linear",
    ]

    without = handgrad_cli("eval", str(checkpoint))
    assert_one_line_error(
        without,
        "layer 2 is a Swish",
        f"the plug-in {plugin_file}",
        "which is not loaded",
        f"pass --plugin {plugin_file}",
    )
    with_it = handgrad_cli("eval", str(checkpoint), "--plugin", str(plugin_file), "--json")
    assert with_it.returncode == 0, with_it.stderr
    assert json.loads(with_it.stdout)["accuracy"] > 0.5


def test_a_plugin_given_by_module_name_is_imported_from_the_current_folder(plugin_file, tmp_path):
    run = tmp_path / "run"
    trained = handgrad_cli(
        "train",
        "--dataset",
        "digits",
        "--layers",
        "fc16-swish",
        "--plugin",
        "my_acts",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(run),
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert read_metadata(run / "best.safetensors")["plugins"] == [{"plugin": "my_acts", "classes": ["Swish"]}]
    info = handgrad_cli("info", str(run / "best.safetensors"), "--plugin", "my_acts", cwd=tmp_path)
    assert info.returncode == 0 and "Swish()" in info.stdout, info.stderr


@pytest.mark.parametrize("command", ["eval", "predict", "info", "export", "explain"])
def test_every_command_that_loads_a_checkpoint_names_the_missing_plugin(command, plugin_file, tmp_path):
    checkpoint = tmp_path / "swish.safetensors"
    made = python(
        "-c",
        f"import handgrad, handgrad.plugins as p; from handgrad import nn; "
        f"a = p.load_plugin({str(plugin_file)!r}); "
        f"handgrad.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), a.Swish()), "
        f"{str(checkpoint)!r}, input_shape=[1, 8, 8], dataset='digits')",
    )
    assert made.returncode == 0, made.stderr
    args = {
        "eval": ["eval", str(checkpoint)],
        "predict": ["predict", str(checkpoint), "digit.png"],
        "info": ["info", str(checkpoint)],
        "export": ["export", str(checkpoint), str(tmp_path / "m.onnx")],
        "explain": ["explain", "--checkpoint", str(checkpoint)],
    }[command]
    assert_one_line_error(handgrad_cli(*args), "layer 2 is a Swish", f"pass --plugin {plugin_file}")


# -- a full layer (Module with forward/backward), trained and loaded in fresh processes -----------------
def test_a_layer_from_a_plugin_trains_saves_and_reloads_in_a_fresh_process(plugin_file, tmp_path):
    script, loader, checkpoint = tmp_path / "train_scale.py", tmp_path / "load.py", tmp_path / "scale.safetensors"
    script.write_text(TRAIN_SCALE)
    loader.write_text(LOAD_AND_PRINT)
    trained = python(str(script), str(plugin_file), str(checkpoint))
    assert trained.returncode == 0, trained.stderr
    meta = read_metadata(checkpoint)
    assert meta["plugins"] == [{"plugin": str(plugin_file), "classes": ["Scale", "Swish"]}]
    assert meta["architecture"][2] == {"type": "Scale", "features": 16}
    _, tensors = read_header(checkpoint)
    assert tensors["2.weight"][0] == (16,)

    reloaded = python(str(loader), str(checkpoint), str(plugin_file))
    assert reloaded.returncode == 0, reloaded.stderr
    np.testing.assert_array_equal(json.loads(reloaded.stdout), json.loads(trained.stdout))

    without = python(str(loader), str(checkpoint))
    assert without.returncode == 1
    last = without.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("handgrad.plugins.PluginError:")
        and "layer 2 is a Scale" in last
        and f"the plug-in {plugin_file}" in last
    ), without.stderr


def test_a_plugin_layer_with_mis_shaped_weights_is_refused_naming_the_tensor(plugin_file, tmp_path):
    acts = load_plugin(str(plugin_file))
    checkpoint = tmp_path / "scale.safetensors"
    handgrad.save(nn.Sequential(nn.Linear(4, 3), acts.Scale(3)), checkpoint, input_shape=[4])
    meta = read_metadata(checkpoint)
    meta["architecture"][1]["features"] = 5  # the stored weight has 3 values
    from handgrad.serialization import load_tensors, save_tensors

    tensors, _ = load_tensors(checkpoint)
    save_tensors(checkpoint, tensors, {k: json.dumps(v) for k, v in meta.items()})
    with pytest.raises(HandgradError, match=r"1\.weight.*\(5,\).*\(3,\)"):
        handgrad.load(checkpoint)


def test_a_plugin_layer_that_declares_no_arguments_cannot_be_saved(tmp_path):
    class Doubler(nn.Module):
        def forward(self, x):
            return 2 * x

    with pytest.raises(
        HandgradError,
        match=r"layer 1 \(Doubler\): cannot be stored in a checkpoint: give the "
        r"class 'arguments'",
    ):
        handgrad.save(nn.Sequential(nn.Linear(2, 2), Doubler()), tmp_path / "d.safetensors")


# -- loading never runs code ---------------------------------------------------------------------------
def test_loading_a_checkpoint_never_imports_the_plugin_it_names(tmp_path):
    marker = tmp_path / "imported"
    trap = tmp_path / "trap.py"
    trap.write_text(f"open({str(marker)!r}, 'w').close()\n")
    checkpoint = tmp_path / "c.safetensors"
    handgrad.save(nn.Sequential(nn.Linear(2, 2)), checkpoint)
    meta = read_metadata(checkpoint)
    meta["architecture"].append({"type": "Trapped"})
    meta["plugins"] = [{"plugin": str(trap), "classes": ["Trapped"]}]
    from handgrad.serialization import load_tensors, save_tensors

    save_tensors(checkpoint, load_tensors(checkpoint)[0], {k: json.dumps(v) for k, v in meta.items()})
    with pytest.raises(PluginError, match=f"layer 1 is a Trapped, a class from the plug-in {trap}"):
        handgrad.load(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize(
    "plugins",
    [
        pytest.param("my_acts.py", id="not-a-list"),
        pytest.param([{"plugin": "a.py"}], id="no-classes"),
        pytest.param([{"plugin": 3, "classes": ["Swish"]}], id="plugin-not-a-string"),
        pytest.param([{"plugin": "a.py", "classes": "Swish"}], id="classes-not-a-list"),
        pytest.param([{"plugin": "a.py", "classes": ["Swish"], "code": "import os"}], id="extra-key"),
        pytest.param([{"plugin": "", "classes": []}], id="empty-plugin"),
    ],
)
def test_a_malformed_plugins_record_is_refused_in_one_line(plugins, tmp_path):
    checkpoint = tmp_path / "c.safetensors"
    handgrad.save(nn.Sequential(nn.Linear(2, 2)), checkpoint)
    meta = read_metadata(checkpoint)
    meta["plugins"] = plugins
    with pytest.raises(HandgradError, match=r"'plugins' must be a list of \{\"plugin\": a path or module name"):
        check_checkpoint(checkpoint, meta, read_header(checkpoint)[1])


# -- importing: errors name the plug-in; a plug-in is imported once ----------------------------------------
@pytest.mark.parametrize(
    "source, text, expected",
    [
        pytest.param("missing.py", None, "plugin {path}: no such file", id="missing-file"),
        pytest.param(
            "broken.py", "x = (\n", "importing it failed: SyntaxError: '(' was never closed (line 1)", id="syntax-error"
        ),
        pytest.param(
            "raises.py",
            "import numpy\n\nraise RuntimeError('no GPU here')\n",
            "importing it failed: RuntimeError: no GPU here (line 3)",
            id="raises",
        ),
        pytest.param(
            "wrong.py",
            "import numpy as np\nfrom handgrad import nn\nWrong = nn.define_activation("
            "'WrongDerivative', np.sin, np.sin)\n",
            "WrongDerivative: the derivative disagrees with finite differences",
            id="wrong-derivative",
        ),
        pytest.param(
            "shadow.py",
            "import numpy as np\nfrom handgrad import nn\nTanh = nn.define_activation('Tanh', np.sin, np.cos)\n",
            "the activation name 'tanh' is handgrad's own (Tanh); give yours another name",
            id="shadows-a-built-in",
        ),
    ],
)
def test_a_plugin_that_cannot_be_imported_gives_one_line_naming_it(source, text, expected, tmp_path):
    path = tmp_path / source
    if text is not None:
        path.write_text(text)
    with pytest.raises(PluginError) as info:
        load_plugin(str(path))
    message = str(info.value)
    assert message.startswith(f"plugin {path}: ") and expected.format(path=path) in message
    assert "\n" not in message
    assert nn.get_activation("tanh") is nn.Tanh


@pytest.mark.parametrize(
    "source, expected",
    [
        pytest.param(
            "no_such_plugin_module", "no such module (searched sys.path and the current folder)", id="missing"
        ),
        pytest.param("no_such_package.acts", "no such module", id="missing-package"),
        pytest.param("not a module!", "expected a .py file or a dotted module name", id="bad-name"),
    ],
)
def test_a_module_name_that_is_not_found_is_named(source, expected):
    with pytest.raises(PluginError, match=re.escape(f"plugin {source}: {expected}")):
        load_plugin(source)


def test_the_cli_reports_a_broken_plugin_in_one_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise ImportError('needs scipy')\n")
    assert_one_line_error(
        handgrad_cli("train", "--plugin", str(path), "--hidden", "8"),
        f"handgrad: error: plugin {path}: importing it failed: ImportError: needs scipy (line 1)",
    )


def test_a_plugin_is_imported_once_and_its_classes_are_recorded_by_its_path(plugin_file):
    first = load_plugin(str(plugin_file))
    assert load_plugin(str(plugin_file)) is first
    assert LOADED[first.__name__] == str(plugin_file)
    assert source_of(first.Swish) == source_of(first.Scale) == str(plugin_file)
    assert nn.get_activation("swish") is first.Swish
    model = nn.Sequential(nn.Linear(3, 3), first.Scale(3), first.Swish(), first.Scale(3))
    assert plugins_of(model) == [{"plugin": str(plugin_file), "classes": ["Scale", "Swish"]}]
    assert plugins_of(nn.Sequential(nn.Linear(3, 3), nn.ReLU())) == []


def test_define_activation_belongs_to_the_module_that_calls_it():
    Cube = nn.define_activation("CubePlugins", lambda x: x**3, lambda x: 3 * x**2)
    assert Cube.__module__ == __name__
    assert plugins_of(nn.Sequential(Cube())) == [{"plugin": __name__, "classes": ["CubePlugins"]}]


# -- sweep: its spawned workers import the parent's plug-ins -------------------------------------------
def test_sweep_workers_load_the_plugins(plugin_file, tmp_path):
    out = tmp_path / "sweep"
    result = handgrad_cli(
        "sweep",
        "--plugin",
        str(plugin_file),
        "--dataset",
        "digits",
        "--model",
        "fc16-swish",
        "--lr",
        "0.1,0.05",
        "--epochs",
        "1",
        "--workers",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert len(runs) == 2
    for run in runs:
        assert read_metadata(out / run["run"] / "best.safetensors")["plugins"] == [
            {"plugin": str(plugin_file), "classes": ["Swish"]}
        ]


def test_the_help_of_each_command_that_loads_or_builds_a_model_names_plugin():
    from handgrad.app.cli import PLUGIN_COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in PLUGIN_COMMANDS:
        assert "--plugin" in sub.choices[name].format_help(), name
    assert "--plugin" not in sub.choices["gradcheck"].format_help()

"""ONNX export: every named model, a spec-built one and every layer type give handgrad's outputs
within 1e-5 in onnxruntime, with one file for any batch size."""

import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import handgrad  # noqa: E402
from handgrad import nn  # noqa: E402
from handgrad.app.cli import main  # noqa: E402
from handgrad.errors import WriteError  # noqa: E402
from handgrad.models import LAYER_ARGUMENTS, MODELS, build_model  # noqa: E402
from handgrad.onnx import EXPORTERS, OPSET, ExportError, export  # noqa: E402

TOL = 1e-5

OnnxSoftsign = nn.define_activation("OnnxSoftsign", lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2)


class Doubler(nn.Module):
    """y = 2x: a user layer with no exporter."""

    def forward(self, x):
        return 2 * x


def p_shape(layer) -> tuple:
    return layer.normalized_shape if isinstance(layer, nn.LayerNorm) else (layer.num_features,)


def randomize_batch_norm(model, rng) -> None:
    """Running statistics and affine parameters far from their 0 / 1 defaults, so that using the
    wrong ones shows."""
    for layer in model.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            for p, values in (
                (layer.weight, rng.uniform(0.5, 2.0, p_shape(layer))),
                (layer.bias, rng.standard_normal(p_shape(layer))),
            ):
                if p is not None:
                    p.data = values.astype(p.dtype)
            if isinstance(layer, nn.LayerNorm):
                continue
            c = layer.num_features
            if layer.track_running_stats:
                layer.running_mean[...] = rng.standard_normal(c)
                layer.running_var[...] = rng.uniform(0.5, 2.0, c)


def handgrad_output(model, x):
    was_training = model.training
    model.eval()
    with handgrad.no_grad():
        out = model(x)
    model.train(was_training)
    return out


def onnx_output(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x})
    return out


def assert_same_outputs(model, path, x) -> None:
    expected, got = handgrad_output(model, x), onnx_output(path, x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_named_model_gives_handgrads_outputs(name, rng, tmp_path):
    model = build_model(name, (1, 28, 28), 10)
    export(model, tmp_path / "model.onnx", input_shape=(1, 28, 28))
    assert_same_outputs(model, tmp_path / "model.onnx", rng.standard_normal((7, 1, 28, 28)).astype(np.float32))


def test_a_spec_built_model_gives_handgrads_outputs(rng, tmp_path):
    model = build_model(
        layers="conv8k5-bn-pool-conv16-avgpool-fc32-tanh-bn-dropout0.3-fc16-leaky_relu",
        input_shape=(1, 16, 16),
        num_classes=10,
    )
    randomize_batch_norm(model, rng)
    export(model, tmp_path / "spec.onnx", input_shape=(1, 16, 16))
    assert_same_outputs(model, tmp_path / "spec.onnx", rng.standard_normal((7, 1, 16, 16)).astype(np.float32))


LAYER_CASES = [
    pytest.param(lambda: nn.Linear(5, 3), (5,), id="Linear"),
    pytest.param(lambda: nn.Linear(5, 3, bias=False), (5,), id="Linear-no-bias"),
    pytest.param(lambda: nn.Linear(5, 3), (4, 5), id="Linear-on-3d-input"),
    pytest.param(lambda: nn.Linear(5, 3, bias=False), (4, 5), id="Linear-on-3d-input-no-bias"),
    pytest.param(lambda: nn.Conv2d(3, 4, 3, padding=1), (3, 9, 9), id="Conv2d"),
    pytest.param(
        lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2), bias=False),
        (3, 9, 8),
        id="Conv2d-stride-padding-no-bias",
    ),
    pytest.param(lambda: nn.MaxPool2d(2), (3, 9, 8), id="MaxPool2d"),
    pytest.param(lambda: nn.MaxPool2d(3, stride=2, padding=1), (3, 9, 8), id="MaxPool2d-stride-padding"),
    pytest.param(lambda: nn.AvgPool2d(2), (3, 9, 8), id="AvgPool2d"),
    pytest.param(lambda: nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1)), (3, 9, 8), id="AvgPool2d-padding"),
    pytest.param(
        lambda: nn.MaxPool2d(3, 2, 1, dilation=(1, 2), ceil_mode=True), (3, 9, 8), id="MaxPool2d-dilation-ceil"
    ),
    pytest.param(lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True), (3, 8, 8), id="AvgPool2d-ceil"),
    pytest.param(
        lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (3, 8, 8), id="AvgPool2d-exclude-pad"
    ),
    pytest.param(lambda: nn.AvgPool2d((2, 3), (1, 2), (1, 1), divisor_override=5), (3, 9, 8), id="AvgPool2d-divisor"),
    pytest.param(lambda: nn.AdaptiveAvgPool2d(1), (3, 9, 8), id="AdaptiveAvgPool2d-global"),
    pytest.param(lambda: nn.AdaptiveAvgPool2d((3, None)), (3, 9, 8), id="AdaptiveAvgPool2d-even"),
    pytest.param(lambda: nn.ReLU(), (3, 4, 4), id="ReLU"),
    pytest.param(lambda: nn.LeakyReLU(0.2), (3, 4, 4), id="LeakyReLU"),
    pytest.param(lambda: nn.ELU(0.7), (3, 4, 4), id="ELU"),
    pytest.param(lambda: nn.GELU(), (3, 4, 4), id="GELU"),
    pytest.param(lambda: nn.GELU(approximate="tanh"), (3, 4, 4), id="GELU-tanh"),
    pytest.param(lambda: nn.SiLU(), (6,), id="SiLU"),
    pytest.param(lambda: nn.Softplus(), (3, 4, 4), id="Softplus"),
    pytest.param(lambda: nn.Softplus(beta=2.0, threshold=0.5), (3, 4, 4), id="Softplus-beta-threshold"),
    pytest.param(lambda: nn.Sigmoid(), (6,), id="Sigmoid"),
    pytest.param(lambda: nn.Tanh(), (6,), id="Tanh"),
    pytest.param(lambda: nn.Softmax(dim=1), (6,), id="Softmax"),
    pytest.param(lambda: nn.Softmax(dim=1), (3, 4, 4), id="Softmax-channels"),
    pytest.param(lambda: nn.LogSoftmax(dim=-1), (6,), id="LogSoftmax"),
    pytest.param(lambda: nn.LogSoftmax(dim=2), (3, 4, 5), id="LogSoftmax-dim2"),
    pytest.param(lambda: nn.Flatten(), (3, 4, 5), id="Flatten"),
    pytest.param(lambda: nn.Flatten(start_dim=2), (3, 4, 5), id="Flatten-start2"),
    pytest.param(lambda: nn.Flatten(start_dim=1, end_dim=2), (3, 4, 5), id="Flatten-end2"),
    pytest.param(lambda: nn.Dropout(0.5), (6,), id="Dropout"),
    pytest.param(lambda: nn.Identity(), (6,), id="Identity"),
    pytest.param(lambda: nn.BatchNorm1d(6), (6,), id="BatchNorm1d"),
    pytest.param(lambda: nn.BatchNorm1d(3), (3, 5), id="BatchNorm1d-NCL"),
    pytest.param(lambda: nn.BatchNorm1d(6, affine=False), (6,), id="BatchNorm1d-no-affine"),
    pytest.param(lambda: nn.BatchNorm1d(6, track_running_stats=False), (6,), id="BatchNorm1d-batch-statistics"),
    pytest.param(lambda: nn.BatchNorm2d(3), (3, 4, 5), id="BatchNorm2d"),
    pytest.param(
        lambda: nn.BatchNorm2d(3, eps=1e-3, track_running_stats=False), (3, 4, 5), id="BatchNorm2d-batch-statistics"
    ),
    pytest.param(
        lambda: nn.BatchNorm2d(3, affine=False, track_running_stats=False),
        (3, 4, 5),
        id="BatchNorm2d-batch-statistics-no-affine",
    ),
    pytest.param(lambda: nn.BatchNorm1d(6, bias=False), (6,), id="BatchNorm1d-weight-only"),
    pytest.param(lambda: nn.BatchNorm2d(3, momentum=None), (3, 4, 5), id="BatchNorm2d-cumulative-average"),
    pytest.param(lambda: nn.LayerNorm(6), (6,), id="LayerNorm"),
    pytest.param(lambda: nn.LayerNorm((4, 5), eps=1e-3), (3, 4, 5), id="LayerNorm-two-axes"),
    pytest.param(lambda: nn.LayerNorm([3, 4, 5], bias=False), (3, 4, 5), id="LayerNorm-weight-only"),
    pytest.param(lambda: nn.LayerNorm(5, elementwise_affine=False), (3, 5), id="LayerNorm-no-affine"),
    pytest.param(lambda: nn.Dropout2d(0.3), (3, 4, 5), id="Dropout2d"),
    pytest.param(
        lambda: nn.Sequential(nn.Sequential(nn.Linear(6, 5), nn.Tanh()), nn.Linear(5, 2)), (6,), id="Sequential-nested"
    ),
]


@pytest.mark.parametrize("make_layer, input_shape", LAYER_CASES)
def test_every_layer_type_gives_handgrads_outputs(make_layer, input_shape, rng, tmp_path):
    model = nn.Sequential(make_layer())
    randomize_batch_norm(model, rng)
    model.train()  # the export is the eval-mode model (Dropout the identity, running statistics) all the same
    export(model, tmp_path / "layer.onnx", input_shape=input_shape)
    assert model.training
    assert_same_outputs(model, tmp_path / "layer.onnx", rng.standard_normal((7,) + input_shape).astype(np.float32))


def test_every_built_in_layer_type_has_an_exporter():
    built_in = {getattr(nn, name) for name in LAYER_ARGUMENTS}  # every layer a checkpoint can hold
    tested = {case.id.split("-")[0] for case in LAYER_CASES}
    assert built_in <= set(EXPORTERS)
    assert {cls.__name__ for cls in built_in} <= tested


def test_one_file_serves_batch_sizes_1_and_7(rng, tmp_path):
    model = build_model("tiny-cnn", (1, 28, 28), 10)
    export(model, tmp_path / "cnn.onnx", input_shape=(1, 28, 28))
    for batch in (1, 7):
        assert_same_outputs(model, tmp_path / "cnn.onnx", rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    graph = onnx.load(tmp_path / "cnn.onnx").graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["N", 1, 28, 28]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == ["N", 10]


def test_the_file_passes_the_onnx_checker_at_opset_17(tmp_path):
    export(build_model("lenet5", (1, 28, 28), 10), tmp_path / "lenet5.onnx", input_shape=(1, 28, 28))
    proto = onnx.load(tmp_path / "lenet5.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)] and OPSET == 17
    assert proto.producer_name == "handgrad"
    assert {i.name for i in proto.graph.initializer} == set(build_model("lenet5", (1, 28, 28), 10).state_dict())


def test_a_float64_model_exports_in_float64(rng, tmp_path):
    model = build_model("mlp-small", (1, 8, 8), 10).double()
    export(model, tmp_path / "mlp64.onnx", input_shape=(1, 8, 8))
    x = rng.standard_normal((7, 1, 8, 8))
    np.testing.assert_allclose(onnx_output(tmp_path / "mlp64.onnx", x), handgrad_output(model, x), rtol=0, atol=1e-12)


@pytest.fixture
def checkpoint(tmp_path):
    model = build_model("lenet5", (1, 16, 16), 3)
    path = tmp_path / "lenet5.safetensors"
    handgrad.save(
        model,
        path,
        input_shape=[1, 16, 16],
        normalization={"mean": 0.25, "std": 0.5},
        classes=["cat", "dog", "bird"],
        dataset="pets",
    )
    return path


def test_cli_exports_a_checkpoint(checkpoint, rng, tmp_path, capsys):
    out = tmp_path / "lenet5.onnx"
    assert main(["export", str(checkpoint), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: ONNX opset 17" in printed and "(N, 1, 16, 16)" in printed and "(N, 3)" in printed
    assert_same_outputs(handgrad.load(checkpoint), out, rng.standard_normal((7, 1, 16, 16)).astype(np.float32))
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["classes"] == '["cat", "dog", "bird"]' and props["normalization"] == '{"mean": 0.25, "std": 0.5}'
    assert props["input_shape"] == "[1, 16, 16]" and props["dataset"] == '"pets"'


def test_cli_input_shape_that_does_not_fit_is_one_line(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), str(tmp_path / "x.onnx"), "--input-shape", "1,4,4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input_shape (1, 4, 4) does not fit the model at layer 7" in err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_unsupported_layer_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "softsign.safetensors"
    handgrad.save(nn.Sequential(nn.Linear(4, 3), OnnxSoftsign()), path, input_shape=[4])
    assert main(["export", str(path), str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error: OnnxSoftsign(): no ONNX exporter for layer type OnnxSoftsign (layer 1)")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "layer, name",
    [
        pytest.param(OnnxSoftsign(), "OnnxSoftsign", id="user-activation"),
        pytest.param(Doubler(), "Doubler", id="user-module"),
    ],
)
def test_a_layer_with_no_exporter_is_refused_naming_it(layer, name, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(
        ExportError,
        match=f"no ONNX exporter for layer type {name} \\(layer 2\\); exportable: AdaptiveAvgPool2d, AvgPool2d, "
        "BatchNorm1d",
    ):
        export(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), layer), target, input_shape=(4,))
    assert target.read_bytes() == b"previous"


def test_register_exporter_adds_a_layer_type(rng, tmp_path, monkeypatch):
    def softsign(graph, layer, x, name, in_shape, out_shape):
        return graph.node("Softsign", [x], name)

    monkeypatch.setitem(EXPORTERS, OnnxSoftsign, softsign)
    model = nn.Sequential(nn.Linear(4, 3), OnnxSoftsign())
    export(model, tmp_path / "softsign.onnx", input_shape=(4,))
    assert_same_outputs(model, tmp_path / "softsign.onnx", rng.standard_normal((7, 4)).astype(np.float32))


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(WriteError, match="model.onnx: cannot write the file: No space left on device"):
        export(build_model("linear", (1, 8, 8), 10), target, input_shape=(1, 8, 8))
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize(
    "input_shape, message",
    [
        pytest.param(None, "export needs one sample's shape", id="missing"),
        pytest.param("1x8x8", "input_shape must be one sample's shape", id="text"),
        pytest.param((1, 0, 8), "input_shape must be one sample's shape", id="zero"),
        pytest.param((1, 1 << 14, 1 << 14), "holds more than 67108864 values per sample", id="too-large"),
        pytest.param((2, 8, 8), "input_shape (2, 8, 8) does not fit the model at layer 1", id="wrong-size"),
    ],
)
def test_a_bad_input_shape_is_refused(input_shape, message, tmp_path):
    with pytest.raises(ExportError) as info:
        export(build_model("mlp-small", (1, 8, 8), 10), tmp_path / "x.onnx", input_shape=input_shape)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_without_the_onnx_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError, match=r"pip install 'handgrad\[onnx\]'"):
        export(build_model("linear", (1, 8, 8), 10), tmp_path / "x.onnx", input_shape=(1, 8, 8))


def test_importing_handgrad_does_not_import_onnx():
    code = "import sys, handgrad, handgrad.models, handgrad.app.cli; assert 'onnx' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize(
    "layer, input_shape, words",
    [
        (nn.MaxPool2d(2, 3, 1, ceil_mode=True), (1, 5, 5), "would start in the right padding"),
        (nn.MaxPool2d(2, return_indices=True), (1, 4, 4), "returns 2 outputs, but a model passes on one tensor"),
        (nn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=2), (1, 8, 8), "divisor_override with ceil_mode"),
        (nn.AdaptiveAvgPool2d((3, 4)), (1, 9, 6), "uneven windows"),
    ],
    ids=["ceil-dropped-window", "indices", "divisor-ceil", "adaptive-uneven"],
)
def test_pool_options_onnx_cannot_match_are_refused_naming_them(layer, input_shape, words, tmp_path):
    with pytest.raises(ExportError, match=words):
        export(nn.Sequential(layer), tmp_path / "pool.onnx", input_shape=input_shape)

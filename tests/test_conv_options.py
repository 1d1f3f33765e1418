"""Conv2d's torch options: groups, dilation, padding 'same' / 'valid' (uneven 'same' padded at the
bottom/right, as torch), padding_mode, unbatched input. Against torch autograd in float64 through
the reference pair, the compiled kernels' dispatch, the nn layer, the bridge, checkpoints and layer
specs; and the errors for options torch refuses."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, check_against_torch, to_numpy

import handgrad
from handgrad import functional as F
from handgrad import kernels, models, nn
from handgrad.functional import conv as C
from handgrad.kernels import conv as K

torch = pytest.importorskip("torch")

import handgrad.torch as ht  # noqa: E402

# (x shape, weight shape, options): each option alone, then mixed; (C, H, W) is an unbatched input
GRID = [
    ((2, 4, 7, 6), (6, 2, 3, 3), {"groups": 2}),
    ((2, 4, 6, 6), (4, 1, 3, 3), {"groups": 4, "padding": 1}),  # depthwise
    ((2, 4, 6, 6), (8, 1, 2, 3), {"groups": 4, "stride": (2, 1)}),  # two filters per input channel
    ((2, 2, 9, 8), (3, 2, 3, 2), {"dilation": 2}),
    ((1, 2, 9, 8), (3, 2, 3, 2), {"dilation": (3, 1), "stride": 2, "padding": (1, 2)}),
    ((2, 2, 6, 7), (3, 2, 3, 3), {"padding": "same"}),
    ((2, 2, 6, 7), (3, 2, 2, 4), {"padding": "same"}),  # even kernels: one more at the bottom/right
    ((2, 2, 6, 7), (3, 2, 2, 3), {"padding": "same", "dilation": (3, 2)}),
    ((2, 2, 6, 7), (3, 2, 3, 2), {"padding": "valid", "stride": (1, 2)}),
    ((2, 2, 5, 6), (3, 2, 3, 3), {"padding": (2, 1), "padding_mode": "reflect"}),
    ((2, 2, 5, 6), (3, 2, 2, 3), {"padding": "same", "padding_mode": "reflect"}),
    ((2, 2, 5, 6), (3, 2, 3, 3), {"padding": (3, 1), "padding_mode": "replicate", "stride": 2}),
    ((2, 2, 5, 6), (3, 2, 2, 2), {"padding": "same", "padding_mode": "replicate", "dilation": 2}),
    ((2, 2, 5, 4), (3, 2, 3, 3), {"padding": (5, 4), "padding_mode": "circular"}),  # as large as the input
    ((2, 4, 5, 6), (4, 2, 3, 3), {"padding": 1, "padding_mode": "circular", "groups": 2, "dilation": 2}),
    ((4, 5, 6), (3, 4, 3, 3), {}),
    ((4, 5, 6), (2, 2, 2, 3), {"groups": 2, "padding": "same", "padding_mode": "reflect"}),
    ((4, 8, 8), (2, 2, 3, 3), {"groups": 2, "stride": (3, 2), "padding": (2, 1), "dilation": 4}),
]
GRID_IDS = [f"x{x}-w{w[2:]}-" + "-".join(f"{k}={v}" for k, v in o.items()) for x, w, o in GRID]
NN_ARGS = ("stride", "padding", "dilation", "groups", "padding_mode")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's intra-op threads fight over shared cores; one is plenty for these sizes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def arrays(rng, x_shape, w_shape, bias=True):
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0]) if bias else None


def torch_gradients(x, weight, bias, options, grad_output):
    """torch.nn.Conv2d with these weights and options (padding_mode included): y, [dL/dx, dL/dw, dL/db]."""
    layer = torch.nn.Conv2d(
        weight.shape[1] * options.get("groups", 1), weight.shape[0], weight.shape[2:], bias=bias is not None, **options
    ).double()
    with torch.no_grad():
        for p, value in zip(layer.parameters(), (weight, bias)):
            p.copy_(torch.from_numpy(value))
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = layer(x_t)
    out.backward(torch.from_numpy(grad_output))
    grads = [x_t.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad]
    return to_numpy(out), [None if g is None else to_numpy(g) for g in grads]


@pytest.mark.parametrize("use_kernels", [False, True], ids=["reference", "kernels"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("x_shape, w_shape, options", GRID, ids=GRID_IDS)
def test_pair_matches_torch_autograd(x_shape, w_shape, options, bias, use_kernels, rng):
    x, weight, b = arrays(rng, x_shape, w_shape, bias)
    with kernels.use_kernels() if use_kernels else kernels.reference():
        out, cache = kernels.op("conv2d_forward")(x, weight, b, **options)
        grad_output = rng.standard_normal(out.shape)
        grads = kernels.op("conv2d_backward")(grad_output, cache)
    expected, expected_grads = torch_gradients(x, weight, b, options, grad_output)
    assert_close(out, expected, "output")
    for name, got, want in zip(("grad_input", "grad_weight", "grad_bias"), grads, expected_grads):
        assert (got is None) == (want is None), name
        if want is not None:
            assert_close(got, want, name)


@pytest.mark.parametrize("x_shape, w_shape, options", GRID, ids=GRID_IDS)
def test_layer_matches_torch_nn_and_finite_differences(x_shape, w_shape, options, rng):
    cin, cout = w_shape[1] * options.get("groups", 1), w_shape[0]
    layer = nn.Conv2d(cin, cout, w_shape[2:], **options)
    check_against_torch(layer, torch.nn.Conv2d(cin, cout, w_shape[2:], **options), rng.standard_normal(x_shape), rng)


@pytest.mark.parametrize("x_shape, w_shape, options", GRID, ids=GRID_IDS)
def test_twin_matches_torch_nn(x_shape, w_shape, options, rng):
    cin, cout = w_shape[1] * options.get("groups", 1), w_shape[0]
    twin = ht.Conv2d(cin, cout, w_shape[2:], dtype=torch.float64, **options)
    theirs = torch.nn.Conv2d(cin, cout, w_shape[2:], dtype=torch.float64, **options)
    theirs.load_state_dict(twin.state_dict())
    x = torch.from_numpy(rng.standard_normal(x_shape))
    ours_x, theirs_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, expected = twin(input=ours_x), theirs(theirs_x)  # torch's forward(input), by name too
    assert_close(to_numpy(out), to_numpy(expected), "output")
    upstream = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
    out.backward(upstream)
    expected.backward(upstream)
    assert_close(to_numpy(ours_x.grad), to_numpy(theirs_x.grad), "grad_input")
    for (name, p), q in zip(twin.named_parameters(), theirs.parameters()):
        assert_close(to_numpy(p.grad), to_numpy(q.grad), f"grad of {name}")


def test_functional_form_has_torchs_signature_and_runs_its_options(rng):
    import inspect

    # torch.nn.functional.conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
    parameters = inspect.signature(ht.conv2d).parameters.values()
    assert [(p.name, p.default) for p in parameters] == [
        ("input", inspect.Parameter.empty),
        ("weight", inspect.Parameter.empty),
        ("bias", None),
        ("stride", 1),
        ("padding", 0),
        ("dilation", 1),
        ("groups", 1),
    ]
    x, w, b = (torch.from_numpy(a) for a in arrays(rng, (2, 4, 8, 8), (2, 2, 3, 3)))
    options = dict(stride=(3, 2), padding=(2, 1), dilation=(4, 4), groups=2)
    assert_close(to_numpy(ht.conv2d(x, w, b, **options)), to_numpy(torch.nn.functional.conv2d(x, w, b, **options)), "")


def test_convert_switches_every_conv_configuration():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 4, 3, groups=4, padding="same", padding_mode="circular"),
        torch.nn.Conv2d(4, 2, 2, dilation=2, padding="valid", bias=False),
    )
    assert [type(m) for m in ht.convert(model)] == [ht.Conv2d, ht.Conv2d]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(1, 2, 0, 3), (3, 3, 4, 1), (0, 0, 2, 0)], ids=str)
def test_pad_matches_torch_and_unpad_is_its_adjoint(mode, pads, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    top, bottom, left, right = pads
    padded = C.conv_pad(x, pads, mode)
    expected = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom), mode=mode)
    assert_close(padded, to_numpy(expected), f"{mode} padding")
    g = rng.standard_normal(padded.shape)  # <pad(x), g> = <x, unpad(g)>
    assert np.isclose(np.sum(padded * g), np.sum(x * C.conv_unpad(g, pads, mode, x.shape[-2:])), rtol=1e-12)


def test_plain_configurations_stay_compiled(monkeypatch, rng):
    """The benchmark models' convolutions (a batch, one group, no dilation, even zero padding) run
    the compiled loops; the other options fall back to the reference."""
    calls = []
    original = C.conv2d_forward
    monkeypatch.setattr(C, "conv2d_forward", lambda *a, **k: calls.append(a) or original(*a, **k))
    x, w, b = arrays(rng, (2, 3, 8, 8), (4, 3, 3, 3))
    for options in ({"padding": 1}, {"padding": "same"}, {"padding": "valid", "stride": 2}):
        K.conv2d_forward(x, w, b, **options)
    assert calls == []
    for options in ({"dilation": 2}, {"padding": "same", "padding_mode": "reflect"}):
        K.conv2d_forward(x, w, b, **options)
    K.conv2d_forward(x, w[:, :1], b, groups=3)
    K.conv2d_forward(x[0], w, b)
    K.conv2d_forward(x, w[:, :, :2, :2], b, padding="same")
    assert len(calls) == 5


def test_sequential_runs_unfusable_convolutions_layer_by_layer(rng):
    """Conv2d -> ReLU -> MaxPool2d with options the fused kernel lacks gives the layers' own result."""
    for conv in (nn.Conv2d(2, 4, 3, dilation=2, groups=2), nn.Conv2d(2, 4, 2, padding="same", padding_mode="reflect")):
        model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)).double()
        x = rng.standard_normal((3, 2, 9, 9))
        with kernels.use_kernels():
            out = model(x)
            grad = model.backward(np.ones_like(out))
        with kernels.reference():
            assert_close(out, model(x), "output")
            assert_close(grad, model.backward(np.ones_like(out)), "grad_input")


@pytest.mark.parametrize(
    "options",
    [
        {"dilation": (2, 1), "groups": 2, "padding": "same", "padding_mode": "reflect", "bias": False},
        {"padding": "valid", "padding_mode": "circular", "stride": 2},
        {"padding": (1, 2), "padding_mode": "replicate", "groups": 4},
    ],
    ids=["dilation-groups-same-reflect", "valid-circular", "replicate-depthwise"],
)
def test_checkpoint_round_trip_keeps_the_options(options, rng, tmp_path):
    model = nn.Sequential(nn.Conv2d(4, 8, (2, 3), **options), nn.ReLU(), nn.Flatten()).double()
    handgrad.save(model, tmp_path / "conv.safetensors", input_shape=[4, 6, 7])
    loaded = handgrad.load(tmp_path / "conv.safetensors")
    conv = loaded[0]
    for name in ("stride", "padding", "dilation", "groups", "padding_mode"):
        assert getattr(conv, name) == getattr(model[0], name), name
    x = rng.standard_normal((2, 4, 6, 7))
    assert_close(loaded(x), model(x), "output after loading")


def test_default_convolution_writes_no_new_keys():
    """A plain convolution's architecture reads as before (what the C++ twin loads)."""
    (entry,) = models.architecture(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)))
    assert set(entry) == {"type", "in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"}
    (entry,) = models.architecture(nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2, groups=2, padding_mode="reflect")))
    assert (entry["dilation"], entry["groups"], entry["padding_mode"]) == ([2, 2], 2, "reflect")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"groups": 3}, "'groups' 3 must divide"),
        ({"padding": "same", "stride": [2, 2]}, "needs 'stride' 1"),
        ({"padding": "full"}, "'padding' must be"),
        ({"padding_mode": "mirror"}, "'padding_mode' must be"),
        ({"dilation": 0}, "'dilation' must be"),
    ],
)
def test_architecture_check_refuses_bad_conv_options(change, match):
    entry = {"type": "Conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": [3, 3], **change}
    with pytest.raises(handgrad.HandgradError, match=match):
        models.check_architecture([entry], (4, 8, 8))


def test_architecture_check_shapes_with_dilation_groups_and_same():
    entry = {"type": "Conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": [2, 3], "dilation": [2, 1]}
    tensors, shape = models.check_architecture([{**entry, "groups": 2, "padding": "same"}], (4, 8, 9))
    assert tensors["0.weight"] == ((6, 2, 2, 3), True) and shape == (6, 8, 9)
    assert models.check_architecture([entry], (4, 8, 9))[1] == (6, 6, 7)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: nn.Conv2d(4, 6, 3, groups=4), r"in_channels \(4\) and out_channels \(6\) must both be divisible"),
        (lambda: nn.Conv2d(2, 2, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
        (lambda: nn.Conv2d(2, 2, 3, padding="full"), "expected padding 'same', 'valid'"),
        (lambda: nn.Conv2d(2, 2, 3, padding_mode="mirror"), "expected padding_mode 'zeros'"),
        (lambda: nn.Conv2d(2, 2, 3, dilation=0), "expected dilation >= 1"),
        (lambda: nn.Conv2d(2, 2, 3, groups=0), "expected groups to be an int >= 1"),
    ],
)
def test_layer_refuses_options_torch_refuses(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "layer, shape, match",
    [
        (nn.Conv2d(2, 2, 3, padding=3, padding_mode="reflect"), (1, 2, 3, 8), "padding_mode='reflect' needs padding <"),
        (nn.Conv2d(2, 2, 3, padding=(1, 5), padding_mode="circular"), (1, 2, 6, 4), "padding <= the input's width"),
        (
            nn.Conv2d(2, 2, 3, dilation=3),
            (1, 2, 6, 8),
            r"dilated by \(3, 3\) spans \(7, 7\), is larger than the padded input \(6, 8\)",
        ),
        (nn.Conv2d(4, 2, 3, groups=2), (1, 2, 6, 6), r"expected input of shape \(N, 4, H, W\) or \(4, H, W\)"),
    ],
)
def test_layer_names_input_it_cannot_take(layer, shape, match):
    with pytest.raises(handgrad.HandgradError, match=match):
        layer(np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, w: ht.conv2d(x, w, groups=3), r"weight \(O, C/groups, kH, kW\)"),
        (lambda x, w: ht.conv2d(x, w, stride=2, padding="same"), "padding='same' needs stride 1"),
        (lambda x, w: ht.conv2d(x, w, dilation=(0, 1)), "expected dilation >= 1"),
        (lambda x, w: ht.conv2d(x, w, padding="half"), "expected padding 'same', 'valid'"),
    ],
)
def test_bridge_names_bad_options(call, match):
    x, w = torch.ones(1, 2, 5, 5, dtype=torch.float64), torch.ones(2, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(handgrad.HandgradError, match="Conv2dFunction: .*" + match):
        call(x, w)


def test_layer_spec_takes_dilation_and_groups():
    layers = models.parse_layer_spec("conv8k3d2g2-conv8d2x1g4", (2, 12, 12), 10)
    first, second = layers[0], layers[2]
    assert (first.dilation, first.groups, first.padding) == ((2, 2), 2, (2, 2))  # padding D*(K//2) keeps the size
    assert (second.dilation, second.groups, second.padding) == ((2, 1), 4, (2, 1))
    assert F.conv2d_forward(np.zeros((1, 2, 12, 12)), np.zeros((8, 1, 3, 3)), padding=(2, 2), dilation=2, groups=2)[
        0
    ].shape == (1, 8, 12, 12)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("conv8g3", "g3 must divide the 2 channels in and the 8 out"),
        ("conv8g2x2", "expected g<G>"),
        ("conv8d0", "expected d<D>"),
        ("conv8k5d4p0", "shrinks the 12x12 maps to nothing"),
        ("conv8d2d2", "d is given twice"),
    ],
)
def test_layer_spec_names_a_bad_dilation_or_groups(spec, match):
    with pytest.raises(ValueError, match=match):
        models.parse_layer_spec(spec, (2, 12, 12), 10)


def test_bridge_checkpoints_carry_the_options_both_ways(rng):
    model = nn.Sequential(nn.Conv2d(4, 6, (2, 3), padding="same", dilation=2, groups=2, padding_mode="circular"))
    module = ht.from_handgrad(model.double())
    assert (module[0].padding, module[0].dilation, module[0].groups) == ("same", (2, 2), 2)
    assert module[0].padding_mode == "circular" and type(module[0]) is ht.Conv2d
    x = rng.standard_normal((2, 4, 5, 6))
    assert_close(to_numpy(module(torch.from_numpy(x))), model(x), "torch Sequential of twins")
    back = ht.to_handgrad(module)
    assert back[0].constructor_args() == model[0].constructor_args()

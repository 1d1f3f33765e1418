"""BatchNorm's options (affine, track_running_stats, momentum=None, bias=False, (N, C, L), empty
batches), LayerNorm, Dropout2d, and the bridge's twins and functional forms of BatchNorm,
LayerNorm, Dropout, Dropout2d, Flatten and Identity, each against torch autograd in float64; dropout
by its properties (its masks are handgrad's, not torch's)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, to_numpy

import handgrad
from handgrad import functional as F
from handgrad import models, nn

torch = pytest.importorskip("torch")

import handgrad.torch as ht  # noqa: E402


def _randomise(module, rng) -> None:
    """Parameters and running statistics far from their defaults (in place, a torch module)."""
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if name.endswith("running_var"):
                value.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, tuple(value.shape))))
            elif value.is_floating_point():
                value.copy_(torch.from_numpy(rng.standard_normal(tuple(value.shape))))


def _compare_twin(make, shape, training, rng, steps=1):
    """torch.nn's layer and its twin, the same state, ``steps`` forwards and backwards: outputs, input
    gradients, parameter gradients and buffers (num_batches_tracked included) agree."""
    theirs = make(torch.nn).double().train(training)
    _randomise(theirs, rng)
    ours = make(ht).double().train(training)
    ours.load_state_dict(theirs.state_dict())
    for step in range(steps):
        x = torch.from_numpy(rng.standard_normal(shape) * 2 + 1)
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        out, expected = ours(xs[0]), theirs(xs[1])
        assert_close(to_numpy(out), to_numpy(expected), f"output, step {step}")
        upstream = torch.from_numpy(rng.standard_normal(tuple(out.shape)))
        out.backward(upstream)
        expected.backward(upstream)
        assert_close(to_numpy(xs[0].grad), to_numpy(xs[1].grad), f"input gradient, step {step}")
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert_close(to_numpy(p.grad), to_numpy(q.grad), f"gradient of {name}")
    state, expected_state = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(expected_state)
    for name, value in expected_state.items():
        assert_close(to_numpy(state[name]), to_numpy(value), f"buffer {name}", tol=1e-12)
    return theirs


def _compare_nn_layer(theirs, shape, rng):
    """handgrad's own layer, rebuilt from the torch layer as a checkpoint would (to_handgrad), against
    it: output, input and parameter gradients, buffers after the forward."""
    theirs.zero_grad()
    layer = ht.to_handgrad(torch.nn.Sequential(theirs))[0]
    layer.train(theirs.training)
    x = rng.standard_normal(shape) * 2 + 1
    xt = torch.from_numpy(x).requires_grad_(True)
    expected = theirs(xt)
    out = layer(x)
    assert_close(out, to_numpy(expected), "nn output")
    upstream = rng.standard_normal(out.shape)
    expected.backward(torch.from_numpy(upstream))
    assert_close(layer.backward(upstream), to_numpy(xt.grad), "nn input gradient")
    for (name, p), q in zip(layer.named_parameters(), theirs.parameters()):
        assert_close(p.grad, to_numpy(q.grad), f"nn gradient of {name}")
    for name, value in theirs.state_dict().items():
        assert_close(layer.state_dict()[name], to_numpy(value), f"nn buffer {name}", tol=1e-12)


# -- BatchNorm ------------------------------------------------------------------------------------------------
BATCH_NORM = [
    pytest.param(lambda m: m.BatchNorm1d(4), (6, 4), id="1d"),
    pytest.param(lambda m: m.BatchNorm1d(4), (5, 4, 3), id="1d-NCL"),
    pytest.param(lambda m: m.BatchNorm1d(4, 1e-3, 0.3, False), (5, 4, 3), id="1d-NCL-no-affine"),
    pytest.param(lambda m: m.BatchNorm1d(4, bias=False), (6, 4), id="1d-weight-only"),
    pytest.param(lambda m: m.BatchNorm1d(4, momentum=None), (6, 4, 2), id="1d-cumulative-average"),
    pytest.param(lambda m: m.BatchNorm1d(4, track_running_stats=False), (6, 4), id="1d-no-running-stats"),
    pytest.param(lambda m: m.BatchNorm2d(3, 1e-3, 0.8), (2, 3, 4, 5), id="2d-momentum"),
    pytest.param(lambda m: m.BatchNorm2d(3, momentum=None), (2, 3, 4, 4), id="2d-cumulative-average"),
    pytest.param(lambda m: m.BatchNorm2d(3, affine=False, track_running_stats=False), (2, 3, 3, 3), id="2d-bare"),
    pytest.param(lambda m: m.BatchNorm2d(3, bias=False), (2, 3, 3, 3), id="2d-weight-only"),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make, shape", BATCH_NORM)
def test_batch_norm_twin_and_layer_agree_with_torch(make, shape, training, rng):
    theirs = _compare_twin(make, shape, training, rng, steps=3)
    _compare_nn_layer(theirs, shape, rng)


@pytest.mark.parametrize(
    "make, shape",
    [
        pytest.param(lambda m: m.BatchNorm1d(5, 1e-3, 0.3, False), (0, 5, 9), id="1d-no-affine"),
        pytest.param(lambda m: m.BatchNorm1d(5, momentum=None), (0, 5), id="1d-cumulative"),
        pytest.param(lambda m: m.BatchNorm2d(5), (0, 5, 2, 2), id="2d"),
    ],
)
def test_an_empty_batch_passes_through_and_leaves_the_statistics(make, shape, rng):
    theirs = _compare_twin(make, shape, True, rng)
    _compare_nn_layer(theirs, shape, rng)


@pytest.mark.parametrize(
    "options, affine",
    [
        pytest.param({"training": True}, True, id="train"),
        pytest.param({"training": False, "momentum": 0.7, "eps": 0.1}, True, id="eval"),
        pytest.param({"training": True, "momentum": 0.5}, False, id="no-affine"),
        pytest.param({}, False, id="defaults"),
    ],
)
def test_batch_norm_functional_form_takes_torchs_signature(options, affine, rng):
    """Output, gradients and the running statistics updated in place, as torch.nn.functional's."""
    x, weight, bias = rng.standard_normal((4, 3, 5)), rng.standard_normal(3), rng.standard_normal(3)
    running = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    upstream = torch.from_numpy(rng.standard_normal((4, 3, 5)))
    results = []
    for f in (torch.nn.functional.batch_norm, ht.batch_norm):
        stats = [torch.from_numpy(r.copy()) for r in running]
        leaves = [torch.from_numpy(a).requires_grad_(True) for a in ((x, weight, bias) if affine else (x,))]
        out = f(leaves[0], *stats, *leaves[1:], **options)
        out.backward(upstream)
        results.append([out, *stats, *(t.grad for t in leaves)])
    for got, expected in zip(*results, strict=True):
        assert_close(to_numpy(got), to_numpy(expected), "batch_norm")


def test_batch_norm_of_an_empty_one_dimensional_input_is_empty():
    stats = torch.zeros(0, dtype=torch.float64), torch.ones(0, dtype=torch.float64)
    for training in (True, False):
        assert tuple(ht.batch_norm(torch.zeros(0, dtype=torch.float64), *stats, training=training).shape) == (0,)


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda x: ht.batch_norm(x, torch.zeros(3).double(), None, training=True), "both be None", id="half-stats"
        ),
        pytest.param(lambda x: ht.batch_norm(x, None, None), "needed when training=False", id="eval-no-stats"),
        pytest.param(
            lambda x: ht.batch_norm(x, torch.zeros(4).double(), torch.ones(4).double()),
            r"running_mean of shape \(3,\)",
            id="stats-shape",
        ),
        pytest.param(
            lambda x: ht.batch_norm(x[:1, :, :1], None, None, training=True), "more than 1 value", id="one-value"
        ),
        pytest.param(
            lambda x: ht.batch_norm(x, torch.zeros(3), torch.ones(3)), "running_mean of dtype float64", id="dtype"
        ),
        pytest.param(lambda x: ht.BatchNorm2d(3).double()(x), r"\(N, C, H, W\) \(4-D\)", id="twin-rank"),
    ],
)
def test_batch_norm_bad_input_is_one_clear_error(call, match):
    with pytest.raises(handgrad.HandgradError, match=match):
        call(torch.ones(2, 3, 4, dtype=torch.float64))


def test_a_checkpoint_without_num_batches_tracked_loads(tmp_path, rng):
    from safetensors.numpy import load_file, save_file

    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, momentum=None))
    model(rng.standard_normal((5, 4)).astype(np.float32))
    handgrad.save(model, tmp_path / "new.safetensors")
    tensors = load_file(tmp_path / "new.safetensors")
    with open(tmp_path / "new.safetensors", "rb") as f:
        import json

        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    del tensors["1.num_batches_tracked"]
    save_file(tensors, tmp_path / "old.safetensors", metadata=header["__metadata__"])
    loaded = handgrad.load(tmp_path / "old.safetensors")
    assert int(loaded[1].num_batches_tracked) == 0
    np.testing.assert_array_equal(loaded[1].running_mean, model[1].running_mean)
    fresh = nn.BatchNorm1d(3)
    fresh.load_state_dict({k: v for k, v in model[1].state_dict().items() if k != "num_batches_tracked"})
    with pytest.raises(handgrad.HandgradError, match="missing keys: running_var"):
        fresh.load_state_dict({"weight": np.ones(3), "bias": np.zeros(3), "running_mean": np.zeros(3)})


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(48, bias=False, momentum=None)), id="BatchNorm1d"),
        pytest.param(nn.BatchNorm2d(3, affine=False, track_running_stats=False), id="BatchNorm2d-bare"),
        pytest.param(nn.LayerNorm([3, 4, 4], eps=1e-3, bias=False), id="LayerNorm-weight-only"),
        pytest.param(nn.LayerNorm(4, elementwise_affine=False), id="LayerNorm-no-affine"),
        pytest.param(nn.Dropout2d(0.3), id="Dropout2d"),
    ],
)
def test_checkpoints_store_and_rebuild_the_options(layer, tmp_path):
    layers = list(layer) if isinstance(layer, nn.Sequential) else [layer]
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), *layers)
    handgrad.save(model, tmp_path / "m.safetensors", input_shape=[1, 4, 4])
    loaded = handgrad.load(tmp_path / "m.safetensors")
    assert repr(loaded) == repr(model)
    assert list(loaded.state_dict()) == list(model.state_dict())


# -- LayerNorm ------------------------------------------------------------------------------------------------
LAYER_NORM = [
    pytest.param(lambda m: m.LayerNorm(5), (4, 5), id="int"),
    pytest.param(lambda m: m.LayerNorm([5], 1e-3), (4, 5, 5), id="list-eps"),
    pytest.param(lambda m: m.LayerNorm((2, 2, 5)), (4, 2, 2, 5), id="three-axes"),
    pytest.param(lambda m: m.LayerNorm((2, 5), elementwise_affine=False), (3, 2, 5), id="no-affine"),
    pytest.param(lambda m: m.LayerNorm([2, 2, 5], bias=False), (4, 2, 2, 5), id="weight-only"),
    pytest.param(lambda m: m.LayerNorm(6), (6,), id="unbatched"),
    pytest.param(lambda m: m.LayerNorm(5), (0, 5), id="empty"),
]


@pytest.mark.parametrize("make, shape", LAYER_NORM)
def test_layer_norm_twin_and_layer_agree_with_torch(make, shape, rng):
    theirs = _compare_twin(make, shape, True, rng)
    _compare_nn_layer(theirs, shape, rng)


@pytest.mark.parametrize("normalized_shape, shape", [((3,), (2, 3)), ((2, 3), (4, 2, 3)), ((4, 2, 3), (4, 2, 3))])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm_functional_form_and_its_gradients(normalized_shape, shape, affine, rng):
    x = rng.standard_normal(shape) * 3 - 1
    params = {"weight": rng.standard_normal(normalized_shape), "bias": rng.standard_normal(normalized_shape)}
    params = {"both": params, "weight": {"weight": params["weight"]}, "none": {}}[affine]
    results = []
    for f in (torch.nn.functional.layer_norm, ht.layer_norm):
        xt = torch.from_numpy(x).requires_grad_(True)
        ps = {k: torch.from_numpy(v).requires_grad_(True) for k, v in params.items()}
        out = f(xt, list(normalized_shape), **ps, eps=1e-4)
        out.backward(torch.from_numpy(np.cos(np.arange(out.numel())).reshape(out.shape)))
        results.append([out, xt.grad, *[p.grad for p in ps.values()]])
    for got, expected in zip(*results):
        assert_close(to_numpy(got), to_numpy(expected), f"layer_norm {normalized_shape}")
    report = handgrad.gradcheck(
        (
            lambda x, *p: F.layer_norm_forward(x, *p, normalized_shape=normalized_shape, eps=1e-4),
            F.layer_norm_backward,
        ),
        (x, *params.values()),
    )
    assert report.passed, report


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(lambda: nn.LayerNorm(4)(np.ones((2, 5))), r"ending in normalized_shape \(4,\)", id="shape"),
        pytest.param(lambda: nn.LayerNorm((2, 4))(np.ones(4)), r"\(\*, \*normalized_shape\)", id="rank"),
        pytest.param(lambda: nn.LayerNorm("four"), "normalized_shape to be an int", id="argument"),
        pytest.param(lambda: nn.LayerNorm(4)(np.ones((2, 4))), "dtype float32", id="dtype"),
        pytest.param(
            lambda: ht.layer_norm(torch.ones(2, 4), [4], torch.ones(3)),
            r"weight of shape normalized_shape",
            id="weight",
        ),
    ],
)
def test_layer_norm_bad_input_is_one_clear_error(call, match):
    with pytest.raises(handgrad.HandgradError, match=match):
        call()


def test_layer_spec_ln_builds_layer_norm_over_each_samples_features():
    layers = models.parse_layer_spec("conv4-ln-pool-fc16-ln", (1, 8, 8), 10)
    norms = [layer for layer in layers if isinstance(layer, nn.LayerNorm)]
    assert [n.normalized_shape for n in norms] == [(4, 8, 8), (16,)]


# -- Dropout and Dropout2d ------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
@pytest.mark.parametrize(
    "name, shape",
    [("dropout", (40, 50)), ("dropout", (7,)), ("dropout2d", (20, 30, 3, 4)), ("dropout2d", (20, 30, 5))],
)
def test_dropout_elements_are_zero_or_scaled_and_the_gradient_uses_the_mask(name, shape, p, rng):
    x = torch.from_numpy(rng.uniform(0.5, 1.5, shape)).requires_grad_(True)
    with pytest.warns(UserWarning, match="3-D") if name == "dropout2d" and len(shape) == 3 else _nothing():
        out = getattr(ht, name)(x, p)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / (1 - p), rtol=1e-15, atol=0)
    upstream = torch.from_numpy(rng.standard_normal(shape))
    out.backward(upstream)
    np.testing.assert_allclose(to_numpy(x.grad), to_numpy(torch.where(kept, upstream / (1 - p), 0.0)), rtol=1e-14)
    if name == "dropout2d":  # a channel is kept or dropped as a whole
        per_channel = kept.reshape(shape[0], shape[1], -1)
        assert torch.equal(per_channel.all(-1), per_channel.any(-1))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("name", ["dropout", "dropout2d"])
def test_dropout_p0_p1_and_eval_are_exact(name, rng):
    x = torch.from_numpy(rng.standard_normal((3, 4, 2, 2))).requires_grad_(True)
    f = getattr(ht, name)
    assert torch.equal(f(x, 0.0), x)
    assert torch.equal(f(x, 0.7, training=False), x)
    zero = f(x, 1.0)
    assert torch.equal(zero, torch.zeros_like(x))
    zero.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    twin = getattr(ht, "Dropout" if name == "dropout" else "Dropout2d")(0.6).eval()
    assert torch.equal(twin(x), x)


@pytest.mark.parametrize("name, cls", [("dropout", nn.Dropout), ("dropout2d", nn.Dropout2d)])
def test_dropout_keeps_the_mean_over_many_draws(name, cls, rng):
    """The average of 400 draws is within 5 standard errors of the input, for the twin and the layer."""
    x = rng.uniform(1, 2, (8, 6, 2, 2))
    p, draws = 0.4, 400
    twin = ht.Dropout(p) if name == "dropout" else ht.Dropout2d(p)
    for run in (lambda: to_numpy(twin(torch.from_numpy(x))), lambda: cls(p)(x)):
        mean = np.mean([run() for _ in range(draws)], axis=0)
        standard_error = x * np.sqrt(p / (1 - p) / draws)
        assert np.all(np.abs(mean - x) < 5 * standard_error)


def test_dropout_masks_follow_handgrads_seed(rng):
    x = torch.from_numpy(rng.standard_normal((5, 6)))
    handgrad.manual_seed(3)
    first = ht.Dropout()(x)
    handgrad.manual_seed(3)
    assert torch.equal(ht.dropout(x), first)


@pytest.mark.parametrize(
    "call, error, match",
    [
        pytest.param(lambda: ht.Dropout(0.5, inplace=True), ht.UnsupportedError, "inplace", id="twin"),
        pytest.param(lambda: ht.Dropout2d(inplace=True), ht.UnsupportedError, "inplace", id="twin2d"),
        pytest.param(
            lambda: ht.dropout(torch.ones(3), inplace=True), handgrad.HandgradError, "inplace=False", id="function"
        ),
        pytest.param(lambda: ht.dropout(torch.ones(3), 1.5), handgrad.HandgradError, "between 0 and 1", id="p"),
        pytest.param(lambda: ht.dropout2d(torch.ones(3, 4)), handgrad.HandgradError, "use dropout", id="rank"),
    ],
)
def test_dropout_refusals_name_the_option(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_convert_switches_the_new_twins():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.Dropout2d(0.1),
        torch.nn.Flatten(),
        torch.nn.LayerNorm(8),
        torch.nn.Dropout(),
        torch.nn.Identity(),
        torch.nn.BatchNorm1d(8, affine=False),
        torch.nn.Dropout(inplace=True),
    )
    kinds = [type(m) for m in ht.convert(model)]
    assert kinds == [
        ht.Conv2d,
        ht.BatchNorm2d,
        ht.Dropout2d,
        ht.Flatten,
        ht.LayerNorm,
        ht.Dropout,
        ht.Identity,
        ht.BatchNorm1d,
        torch.nn.Dropout,
    ]


# -- Flatten and Identity -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start_dim, end_dim, shape",
    [(1, -1, (2, 3, 4, 5)), (0, -1, (2, 3, 4)), (2, 3, (2, 3, 4, 5)), (-2, -1, (2, 3, 4)), (1, 1, (2, 3, 4))],
)
def test_flatten_twin_and_layer_agree_with_torch(start_dim, end_dim, shape, rng):
    theirs = _compare_twin(lambda m: m.Flatten(start_dim, end_dim), shape, True, rng)
    _compare_nn_layer(theirs, shape, rng)
    x = torch.from_numpy(rng.standard_normal(shape))
    assert torch.equal(ht.flatten(x, start_dim, end_dim), torch.flatten(x, start_dim, end_dim))


@pytest.mark.parametrize(
    "start_dim, end_dim, match", [(3, -1, r"start_dim must be an integer in \[-3, 2\]"), (2, 1, "comes after")]
)
def test_flatten_bad_dims_are_one_clear_error(start_dim, end_dim, match):
    with pytest.raises(handgrad.HandgradError, match=match):
        ht.Flatten(start_dim, end_dim)(torch.ones(2, 3, 4))
    with pytest.raises(handgrad.HandgradError, match=match):
        nn.Flatten(start_dim, end_dim)(np.ones((2, 3, 4)))


def test_identity_twin_passes_input_and_gradient(rng):
    theirs = _compare_twin(lambda m: m.Identity(54, unused="ignored"), (3, 4), True, rng)
    _compare_nn_layer(theirs, (3, 4), rng)

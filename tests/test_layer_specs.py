"""Layer specs (the --layers grammar), --no-bias and --init: what each token builds, the tutorial
models rebuilt from specs, errors that name the token, and specs through train, info, compare and sweep."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from conftest import train_argv

import handgrad
from handgrad import models, nn
from handgrad.app.cli import main

MNIST, DIGITS = (1, 28, 28), (1, 8, 8)


def built(spec, shape=MNIST, **kwargs):
    return models.build_model(layers=spec, input_shape=shape, **kwargs)


def same_layers(model, expected) -> bool:
    return models.architecture(model) == models.architecture(nn.Sequential(*expected))


# -- the tutorials' models ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, parameters",
    [
        ("conv8-pool-conv16k5-pool", 11_146),  # the CNN, defaults spelled out below
        ("conv8k3s1p1-maxpool2s2p0-conv16k5s1p2-maxpool2s2p0", 11_146),
        ("fc16", 12_730),  # the MLP: 784-16-10
    ],
)
def test_the_matched_tutorial_pair_from_specs(spec, parameters):
    model = built(spec)
    assert model.num_parameters() == parameters
    assert model(np.zeros((2,) + MNIST, np.float32)).shape == (2, 10)


def test_the_tutorial_cnn_spec_builds_its_layers():
    expected = [
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    ]
    assert same_layers(built("conv8-pool-conv16k5-pool"), expected)


@pytest.mark.parametrize("spec, bias", [("fc100-sigmoid-out-sigmoid", False), ("fc100nb-sigmoid-outnb-sigmoid", True)])
def test_the_sigmoid_tutorial_mlp_without_biases_has_79400_parameters(spec, bias):
    model = built(spec, bias=bias)
    assert model.num_parameters() == 784 * 100 + 100 * 10 == 79_400
    assert same_layers(
        model,
        [nn.Flatten(), nn.Linear(784, 100, bias=False), nn.Sigmoid(), nn.Linear(100, 10, bias=False), nn.Sigmoid()],
    )


def test_the_tutorial_pair_matches_torch_twins_parameter_for_parameter(rng):
    torch = pytest.importorskip("torch")
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 7 * 7, 10),
    )
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x = rng.random((3,) + MNIST, dtype=np.float32)
    for spec, twin in (("conv8-pool-conv16k5-pool", cnn), ("fc16", mlp)):
        model = built(spec)
        assert sum(p.numel() for p in twin.parameters()) == model.num_parameters()
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        with torch.no_grad():
            np.testing.assert_allclose(model(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


# -- what each token builds ----------------------------------------------------------------------
GRAMMAR_CASES = [
    (
        "conv8k5s1p2-maxpool3s2p1-fc120-sigmoid",
        MNIST,
        [
            nn.Conv2d(1, 8, 5, stride=1, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Flatten(),
            nn.Linear(8 * 14 * 14, 120),
            nn.Sigmoid(),
            nn.Linear(120, 10),
        ],
    ),
    (
        "conv4k3x5s2x1p0x2",
        MNIST,  # (28 - 3) // 2 + 1 = 13 rows, (28 + 4 - 5) // 1 + 1 = 28 columns
        [nn.Conv2d(1, 4, (3, 5), stride=(2, 1), padding=(0, 2)), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 28, 10)],
    ),
    ("conv6s2", MNIST, [nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 14 * 14, 10)]),
    ("avgpool3-fc10", MNIST, [nn.AvgPool2d(3), nn.Flatten(), nn.Linear(81, 10), nn.ReLU(), nn.Linear(10, 10)]),
    ("pool-maxpool2x1s1", DIGITS, [nn.MaxPool2d(2), nn.MaxPool2d((2, 1), stride=1), nn.Flatten(), nn.Linear(12, 10)]),
    (
        "conv8nb-fc16nb",
        DIGITS,
        [
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(512, 16, bias=False),
            nn.ReLU(),
            nn.Linear(16, 10),
        ],
    ),
    ("fc32-none", DIGITS, [nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 10)]),
    (
        "fc32-leaky_relu0.2-dropout0.1",
        DIGITS,
        [nn.Flatten(), nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Dropout(0.1), nn.Linear(32, 10)],
    ),
    ("fc16-out-tanh", DIGITS, [nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10), nn.Tanh()]),
    (
        "conv4-gelu-fc16-silu-out-softplus",
        DIGITS,
        [
            nn.Conv2d(1, 4, 3, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(256, 16),
            nn.SiLU(),
            nn.Linear(16, 10),
            nn.Softplus(),
        ],
    ),
    (
        "CONV4K5,BN,Pool",
        DIGITS,
        [nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)],
    ),
    # specs from before the grammar grew, unchanged: 'same' padding K//2 (so an even kernel adds a row)
    (
        "conv8k4-pool-fc16-tanh",
        DIGITS,
        [
            nn.Conv2d(1, 8, 4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 16),
            nn.Tanh(),
            nn.Linear(16, 10),
        ],
    ),
    (
        "conv16-pool-conv32-pool-fc128-dropout0.2",
        DIGITS,
        [
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 10),
        ],
    ),
    (
        "dropout-fc8-bn",
        DIGITS,
        [nn.Dropout(0.5), nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 10)],
    ),
]


@pytest.mark.parametrize("spec, shape, expected", GRAMMAR_CASES, ids=[c[0] for c in GRAMMAR_CASES])
def test_each_token_builds_its_layers(spec, shape, expected):
    model = built(spec, shape)
    assert same_layers(model, expected)
    assert model(np.zeros((2,) + shape, np.float32)).shape == (2, 10)
    models.check_architecture(models.architecture(model), list(shape))  # what a checkpoint would store


@pytest.mark.parametrize("spec", [c[0] for c in GRAMMAR_CASES if c[1] == MNIST])
def test_spec_models_match_torch_with_the_same_weights(spec, rng):
    torch = pytest.importorskip("torch")
    twins = {
        "Conv2d": lambda a: torch.nn.Conv2d(**a),
        "MaxPool2d": lambda a: torch.nn.MaxPool2d(**a),
        "AvgPool2d": lambda a: torch.nn.AvgPool2d(**a),
        "Linear": lambda a: torch.nn.Linear(**a),
        "Flatten": lambda a: torch.nn.Flatten(**a),
        "ReLU": lambda a: torch.nn.ReLU(),
        "Sigmoid": lambda a: torch.nn.Sigmoid(),
    }
    model = built(spec)
    twin = torch.nn.Sequential(
        *[
            twins[e.pop("type")]({k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
            for e in models.architecture(model)
        ]
    )
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = rng.random((2,) + MNIST, dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model(x), twin(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_tokens_are_read_without_an_input_shape():
    tokens = models.tokenize_layer_spec("conv8k3x5s2p1nb-maxpool3s2-fc120-leaky_relu0.1-out")
    assert [t.kind for t in tokens] == ["conv", "maxpool", "fc", "activation", "out"]
    conv, pool = tokens[0], tokens[1]
    assert (conv.size, conv.kernel, conv.stride, conv.padding, conv.bias) == (8, (3, 5), (2, 2), (1, 1), False)
    assert (pool.kernel, pool.stride, pool.padding) == ((3, 3), (2, 2), None)
    assert tokens[3].activation is nn.LeakyReLU and tokens[3].value == 0.1


# -- errors: the token, its position, what is allowed ------------------------------------------------
@pytest.mark.parametrize(
    "spec, shape, fragment",
    [
        (
            "conv8-maxpol3",
            MNIST,
            "token 'maxpol3' (number 2) in 'conv8-maxpol3': unknown token; expected conv<C>[k<K>]"
            "[s<S>][p<P>][nb], maxpool[<K>][s<S>][p<P>]",
        ),
        ("conv8-maxpol3", MNIST, "dropout[<P>], none, or an activation ("),  # the registered ones, user ones too
        ("conv8-maxpol3", MNIST, "); did you mean 'maxpool'?"),
        (
            "conv8q3",
            MNIST,
            "token 'conv8q3' (number 1) in 'conv8q3': unexpected 'q3' after 'conv8'; conv takes k<K>, "
            "s<S>, p<P>, nb (the form is conv<C>[k<K>][s<S>][p<P>][nb])",
        ),
        ("fc16-k5", MNIST, "token 'k5' (number 2) in 'fc16-k5': unknown token"),
        ("conv8k3k5", MNIST, "k is given twice"),
        (
            "conv8k",
            MNIST,
            "expected k<K> with a size from 1 to 1048576, or k<H>x<W> (e.g. k5 or k3x5), the value is missing",
        ),
        ("conv8s0", MNIST, "expected s<S> with a size from 1 to 1048576, or s<H>x<W> (e.g. s2 or s2x1), got '0'"),
        ("conv8k3x0", MNIST, "expected k<K> with a size from 1 to 1048576, or k<H>x<W> (e.g. k5 or k3x5), got '3x0'"),
        ("pool0", MNIST, "expected pool<K> with a size from 1 to 1048576, or pool<H>x<W>"),
        (
            "pool3p2",
            MNIST,
            "token 'pool3p2' (number 1) in 'pool3p2': padding 2x2 must be at most half of the 3x3 window",
        ),
        ("poolnb", MNIST, "unexpected 'nb' after 'pool'; maxpool takes s<S>, p<P>"),
        ("bn2", MNIST, "bn takes no size"),
        ("out5", MNIST, "out takes no size (it has one output per class)"),
        (
            "fc16-tanh-tanh",
            MNIST,
            "token 'tanh' (number 3) in 'fc16-tanh-tanh': an activation must follow conv, fc or out directly",
        ),
        ("conv8-bn-sigmoid", MNIST, "token 'sigmoid' (number 3)"),
        ("fc8-out-none", MNIST, "token 'none' (number 3) in 'fc8-out-none': none must follow a conv or fc directly"),
        (
            "out-fc8",
            MNIST,
            "token 'fc8' (number 2) in 'out-fc8': out must be the last layer token (only an activation may follow it)",
        ),
        ("fc8-relu6", MNIST, "relu takes no parameter; only leaky_relu takes one, its slope (e.g. leaky_relu0.1)"),
        ("fc8-conv4", MNIST, "token 'conv4' (number 2) in 'fc8-conv4': a conv must come before any fc"),
        (
            "conv4k9p0",
            DIGITS,
            "token 'conv4k9p0' (number 1) in 'conv4k9p0': it shrinks the 8x8 maps to nothing (input "
            "8x8): its 9x9 window is larger than the maps",
        ),
        (
            "conv4-pool3s3-pool3",
            DIGITS,
            "token 'pool3' (number 3) in 'conv4-pool3s3-pool3': it shrinks the 2x2 maps to nothing (input 8x8)",
        ),
        ("conv4k1s1048576", DIGITS, None),  # a stride larger than the maps is fine: one output row and column
    ],
)
def test_a_bad_token_is_named_with_its_position_and_what_is_allowed(spec, shape, fragment):
    if fragment is None:
        assert built(spec, shape)(np.zeros((1,) + shape, np.float32)).shape == (1, 10)
        return
    with pytest.raises(ValueError, match=re.escape(fragment)):
        built(spec, shape)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("conv8-pool-maxpol3", "bad layer spec token 'maxpol3' (number 3) in 'conv8-pool-maxpol3': unknown token"),
        (
            "conv8k5s1p2-fc16-avgpool",
            "bad layer spec token 'avgpool' (number 3) in 'conv8k5s1p2-fc16-avgpool': a pool must come before any fc",
        ),
    ],
)
def test_the_cli_reports_a_bad_spec_in_one_line(tmp_path, capsys, spec, fragment):
    assert main(["train", "--dataset", "digits", "--layers", spec, "--quiet", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error: ") and err.count("\n") == 1 and fragment in err


def test_layers_help_points_to_the_readme_grammar(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "conv8k5s1p2-maxpool3s2p1-fc120-sigmoid" in text and "README, 'Layer specs'" in text


# -- --no-bias and --init -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(models.MODELS))
def test_no_bias_drops_every_bias_of_a_named_model(name):
    with_bias, without = models.build_model(name), models.build_model(name, bias=False)
    biases = sum(
        m.out_features if isinstance(m, nn.Linear) else m.out_channels
        for m in with_bias
        if isinstance(m, (nn.Linear, nn.Conv2d))
    )
    assert without.num_parameters() == with_bias.num_parameters() - biases
    assert not any(k.endswith("bias") for k in without.state_dict())
    rebuilt = models.from_architecture(models.architecture(without))
    rebuilt.load_state_dict(without.state_dict())
    x = np.random.default_rng(0).random((2,) + MNIST, dtype=np.float32)
    np.testing.assert_array_equal(rebuilt(x), without(x))


def test_the_named_sigmoid_mlp_without_biases_is_the_tutorials_79400():
    assert models.build_model("mlp-sigmoid", bias=False).num_parameters() == 79_400


#: init -> expected std of a weight (fan_in, fan_out), uniform (False: normal), bias drawn (not 0)
INIT_STD = {
    "default": (lambda fi, fo: 1 / math.sqrt(3 * fi), True, True),
    "kaiming_uniform": (lambda fi, fo: math.sqrt(2 / fi), True, False),
    "kaiming_normal": (lambda fi, fo: math.sqrt(2 / fi), False, False),
    "xavier_uniform": (lambda fi, fo: math.sqrt(2 / (fi + fo)), True, False),
    "xavier_normal": (lambda fi, fo: math.sqrt(2 / (fi + fo)), False, False),
    "normal": (lambda fi, fo: 0.01, False, False),
    "zeros": (lambda fi, fo: 0.0, True, False),
}


def test_every_init_choice_has_its_expectation():
    assert set(INIT_STD) == set(models.INITS)


@pytest.mark.parametrize("spec, fan_in, fan_out", [("fc64", 784, 64), ("conv64k5", 25, 64 * 25)])
@pytest.mark.parametrize("init", list(INIT_STD))
def test_init_draws_weights_with_its_formula_and_zero_biases(init, spec, fan_in, fan_out):
    std, uniform, bias_drawn = INIT_STD[init]
    layer = built(spec, init=init)[0 if spec.startswith("conv") else 1]
    w, b = layer.weight.data, layer.bias.data
    expected = std(fan_in, fan_out)
    assert w.std() == pytest.approx(expected, rel=0.08, abs=1e-12)
    if uniform and expected:
        bound = expected * math.sqrt(3)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    if not uniform:
        assert np.abs(w).max() > 2.5 * expected  # tails a uniform of that std never reaches
    assert (np.abs(b).max() > 0) == bias_drawn


def test_default_init_leaves_the_weights_as_built():
    handgrad.manual_seed(5)
    a = models.build_model("lenet5").state_dict()
    handgrad.manual_seed(5)
    b = models.build_model("lenet5", init="default").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_init_is_seeded():
    handgrad.manual_seed(5)
    a = models.build_model("tiny-cnn", init="xavier_normal").state_dict()
    handgrad.manual_seed(5)
    b = models.build_model("tiny-cnn", init="xavier_normal").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_an_unknown_init_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown init 'he'; known: default, kaiming_uniform"):
        models.build_model("tiny-mlp", init="he")


# -- specs through the command line ----------------------------------------------------------------------
def test_train_records_spec_bias_and_init_and_info_names_the_spec(tmp_path, capsys):
    run = tmp_path / "run"
    spec = "fc100-sigmoid-out-sigmoid"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--layers",
                spec,
                "--no-bias",
                "--init",
                "xavier_normal",
                "--epochs",
                "1",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    config = json.loads((run / "manifest.json").read_text())["config"]
    assert (config["layers"], config["bias"], config["init"]) == (spec, False, "xavier_normal")
    model = handgrad.load(run / "best.safetensors")
    assert model.metadata["layers"] == spec and model.metadata["model"] == "custom"
    assert model.num_parameters() == 64 * 100 + 100 * 10
    capsys.readouterr()
    assert main(["info", str(run / "best.safetensors")]) == 0
    assert f"  layers: {spec}\n" in capsys.readouterr().out


def test_a_named_model_run_has_no_spec_in_its_checkpoint(tmp_path, capsys):
    assert main(train_argv(tmp_path / "r", model="linear")) == 0
    assert "layers" not in handgrad.load(tmp_path / "r" / "best.safetensors").metadata
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r" / "best.safetensors")]) == 0
    assert "layers:" not in capsys.readouterr().out


def test_compare_trains_specs_beside_named_models(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    specs = ["fc16", "conv4-pool-fc8nb"]
    assert (
        main(
            [
                "compare",
                "tiny-mlp",
                *specs,
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--train-size",
                "300",
                "--init",
                "kaiming_normal",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert [m["model"] for m in saved["models"]] == ["tiny-mlp", *specs]
    counts = [m["parameters"] for m in saved["models"]]
    assert counts == [64 * 16 + 16 + 16 * 10 + 10] * 2 + [4 * 10 + 4 * 4 * 4 * 8 + 8 * 10 + 10]
    for name in specs:
        config = json.loads((tmp_path / name / "manifest.json").read_text())["config"]
        assert (config["layers"], config["init"]) == (name, "kaiming_normal")
    assert "| conv4-pool-fc8nb |" in capsys.readouterr().out


def test_compare_refuses_a_spec_that_does_not_fit_the_data_before_training(tmp_path, capsys):
    assert (
        main(["compare", "tiny-mlp", "pool-pool-pool-pool", "--dataset", "digits", "--out", str(tmp_path / "c")]) == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "token 'pool' (number 4) in 'pool-pool-pool-pool': it shrinks the 1x1 maps" in err
    assert not (tmp_path / "c").exists()


def test_sweep_runs_specs_and_inits(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert (
        main(
            [
                "sweep",
                "--model",
                "fc16,conv4-pool",
                "--init",
                "xavier_uniform",
                "--no-bias",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--train-size",
                "200",
                "--workers",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert [r["model"] for r in rows] == ["fc16", "conv4-pool"]
    assert [r["parameters"] for r in rows] == [64 * 16 + 16 * 10, 4 * 9 + 4 * 4 * 4 * 10]
    for r in rows:
        config = json.loads((tmp_path / r["run"] / "manifest.json").read_text())["config"]
        assert (config["layers"], config["bias"], config["init"]) == (r["model"], False, "xavier_uniform")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["compare", "fc16", "resnet"], "unknown model(s) resnet: not a named model (known: linear"),
        (
            ["compare", "conv8q"],
            "nor a layer spec (bad layer spec token 'conv8q' (number 1) in 'conv8q': unexpected 'q'",
        ),
        (["sweep", "--model", "fc16,maxpol3"], "--model: unknown value 'maxpol3': not a named model"),
        (["sweep", "--init", "default,he"], "--init: unknown value 'he'; known: default, kaiming_uniform"),
    ],
)
def test_compare_and_sweep_refuse_what_is_neither_a_model_nor_a_spec(tmp_path, capsys, argv, fragment):
    assert main(argv + ["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("handgrad: error: ") and err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "spec, shape",
    [("conv8-adaptiveavg1-fc16", (8, 1, 1)), ("conv8-pool-adaptiveavg3x2", (8, 3, 2)), ("adaptiveavg7", (1, 7, 7))],
)
def test_adaptiveavg_token_builds_an_adaptive_average_pool(spec, shape):
    layers = models.parse_layer_spec(spec, (1, 28, 28), 10)
    pool = next(layer for layer in layers if isinstance(layer, nn.AdaptiveAvgPool2d))
    assert pool.output_size == shape[1:]
    x = np.zeros((2, 1, 28, 28), np.float32)
    upto = layers[: layers.index(pool) + 1]
    assert nn.Sequential(*upto)(x).shape == (2,) + shape


@pytest.mark.parametrize(
    "spec, words",
    [
        ("conv8-adaptiveavg", "expected adaptiveavg<N>"),
        ("conv8-adaptiveavg2s1", "adaptiveavg takes no options"),
        ("fc8-adaptiveavg1", "a pool must come before any fc"),
    ],
)
def test_bad_adaptiveavg_token_is_refused_naming_it(spec, words):
    with pytest.raises(ValueError, match=words):
        models.parse_layer_spec(spec, (1, 28, 28), 10)

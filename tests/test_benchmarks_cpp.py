"""The C++ twin's parts of the benchmark report: its per-piece profile table, its ratio cells and
targets, and `handgrad-cpp bench --profile --json` feeding them (skipped when cpp/ is not built)."""

from __future__ import annotations

import pytest

bench = pytest.importorskip("benchmarks.__main__")


def profile(forward, backward):
    return [
        {"layer": "0: Conv2d(1, 8)", "forward_ms": forward, "backward_ms": backward},
        {"layer": "loss (forward and backward)", "forward_ms": 0.5, "backward_ms": 0.0},
    ]


def test_cpp_profile_table_gives_medians_ranges_and_shares():
    rows = bench.cpp_profile_table("tiny-cnn", [profile(1.0, 2.0), profile(3.0, 4.0), profile(2.0, 3.0)])
    assert rows[0] == "### tiny-cnn (C++)"
    conv = next(r for r in rows if r.startswith("| 0: Conv2d"))
    # medians 2.0 and 3.0 of 5.5 ms in all
    assert conv == "| 0: Conv2d(1, 8) | 2.000 (1.000-3.000) | 3.000 (2.000-4.000) | 91% |"
    loss = next(r for r in rows if r.startswith("| loss"))
    assert loss == "| loss (forward and backward) | 0.500 (0.500-0.500) | - | 9% |"
    assert "| **sum** | | | 5.500 ms |" in rows


@pytest.mark.parametrize(
    ("cpp", "torch", "target", "met"),
    [([30.0, 20.0, 15.0], [10.0, 10.0, 10.0], 1.5, True), ([9.0, 8.0, 10.0], [10.0, 10.0, 10.0], 1.0, False)],
)
def test_cpp_ratio_is_the_median_of_per_repeat_ratios_and_enters_the_targets(cpp, torch, target, met):
    headline = []
    text = bench._cpp_ratio({"cpp": cpp, "torch": torch}, [0, 1, 2], headline, ("lenet5", "train", 64, target))
    ratio = sorted(c / t for c, t in zip(cpp, torch, strict=True))[1]
    assert text.startswith(f"{ratio:.2f}x")
    assert headline == [("lenet5", "train", 64, pytest.approx(ratio), target)]
    assert (headline[0][3] >= target) is met


def test_cpp_ratio_without_a_cpp_timing_is_a_dash():
    headline = []
    assert bench._cpp_ratio({"torch": [1.0]}, [0], headline, ("mlp", "inference", 1000, 1.0)) == "-"
    assert headline == []


@pytest.mark.skipif(not bench.CPP.is_file(), reason=f"the C++ twin is not built ({bench.CPP} is missing)")
@pytest.mark.parametrize("model", ["tiny-mlp", "tiny-cnn"])
def test_handgrad_cpp_bench_profile_names_every_layer_the_loss_and_the_optimizer(model):
    res = bench.cpp_bench(model, 8, 2, profile=True)
    labels = [piece["layer"] for piece in res["profile"]]
    assert labels[-2:] == ["loss (forward and backward)", "optimizer step"]
    assert all(piece["forward_ms"] >= 0 and piece["backward_ms"] >= 0 for piece in res["profile"])
    rows = bench.cpp_profile_table(model, [res["profile"]])
    assert len(rows) == 4 + len(labels) + 2  # title, blank, header, rule; one row each; sum; blank


@pytest.mark.skipif(not bench.CPP.is_file(), reason=f"the C++ twin is not built ({bench.CPP} is missing)")
def test_handgrad_cpp_bench_inference_times_the_forward_alone():
    res = bench.cpp_bench("tiny-mlp", 50, 2, inference=True)
    assert res["mode"] == "inference" and res["batch_size"] == 50 and res["samples_per_s"] > 0
    assert "profile" not in res

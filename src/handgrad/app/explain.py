"""Watch one step of backprop, layer by layer, with every gradient checked as it is computed.

``explain(model, x, target)`` runs a float64 copy of a Sequential model on one small minibatch:
forward through each layer (shapes, the formula from the op's docstring, statistics of the
output), the loss, then backward in reverse (statistics of the gradient arriving from above, and of
each gradient the layer computes by hand). Beside each hand-computed gradient it puts

* the central finite difference of that one layer, f(v) = sum(layer(...) * G) with G the gradient
  that actually arrived from above: (f(v + eps) - f(v - eps)) / (2 eps) for a sample of elements
  (half where the gradient is largest, half at random); an element where the one-sided differences
  disagree sits on a kink (a ReLU zero tying in a max-pool window) and is set aside, not compared;
* and, when torch is installed, the gradient torch autograd computes for the same layer built from
  the torch reference of its op (``functional.SPECS``), over the whole tensor,

each with its relative error max|hand - reference| / max|reference|. ``print(explain(...))`` shows
the walk; ``handgrad explain`` runs it from the command line on a named model.
"""

from __future__ import annotations

import copy
import inspect
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .. import _random, nn
from .._grad_mode import no_grad
from ..errors import HandgradError
from ..functional import REQUIRED, SPECS
from ..gradcheck import (
    EPS,
    Comparison,
    autograd_grads,
    compare,
    finite_differences,
    matches_autograd,
    matches_finite_differences,
)


def _paragraphs(fn) -> list:
    doc = inspect.cleandoc(fn.__doc__ or "")
    return [textwrap.dedent(p).strip("\n") for p in doc.split("\n\n") if p.strip()]


def forward_formula(layer) -> str:
    """The first paragraph of the docstring of the functional op the layer runs (or of the layer)."""
    ops = _ops(layer)
    return (_paragraphs(ops[0]) if ops else _paragraphs(type(layer)) or [type(layer).__name__])[0]


def backward_formula(layer) -> str:
    """The gradient formulas from the op's backward docstring (its 'Returns' note left out)."""
    ops = _ops(layer)
    if not ops:
        lines = [line for p in _paragraphs(type(layer)) for line in p.splitlines() if "dL/d" in line or "grad" in line]
        return "\n".join(lines) or "(no formula documented)"
    return "\n".join(p for p in _paragraphs(ops[1]) if not p.startswith("Returns"))


def _ops(layer):
    """(forward, backward) of the functional op behind ``layer`` (its spec's pair), or None."""
    spec = SPECS.get(getattr(layer, "op", None))
    return None if spec is None else (spec.forward, spec.backward)


def stats(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "zeros": float((a == 0).mean()),
    }


def _fmt_stats(s: dict) -> str:
    zeros = f"  zeros {100 * s['zeros']:.0f}%" if s["zeros"] > 0 else ""
    return f"mean {s['mean']:+.3e}  std {s['std']:.3e}  min {s['min']:+.3e}  max {s['max']:+.3e}{zeros}"


@dataclass
class GradientCheck:
    """One hand-computed gradient and its two references (``handgrad.gradcheck`` compares)."""

    name: str  # grad_input, weight, bias
    shape: tuple
    stats: dict
    checked: int  # elements compared with finite differences
    kinks: int  # elements set aside: not differentiable there
    finite_differences: Comparison  # hand (got) against finite differences (expected), checked elements
    autograd: Comparison | None  # hand against autograd, whole tensor; None: torch not used or no reference
    example: tuple  # (index, hand, finite difference, autograd or None)

    @property
    def fd_rel_error(self) -> float:
        return self.finite_differences.rel_error

    @property
    def fd_abs_error(self) -> float:  # a true gradient of 0 (a conv bias before BatchNorm) has no relative error
        return self.finite_differences.abs_error

    @property
    def torch_rel_error(self) -> float | None:
        return None if self.autograd is None else self.autograd.rel_error

    @property
    def torch_abs_error(self) -> float | None:
        return None if self.autograd is None else self.autograd.abs_error

    @property
    def passed(self) -> bool:
        return matches_finite_differences(self.finite_differences) and (
            self.autograd is None or matches_autograd(self.autograd)
        )

    def describe(self) -> str:
        kinks = f", {self.kinks} at kinks set aside" if self.kinks else ""
        autograd = "n/a" if self.torch_rel_error is None else f"{self.torch_rel_error:.1e}"
        index, hand, fd, auto = self.example
        auto_text = "" if auto is None else f"  autograd {auto:+.8e}"
        return (
            f"{self.name:<11} {str(self.shape):<16} {_fmt_stats(self.stats)}\n"
            f"{'':<11} rel. error vs finite differences {self.fd_rel_error:.1e} ({self.checked} elements{kinks}), "
            f"vs autograd {autograd}   {'ok' if self.passed else 'FAIL'}\n"
            f"{'':<11} e.g. at {index}: hand {hand:+.8e}  finite diff {fd:+.8e}{auto_text}"
        )


@dataclass
class LayerStep:
    """One layer (or the loss) in the walk."""

    name: str  # "[3] ReLU()" or "[loss] CrossEntropyLoss()"
    input_shape: tuple
    output_shape: tuple
    forward_formula: str
    backward_formula: str
    output_stats: dict
    grad_output_stats: dict | None = None
    grads: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.grads)


@dataclass
class Explanation:
    """The walk: ``steps`` in forward order (the loss last); ``passed`` when every gradient agrees."""

    description: str
    loss: float
    steps: list
    eps: float
    samples: int
    torch_version: str | None

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)

    def failures(self) -> list:
        return [(s.name, g.name) for s in self.steps for g in s.grads if not g.passed]

    def __str__(self) -> str:
        def indent(text, pad="      "):
            return "\n".join(pad + line for line in text.splitlines())

        per = "every element" if self.samples <= 0 else f"up to {self.samples} elements per tensor"
        lines = [
            self.description,
            f"finite differences: central, eps {self.eps:g}, float64, {per}; autograd: "
            + (f"torch {self.torch_version}" if self.torch_version else "torch not installed"),
            "",
            "FORWARD",
        ]
        for s in self.steps:
            lines += [
                f"  {s.name}",
                f"      {s.input_shape} -> {s.output_shape}",
                indent(s.forward_formula),
                f"      output: {_fmt_stats(s.output_stats)}" if s.output_shape else f"      loss = {self.loss:.6f}",
            ]
        lines += ["", "BACKWARD"]
        for s in reversed(self.steps):
            lines += [f"  {s.name}", indent(s.backward_formula)]
            if s.grad_output_stats is not None:
                lines.append(f"      grad_output {_fmt_stats(s.grad_output_stats)}")
            lines += [indent(g.describe()) for g in s.grads]
            if not s.grads:
                lines.append("      (no gradient computed: nothing below needs it)")
        checks = [g for s in self.steps for g in s.grads]
        worst = max(checks, key=lambda g: g.fd_rel_error) if checks else None
        if self.passed:
            lines += [
                "",
                f"PASSED: all {len(checks)} gradients agree with finite differences"
                + (" and autograd" if self.torch_version else "")
                + (f" (worst {worst.fd_rel_error:.1e})" if worst else ""),
            ]
        else:
            lines += [
                "",
                f"FAILED: {len(self.failures())} of {len(checks)} gradients disagree: "
                + ", ".join(f"{layer} {name}" for layer, name in self.failures()),
            ]
        return "\n".join(lines)


def _pick(hand, samples, rng):
    """Flat indices to check: all, or half at the largest |gradient| and half at random."""
    size = hand.size
    if samples <= 0 or samples >= size:
        return np.arange(size)
    top = np.argsort(-np.abs(hand).ravel(), kind="stable")[: samples // 2]
    rest = np.setdiff1d(np.arange(size), top)
    return np.concatenate([top, rng.choice(rest, samples - len(top), replace=False)])


def _torch_reference(layer, target=None):
    """A function (x, params) -> output built with torch for ``layer``, or None: the torch reference of
    the op it runs, with the layer's options (its attributes of the same names); for a layer of
    handgrad's that runs no op (Flatten, Identity), its torch.nn namesake built with the same arguments.
    None where an option has no value on the layer (dropout's generator: its mask is not redrawn)."""
    import torch

    spec = SPECS.get(getattr(layer, "op", None))
    if spec is None:
        namesake = getattr(torch.nn, type(layer).__name__, None)
        if namesake is None or getattr(nn, type(layer).__name__, None) is not type(layer) or list(layer.parameters()):
            return None
        module = namesake(**layer.constructor_args()).train(layer.training)
        return lambda x, p: module(x)
    options = {}
    for name, default in spec.options:
        # a property of Module's (dtype: its parameters') is not the op's option of that name
        if hasattr(layer, name) and not isinstance(getattr(type(layer), name, None), property):
            options[name] = getattr(layer, name)
        elif default is REQUIRED:
            return None
    if target is not None:
        options["target"] = torch.from_numpy(target)
    reference = spec.torch_reference(torch)
    return lambda x, p: reference(x, **p, **options)


def _torch_grads(layer, x, params, upstream, target=None):
    """{name: gradient} from torch autograd for the layer's reference, or None without one."""
    reference = _torch_reference(layer, target)
    if reference is None:
        return None
    names = list(params)
    grads = autograd_grads(
        lambda x, *values: reference(x, dict(zip(names, values))), [x] + [params[n] for n in names], upstream
    )
    return dict(zip(["grad_input"] + names, grads))


def _check(layer, x, upstream, hand: dict, params: dict, seed, samples, eps, rng, with_torch, target=None) -> list:
    """Compare each hand gradient of ``layer`` (at input x, with ``upstream`` from above) with finite
    differences and, ``with_torch``, autograd."""
    x = np.array(x, dtype=np.float64, order="C")  # a C-ordered copy: its elements are nudged in place
    for p in params.values():
        p.data = np.ascontiguousarray(p.data)

    def f():
        _random.manual_seed(seed)  # the same dropout mask on every evaluation
        with no_grad():
            out = layer(x, target) if target is not None else layer(x)
        return float(np.sum(np.asarray(out, np.float64) * upstream))

    auto = (
        _torch_grads(layer, x, {n: params[n].data for n in hand if n != "grad_input"}, upstream, target)
        if with_torch
        else None
    )
    checks = []
    for name, grad in hand.items():
        array = x if name == "grad_input" else params[name].data
        indices = _pick(grad, samples, rng)
        numeric, kink = finite_differences(f, array, indices, eps)
        keep = ~kink
        hand_values = grad.reshape(-1)[indices]
        fd = compare(hand_values[keep], numeric[keep])
        auto_grad = None if auto is None else auto[name]
        k = int(np.flatnonzero(keep)[fd.index[0]]) if keep.any() else 0  # the worst element checked
        flat_index = int(indices[k])
        example = (
            tuple(int(i) for i in np.unravel_index(flat_index, grad.shape)),
            float(hand_values[k]),
            float(numeric[k]),
            None if auto_grad is None else float(auto_grad.reshape(-1)[flat_index]),
        )
        checks.append(
            GradientCheck(
                name,
                tuple(grad.shape),
                stats(grad),
                int(keep.sum()),
                int(kink.sum()),
                fd,
                None if auto_grad is None else compare(grad, auto_grad),
                example,
            )
        )
    return checks


def explain(
    model,
    x,
    target,
    loss: str = "cross_entropy",
    samples: int = 16,
    eps: float = EPS,
    seed: int = 0,
    use_torch: bool | None = None,
    description: str | None = None,
    reduction: str | None = None,
) -> Explanation:
    """One forward and backward pass of ``model`` (an nn.Sequential; a float64 copy is used, the
    model itself is untouched) on ``x`` with class indices ``target``, every gradient checked.
    ``loss``: "cross_entropy" or "mse" (on one-hot targets), with ``reduction`` as training takes
    them (training.Objective; None: the loss's default, the one training uses by default).
    ``samples``: elements per tensor for finite differences (0: all). ``use_torch``: None uses
    torch when it is installed.

    Example::

        >>> report = explain(build_model("tiny-cnn", (1, 8, 8)), x[:4], y[:4])
        >>> print(report)           # the walk; report.passed, report.steps[i].grads[j].fd_rel_error
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"explain walks an nn.Sequential layer by layer, got {type(model).__name__}")
    from .training import Objective

    objective = Objective(loss, 1, reduction)  # checks both; the classes are known after the forward
    torch_version = None
    if use_torch is not False:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            if use_torch:
                raise
    saved_state = _random.get_state()
    model = copy.deepcopy(model).double()
    layers = list(model)
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    try:
        # forward: keep each layer's input; each layer's cache is kept by the layer itself
        inputs, h, steps = [], x, []
        for i, layer in enumerate(layers):
            inputs.append(h)
            _random.manual_seed(seed + i)
            out = layer(h)
            steps.append(
                LayerStep(
                    f"[{i}] {repr(layer).splitlines()[0]}",
                    tuple(h.shape),
                    tuple(out.shape),
                    forward_formula(layer),
                    backward_formula(layer),
                    stats(out),
                )
            )
            h = out
        objective = Objective(loss, h.shape[1], objective.reduction)
        loss_target = objective.targets(h, target)
        value = float(objective(h, target))
        loss_fn = objective.fn  # the loss layer; 'batchmean' is its sum times 1/N, the gradient arriving
        scaled = f" / {objective.scale:g} (batchmean)" if objective.reduction == "batchmean" else ""
        loss_step = LayerStep(
            f"[loss] {loss_fn!r}{scaled}", tuple(h.shape), (), forward_formula(loss_fn), backward_formula(loss_fn), {}
        )
        grad = objective.backward()
        with_torch = torch_version is not None
        loss_step.grads = _check(
            loss_fn,
            h,
            np.float64(1.0 / objective.scale),
            {"grad_input": grad},
            {},
            seed,
            samples,
            eps,
            rng,
            with_torch,
            target=loss_target,
        )
        # backward, layer by layer; each layer is checked right after its own backward ran
        for i in reversed(range(len(layers))):
            layer, step = layers[i], steps[i]
            step.grad_output_stats = stats(grad)
            layer.zero_grad()
            grad_input = layer.backward(grad)
            params = dict(layer.named_parameters())
            hand = {"grad_input": grad_input} if grad_input is not None else {}
            hand.update({name: p.grad for name, p in params.items() if p.grad is not None})
            step.grads = _check(layer, inputs[i], grad, hand, params, seed + i, samples, eps, rng, with_torch)
            grad = grad_input
            if grad is None:
                break
    finally:
        _random.set_state(saved_state)
    if description is None:
        description = (
            f"one step of backprop: a minibatch {tuple(x.shape)}, float64, {len(layers)} layers, "
            f"{loss} loss ({objective.reduction})"
        )
    return Explanation(description, value, steps + [loss_step], eps, samples, torch_version)


def explain_named(
    model: str = "tiny-cnn",
    dataset: str = "digits",
    batch_size: int = 4,
    checkpoint=None,
    data_dir=None,
    seed: int = 0,
    **options,
) -> Explanation:
    """``explain`` on a named model (fresh, seeded) or a checkpoint, with the first ``batch_size``
    test images of the dataset, normalised with the training statistics."""
    from ..data import Normalizer, load_dataset
    from ..models import build_model
    from ..serialization import load
    from .evaluation import checkpoint_test_set
    from .training import Objective

    if checkpoint is not None:
        net = load(checkpoint)
        meta = net.metadata
        own = meta.get("loss") or "cross_entropy"
        if options.get("loss") not in (None, own):
            raise HandgradError(
                str(checkpoint),
                f"--loss {options['loss']}: the model was trained with {own}, "
                f"and is explained with it (leave --loss out)",
            )
        options["loss"] = own
        options["reduction"] = options.get("reduction") or meta.get("reduction")
        ds, test_x = checkpoint_test_set(net, dataset, data_dir)
        x, name = test_x[:batch_size], str(checkpoint)
    else:
        ds = load_dataset(dataset, data_dir=data_dir)
        x = Normalizer.fit(ds.train_images)(ds.test_images[:batch_size])
        _random.manual_seed(seed)
        net = build_model(model, ds.train_images.shape[1:], ds.num_classes)
        name = model
    options["loss"] = options.get("loss") or "cross_entropy"
    y = ds.test_labels[:batch_size]
    description = (
        f"explain {name} on {ds.name}: one step of backprop on the first {len(y)} test images "
        f"{tuple(x.shape[1:])} (labels {', '.join(ds.classes[k] for k in y)}), float64, {options['loss']} loss "
        f"({Objective(options['loss'], 1, options.get('reduction')).reduction})"
    )
    return explain(net, x, y, seed=seed, description=description, **options)

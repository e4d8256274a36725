"""Propagation methods against their reference libraries: LRP vs Zennit 0.5.1, DeepLIFT vs Captum 0.9.

``python -m benchmarks.propagation [--quick] [--no-speed]`` writes
``benchmarks/results/propagation.md`` (and ``propagation.json``).

**LRP (Zennit).** For every composite of :data:`jaxsal._src.propagation.COMPOSITES` and
every model (the small CNN, VGG-16 with random weights, a ResNet with BatchNorm and
BasicBlocks), on the same weights and inputs: ``jaxsal.lrp(f, composite)(x, target)``
against Zennit's composite of the same name and defaults (``epsilon``: a
``LayerMapComposite`` with ε on every linear layer and Zennit's base map), with the
canonizers Zennit prescribes (``SequentialMergeBatchNorm``; ``ResNetCanonizer`` on the
ResNet), and Zennit's output relevance ``one_hot(target) * score``. ``epsilon_gamma_box``
gets ``low = min(x)``, ``high = max(x)`` of the batch in both libraries. Error:
``rel = max|a - ref| / max|ref|`` over the batch; must be below 1e-6 in float64 and
below 1e-4 in float32 (where float32 is above, the row gives the number of ReLU
pre-activations whose sign differs between the two frameworks: a kink flip).

**DeepLIFT (Captum).** ``jaxsal.deeplift`` / ``jaxsal.deeplift_shap`` against Captum's
``DeepLift`` / ``DeepLiftShap`` on the small CNN and the EfficientNet-Lite0 twin, and
against :func:`torch_deeplift`, a hand-written layer-by-layer reference (the Rescale rule
as a ``torch.autograd.Function`` on every activation module, Captum's max-pool rule with
the per-example gradient fallback), which also covers what Captum cannot do:

* ``nn.ReLU6`` is not in Captum's ``SUPPORTED_NON_LINEAR`` (its test is ``type(module) in
  ...``), so Captum leaves every ReLU6 of EfficientNet-Lite0 with its gradient and breaks
  summation-to-delta (its convergence delta shows it). The parity row registers
  ``nn.ReLU6`` with Captum's own ``nonlinear`` rule (:func:`captum_relu6`), and the
  hand-written reference is compared as well.
* Captum's max-pool rule falls back to ``grad_input[0]`` (the first example's gradient,
  broadcast over the batch) where ``|x - x0| < 1e-10``; jaxsal and the reference use each
  example's own gradient there.

Captum's convergence delta (``return_convergence_delta=True``) and jaxsal's
``sum R - (f_c(x) - f_c(x0))`` are reported beside each row.

**Speed.** LRP ``epsilon_plus`` vs Zennit ``EpsilonPlus`` and DeepLIFT vs Captum
``DeepLift`` on the same model, weights and input, interleaved (jaxsal, reference,
jaxsal, ...), medians, the compile time separate, and the plain ``jax.grad`` / torch
autograd floors beside them; Zennit's hooks are registered once, outside the timing.

The VGG-16 parity rows run at 32x32 (``--vgg-size``), its speed rows at 224x224. 32 is
not only for time (224 float64 for six composites in two libraries is many minutes on
two cores): it is the one size below 224 where both libraries apply the same rule to
VGG's adaptive average pool (see :func:`benchmarks.propagation_models.vgg16_case`). At
224 Zennit's ``Norm`` on the identity pool and, between, jaxsal's two ε-rule layers for
the pooling einsum against Zennit's one ``Norm`` differ by about ε / |activation|.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import cases
from benchmarks import propagation_models as pm
from benchmarks.parity import compare
from benchmarks.zennit_shim import import_zennit

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOL32, TOL64 = 1e-4, 1e-6
COMPOSITES = (
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
)


def _jaxsal():
    import jaxsal

    lrp = getattr(jaxsal, "lrp", None)
    if lrp is None:
        from jaxsal._src.propagation import lrp
    return lrp, jaxsal.deeplift, jaxsal.deeplift_shap


# ----------------------------------------------------------------------------- Zennit side


def zennit_composite(
    name: str, *, canonizers: list, low=None, high=None, epsilon=1e-6, gamma=0.25, stabilizer=1e-6
):
    """Zennit's composite for a jaxsal composite name (Zennit 0.5.1's defaults)."""
    zennit = import_zennit()
    zc, zr, zt = zennit.composites, zennit.rules, zennit.types
    kw = dict(epsilon=epsilon, stabilizer=stabilizer, canonizers=canonizers)
    if name == "epsilon":
        layer_map = zc.layer_map_base(stabilizer) + [
            (zt.Convolution, zr.Epsilon(epsilon=epsilon)),
            (torch.nn.Linear, zr.Epsilon(epsilon=epsilon)),
        ]
        return zc.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    if name == "epsilon_plus":
        return zc.EpsilonPlus(**kw)
    if name == "epsilon_plus_flat":
        return zc.EpsilonPlusFlat(**kw)
    if name == "epsilon_alpha2_beta1":
        return zc.EpsilonAlpha2Beta1(**kw)
    if name == "epsilon_alpha2_beta1_flat":
        return zc.EpsilonAlpha2Beta1Flat(**kw)
    if name == "epsilon_gamma_box":
        return zc.EpsilonGammaBox(low=low, high=high, gamma=gamma, **kw)
    raise ValueError(name)


def canonizers_for(case: cases.Case) -> list:
    zennit = import_zennit()
    if case.name == "resnet":
        return [zennit.torchvision.ResNetCanonizer()]
    return [zennit.canonizers.SequentialMergeBatchNorm()]


def _output_relevance(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(out.shape[0])
    g = torch.zeros_like(out)
    g[rows, target] = out[rows, target].detach()
    return g


@contextlib.contextmanager
def exact_merged_batchnorm(model: torch.nn.Module):
    """Make every BatchNorm that Zennit's ``MergeBatchNorm`` turned into an "identity" exactly one.

    Zennit 0.5.1 merges a BatchNorm into the layer before it and then sets the BatchNorm's
    mean 0, var 1, weight 1, bias 0, but keeps its ``eps``: the BatchNorm still computes
    ``x / sqrt(1 + eps)``, so the canonized model's scores differ from the model's by
    about ``eps / 2`` per BatchNorm (1e-5 relative on the ResNet here). Zennit's fix
    (chr5tphr/zennit#240) sets ``running_var = eps = 0.5``; this does the same inside
    the composite's context and restores both afterwards.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            ident = (
                bool(torch.all(m.running_mean == 0))
                and bool(torch.all(m.running_var == 1))
                and bool(torch.all(m.weight == 1))
                and bool(torch.all(m.bias == 0))
            )
            if ident:
                saved.append((m, m.eps, m.running_var.clone()))
                m.eps = 0.5
                m.running_var.fill_(0.5)
    try:
        yield
    finally:
        for m, eps, var in saved:
            m.eps = eps
            m.running_var.copy_(var)


def zennit_lrp(case: cases.Case, composite: str, *, exact_bn: bool = False, **kw) -> np.ndarray:
    """Zennit's relevance (NHWC) with ``attr_output = one_hot(target) * score``.

    ``exact_bn``: with :func:`exact_merged_batchnorm` (Zennit's later fix of its merge).
    """
    comp = zennit_composite(composite, canonizers=canonizers_for(case), **kw)
    x = case.x_torch.clone().requires_grad_(True)
    t = torch.from_numpy(case.target)
    with comp.context(case.torch_model) as model:
        with exact_merged_batchnorm(model) if exact_bn else contextlib.nullcontext():
            out = model(x)
            (rel,) = torch.autograd.grad(out, x, _output_relevance(out, t))
    return cases.to_nhwc(rel)


def has_batchnorm(case: cases.Case) -> bool:
    return any(isinstance(m, torch.nn.BatchNorm2d) for m in case.torch_model.modules())


def jaxsal_lrp(case: cases.Case, composite: str, **kw) -> np.ndarray:
    lrp, _, _ = _jaxsal()
    fn = jax.jit(lambda v, x, t: lrp(lambda z: case.module.apply(v, z), composite, **kw)(x, t))
    return np.asarray(fn(case.variables, jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)))


def jaxsal_lrp_all(case: cases.Case, composites=COMPOSITES) -> dict[str, np.ndarray]:
    """Every composite's relevance in one jitted program (one compile instead of one each)."""
    lrp, _, _ = _jaxsal()

    def run(v, x, t):
        f = lambda z: case.module.apply(v, z)  # noqa: E731
        return [lrp(f, name, **_box(case, name))(x, t) for name in composites]

    out = jax.jit(run)(case.variables, jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32))
    return {name: np.asarray(a) for name, a in zip(composites, out, strict=True)}


def _box(case: cases.Case, composite: str) -> dict:
    if composite != "epsilon_gamma_box":
        return {}
    return {"low": float(case.x.min()), "high": float(case.x.max())}


# ----------------------------------------------------------------------------- kink flips


def _torch_preacts(case: cases.Case) -> list[np.ndarray]:
    """Inputs of every ReLU module call, in call order (NCHW, flattened per call)."""
    got = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().numpy().ravel().copy()))
        for m in case.torch_model.modules()
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))
    ]
    try:
        with torch.no_grad():
            case.torch_model(case.x_torch)
    finally:
        for h in hooks:
            h.remove()
    return got


def _jax_preacts(case: cases.Case) -> list[np.ndarray]:
    """Inputs of every ``max(z, 0)`` in the traced model, in order (NHWC -> NCHW, flattened)."""
    from jaxsal._src import interpreter as interp

    # evaluate the (flattened) jaxpr and read the values of the ReLU inputs
    inlined = jax.make_jaxpr(lambda x: case.f(x))(jnp.asarray(case.x))
    vals = []

    def run(jx, consts, args):
        local = dict(zip(jx.constvars, consts, strict=True))
        local.update(zip(jx.invars, args, strict=True))
        for e in jx.eqns:
            ins = [v.val if interp.is_literal(v) else local[v] for v in e.invars]
            if e.primitive.name == "max" and any(
                interp.is_literal(v) and np.all(np.asarray(v.val) == 0) for v in e.invars
            ):
                vals.append(
                    np.asarray(
                        next(a for a, v in zip(ins, e.invars, strict=True) if not interp.is_literal(v))
                    )
                )
            sub = e.params.get("jaxpr", e.params.get("call_jaxpr"))
            if sub is not None and hasattr(sub, "jaxpr") and e.primitive.name != "scan":
                outs = run(sub.jaxpr, sub.consts, ins)
            else:
                outs = e.primitive.bind(*ins, **e.params)
                outs = outs if e.primitive.multiple_results else [outs]
            for v, o in zip(e.outvars, outs, strict=True):
                local[v] = o
        return [v.val if interp.is_literal(v) else local[v] for v in jx.outvars]

    run(inlined.jaxpr, inlined.consts, [jnp.asarray(case.x)])
    out = []
    for z in vals:
        z = np.asarray(z)
        out.append((z.transpose(0, 3, 1, 2) if z.ndim == 4 else z).ravel())
    return out


def kink_flips(case: cases.Case) -> int | None:
    """ReLU pre-activations whose sign differs between the two frameworks (None: not matched)."""
    try:
        a, b = _torch_preacts(case), _jax_preacts(case)
    except Exception:  # noqa: BLE001 - diagnostic only
        return None
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return None
    return int(sum(np.sum((x > 0) != (y > 0)) for x, y in zip(a, b, strict=True)))


# ----------------------------------------------------------------------------- LRP rows


@dataclasses.dataclass
class LrpRow:
    model: str
    composite: str
    reference: str
    dtype: str
    rel: float
    max_abs_diff: float
    max_abs_ref: float
    sum_ratio: float  # mean over the batch of sum(R_jaxsal) / sum(R_zennit)
    flips: int | None = None
    kind: str = "parity"  # parity (asserted) | convention (reported)
    # float32 rows above 1e-4: each library's float32 result against its own float64 one
    rel_self: float | None = None
    rel_ref_self: float | None = None

    @property
    def ok(self) -> bool:
        return self.kind != "parity" or self.rel < (TOL64 if self.dtype == "float64" else TOL32)


_ARRAYS: dict = {}  # (model, composite, reference, dtype) -> (jaxsal, reference), for self_consistency


def self_consistency(rows: list[LrpRow]) -> None:
    """For float32 rows above 1e-4: each library's float32 result against its own float64 one.

    When both are as far from their float64 results as from each other, and float64
    agrees, the gap is float32 rounding amplified by the model (the ε rule divides by
    pre-activations near zero), not a difference between the implementations.
    """
    for r in rows:
        if r.dtype != "float32" or r.ok:
            continue
        hi = _ARRAYS.get((r.model, r.composite, r.reference, "float64"))
        lo = _ARRAYS.get((r.model, r.composite, r.reference, "float32"))
        if hi is None or lo is None:
            continue
        r.rel_self = compare(lo[0], hi[0])[0]
        r.rel_ref_self = compare(lo[1], hi[1])[0]


def lrp_rows(case: cases.Case, dtype: str, composites=COMPOSITES) -> list[LrpRow]:
    """One row per composite; on a model with BatchNorm also Zennit as shipped (convention row)."""
    rows = []
    bn = has_batchnorm(case)
    ours = jaxsal_lrp_all(case, composites)
    for name in composites:
        kw = _box(case, name)
        a = ours[name]
        if a.dtype != case.x.dtype:
            raise AssertionError(f"jaxsal.lrp returned {a.dtype} for {case.x.dtype} input")
        refs = [
            ("Zennit + exact BN merge (zennit#240)", True, "parity"),
            ("Zennit 0.5.1 as shipped", False, "convention"),
        ]
        for label, exact, kind in refs if bn else [("Zennit 0.5.1", False, "parity")]:
            ref = zennit_lrp(case, name, exact_bn=exact, **kw)
            ratio = float(np.mean(a.reshape(len(a), -1).sum(1) / ref.reshape(len(ref), -1).sum(1)))
            row = LrpRow(case.title, name, label, dtype, *compare(a, ref), ratio, kind=kind)
            _ARRAYS[(case.title, name, label, dtype)] = (a, ref)
            if not row.ok:
                row.flips = kink_flips(case)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- DeepLIFT references


class _Rescale(torch.autograd.Function):
    """``y = fn(x)`` on ``[x; x0]``; backward: the Rescale multiplier ``dy/dx`` (own derivative where ``|dx| < 1e-10``)."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(x, y)
        ctx.fn = fn
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        x1, x0 = x.chunk(2)
        y1, y0 = y.chunk(2)
        dx, dy = torch.cat([x1 - x0] * 2), torch.cat([y1 - y0] * 2)
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (plain,) = torch.autograd.grad(ctx.fn(xx), xx, g)
        small = dx.abs() < 1e-10
        return torch.where(small, plain, g * dy / torch.where(small, torch.ones_like(dx), dx)), None


class _MaxPoolRule(torch.autograd.Function):
    """Captum's max-pool rule, with each example's own gradient where ``|dx| < 1e-10``."""

    @staticmethod
    def forward(ctx, x, pool):
        y = pool(x)
        ctx.save_for_backward(x, y)
        ctx.pool = pool
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        x1, x0 = x.chunk(2)
        y1, y0 = y.chunk(2)
        top = torch.maximum(y1, y0)
        dout = torch.cat([top - y0, y1 - top])
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            yy = ctx.pool(xx)
            (routed,) = torch.autograd.grad(yy, xx, g * dout, retain_graph=True)
            (plain,) = torch.autograd.grad(yy, xx, g)
        r1, r0 = routed.chunk(2)
        dx = torch.cat([x1 - x0] * 2)
        small = dx.abs() < 1e-10
        return torch.where(
            small, plain, torch.cat([r1 + r0] * 2) / torch.where(small, torch.ones_like(dx), dx)
        ), None


class _Wrap(torch.nn.Module):
    def __init__(self, fn_cls, inner: torch.nn.Module):
        super().__init__()
        self.fn_cls, self.inner = fn_cls, inner

    def forward(self, x):
        return self.fn_cls.apply(x, self.inner)


def _rule_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose activation and max-pool modules carry the DeepLIFT rules."""
    import copy

    m = copy.deepcopy(model)

    def swap(parent):
        for name, child in parent.named_children():
            if isinstance(child, (torch.nn.ReLU, torch.nn.ReLU6)):
                setattr(parent, name, _Wrap(_Rescale, child))
            elif isinstance(child, torch.nn.MaxPool2d):
                setattr(parent, name, _Wrap(_MaxPoolRule, child))
            else:
                swap(child)

    swap(m)
    return m


def torch_deeplift(model: torch.nn.Module, x: torch.Tensor, x0: torch.Tensor, target: torch.Tensor):
    """Hand-written DeepLIFT (Rescale) in torch: ``(x - x0) * m`` with ``m`` from ``[x; x0]``."""
    m = _rule_model(model)
    xs = torch.cat([x, x0]).detach().requires_grad_(True)
    out = m(xs)
    t2 = torch.cat([target, target])
    g = torch.zeros_like(out)
    g[torch.arange(len(t2)), t2] = 1
    (mult,) = torch.autograd.grad(out, xs, g)
    return (x - x0) * mult[: len(x)]


def torch_deeplift_shap(model, x, baselines, target):
    k, b = len(baselines), len(x)
    xs = x.repeat_interleave(k, 0)
    x0s = baselines.repeat((b,) + (1,) * (x.ndim - 1))
    r = torch_deeplift(model, xs, x0s, target.repeat_interleave(k))
    return r.reshape((b, k) + tuple(x.shape[1:])).mean(1)


@contextlib.contextmanager
def captum_relu6():
    """Captum's ``DeepLift`` with ``nn.ReLU6`` registered to its own ``nonlinear`` (Rescale) rule."""
    from captum.attr._core import deep_lift as dl

    had = torch.nn.ReLU6 in dl.SUPPORTED_NON_LINEAR
    dl.SUPPORTED_NON_LINEAR[torch.nn.ReLU6] = dl.nonlinear
    try:
        yield
    finally:
        if not had:
            del dl.SUPPORTED_NON_LINEAR[torch.nn.ReLU6]


class _Times1(torch.nn.Module):
    """``x * 1``: an autograd node that no Captum hook sees."""

    def forward(self, x):
        return x * 1.0


def separate_pools(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with ``x * 1`` in front of every ``MaxPool2d`` module.

    The function is unchanged. In the autograd graph the ReLU module before a max-pool is
    then no longer adjacent to it, and Captum's DeepLIFT hooks give the Rescale rule and
    its max-pool rule as documented (captum#1104: a hooked ReLU feeding a hooked max-pool
    directly gives wrong multipliers for non-zero baselines).
    """
    import copy

    m = copy.deepcopy(model)

    def swap(parent):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.MaxPool2d):
                setattr(parent, name, torch.nn.Sequential(_Times1(), child))
            else:
                swap(child)

    swap(m)
    return m


def has_max_pool(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def captum_deeplift(model, x, x0, target, shap: bool = False):
    import captum.attr as ca

    cls = ca.DeepLiftShap if shap else ca.DeepLift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, delta = cls(model).attribute(
            x.clone().requires_grad_(True), baselines=x0, target=target, return_convergence_delta=True
        )
    return a.detach(), delta.detach()


# ----------------------------------------------------------------------------- DeepLIFT rows


@dataclasses.dataclass
class DlRow:
    model: str
    method: str
    reference: str
    dtype: str
    rel: float
    max_abs_diff: float
    max_abs_ref: float
    delta_jaxsal: float  # max |sum R - (f_c(x) - f_c(x0))| / max |f_c(x) - f_c(x0)|
    delta_ref: float | None  # the reference's, the same way (Captum: its convergence delta)
    kind: str = "parity"  # parity (asserted) | convention (reported)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.kind != "parity" or self.rel < (TOL64 if self.dtype == "float64" else TOL32)


def shap_baselines(case: cases.Case, k: int = 3, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((k,) + case.x.shape[1:])).astype(case.x.dtype)


def deeplift_rows(
    case: cases.Case, dtype: str, *, plain_relu6: cases.Case | None = None, k: int = 3
) -> list[DlRow]:
    _, deeplift, deeplift_shap = _jaxsal()
    x, t = jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)
    xt, tt = case.x_torch, torch.from_numpy(case.target)
    bl = shap_baselines(case, k)
    blt = cases.to_nchw(bl)
    f = jax.jit(case.f)
    sc_x = np.asarray(f(x))[np.arange(len(case.x)), case.target]
    sc_0 = np.asarray(f(jnp.zeros_like(x)))[np.arange(len(case.x)), case.target]
    sc_b = np.asarray(f(jnp.asarray(bl)))[:, case.target].mean(0)
    rows: list[DlRow] = []

    def delta(r: np.ndarray, want: np.ndarray) -> float:
        s = r.reshape(len(r), -1).sum(1)
        return float(np.abs(s - want).max() / np.abs(want).max())

    def add(method, reference, a, ref, want, ref_delta, kind="parity", note=""):
        if a.dtype != case.x.dtype:
            raise AssertionError(f"{method} returned {a.dtype} for {case.x.dtype}")
        rows.append(
            DlRow(
                case.title, method, reference, dtype, *compare(a, ref), delta(a, want), ref_delta, kind, note
            )
        )

    def captum_delta(d, want):
        return float(np.abs(d.numpy()).max() / np.abs(want).max())

    def both(v, x, t):  # one compile for both methods
        g = lambda z: case.module.apply(v, z)  # noqa: E731
        return deeplift(g)(x, t), deeplift_shap(g, jnp.asarray(bl))(x, t)

    dl, shp = (np.asarray(r) for r in jax.jit(both)(case.variables, x, t))
    relu6 = any(isinstance(m, torch.nn.ReLU6) for m in case.torch_model.modules())
    ctx = captum_relu6 if relu6 else contextlib.nullcontext
    tag = " [nn.ReLU6 -> Captum's nonlinear]" if relu6 else ""
    zero = torch.zeros_like(xt)
    if has_max_pool(case.torch_model):
        # as shipped: a ReLU module feeds a MaxPool module directly (captum#1104)
        note = "captum#1104: hooked ReLU directly before a hooked MaxPool; see its delta"
        ca, cd = captum_deeplift(case.torch_model, xt, zero, tt)
        cs, csd = captum_deeplift(case.torch_model, xt, blt, tt, shap=True)
        add(
            "deeplift(f)",
            "DeepLift() as shipped",
            dl,
            cases.to_nhwc(ca),
            sc_x - sc_0,
            captum_delta(cd, sc_x - sc_0),
            "convention",
            note,
        )
        add(
            f"deeplift_shap(f, K={k})",
            "DeepLiftShap() as shipped",
            shp,
            cases.to_nhwc(cs),
            sc_x - sc_b,
            captum_delta(csd, sc_x - sc_b),
            "convention",
            note,
        )
        tm, tag = separate_pools(case.torch_model), " [x*1 before each MaxPool]"
    else:
        tm = case.torch_model
    with ctx():
        ca, cd = captum_deeplift(tm, xt, zero, tt)
        cs, csd = captum_deeplift(tm, xt, blt, tt, shap=True)
    add("deeplift(f)", "DeepLift()" + tag, dl, cases.to_nhwc(ca), sc_x - sc_0, captum_delta(cd, sc_x - sc_0))
    add(
        f"deeplift_shap(f, K={k})",
        "DeepLiftShap()" + tag,
        shp,
        cases.to_nhwc(cs),
        sc_x - sc_b,
        captum_delta(csd, sc_x - sc_b),
    )
    ref = torch_deeplift(case.torch_model, xt, torch.zeros_like(xt), tt)
    rs = torch_deeplift_shap(case.torch_model, xt, blt, tt)
    rn, rsn = cases.to_nhwc(ref), cases.to_nhwc(rs)
    add("deeplift(f)", "hand-written torch reference", dl, rn, sc_x - sc_0, delta(rn, sc_x - sc_0))
    add(
        f"deeplift_shap(f, K={k})",
        "hand-written torch reference",
        shp,
        rsn,
        sc_x - sc_b,
        delta(rsn, sc_x - sc_b),
    )
    if plain_relu6 is not None:  # what Captum gives on nn.ReLU6 modules as it ships
        pa, pd = captum_deeplift(plain_relu6.torch_model, plain_relu6.x_torch, torch.zeros_like(xt), tt)
        add(
            "deeplift(f)",
            "DeepLift() on nn.ReLU6 as shipped",
            dl,
            cases.to_nhwc(pa),
            sc_x - sc_0,
            captum_delta(pd, sc_x - sc_0),
            "convention",
            "Captum hooks no ReLU6 (type test): gradient there; its delta shows summation-to-delta broken",
        )
    return rows


# ----------------------------------------------------------------------------- speed


@dataclasses.dataclass
class Timing:
    model: str
    method: str
    reference: str
    batch: int
    dtype: str
    jaxsal_ms: float
    ref_ms: float
    floor_ms: float
    torch_floor_ms: float
    compile_s: float
    runs: int

    @property
    def ratio(self) -> float:
        return self.jaxsal_ms / self.ref_ms


def _tj(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def _tt(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_pair(case, method: str, runs: int) -> Timing:
    """``method``: ``"lrp"`` (epsilon_plus vs Zennit EpsilonPlus) or ``"deeplift"`` (vs Captum DeepLift)."""
    from jaxsal._src.contract import select

    lrp, deeplift, _ = _jaxsal()
    x, t = jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)
    xt, tt = case.x_torch, torch.from_numpy(case.target)
    if method == "lrp":
        build = lambda v: lrp(lambda z: case.module.apply(v, z), "epsilon_plus")  # noqa: E731
        ref_name = "Zennit EpsilonPlus"
    else:
        build = lambda v: deeplift(lambda z: case.module.apply(v, z))  # noqa: E731
        ref_name = "Captum DeepLift"
    jitted = jax.jit(lambda v, x, t: build(v)(x, t))
    t0 = time.perf_counter()
    fn = jitted.lower(case.variables, x, t).compile()
    compile_s = time.perf_counter() - t0
    floor = jax.jit(lambda v, x, t: jax.grad(lambda z: jnp.sum(select(case.module.apply(v, z), t)))(x))
    floor = floor.lower(case.variables, x, t).compile()

    stack = contextlib.ExitStack()
    if method == "lrp":
        comp = zennit_composite("epsilon_plus", canonizers=canonizers_for(case))
        model = stack.enter_context(comp.context(case.torch_model))

        def ref():
            xx = xt.clone().requires_grad_(True)
            out = model(xx)
            return torch.autograd.grad(out, xx, _output_relevance(out, tt))[0]

    else:
        import captum.attr as ca

        obj = ca.DeepLift(case.torch_model)
        z = torch.zeros_like(xt)
        if any(isinstance(m, torch.nn.ReLU6) for m in case.torch_model.modules()):
            stack.enter_context(captum_relu6())  # time the rule Captum would apply, not its fallback
            ref_name += " [nn.ReLU6 -> nonlinear]"

        def ref():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return obj.attribute(xt.clone().requires_grad_(True), baselines=z, target=tt)

    def tfloor():
        xx = xt.clone().requires_grad_(True)
        return torch.autograd.grad(case.torch_model(xx).gather(1, tt[:, None]).sum(), xx)[0]

    with stack:
        _tj(fn, case.variables, x, t), _tt(ref)
        js, rs, fs, tfs = [], [], [], []
        for _ in range(runs):
            js.append(_tj(fn, case.variables, x, t))
            rs.append(_tt(ref))
    _tj(floor, case.variables, x, t), _tt(tfloor)
    for _ in range(runs):
        fs.append(_tj(floor, case.variables, x, t))
        tfs.append(_tt(tfloor))
    med = lambda a: 1e3 * statistics.median(a)  # noqa: E731
    return Timing(
        case.title,
        method,
        ref_name,
        len(case.x),
        str(case.x.dtype),
        med(js),
        med(rs),
        med(fs),
        med(tfs),
        compile_s,
        runs,
    )


# ----------------------------------------------------------------------------- markdown


def _fmt(v) -> str:
    return "" if v is None else f"{v:.1e}"


def lrp_table(rows: list[LrpRow]) -> str:
    """One line per model x composite x reference, float32 and float64 side by side."""
    lines = [
        "| model | composite | reference | float32 max abs diff | float32 rel | float64 max abs diff | float64 rel "
        "| max abs ref | Σ jaxsal / Σ ref (float64) | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    keys = list(dict.fromkeys((r.model, r.composite, r.reference) for r in rows))
    by = {(r.model, r.composite, r.reference, r.dtype): r for r in rows}
    for k in keys:
        r32, r64 = by.get(k + ("float32",)), by.get(k + ("float64",))
        cell = lambda r: ("", "") if r is None else (f"{r.max_abs_diff:.1e}", f"{r.rel:.1e}")  # noqa: E731
        any_r = r64 or r32
        if any_r.kind != "parity":
            st = "reported (Zennit 0.5.1 leaves x/sqrt(1+eps) in every merged BatchNorm)"
        elif (r32 is None or r32.ok) and (r64 is None or r64.ok):
            st = "PASS"
        elif r64 is not None and r64.ok and r32 is not None and r32.flips:
            st = f"float32: {r32.flips} ReLU pre-activation sign flips between frameworks (kink flip); float64 PASS"
        elif r64 is not None and r64.ok and r32 is not None and r32.rel_self is not None:
            st = (
                f"float64 PASS; float32: {r32.flips} ReLU sign flips, but each library's float32 result is "
                f"{r32.rel_self:.1e} (jaxsal) / {r32.rel_ref_self:.1e} (Zennit) from its own float64 one: "
                "float32 rounding amplified by the ε rule's division by near-zero z"
            )
        else:
            st = "**FAIL**"
        ratio = "" if r64 is None else f"{r64.sum_ratio:.8f}"
        lines.append(
            f"| {k[0]} | `{k[1]}` | {k[2]} | {' | '.join(cell(r32))} | {' | '.join(cell(r64))} | "
            f"{any_r.max_abs_ref:.1e} | {ratio} | {st} |"
        )
    return "\n".join(lines)


def dl_table(rows: list[DlRow]) -> str:
    lines = [
        "| model | jaxsal | reference | dtype | max abs diff | max abs ref | max abs diff / max abs ref | "
        "jaxsal Σ-to-Δ error | reference Σ-to-Δ error | status |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        st = ("PASS" if r.ok else "**FAIL**") if r.kind == "parity" else f"convention: {r.note}"
        lines.append(
            f"| {r.model} | `{r.method}` | `{r.reference}` | {r.dtype} | {r.max_abs_diff:.1e} | {r.max_abs_ref:.1e} | "
            f"{r.rel:.1e} | {_fmt(r.delta_jaxsal)} | {_fmt(r.delta_ref)} | {st} |"
        )
    return "\n".join(lines)


def speed_table(rows: list[Timing]) -> str:
    lines = [
        "| model | method | reference | B | dtype | jaxsal ms | reference ms | jaxsal/reference | "
        "jax.grad floor ms | jaxsal/floor | torch grad ms | compile s | runs |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.method} | {r.reference} | {r.batch} | {r.dtype} | {r.jaxsal_ms:.1f} | {r.ref_ms:.1f} | "
            f"**{r.ratio:.2f}** | {r.floor_ms:.1f} | {r.jaxsal_ms / r.floor_ms:.2f} | {r.torch_floor_ms:.1f} | "
            f"{r.compile_s:.2f} | {r.runs} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def _cases(quick: bool, vgg_size: int):
    yield "small", lambda: pm.small_cnn_case(batch=2, size=16)
    yield "resnet", lambda: pm.resnet_case(batch=2, size=16 if quick else 32, width=8 if quick else 16)
    if not quick:
        yield "vgg16", lambda: pm.vgg16_case(batch=1, size=vgg_size)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small models only, no VGG, short timings")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--no-effnet", action="store_true", help="skip the EfficientNet-Lite0 DeepLIFT rows")
    p.add_argument("--vgg-size", type=int, default=32, help="VGG-16 input size for the parity rows")
    p.add_argument("--vgg-speed-size", type=int, default=224, help="VGG-16 input size for the speed rows")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 rows; float32 rows are float32 arrays
    warnings.filterwarnings("ignore")
    t_start = time.time()
    load0 = os.getloadavg()
    lrp, dl, sp, gaps = [], [], [], []

    for _, make in _cases(args.quick, args.vgg_size):
        c32 = make()
        gaps.append((c32.title, cases.forward_gap(c32)))
        lrp += lrp_rows(c32, "float32")
        lrp += lrp_rows(cases.as_float64(make()), "float64")
        print(f"[{time.time() - t_start:6.0f}s] LRP {c32.title}", flush=True)

    small = pm.small_cnn_case(batch=2, size=16)
    dl += deeplift_rows(small, "float32")
    dl += deeplift_rows(cases.as_float64(pm.small_cnn_case(batch=2, size=16)), "float64")
    print(f"[{time.time() - t_start:6.0f}s] DeepLIFT small CNN", flush=True)
    if not args.no_effnet and not args.quick:
        eff = cases.efficientnet_lite0(batch=2, act="relu6")
        gaps.append((eff.title, cases.forward_gap(eff)))
        dl += deeplift_rows(eff, "float32", plain_relu6=cases.efficientnet_lite0(batch=2, act="relu6"))
        dl += deeplift_rows(cases.as_float64(cases.efficientnet_lite0(batch=2, act="relu6")), "float64")
        print(f"[{time.time() - t_start:6.0f}s] DeepLIFT EfficientNet-Lite0", flush=True)

    if not args.no_speed:
        runs = 3 if args.quick else 7
        sp.append(time_pair(pm.resnet_case(batch=8, size=32, width=16), "lrp", runs))
        if not args.quick:
            sp.append(time_pair(pm.vgg16_case(batch=1, size=args.vgg_speed_size), "lrp", runs))
        sp.append(time_pair(pm.small_cnn_case(batch=8, size=32), "deeplift", runs))
        if not args.quick and not args.no_effnet:
            sp.append(time_pair(cases.efficientnet_lite0(batch=2, act="relu6"), "deeplift", runs))
        print(f"[{time.time() - t_start:6.0f}s] speed", flush=True)

    self_consistency(lrp)
    load1 = os.getloadavg()
    write(lrp, dl, sp, gaps, args, load0, load1, time.time() - t_start)
    bad = [r for r in lrp + dl if not r.ok and not getattr(r, "flips", None)]
    return 1 if bad else 0


NOTES = """## Notes

* **Zennit 0.5.1's merged BatchNorm is not the identity.** ``MergeBatchNorm`` folds each
  BatchNorm into the convolution before it, then sets the BatchNorm's mean 0, var 1,
  weight 1, bias 0 but keeps its ``eps``: it still computes ``x / sqrt(1 + eps)``, so the
  canonized ResNet's scores differ from the model's by ~eps/2 per BatchNorm (8.7e-6
  relative here) and so does the relevance (rows "as shipped", ~1e-5). Zennit's later fix
  (chr5tphr/zennit#240) sets ``running_var = eps = 0.5``; with that
  (``benchmarks.propagation.exact_merged_batchnorm``) jaxsal and Zennit agree to 1e-14 or
  better in float64.
* **VGG-16's adaptive average pool.** `epsilon` composite, float64, torchvision's init,
  measured while choosing the parity size: 32x32 3.5e-13; 64x64 1.4e-4 (the pool is an
  einsum with two pooling matrices in `jaxsal.models.vgg`, which jaxsal sees as two dense
  layers with the ε rule, Zennit as one ``AvgPool`` with ``Norm``); 224x224 9.3e-4 (the
  pool is the identity; Zennit still applies ``Norm``, ``R x / (x + ε)``, jaxsal nothing);
  224x224 with the torch pool replaced by ``nn.Identity`` (the same function) 5.3e-12. The
  parity rows therefore run at 32x32, where both apply one ε-stabilised linear map.
* **Captum, ReLU module directly before a MaxPool module** (captum#1104): Captum's
  DeepLift/DeepLiftShap multipliers are wrong (its convergence delta reaches 0.79 of the
  output difference on the small CNN, rows "as shipped"). With ``x * 1`` inserted in
  front of each MaxPool (``separate_pools``: the same function) Captum equals jaxsal and
  the hand-written reference to ~1e-15 in float64.
* **Captum's max-pool fallback** uses ``grad_input[0]``, the first example's gradient,
  where ``|Δx| < 1e-10`` (captum#1276); jaxsal and the reference use each example's own.
  On these models the two agree anyway (batch of 2): where the pool's input difference
  is zero the multiplier meets a zero output difference at the ReLU below.
* **ReLU6** is not in Captum's ``SUPPORTED_NON_LINEAR`` (an exact ``type(module)`` test):
  as shipped Captum gives the gradient at every ReLU6 of EfficientNet-Lite0 and misses
  summation-to-delta by 96%. Registering ``nn.ReLU6`` with Captum's own ``nonlinear`` rule
  (``captum_relu6``) gives 2e-13 (float64) against jaxsal, as does the hand-written
  reference.
"""


def write(lrp, dl, sp, gaps, args, load0, load1, seconds) -> None:
    import captum
    import flax
    import jaxlib

    zennit = import_zennit()
    from benchmarks.zennit_shim import is_shimmed

    RESULTS.mkdir(exist_ok=True)
    env = (
        f"jax {jax.__version__} (jaxlib {jaxlib.__version__}), flax {flax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), captum {captum.__version__}, zennit "
        f"{getattr(zennit, '__version__', '0.5.1')} ({'torchvision shim' if is_shimmed() else 'real torchvision'}), "
        f"{os.cpu_count()} CPUs; load average {tuple(round(v, 2) for v in load0)} at the start, "
        f"{tuple(round(v, 2) for v in load1)} at the end; {seconds:.0f} s in all"
        + (" (--quick)" if args.quick else "")
    )
    md = [
        "# Propagation methods: parity with Zennit and Captum, and speed",
        "",
        f"`python -m benchmarks.propagation{' --quick' if args.quick else ''}` — {env}.",
        "",
        "Error = max |a_jaxsal − a_ref| / max |a_ref| over the batch (NHWC). Tolerances: "
        f"< {TOL64:g} in float64, < {TOL32:g} in float32. VGG-16 parity at {args.vgg_size}x{args.vgg_size}, speed at {args.vgg_speed_size}x{args.vgg_speed_size} "
        "(see benchmarks/propagation.py).",
        "",
        "Forward agreement of the twins (float32, max |f_flax − f_torch| / max |f_torch|): "
        + ", ".join(f"{n}: {g:.1e}" for n, g in gaps)
        + ".",
        "",
        "## LRP vs Zennit 0.5.1",
        "",
        "Zennit: the composite of the same name with its defaults (ε = stabilizer = 1e-6, γ = 0.25), "
        "canonizers `SequentialMergeBatchNorm` (small CNN, VGG-16) or `ResNetCanonizer` (ResNet), "
        "`attr_output = one_hot(target) · score`; `epsilon` is Zennit's `LayerMapComposite` with ε on every "
        "linear layer. `epsilon_gamma_box`: low = min(x), high = max(x) of the batch.",
        "",
        lrp_table(lrp),
        "",
        "## DeepLIFT vs Captum 0.9",
        "",
        "Σ-to-Δ error: max over the batch of |Σ R − (f_c(x) − f_c(x0))| / max |f_c(x) − f_c(x0)| "
        "(DeepLIFT-SHAP: the mean over the K baselines); for Captum, its own convergence delta. "
        "DeepLIFT baseline: zeros. DeepLIFT-SHAP: K = 3 baselines 0.5·N(0, 1) (seeded).",
        "",
        dl_table(dl),
        "",
    ]
    if sp:
        md += [
            "## Speed",
            "",
            "Interleaved (jaxsal, reference, jaxsal, ...), medians of the runs; compile time separate; the "
            "floors are a plain jitted `jax.grad` / torch autograd of the summed target scores on the same "
            "batch. Zennit's hooks are registered once outside the timing.",
            "",
            speed_table(sp),
            "",
        ]
    md += [NOTES]
    (RESULTS / "propagation.md").write_text("\n".join(md))
    (RESULTS / "propagation.json").write_text(
        json.dumps(
            {
                "env": env,
                "lrp": [dataclasses.asdict(r) for r in lrp],
                "deeplift": [dataclasses.asdict(r) for r in dl],
                "speed": [dataclasses.asdict(r) for r in sp],
            },
            indent=1,
        )
    )
    print("\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())

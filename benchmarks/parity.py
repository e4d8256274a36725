"""Parity of jaxsal against Captum on the same models with the same weights.

For each method both libraries have, the error is

    rel = max |a_jaxsal - a_captum| / max |a_captum|

over the whole batch (Captum's output transposed NCHW -> NHWC). Parity rows must have
``rel < 1e-4`` in float32. Convention rows show what a user sees with Captum's
*defaults* (or with a model written the usual way) and are reported, not asserted.

Conventions (see ``RESULTS.md``):

* ``Saliency`` takes ``abs=True`` by default; the vanilla gradient is ``abs=False``.
* ``GuidedGradCam`` upsamples with ``interpolate_mode="nearest"`` by default; jaxsal
  upsamples bilinearly with half-pixel centres (``F.interpolate(..., "bilinear",
  align_corners=False)``), so parity uses ``interpolate_mode="bilinear"``.
* ``GuidedBackprop``/``Deconvolution`` hook ``nn.ReLU`` modules only. A model with
  ``nn.ReLU6`` modules (or ``F.relu``/``F.relu6`` calls) keeps ordinary gradients there,
  while jaxsal applies the rule to every ReLU and ReLU6 it finds in the jaxpr. The
  EfficientNet-Lite0 twin therefore uses :class:`benchmarks.torch_models.HookableReLU6`
  for parity; the ``nn.ReLU6`` twin is reported as a convention row.
* ``IntegratedGradients(method="riemann_trapezoid")`` uses nodes ``linspace(0, 1, n)``
  with weights ``1/n`` (halved at both ends), which sum to ``(n-1)/n``; the trapezoid
  rule on those nodes has weights ``1/(n-1)`` (halved at the ends). All weights differ
  by the same factor, so the corrected reference is Captum's result times ``n/(n-1)``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks.cases import Case, to_nchw, to_nhwc

TOL = 1e-4
TOL64 = 1e-7
TIE_EPS = 1e-6  # scale of the off-tie IG baseline (uniform noise), see ``Row.rel64_off_tie``
IG_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


@dataclasses.dataclass
class Row:
    model: str
    method: str  # jaxsal call
    captum: str  # Captum call
    rel: float
    max_abs_diff: float
    max_abs_ref: float
    kind: str = "parity"  # "parity" (asserted < TOL) or "convention" (reported)
    note: str = ""
    rel64: float | None = None  # the same comparison with both libraries in float64
    # IG only, float64 with the baseline moved off zero (TIE_EPS * uniform noise): at the
    # zero baseline a model with biases and max-pools has exact ties, see ``status``
    rel64_off_tie: float | None = None
    frac_off: float = 0.0  # fraction of elements with |diff| > TOL * max|attr|

    @property
    def ok(self) -> bool:
        return self.kind != "parity" or self.rel < TOL

    @property
    def ok64(self) -> bool:
        # 1e-7, not 1e-15: Captum multiplies IG's gradients by `torch.tensor(step_sizes).float()`
        # and builds its Riemann nodes with float32 `torch.linspace`, even for float64 inputs
        return self.rel64 is not None and self.rel64 < TOL64


def compare(a: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        raise ValueError(f"shape mismatch: jaxsal {a.shape} vs captum {ref.shape}")
    d, m = float(np.abs(a - ref).max()), float(np.abs(ref).max())
    return d / m if m > 0 else d, d, m


def frac_off(a: np.ndarray, ref: np.ndarray) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float((np.abs(a - ref) > TOL * np.abs(ref).max()).mean())


# ----------------------------------------------------------------------------- jaxsal side


def run_jaxsal(case: Case, build: Callable) -> np.ndarray:
    """``build(module, variables) -> attr``, jitted with the variables as an argument."""
    fn = jax.jit(lambda v, x, t: build(case.module, v)(x, t))
    return np.asarray(fn(case.variables, jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)))


def jx(name: str) -> Callable:
    """``jaxsal.<name>``, or the registry's factory while the export is not there yet."""
    import jaxsal

    fn = getattr(jaxsal, name, None)
    if fn is None:
        import jaxsal._src.cam  # noqa: F401  (registers the CAM family)

        fn = jaxsal.get_method(name).factory
    return fn


def _f(factory, **hyper):
    return lambda m, v: factory(lambda x: m.apply(v, x), **hyper)


def _probe(method, layer, **hyper):
    import jaxsal.flax

    return lambda m, v: method(jaxsal.flax.probe(m, v, layer), **hyper)


# ----------------------------------------------------------------------------- captum side


def captum_call(spec: str) -> tuple[str, dict]:
    """``"LayerGradCam(relu_attributions=True)"`` (a registry ``Method.captum``) -> class name, kwargs."""
    tree = ast.parse(spec, mode="eval").body
    if isinstance(tree, ast.Name):
        return tree.id, {}
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name) or tree.args:
        raise ValueError(f"Method.captum must read like `Class(key=literal, ...)`; got {spec!r}")
    return tree.func.id, {k.arg: ast.literal_eval(k.value) for k in tree.keywords}


def run_captum(case: Case, cls: str, *, layer: bool = False, init: dict | None = None, **kw) -> np.ndarray:
    import captum.attr as ca

    model = case.torch_model
    args = (model, case.torch_layer) if layer else (model,)
    obj = getattr(ca, cls)(*args, **(init or {}))
    x = case.x_torch.clone().requires_grad_(True)
    with warnings.catch_warnings():  # DeepLift announces its hooks on every call
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
        out = obj.attribute(x, target=torch.from_numpy(case.target), **kw)
    if out.dtype != x.dtype:
        raise AssertionError(f"captum returned {out.dtype} for {x.dtype} input")
    if cls == "LayerGradCam":
        out = out[:, 0]
    return to_nhwc(out)


# ----------------------------------------------------------------------------- rows


def tie_free_baseline(x: np.ndarray) -> np.ndarray:
    """``TIE_EPS * u``, ``u ~ U[0, 1)`` (seeded): an IG baseline next to zero but off its ties."""
    return (TIE_EPS * np.random.default_rng(0).uniform(size=x.shape)).astype(x.dtype)


def parity_rows(
    case: Case,
    *,
    ig_steps: int = 50,
    rules=IG_RULES,
    conventions: bool = True,
    only: set[str] | None = None,
    ig_baseline: np.ndarray | None = None,
) -> list[Row]:
    """Every shared method on ``case``; ``only`` restricts to jaxsal method names;
    ``ig_baseline`` (default zero) is passed to both libraries' IG."""
    rows: list[Row] = []
    ig_kw = {} if ig_baseline is None else {"baseline": jnp.asarray(ig_baseline)}
    ig_ref_kw = {} if ig_baseline is None else {"baselines": to_nchw(ig_baseline)}

    def want(name: str) -> bool:
        return only is None or name in only

    def add(method, captum, a, ref, kind="parity", note=""):
        if np.asarray(a).dtype != case.x.dtype:
            raise AssertionError(f"{method} returned {np.asarray(a).dtype} for {case.x.dtype} input")
        rows.append(
            Row(case.title, method, captum, *compare(a, ref), kind=kind, note=note, frac_off=frac_off(a, ref))
        )

    import jaxsal

    for method in jaxsal.methods().values():
        # every registered method with a Captum twin; IG's rules are compared one by one below,
        # stochastic methods draw different noise (no elementwise parity exists)
        if not method.captum or method.stochastic or method.name == "integrated_gradients":
            continue
        if not want(method.name):
            continue
        cls, kw = captum_call(method.captum)
        hyper = {}
        if "steps" in inspect.signature(method.factory).parameters:
            hyper["steps"] = kw["n_steps"] = ig_steps
        if method.takes == "probe":
            a = run_jaxsal(case, _probe(method.factory, case.layer, **hyper))
            label = f'{method.name}(probe("{case.layer}"){"".join(f", {k}={v}" for k, v in hyper.items())})'
            call = f"{cls}({', '.join([case.torch_layer_name] + [f'{k}={v!r}' for k, v in kw.items()])})"
        else:
            a = run_jaxsal(case, _f(method.factory, **hyper))
            label = f"{method.name}(f)"
            call = f"{cls}({', '.join(f'{k}={v!r}' for k, v in kw.items())})"
        add(label, call, a, run_captum(case, cls, layer=method.takes == "probe", **kw))
        if not conventions:
            continue
        if cls == "Saliency":
            add(
                label,
                "Saliency() [default abs=True]",
                a,
                run_captum(case, cls),
                "convention",
                "Captum's default returns abs(gradient)",
            )
        if cls == "GuidedGradCam":
            add(
                label,
                "GuidedGradCam() [default nearest]",
                a,
                run_captum(case, "GuidedGradCam", layer=True),
                "convention",
                "Captum's default upsampling is nearest",
            )

    if want("integrated_gradients"):
        n = ig_steps
        for rule in rules:
            a = run_jaxsal(case, _f(jx("integrated_gradients"), steps=n, method=rule, **ig_kw))
            ref = run_captum(case, "IntegratedGradients", n_steps=n, method=rule, **ig_ref_kw)
            call = f'IntegratedGradients(n_steps={n}, method="{rule}")'
            if rule == "riemann_trapezoid":
                add(
                    f'integrated_gradients(steps={n}, method="{rule}")',
                    call + " x n/(n-1)",
                    a,
                    ref * (n / (n - 1)),
                    note="Captum's trapezoid weights sum to (n-1)/n; corrected reference",
                )
                if conventions:
                    add(
                        f'integrated_gradients(steps={n}, method="{rule}")',
                        call + " [as is]",
                        a,
                        ref,
                        "convention",
                        "Captum's trapezoid under-weights every node by (n-1)/n",
                    )
            else:
                add(f'integrated_gradients(steps={n}, method="{rule}")', call, a, ref)

    return rows


def plain_relu6_rows(case: Case) -> list[Row]:
    """EfficientNet-Lite0 twin with ``nn.ReLU6`` modules: what Captum gives on it (convention rows)."""
    rows = []
    for name, cls in (("deconvnet", "Deconvolution"), ("guided_backprop", "GuidedBackprop")):
        a = run_jaxsal(case, _f(jx(name)))
        rows.append(
            Row(
                case.title,
                f"{name}(f)",
                f"{cls}() on nn.ReLU6 modules",
                *compare(a, run_captum(case, cls)),
                kind="convention",
                note="Captum hooks no ReLU6: its result is the plain gradient",
            )
        )
    a = run_jaxsal(case, _f(jx("vanilla_grad")))
    ref = run_captum(case, "GuidedBackprop")
    rows.append(
        Row(
            case.title,
            "vanilla_grad(f)",
            "GuidedBackprop() on nn.ReLU6 modules",
            *compare(a, ref),
            kind="convention",
            note="equal: Captum's guided backprop falls back to the gradient",
        )
    )
    return rows


def status(r: Row) -> str:
    if r.kind != "parity":
        return f"convention: {r.note}"
    if r.ok:
        return "PASS"
    if r.ok64:
        return "float32 kink flip; float64 PASS"
    if r.rel64 is None:
        return "**above 1e-4 in float32**; float64 not run for this rule"
    if r.rel64_off_tie is not None and r.rel64_off_tie < TOL64:
        return (
            "float64: exact max-pool ties at the zero baseline (a valid subgradient each); "
            f"float64 PASS ({r.rel64_off_tie:.0e}) with baseline {TIE_EPS:g}·u"
        )
    return "**FAIL**"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| model | jaxsal | Captum | float32: max abs diff / max abs attr | elements off by > 1e-4 max "
        "| max abs attr | float64: max abs diff / max abs attr | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        r64 = "" if r.rel64 is None else f"{r.rel64:.1e}"
        lines.append(
            f"| {r.model} | `{r.method}` | `{r.captum}` | {r.rel:.1e} | {r.frac_off:.1e} | "
            f"{r.max_abs_ref:.1e} | {r64} | {status(r)} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- float64 (subprocess)


def method_name(r: Row) -> str:
    """The jaxsal method of a row: ``'integrated_gradients(steps=8, ...)'`` -> ``'integrated_gradients'``."""
    return r.method.split("(")[0]


def float64_rows(
    name: str, kwargs: dict, ig_steps: int, only: set[str] | None = None, off_tie: bool = False
) -> list[Row]:
    """The parity rows with both libraries in float64, computed in a fresh process
    (``JAX_ENABLE_X64=1`` must be set before JAX starts); ``off_tie``: IG from
    :func:`tie_free_baseline` instead of zero."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_ENABLE_X64="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = json.dumps(
        {
            "name": name,
            "kwargs": kwargs,
            "ig_steps": ig_steps,
            "only": sorted(only) if only else None,
            "off_tie": off_tie,
        }
    )
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.parity", spec],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if p.returncode != 0:
        raise RuntimeError(f"float64 parity subprocess failed:\n{p.stderr[-3000:]}")
    return [Row(**r) for r in json.loads(p.stdout.strip().splitlines()[-1])]


def merge64(rows: list[Row], rows64: list[Row], field: str = "rel64") -> list[Row]:
    by_key = {(r.method, r.captum): r for r in rows64}
    for r in rows:
        r64 = by_key.get((r.method, r.captum))
        if r64 is not None and r.kind == "parity":
            setattr(r, field, r64.rel)
    return rows


def _main(spec: dict) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore")
    from benchmarks import cases

    case = cases.as_float64(cases.CASES[spec["name"]](**spec["kwargs"]))
    only = set(spec["only"]) if spec.get("only") else None
    baseline = tie_free_baseline(case.x) if spec.get("off_tie") else None
    rows = parity_rows(
        case, ig_steps=spec["ig_steps"], rules=IG_RULES, conventions=False, only=only, ig_baseline=baseline
    )
    return [dataclasses.asdict(r) for r in rows]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(_main(json.loads(sys.argv[1]))))

"""Steady-state speed of jaxsal and Captum on the same models, weights and inputs.

For each workload (model, method, batch) the harness

1. builds the jaxsal function ``jax.jit(lambda v, x, t, key: method(...)(x, t, key=key))``
   with the variables as an argument, times ``lower(...).compile()`` (the compile
   time, reported separately) and runs it once;
2. builds the Captum call once and runs it once (warm-up);
3. alternates ``runs`` timed calls of each (jaxsal, Captum, jaxsal, Captum, ...), with
   ``block_until_ready`` / ``torch.cuda.synchronize`` around each;
4. times the *floor*: a plain jitted ``jax.grad`` of the summed target scores over the
   same number of images the method pushes through the model (``B`` for one-pass
   methods, ``B * 50`` for IG with 50 steps and SmoothGrad with n = 50), and the same
   gradient in plain PyTorch autograd.

Reported: medians (ms), jaxsal/Captum, jaxsal/floor (the method's overhead over the cost
floor of a gradient method), and the torch floor (XLA vs PyTorch/oneDNN on the raw
gradient, which bounds what any jaxsal change can win).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks.cases import Case
from benchmarks.parity import jx

# method name -> (images through the model per example, Captum call description)
METHODS = {
    "vanilla_grad": (1, "Saliency(abs=False)"),
    "grad_x_input": (1, "InputXGradient"),
    "deconvnet": (1, "Deconvolution"),
    "guided_backprop": (1, "GuidedBackprop"),
    "integrated_gradients": (50, "IntegratedGradients(n_steps=50)"),
    "smoothgrad": (50, "NoiseTunnel(Saliency, nt_samples=50)"),
    "grad_cam": (1, "LayerGradCam(relu_attributions=True)"),
    "guided_grad_cam": (1, 'GuidedGradCam(interpolate_mode="bilinear")'),
}
STEPS = 50


@dataclasses.dataclass
class Timing:
    model: str
    method: str
    batch: int
    jaxsal_ms: float
    captum_ms: float
    floor_ms: float
    torch_floor_ms: float
    compile_s: float
    runs: int
    images: int  # images through the model per call (B * k)
    jaxsal_min_ms: float = float("nan")  # minima: robust to other processes on a busy machine
    captum_min_ms: float = float("nan")

    @property
    def ratio(self) -> float:
        return self.jaxsal_ms / self.captum_ms

    @property
    def overhead(self) -> float:
        return self.jaxsal_ms / self.floor_ms


# ----------------------------------------------------------------------------- jaxsal side


def jaxsal_builder(method: str, case: Case, steps: int = STEPS) -> Callable:
    """``build(module, variables) -> attr`` for the named method."""
    if method in ("grad_cam", "guided_grad_cam"):
        import jaxsal.flax

        factory = jx(method)
        return lambda m, v: factory(jaxsal.flax.probe(m, v, case.layer))
    if method == "integrated_gradients":
        return lambda m, v: jx(method)(lambda x: m.apply(v, x), steps=steps)
    if method == "smoothgrad":
        return lambda m, v: jx("smoothgrad")(jx("vanilla_grad")(lambda x: m.apply(v, x)), n=steps)
    return lambda m, v: jx(method)(lambda x: m.apply(v, x))


def jax_fn(case: Case, build: Callable, x, t, key):
    """(compiled fn, compile seconds); call as ``fn(variables, x, t, key)``."""
    jitted = jax.jit(lambda v, x, t, key: build(case.module, v)(x, t, key=key))
    t0 = time.perf_counter()
    compiled = jitted.lower(case.variables, x, t, key).compile()
    return compiled, time.perf_counter() - t0


def jax_floor(case: Case, images: int):
    """Plain gradient of sum_b f(x)_b[t_b] over ``images`` examples: the cost floor."""
    from jaxsal._src.contract import select

    def g(v, x, t):
        return jax.grad(lambda x: jnp.sum(select(case.module.apply(v, x), t)))(x)

    return jax.jit(g)


# ----------------------------------------------------------------------------- captum side


def captum_fn(method: str, case: Case, x: torch.Tensor, t: torch.Tensor, steps: int = STEPS) -> Callable:
    import captum.attr as ca

    m = case.torch_model
    if method == "vanilla_grad":
        o = ca.Saliency(m)
        return lambda: o.attribute(x, target=t, abs=False)
    if method == "grad_x_input":
        o = ca.InputXGradient(m)
        return lambda: o.attribute(x, target=t)
    if method == "deconvnet":
        o = ca.Deconvolution(m)
        return lambda: o.attribute(x, target=t)
    if method == "guided_backprop":
        o = ca.GuidedBackprop(m)
        return lambda: o.attribute(x, target=t)
    if method == "integrated_gradients":
        o = ca.IntegratedGradients(m)
        return lambda: o.attribute(x, target=t, n_steps=steps)
    if method == "smoothgrad":
        o = ca.NoiseTunnel(ca.Saliency(m))
        sigma = float(0.15 * (x.max() - x.min()))
        return lambda: o.attribute(
            x, target=t, nt_type="smoothgrad", nt_samples=steps, stdevs=sigma, abs=False
        )
    if method == "grad_cam":
        o = ca.LayerGradCam(m, case.torch_layer)
        return lambda: o.attribute(x, target=t, relu_attributions=True)
    if method == "guided_grad_cam":
        o = ca.GuidedGradCam(m, case.torch_layer)
        return lambda: o.attribute(x, target=t, interpolate_mode="bilinear")
    raise ValueError(method)


def torch_floor(case: Case, x: torch.Tensor, t: torch.Tensor) -> Callable:
    def g():
        xx = x.detach().requires_grad_(True)
        out = case.torch_model(xx)
        return torch.autograd.grad(out.gather(1, t[:, None]).sum(), xx)[0]

    return g


# ----------------------------------------------------------------------------- timing


def _sync_torch(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_jax(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def _time_torch(fn, device) -> float:
    _sync_torch(device)
    t0 = time.perf_counter()
    fn()
    _sync_torch(device)
    return time.perf_counter() - t0


def measure(
    case: Case,
    method: str,
    batch: int,
    *,
    runs: int = 5,
    steps: int = STEPS,
    device: str = "cpu",
    floors: bool = True,
    captum: bool = True,
) -> Timing:
    c = case.with_batch(batch)
    k = steps if METHODS[method][0] > 1 else 1
    x, t = jnp.asarray(c.x), jnp.asarray(c.target, jnp.int32)
    key = jax.random.key(0)
    fn, compile_s = jax_fn(c, jaxsal_builder(method, c, steps), x, t, key)
    _time_jax(fn, c.variables, x, t, key)

    c.torch_model.to(device)
    xt, tt = c.x_torch.to(device), torch.from_numpy(c.target).to(device)
    cf = captum_fn(method, c, xt, tt, steps) if captum else None
    if cf is not None:
        _time_torch(cf, device)

    # cheap workloads get more runs (up to ~1 s of jaxsal time, at most 30): medians of many
    # short runs are robust to other processes on the machine
    probe_s = _time_jax(fn, c.variables, x, t, key)
    runs = max(runs, min(30, int(1.0 / max(probe_s, 1e-4))))
    js, cs = [], []
    for _ in range(runs):
        js.append(_time_jax(fn, c.variables, x, t, key))
        if cf is not None:
            cs.append(_time_torch(cf, device))

    floor_ms = torch_floor_ms = float("nan")
    if floors:
        xb = jnp.asarray(np.concatenate([c.x] * k)) if k > 1 else x
        tb = jnp.asarray(np.concatenate([c.target] * k), jnp.int32) if k > 1 else t
        ff = jax_floor(c, xb.shape[0])
        _time_jax(ff, c.variables, xb, tb)
        xbt = torch.from_numpy(np.asarray(xb)).permute(0, 3, 1, 2).contiguous().to(device)
        tbt = torch.from_numpy(np.asarray(tb).astype(np.int64)).to(device)
        tf = torch_floor(c, xbt, tbt)
        _time_torch(tf, device)
        fs, tfs = [], []
        for _ in range(runs):
            fs.append(_time_jax(ff, c.variables, xb, tb))
            tfs.append(_time_torch(tf, device))
        floor_ms, torch_floor_ms = 1e3 * statistics.median(fs), 1e3 * statistics.median(tfs)
    return Timing(
        c.title,
        method,
        batch,
        1e3 * statistics.median(js),
        1e3 * statistics.median(cs) if cs else float("nan"),
        floor_ms,
        torch_floor_ms,
        compile_s,
        runs,
        batch * k,
        1e3 * min(js),
        1e3 * min(cs) if cs else float("nan"),
    )


def markdown(rows: list[Timing]) -> str:
    lines = [
        "| model | method | B | images/call | jaxsal ms | Captum ms | jaxsal/Captum | jaxsal/Captum (min) "
        "| floor ms (jax.grad) | jaxsal/floor | torch grad ms | jax.grad/torch grad | compile s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.method} | {r.batch} | {r.images} | {r.jaxsal_ms:.1f} | {r.captum_ms:.1f} | "
            f"**{r.ratio:.2f}** | {r.jaxsal_min_ms / r.captum_min_ms:.2f} | {r.floor_ms:.1f} | {r.overhead:.2f} | {r.torch_floor_ms:.1f} | "
            f"{r.floor_ms / r.torch_floor_ms:.2f} | {r.compile_s:.2f} |"
        )
    return "\n".join(lines)

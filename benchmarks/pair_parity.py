"""Guided IG, Blur IG and XRAI against PAIR ``saliency==0.2.1``: parity and speed.

``python -m benchmarks.pair_parity [--quick]`` writes ``benchmarks/results/pair.md`` and
``pair.json``. PAIR's core is NumPy with a model callback, so both libraries run the
*same* JAX model: PAIR gets ``call_model_function`` returning a jitted ``jax.grad`` of
the explained class, one image at a time (its own loop is its baseline).

* Parity, small CNN (``benchmarks.flax_models.ParityCNN``), float64 and float32:
  ``max|jaxsal - PAIR| / max|PAIR|`` per method. Guided IG's path follows the gradient,
  so in float32 one gradient that crosses a ReLU kink differently sends the path
  elsewhere; the table shows that the float32 gap between the two libraries is of the
  same size as each library's own float32-vs-float64 gap (the kink-flip explanation),
  while float64 agrees to rounding.
* XRAI given the same base attribution and the same segments (PAIR's Felzenszwalb
  masks), and jaxsal's segments equal to PAIR's.
* Speed: medians over runs, compile time separate, jaxsal batched and jitted vs PAIR's
  per-image loop, and the floor: one jitted ``jax.grad`` over as many rows as the method
  evaluates. The load average is recorded with the timings.

The helpers at the top (:func:`pair_guided_ig`, :func:`pair_blur_ig`, :func:`pair_xrai`)
are also used by ``tests/test_guided_ig.py``, ``test_blur_ig.py`` and ``test_xrai.py``.
PAIR's Guided IG calls ``np.quantile(..., interpolation=...)``, which NumPy 2 removed;
:func:`numpy_quantile_shim` maps it to ``method=`` during PAIR's call only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


# ----------------------------------------------------------------------------- PAIR adapters


@contextlib.contextmanager
def numpy_quantile_shim():
    """``np.quantile(..., interpolation=m)`` -> ``method=m`` while PAIR runs (NumPy 2)."""
    original = np.quantile

    def quantile(a, q, *args, interpolation=None, **kw):
        if interpolation is not None:
            kw["method"] = interpolation
        return original(a, q, *args, **kw)

    np.quantile = quantile
    try:
        yield
    finally:
        np.quantile = original


_GRADS: dict = {}


def pair_call_model(f: Callable, target: int, dtype) -> Callable:
    """PAIR's ``call_model_function`` for class ``target`` of the JAX model ``f``.

    The jitted gradient is cached per model and dtype (the class is an argument), so
    PAIR's per-image loop does not pay a compile per image."""
    import saliency.core as sc

    key = (id(f), np.dtype(dtype).name)
    if key not in _GRADS:
        _GRADS[key] = (f, jax.jit(jax.grad(lambda x, t: jnp.sum(f(x)[:, t]))))
    grad = _GRADS[key][1]

    def call(x_batch, call_model_args=None, expected_keys=None):
        g = grad(jnp.asarray(x_batch, dtype), jnp.asarray(target, jnp.int32))
        return {sc.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}

    return call


def pair_guided_ig(f, x, target, *, steps, fraction, max_dist, baseline=None) -> np.ndarray:
    import saliency.core as sc

    x = np.asarray(x)
    out = []
    with numpy_quantile_shim():
        for e in range(x.shape[0]):
            base = None if baseline is None else np.asarray(baseline[e], np.float64)
            out.append(
                sc.GuidedIG().GetMask(
                    x[e],
                    pair_call_model(f, int(target[e]), x.dtype),
                    x_baseline=base,
                    x_steps=steps,
                    fraction=fraction,
                    max_dist=max_dist,
                )
            )
    return np.stack(out)


def pair_guided_ig_float32_path(f, x, target, *, steps, fraction, max_dist) -> np.ndarray:
    """PAIR's own Guided IG algorithm with its path kept in float32 instead of float64.

    PAIR casts the path to float64 whatever the model's dtype; jaxsal keeps the input's
    dtype. This runs PAIR's ``guided_ig_impl`` source with that one cast changed (at
    run time; nothing is copied into jaxsal), to show that a float32 path moves the same
    way in both libraries."""
    import inspect

    from saliency.core import guided_ig as gig

    source = inspect.getsource(gig.guided_ig_impl).replace("dtype=np.float64", "dtype=np.float32")
    namespace = dict(vars(gig))
    exec(compile(source, "<PAIR guided_ig_impl, float32 path>", "exec"), namespace)
    impl = namespace["guided_ig_impl"]
    x = np.asarray(x, np.float32)
    out = []
    with numpy_quantile_shim():
        for e in range(x.shape[0]):
            call = pair_call_model(f, int(target[e]), np.float32)
            grad = lambda v, call=call: np.asarray(call(v[None])[gig.INPUT_OUTPUT_GRADIENTS][0], np.float32)  # noqa: E731
            out.append(
                impl(x[e], np.zeros_like(x[e]), grad, steps=steps, fraction=fraction, max_dist=max_dist)
            )
    return np.stack(out)


def pair_blur_ig(f, x, target, *, max_sigma, steps, grad_step=0.01, sqrt=False) -> np.ndarray:
    import saliency.core as sc

    x = np.asarray(x)
    return np.stack(
        [
            sc.BlurIG().GetMask(
                x[e],
                pair_call_model(f, int(target[e]), x.dtype),
                max_sigma=max_sigma,
                steps=steps,
                grad_step=grad_step,
                sqrt=sqrt,
                batch_size=1,
            )
            for e in range(x.shape[0])
        ]
    )


def pair_xrai(x, base, masks) -> np.ndarray:
    """PAIR's XRAI map per example, given the base attribution and the masks (lists)."""
    import saliency.core as sc

    return np.stack(
        [
            sc.XRAI().GetMask(
                np.asarray(x[e]), None, base_attribution=np.asarray(base[e]), segments=list(masks[e])
            )
            for e in range(len(masks))
        ]
    )


def pair_segments(image) -> np.ndarray:
    """PAIR's own Felzenszwalb masks of one image (its private ``_get_segments_felzenszwalb``)."""
    from saliency.core import xrai as pair_xrai_module

    return np.stack(pair_xrai_module._get_segments_felzenszwalb(np.asarray(image)))


def stack_masks(masks) -> np.ndarray:
    """Per-example mask lists as one ``(B, M, H, W)`` array, padded with empty masks
    (XRAI drops a mask that adds no pixel, so padding changes nothing)."""
    m = max(len(ms) for ms in masks)
    out = np.zeros((len(masks), m) + np.asarray(masks[0][0]).shape, bool)
    for e, ms in enumerate(masks):
        out[e, : len(ms)] = np.asarray(ms)
    return out


def rel(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


# ----------------------------------------------------------------------------- harness


def _model(size: int, dtype):
    from benchmarks.flax_models import small_cnn

    module, variables = small_cnn(size=size)
    variables = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
    return lambda x: module.apply(variables, x)


def _inputs(batch: int, size: int, dtype):
    return np.asarray(jax.random.normal(jax.random.key(1), (batch, size, size, 3)), np.float64).astype(dtype)


GIG = dict(steps=25, fraction=0.25, max_dist=0.1)
BIG = dict(max_sigma=10.0, steps=20, grad_step=0.01, sqrt=False)


def parity(quick: bool) -> list[dict]:
    cases = [(16, 2)] if quick else [(16, 2), (32, 4)]
    return [row for size, batch in cases for row in parity_case(size, batch)]


def parity_case(size: int, batch: int) -> list[dict]:
    import jaxsal
    from jaxsal._src.xrai import felzenszwalb_masks

    rows = []
    results = {}
    for dtype in (np.float64, np.float32):
        f = _model(size, dtype)
        x = _inputs(batch, size, dtype)
        t = np.asarray(jnp.argmax(f(jnp.asarray(x)), axis=1))
        ours = np.asarray(jaxsal.guided_ig(f, **GIG)(jnp.asarray(x), t))
        ref = pair_guided_ig(f, x, t, **GIG)
        results["guided_ig", dtype] = (ours, ref)
        if dtype == np.float32:
            try:
                path32 = pair_guided_ig_float32_path(f, x, t, **GIG)
                results["pair_f32_path"] = (
                    rel(ours, path32),
                    rel(path32, results["guided_ig", np.float64][1]),
                )
            except AssertionError as err:  # PAIR asserts gamma > 0, which float32 rounding can break
                results["pair_f32_path"] = (f"PAIR assertion: {err}", "")
        ours_b = np.asarray(jaxsal.blur_ig(f, **BIG)(jnp.asarray(x), t))
        ref_b = pair_blur_ig(f, x, t, **BIG)
        results["blur_ig", dtype] = (ours_b, ref_b)
        masks = [felzenszwalb_masks(x[e]) for e in range(batch)]
        same_masks = all(np.array_equal(m, pair_segments(x[e])) for e, m in enumerate(masks))
        ig = jaxsal.integrated_gradients(f, steps=16)
        base = np.asarray(ig(jnp.asarray(x), t))
        ours_x = np.asarray(jaxsal.xrai(ig, segments=stack_masks(masks))(jnp.asarray(x), t))[..., 0]
        ref_x = pair_xrai(x, base, masks)
        results["xrai", dtype] = (ours_x, ref_x)
        rows.append(
            {
                "case": f"{size}x{size}, B={batch}",
                "dtype": np.dtype(dtype).name,
                "xrai_segments_equal": same_masks,
            }
        )
    out = []
    for method in ("guided_ig", "blur_ig", "xrai"):
        o64, r64 = results[method, np.float64]
        o32, r32 = results[method, np.float32]
        out.append(
            {
                "method": method,
                "case": f"{size}x{size}, B={batch}",
                "rel_f64": rel(o64, r64),
                "rel_f32": rel(o32, r32),
                "jaxsal_f32_vs_f64": rel(o32, o64),
                "pair_f32_vs_f64": rel(r32, r64),
            }
        )
    out[0]["pair_f32_path_vs_jaxsal_f32"], out[0]["pair_f32_path_vs_pair_f64"] = results["pair_f32_path"]
    return out + rows


def _median(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(quick: bool) -> list[dict]:
    sizes = [(16, 2, 2)] if quick else [(32, 8, 3), (64, 8, 3)]
    return [row for size, batch, runs in sizes for row in speed_case(size, batch, runs)]


def speed_case(size: int, batch: int, runs: int) -> list[dict]:
    """One timing row per method. The weights are arguments of the jitted functions (not
    constants), so XLA does not constant-fold the model at the path's fixed start."""
    import jaxsal
    from benchmarks.flax_models import small_cnn

    module, variables = small_cnn(size=size)
    f = lambda z: module.apply(variables, z)  # noqa: E731  (PAIR's callback)
    x = _inputs(batch, size, np.float32)
    xj = jnp.asarray(x)
    t = np.asarray(jnp.argmax(f(xj), axis=1))
    tj = jnp.asarray(t)
    gig, big = dict(GIG), dict(BIG)
    rows = []

    def floor(rows_per_call: int):
        def loss(v, z, tt):
            return jnp.sum(jnp.take_along_axis(module.apply(v, z), tt[:, None], axis=1))

        g = jax.jit(jax.grad(loss, argnums=1))
        z = jnp.tile(xj, (rows_per_call // batch, 1, 1, 1))
        tt = jnp.tile(tj, rows_per_call // batch)
        g(variables, z, tt).block_until_ready()
        return _median(lambda: g(variables, z, tt), runs)

    cases = [
        ("guided_ig", jaxsal.guided_ig, gig, lambda: pair_guided_ig(f, x, t, **gig)),
        ("guided_ig(unroll=True)", jaxsal.guided_ig, {**gig, "unroll": True}, None),
        ("blur_ig", jaxsal.blur_ig, big, lambda: pair_blur_ig(f, x, t, **big)),
    ]
    pair_s = None
    for name, factory, hyper, pair_fn in cases:

        def call(v, z, tt, factory=factory, hyper=hyper):
            return factory(lambda q: module.apply(v, q), **hyper)(z, tt)

        run = jax.jit(call)
        t0 = time.perf_counter()
        run(variables, xj, tj).block_until_ready()
        compile_s = time.perf_counter() - t0
        ours = _median(lambda r=run: r(variables, xj, tj), runs)
        if pair_fn is not None:  # the unrolled row shares the PAIR timing of the row above
            pair_fn()  # PAIR's callback compiles its gradient on first use
            pair_s = _median(pair_fn, runs)
        rows.append(
            {
                "method": name,
                "batch": batch,
                "size": size,
                "steps": hyper["steps"],
                "jaxsal_s": ours,
                "jaxsal_compile_s": compile_s,
                "pair_s": pair_s,
                "ratio": pair_s / ours,
                "grad_floor_s": floor(hyper["steps"] * batch),
                "loadavg": os.getloadavg(),
            }
        )
    return rows


def markdown(payload: dict) -> str:
    lines = [
        "# jaxsal vs PAIR saliency 0.2.1: Guided IG, Blur IG, XRAI",
        "",
        f"Generated by `python -m benchmarks.pair_parity{' --quick' if payload['quick'] else ''}` "
        f"on {payload['date']} ({payload['cores']} CPU cores, JAX {jax.__version__}).",
        "",
        "## Parity (small CNN, relative max abs difference to PAIR)",
        "",
        f"Guided IG: `{GIG}`; Blur IG: `{BIG}` (PAIR `batch_size=1`); XRAI: the same base "
        "(jaxsal IG, 16 steps) and the same segments (PAIR's Felzenszwalb masks).",
        "",
        "| method | case | float64 | float32 | jaxsal float32 vs float64 | PAIR float32 vs float64 "
        "| PAIR, float32 path, vs jaxsal float32 | PAIR, float32 path, vs PAIR float64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: f"{v:.1e}" if isinstance(v, float) else (str(v) if v is not None else "")  # noqa: E731
    for r in payload["parity"]:
        if "method" in r:
            lines.append(
                f"| {r['method']} | {r['case']} | {fmt(r['rel_f64'])} | {fmt(r['rel_f32'])} | "
                f"{fmt(r['jaxsal_f32_vs_f64'])} | {fmt(r['pair_f32_vs_f64'])} | "
                f"{fmt(r.get('pair_f32_path_vs_jaxsal_f32'))} | {fmt(r.get('pair_f32_path_vs_pair_f64'))} |"
            )
    segs = [r for r in payload["parity"] if "xrai_segments_equal" in r]
    lines += [
        "",
        "Guided IG in float32 (the kink-flip explanation): PAIR computes its path in float64 even for a "
        "float32 model (only the gradients are float32); jaxsal computes it in the input's dtype. The last "
        "two columns run PAIR's own algorithm with its path in float32 (`pair_guided_ig_float32_path`). "
        "Where jaxsal's float32 result leaves the float64 one, PAIR's float32 path leaves it the same way "
        "and agrees with jaxsal's float32 result: the path follows the gradient, so a rounding-level step "
        "across a ReLU kink sends it elsewhere. In float64 the two libraries agree to rounding.",
        "",
        "XRAI segments (jaxsal `felzenszwalb_masks` vs PAIR `_get_segments_felzenszwalb`) identical: "
        + ", ".join(f"{r['case']} {r['dtype']}: {r['xrai_segments_equal']}" for r in segs)
        + ".",
        "",
        "## Speed (float32, medians; compile separate)",
        "",
        "| method | batch | size | steps | jaxsal (s) | compile (s) | PAIR loop (s) | PAIR / jaxsal "
        "| jax.grad floor, steps x batch rows (s) | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["speed"]:
        la = ", ".join(f"{v:.2f}" for v in r["loadavg"])
        lines.append(
            f"| {r['method']} | {r['batch']} | {r['size']} | {r['steps']} | {r['jaxsal_s']:.3f} | "
            f"{r['jaxsal_compile_s']:.2f} | {r['pair_s']:.3f} | {r['ratio']:.1f}x | {r['grad_floor_s']:.4f} | {la} |"
        )
    lines += [
        "",
        "jaxsal: one jitted call for the whole batch. PAIR: `GetMask` per image, its model callback a jitted "
        "`jax.grad` of the same model (compiled before timing). The floor is one jitted `jax.grad` over "
        "`steps x batch` rows at once, the gradient work of the method without its path logic. Guided IG's "
        "steps are sequential: jaxsal runs them in a `lax.fori_loop`, and XLA on CPU runs a model inside a "
        "loop body several times slower than at the top level; `unroll=True` removes the loop (compile time "
        "then grows with `steps`). The machine is shared: see the load average per row.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller inputs and fewer runs (a smoke test)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float32 arrays still compute in float32
    payload = {
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "parity": parity(args.quick),
        "speed": speed(args.quick),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pair.json").write_text(json.dumps(payload, indent=1, default=float))
    (RESULTS / "pair.md").write_text(markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

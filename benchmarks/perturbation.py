"""Perturbation methods: Captum parity, Shapley convergence, memory vs batch_size, speed.

    python -m benchmarks.perturbation            # everything, writes benchmarks/results/perturbation.md
    python -m benchmarks.perturbation --quick    # small CNN only (parity), fewer keys

* Parity: ``jaxsal.occlusion`` vs Captum ``Occlusion(sliding_window_shapes=(C, h, w),
  strides=(C, sh, sw))`` and ``jaxsal.feature_ablation`` vs ``FeatureAblation(feature_mask=)``
  on SLIC superpixels, on the small CNN and EfficientNet-Lite0 (same weights), in float32
  and float64 (float64 in a fresh process with ``JAX_ENABLE_X64=1``).
* Convergence: max |phi - phi_exact| of Shapley sampling and KernelSHAP on an 8-feature
  nonlinear model against enumeration of all 256 coalitions, mean over keys, vs ``n``.
* Memory: peak RSS (``ru_maxrss``) of occlusion, KernelSHAP and RISE on EfficientNet-Lite0
  at ``batch_size`` 8 and 64, each in a fresh process, minus the RSS after loading the model
  and compiling one forward pass of the same batch size.
* Speed: the same model and inputs in one process; medians of repeated runs; jaxsal's
  compile time apart; Captum with ``perturbations_per_eval`` giving the same rows per call;
  the plain ``jax.grad`` of the score (one forward + backward) as the floor; load average.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "perturbation.md")
OCC = {"small_cnn": ((8, 8), (4, 4)), "efficientnet_lite0": ((32, 32), (16, 16))}
SLIC = 30  # n_segments of the feature-ablation mask


def _case(name: str, x64: bool):
    from benchmarks import cases

    case = cases.small_cnn(batch=2, size=32) if name == "small_cnn" else cases.efficientnet_lite0(batch=2)
    return cases.as_float64(case) if x64 else case


def parity(name: str, x64: bool) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import torch
    from captum.attr import FeatureAblation, Occlusion

    import jaxsal
    from benchmarks.cases import to_nchw, to_nhwc

    case = _case(name, x64)
    x, t = jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)
    xt, tt = to_nchw(case.x), torch.from_numpy(case.target)
    c = case.x.shape[-1]
    window, strides = OCC[name]
    mask = jaxsal.segments(case.x, "slic", n_segments=SLIC)  # (B, H, W)
    f = lambda v, z: case.module.apply(v, z)  # noqa: E731
    occ = jax.jit(lambda v, x, t: jaxsal.occlusion(lambda z: f(v, z), window=window, strides=strides)(x, t))
    fab = jax.jit(lambda v, x, t: jaxsal.feature_ablation(lambda z: f(v, z), mask)(x, t))
    with torch.no_grad():
        occ_captum = Occlusion(case.torch_model)
        if x64:
            # Captum returns `total.float() / count` (float32) even for float64 inputs; take its
            # float64 total and divide by the coverage count of its windows (ceil((D - w) / s) + 1
            # starts k * s per axis, cut at the border)
            occ_captum.use_weights = False
        ref_occ = occ_captum.attribute(
            xt,
            sliding_window_shapes=(c, *window),
            strides=(c, *strides),
            target=tt,
            perturbations_per_eval=16,
        )
        if x64:
            counts = []
            for size, w, st in zip(case.x.shape[1:3], window, strides, strict=True):
                starts = np.arange(int(np.ceil((size - w) / st)) + 1) * st
                counts.append(
                    (
                        (np.arange(size)[None] >= starts[:, None])
                        & (np.arange(size)[None] < starts[:, None] + w)
                    ).sum(0)
                )
            ref_occ = ref_occ / torch.from_numpy(np.outer(*counts).astype(np.float64))
        fm = torch.from_numpy(mask.astype(np.int64))[:, None]
        ref_fab = FeatureAblation(case.torch_model).attribute(
            xt, feature_mask=fm, target=tt, perturbations_per_eval=16
        )
    rows = []
    for label, call, a, ref in (
        (
            f"occlusion(window={window}, strides={strides})",
            f"Occlusion(sliding_window_shapes={(c, *window)}, strides={(c, *strides)})",
            occ(case.variables, x, t),
            ref_occ,
        ),
        (
            f'feature_ablation(segments(x, "slic", n_segments={SLIC}))',
            "FeatureAblation(feature_mask=same)",
            fab(case.variables, x, t),
            ref_fab,
        ),
    ):
        a = np.asarray(a, np.float64)
        r = to_nhwc(ref).astype(np.float64)
        d = float(np.abs(a - r).max())
        rows.append(
            {
                "model": case.title,
                "jaxsal": label,
                "captum": call,
                "dtype": "float64" if x64 else "float32",
                "rel": d / float(np.abs(r).max()),
                "captum_dtype": str(ref.dtype),
            }
        )
    return rows


def _subprocess(args: list[str], x64: bool = False, timeout: int = 1800) -> dict | list:
    env = dict(os.environ, JAX_ENABLE_X64="1" if x64 else "0")
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks.perturbation", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- convergence


def convergence(ns=(8, 32, 128, 512, 2048), keys: int = 8) -> dict:
    import jax

    import jaxsal

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_perturbation import enumerated_shapley, tabular_model  # the test's model and enumeration

    f, x, base = tabular_model()
    exact = enumerated_shapley(f, x, base)
    out = {"exact": exact.tolist(), "ns": list(ns)}
    for name in ("shapley_sampling", "kernel_shap"):
        errs = []
        for n in ns:
            attr = getattr(jaxsal, name)(f, np.arange(8), n=n, baseline=base)
            run = jax.jit(lambda xx, k, a=attr: a(xx, 0, key=k))
            e = [np.abs(np.asarray(run(x, jax.random.key(i)))[0] - exact).max() for i in range(keys)]
            errs.append(float(np.mean(e)))
        out[name] = errs
    return out


# ----------------------------------------------------------------------------- memory


def rss_one(method: str, batch_size: int) -> dict:
    import resource

    import jax
    import jax.numpy as jnp

    import jaxsal

    case = _case("efficientnet_lite0", False)
    x = jnp.asarray(case.x[:1])
    t = jnp.asarray(case.target[:1], jnp.int32)
    v = case.variables
    f = lambda v, z: case.module.apply(v, z)  # noqa: E731
    xb = jnp.concatenate([x] * batch_size)
    jax.block_until_ready(jax.jit(f)(v, xb))  # the model and one forward of batch_size rows
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    build = {
        "occlusion": lambda g: jaxsal.occlusion(g, window=32, strides=16, batch_size=batch_size),
        "kernel_shap": lambda g: jaxsal.kernel_shap(g, n=256, batch_size=batch_size),
        "rise": lambda g: jaxsal.rise(g, n=256, batch_size=batch_size),
    }[method]
    run = jax.jit(lambda v, x, t, k: build(lambda z: f(v, z))(x, t, key=k))
    jax.block_until_ready(run(v, x, t, jax.random.key(0)))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "batch_size": batch_size, "model_mb": before, "peak_mb": after}


# ----------------------------------------------------------------------------- speed


def _median(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(reps: int = 3) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    from captum.attr import FeatureAblation, KernelShap, Occlusion

    import jaxsal
    from benchmarks.cases import to_nchw

    case = _case("efficientnet_lite0", False)
    x, t = jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)
    xt, tt = to_nchw(case.x), torch.from_numpy(case.target)
    v = case.variables
    f = lambda v, z: case.module.apply(v, z)  # noqa: E731
    mask = jaxsal.segments(case.x, "slic", n_segments=SLIC)
    fm = torch.from_numpy(mask.astype(np.int64))[:, None]
    rows_per_call = 32
    ppe = rows_per_call // x.shape[0]
    (w, s) = OCC["efficientnet_lite0"]
    c = case.x.shape[-1]
    key = jax.random.key(0)
    methods = {
        "occlusion": (
            lambda g: jaxsal.occlusion(g, window=w, strides=s, batch_size=rows_per_call),
            lambda: Occlusion(case.torch_model).attribute(
                xt, sliding_window_shapes=(c, *w), strides=(c, *s), target=tt, perturbations_per_eval=ppe
            ),
        ),
        "feature_ablation": (
            lambda g: jaxsal.feature_ablation(g, mask, batch_size=rows_per_call),
            lambda: FeatureAblation(case.torch_model).attribute(
                xt, feature_mask=fm, target=tt, perturbations_per_eval=ppe
            ),
        ),
        "kernel_shap": (
            lambda g: jaxsal.kernel_shap(g, mask, n=200, batch_size=rows_per_call),
            lambda: KernelShap(case.torch_model).attribute(
                xt[:1],
                feature_mask=fm[:1],
                target=tt[:1],
                n_samples=200,
                perturbations_per_eval=rows_per_call,
            ),
        ),
    }
    out = {"load_before": os.getloadavg(), "rows_per_call": rows_per_call, "rows": []}
    grad = jax.jit(jax.grad(lambda x, v: jnp.sum(f(v, x)[jnp.arange(x.shape[0]), t])))
    jax.block_until_ready(grad(x, v))
    out["grad_floor_s"] = _median(lambda: jax.block_until_ready(grad(x, v)), 5)
    for name, (build, captum) in methods.items():
        fn = jax.jit(lambda v, x, t, k, b=build: b(lambda z: f(v, z))(x, t, key=k))
        t0 = time.perf_counter()
        exe = fn.lower(v, x, t, key).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(exe(v, x, t, key))
        # KernelSHAP: Captum explains one example per call (a batch needs a shared mask)
        n_ex = 1 if name == "kernel_shap" else x.shape[0]
        run_s = _median(lambda e=exe: jax.block_until_ready(e(v, x, t, key)), reps)
        with torch.no_grad():
            captum()  # warm-up
            captum_s = _median(captum, reps) * (x.shape[0] / n_ex)
        out["rows"].append({"method": name, "compile_s": compile_s, "run_s": run_s, "captum_s": captum_s})
    out["load_after"] = os.getloadavg()
    return out


# ----------------------------------------------------------------------------- report


def markdown(par: list[dict], conv: dict, rss: list[dict], spd: dict | None) -> str:
    lines = ["# Perturbation methods", "", "Written by `python -m benchmarks.perturbation`.", ""]
    lines += [
        "## Parity with Captum",
        "",
        "`rel` = max |jaxsal - Captum| / max |Captum| over the batch (2 images). "
        "Occlusion with all channels in the window; feature ablation on SLIC superpixels "
        f"(`n_segments={SLIC}`), zero baselines.",
        "",
        "| model | jaxsal | Captum | dtype | rel | status |",
        "| --- | --- | --- | --- | ---: | --- |",
    ]
    for r in par:
        tol = 1e-4 if r["dtype"] == "float32" else 1e-10
        note = (
            "; Captum's float64 total / its window count (its own division casts to float32)"
            if r["dtype"] == "float64" and r["jaxsal"].startswith("occlusion")
            else ""
        )
        lines.append(
            f"| {r['model']} | `{r['jaxsal']}` | `{r['captum']}` | {r['dtype']} | {r['rel']:.1e} | "
            f"{'PASS' if r['rel'] < tol else '**FAIL**'} (< {tol:g}){note} |"
        )
    lines += [
        "",
        "## Convergence to the exact Shapley values",
        "",
        "8-feature nonlinear model (`tests/test_perturbation.py::tabular_model`), exact values by "
        f"enumerating all 256 coalitions (max |phi| = {max(abs(v) for v in conv['exact']):.3f}); "
        "mean over keys of max_g |phi_g - phi_g^exact|.",
        "",
        "| n | " + " | ".join(str(n) for n in conv["ns"]) + " |",
        "| --- |" + " ---: |" * len(conv["ns"]),
    ]
    for name in ("shapley_sampling", "kernel_shap"):
        lines.append(f"| {name} | " + " | ".join(f"{e:.2e}" for e in conv[name]) + " |")
    if rss:
        lines += [
            "",
            "## Peak memory vs batch_size (EfficientNet-Lite0, one 224 x 224 image, fresh processes)",
            "",
            "`model` = peak RSS after loading the model and compiling one forward pass of "
            "`batch_size` rows; `peak` = after the method (jitted) ran once; occlusion 32 x 32 "
            "windows at stride 16 (169), KernelSHAP n = 256, RISE n = 256.",
            "",
            "| method | batch_size | model MB | peak MB | peak - model MB |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in rss:
            lines.append(
                f"| {r['method']} | {r['batch_size']} | {r['model_mb']:.0f} | {r['peak_mb']:.0f} | "
                f"{r['peak_mb'] - r['model_mb']:.0f} |"
            )
    if spd:
        lines += [
            "",
            "## Speed vs Captum (EfficientNet-Lite0, 2 images, float32, CPU, one process)",
            "",
            f"{spd['rows_per_call']} rows per model call on both sides (Captum: `perturbations_per_eval`). "
            "Medians; jaxsal compile time apart. KernelSHAP: n = 200 on SLIC; Captum's time is "
            "per example times 2 (it explains one example per call with a per-example mask). "
            f"Floor: one jitted `jax.grad` of the scores = {spd['grad_floor_s'] * 1e3:.0f} ms. "
            f"Load average before {spd['load_before'][0]:.1f}, after {spd['load_after'][0]:.1f} "
            "(2 cores shared with other jobs: ratios are more reliable than seconds).",
            "",
            "| method | jaxsal compile s | jaxsal run s | Captum s | Captum / jaxsal |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in spd["rows"]:
            lines.append(
                f"| {r['method']} | {r['compile_s']:.1f} | {r['run_s']:.2f} | {r['captum_s']:.2f} | "
                f"{r['captum_s'] / r['run_s']:.1f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    models = ("small_cnn",) if quick else ("small_cnn", "efficientnet_lite0")
    par = []
    for m in models:
        for x64 in (False, True):
            par += _subprocess(["parity", m], x64=x64)
            print(par[-2:], flush=True)
    conv = _subprocess(["convergence"] + (["--quick"] if quick else []))
    print(conv, flush=True)
    rss = []
    if not quick:
        for method in ("occlusion", "kernel_shap", "rise"):
            for bs in (8, 64):
                rss.append(_subprocess(["rss", method, str(bs)]))
                print(rss[-1], flush=True)
    spd = None if quick else _subprocess(["speed"])
    with open(OUT, "w") as fh:
        fh.write(markdown(par, conv, rss, spd))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "parity":
        print(json.dumps(parity(sys.argv[2], os.environ.get("JAX_ENABLE_X64") == "1")))
    elif cmd == "convergence":
        kw = {"keys": 4, "ns": (8, 64, 512)} if "--quick" in sys.argv else {}
        print(json.dumps(convergence(**kw)))
    elif cmd == "rss":
        print(json.dumps(rss_one(sys.argv[2], int(sys.argv[3]))))
    elif cmd == "speed":
        print(json.dumps(speed()))
    else:
        main(sys.argv[1:])

"""The speed work: what each option gives, measured (section ``options`` of ``python -m benchmarks``).

Options tried (each in a fresh subprocess, because XLA reads ``XLA_FLAGS`` once, at
backend start-up):

* XLA CPU flags that exist in jaxlib 0.10.2 (found with ``strings`` on
  ``libjax_common.so``): the oneDNN paths (``--xla_cpu_use_onednn``,
  ``--xla_cpu_experimental_onednn_custom_call``), XNNPACK (``--xla_cpu_use_xnnpack``),
  the legacy runtime (``--xla_cpu_use_thunk_runtime=false``) and a single Eigen
  thread (fast math is listed but not run, for time);
* torch with 1 thread vs its default, to see how much of the gap is threading;
* bfloat16 instead of float32 (a dtype option; it changes results, so it is not a
  parity configuration);
* the fused prototype (:mod:`benchmarks.fused`): five methods from one forward pass
  vs five separate calls;
* recompiles: a jitted explainer called with new weights of the same shapes (no
  recompile) vs one that bakes the weights in as constants (recompiles every time).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

FLAG_CONFIGS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn custom call": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "legacy runtime": "--xla_cpu_use_thunk_runtime=false",
    "1 eigen thread": "--xla_cpu_multi_thread_eigen=false",
    # not run (time): "--xla_cpu_enable_fast_math=true"
}

# name -> (case, kwargs, batch); VGG-16 is left out to keep the sweep short (its jax.grad vs
# torch floors are in the speed table)
WORKLOADS = {
    "small CNN 64x64, B=16": ("small_cnn", {"size": 64}, 16),
    "EfficientNet-Lite0, B=4": ("efficientnet_lite0", {}, 4),
}
QUICK_WORKLOADS = {"small CNN 16x16, B=4": ("small_cnn", {"size": 16}, 4)}


def _median_ms(fn, runs, *args) -> float:
    """Median wall time of ``fn(*args)`` in ms, after one warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def worker(spec: dict) -> dict:
    """Runs inside the subprocess: jax.grad floor (+ torch floor) for each workload."""
    import warnings

    warnings.filterwarnings("ignore")
    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks import cases, speed

    if spec.get("torch_threads"):
        torch.set_num_threads(spec["torch_threads"])
    dtype = jnp.dtype(spec.get("dtype", "float32"))
    out = {}
    for label, (name, kw, batch) in spec["workloads"].items():
        c = cases.CASES[name](**kw).with_batch(batch)
        t = jnp.asarray(c.target, jnp.int32)
        v = jax.tree_util.tree_map(lambda a: a.astype(dtype), c.variables)  # noqa: B023 (used at once)
        xd = jnp.asarray(c.x).astype(dtype)
        t0 = time.perf_counter()
        ff = speed.jax_floor(c, batch).lower(v, xd, t).compile()
        row = {"compile_s": time.perf_counter() - t0, "jax_ms": _median_ms(ff, spec["runs"], v, xd, t)}
        if spec.get("torch"):
            row["torch_ms"] = _median_ms(
                speed.torch_floor(c, c.x_torch, torch.from_numpy(c.target)), spec["runs"]
            )
        out[label] = row
    return out


def _spawn(spec: dict, xla_flags: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        p = subprocess.run(
            [sys.executable, "-m", "benchmarks.options", json.dumps(spec)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 300 s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def fused_vs_separate(quick: bool, runs: int) -> list[dict]:
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import cases, speed

    out = []
    plan = (
        [("small_cnn", {"size": 16}, 4)]
        if quick
        else [("small_cnn", {"size": 64}, 16), ("efficientnet_lite0", {}, 4)]
    )
    for name, kw, batch in plan:
        c = cases.CASES[name](**kw).with_batch(batch)
        x, t = jnp.asarray(c.x), jnp.asarray(c.target, jnp.int32)
        fz, sp = _jit_family(c, "fused"), _jit_family(c, "separate")
        a, b = fz(c.variables, x, t), sp(c.variables, x, t)
        err = max(
            float(
                np.abs(np.asarray(a[k]) - np.asarray(b[k])).max() / (np.abs(np.asarray(b[k])).max() + 1e-30)
            )
            for k in a
        )
        t_single = sum(_median_ms(_jit_family(c, "separate", only=k), runs, c.variables, x, t) for k in a)
        out.append(
            {
                "workload": f"{c.title}, B={batch}",
                "five separate jitted calls ms": t_single,
                "five methods in one jit ms": _median_ms(sp, runs, c.variables, x, t),
                "fused prototype ms": _median_ms(fz, runs, c.variables, x, t),
                "floor (one jax.grad) ms": _median_ms(speed.jax_floor(c, batch), runs, c.variables, x, t),
                "max rel diff fused vs separate": err,
            }
        )
    return out


def _jit_family(c, which: str, only: str | None = None):
    """jit of the fused prototype or of the five separate methods (``only``: just one of them)."""
    import jax

    import jaxsal.flax
    from benchmarks import fused

    fn = fused.fused_gradient_family if which == "fused" else fused.separate

    def run(v, x, t):
        out = fn(jaxsal.flax.probe(c.module, v, c.layer), x, t)
        return out if only is None else out[only]

    return jax.jit(run)


def recompiles(quick: bool) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxsal
    from benchmarks import cases

    c = cases.small_cnn(batch=4, size=16 if quick else 64)
    x, t = jnp.asarray(c.x), jnp.asarray(c.target, jnp.int32)
    v2 = jax.tree_util.tree_map(lambda a: a * 1.01, c.variables)
    traces = []

    @jax.jit
    def explain(v, x, t):
        traces.append(1)
        return jaxsal.vanilla_grad(lambda x: c.module.apply(v, x))(x, t)

    t0 = time.perf_counter()
    jax.block_until_ready(explain(c.variables, x, t))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(explain(v2, x, t))
    second = time.perf_counter() - t0

    def baked(v):
        return jax.jit(lambda x, t: jaxsal.vanilla_grad(lambda x: c.module.apply(v, x))(x, t))

    t0 = time.perf_counter()
    jax.block_until_ready(baked(c.variables)(x, t))
    jax.block_until_ready(baked(v2)(x, t))
    baked_two = time.perf_counter() - t0
    return {
        "variables as argument: first call s": first,
        "variables as argument: new weights s": second,
        "traces": len(traces),
        "weights baked in: two weight sets s": baked_two,
    }


def run(quick: bool = False, runs: int = 5) -> dict:
    workloads = QUICK_WORKLOADS if quick else WORKLOADS
    configs = {"default": ""} if quick else FLAG_CONFIGS
    flags = {}
    for label, xf in configs.items():
        t0 = time.perf_counter()
        flags[label] = _spawn({"workloads": workloads, "runs": runs, "torch": label == "default"}, xf)
        print(f"[options] XLA_FLAGS={xf!r}: {flags[label]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    extra = {}
    if not quick:
        extra["torch 1 thread"] = _spawn(
            {"workloads": workloads, "runs": runs, "torch": True, "torch_threads": 1}, ""
        )
        no_vgg = {k: v for k, v in workloads.items() if v[0] != "vgg16"}
        extra["bfloat16"] = _spawn({"workloads": no_vgg, "runs": runs, "dtype": "bfloat16"}, "")
        print(f"[options] {extra}", flush=True)
    fz = fused_vs_separate(quick, runs)
    print(f"[options] fused: {fz}", flush=True)
    rc = recompiles(quick)
    print(f"[options] recompiles: {rc}", flush=True)
    res = {"flags": flags, "configs": configs, "extra": extra, "fused": fz, "recompiles": rc, "quick": quick}
    res["markdown"] = markdown(res)
    return res


def markdown(res: dict) -> str:
    wl = list(next(v for v in res["flags"].values() if "error" not in v))
    lines = [
        "## Speed work: what each option gave\n",
        "Plain `jax.grad` floor (ms, median) per XLA_FLAGS configuration, each in a fresh process; "
        "the torch autograd floor of the same workload for reference.\n",
        "| configuration | XLA_FLAGS | " + " | ".join(wl) + " |",
        "| --- | --- |" + " ---: |" * len(wl),
    ]
    base = res["flags"].get("default", {})
    for label, r in res["flags"].items():
        if "error" in r:
            lines.append(
                f"| {label} | `{res['configs'][label]}` | " + f"error: {r['error']} |" + " |" * (len(wl) - 1)
            )
            continue
        cells = []
        for w in wl:
            ms = r[w]["jax_ms"]
            rel = f" ({ms / base[w]['jax_ms']:.2f}x)" if label != "default" and w in base else ""
            cells.append(f"{ms:.1f}{rel}")
        lines.append(f"| {label} | `{res['configs'][label] or '(none)'}` | " + " | ".join(cells) + " |")
    if base and all("torch_ms" in base[w] for w in wl):
        lines.append(
            "| torch autograd (default threads) | | "
            + " | ".join(f"{base[w]['torch_ms']:.1f}" for w in wl)
            + " |"
        )
    for label, r in res.get("extra", {}).items():
        if "error" in r:
            lines.append(f"| {label} | | error: {r['error']} |")
            continue
        key = "torch_ms" if label.startswith("torch") else "jax_ms"
        lines.append(
            f"| {label} | | " + " | ".join(f"{r[w][key]:.1f}" if w in r else "not run" for w in wl) + " |"
        )
    lines.append("")
    if res.get("fused"):
        keys = list(res["fused"][0])
        lines += [
            "Fused prototype (`benchmarks/fused.py`): Vanilla Gradient, Gradient x Input, Grad-CAM, "
            "Guided Backprop and Guided Grad-CAM of the same batch.\n",
            "| " + " | ".join(keys) + " |",
            "| --- |" + " ---: |" * (len(keys) - 1),
        ]
        for r in res["fused"]:
            lines.append(
                "| "
                + " | ".join(
                    str(r[k]) if isinstance(r[k], str) else (f"{r[k]:.1e}" if "diff" in k else f"{r[k]:.1f}")
                    for k in keys
                )
                + " |"
            )
        lines.append("")
    if res.get("recompiles"):
        lines.append(
            "Recompiles (small CNN, vanilla gradient): "
            + "; ".join(
                f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in res["recompiles"].items()
            )
            + ".\n"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(json.dumps(worker(json.loads(sys.argv[1]))))

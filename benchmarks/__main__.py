"""``python -m benchmarks``: parity and speed of jaxsal against Captum; writes RESULTS.md.

Sections (``--only`` runs a subset; each writes ``benchmarks/results/<section>.json`` and
RESULTS.md is rendered from every JSON present, so one command gives the whole file):

* ``parity``  -- forward agreement of the twins, then every shared method (parity.py);
* ``speed``   -- steady-state timings, jaxsal vs Captum vs the gradient floor (speed.py);
* ``options`` -- the speed work: XLA CPU flags, threads, the fused prototype (options.py).

``--quick`` shrinks every section (seconds, for a smoke test); ``--render`` only rewrites
RESULTS.md from the stored JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time
import warnings

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def environment() -> dict:
    import platform

    import captum
    import flax
    import jax
    import jaxlib
    import numpy
    import torch

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "captum": captum.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_mkldnn": bool(torch.backends.mkldnn.is_available()),
        "jax_devices": [str(d) for d in jax.devices()],
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "loadavg": os.getloadavg(),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
    }


def _save(name: str, payload) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))


def _load(name: str):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


# ----------------------------------------------------------------------------- sections


def run_parity(quick: bool) -> dict:
    from benchmarks import cases, parity

    # (case, kwargs, IG steps): parity does not depend on the number of steps, so the big
    # models use few to keep the run short
    plan = [("small_cnn", dict(batch=2, size=32), 50)]
    if not quick:
        plan += [("efficientnet_lite0", dict(batch=2), 8), ("vgg16", dict(batch=1), 4)]
    rows, forward = [], []
    for name, kw, steps in plan:
        t0 = time.perf_counter()
        case = cases.CASES[name](**kw)
        forward.append({"model": case.title, "rel": cases.forward_gap(case), "batch": case.x.shape[0]})
        r32 = parity.parity_rows(case, ig_steps=steps)
        del case
        # float64 (slow on the CPU): everything on the small CNN; on the big models the
        # methods that miss the float32 tolerance, to tell rounding from a wrong definition
        only = None if name == "small_cnn" else {parity.method_name(r) for r in r32 if not r.ok}
        if only is None or only:
            r32 = parity.merge64(r32, parity.float64_rows(name, kw, steps, only=only))
        # IG rows that still differ in float64: rerun off the zero baseline's exact ties
        if any(r.kind == "parity" and r.rel64 is not None and not r.ok64 for r in r32):
            off = parity.float64_rows(name, kw, steps, only={"integrated_gradients"}, off_tie=True)
            r32 = parity.merge64(r32, off, field="rel64_off_tie")
        rows += [dataclasses.asdict(r) for r in r32]
        print(f"[parity] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    if not quick:
        case = cases.efficientnet_lite0(batch=2, act="relu6")
        forward.append({"model": case.title, "rel": cases.forward_gap(case), "batch": 2})
        rows += [dataclasses.asdict(r) for r in parity.plain_relu6_rows(case)]
    return {"env": environment(), "forward": forward, "rows": rows, "quick": quick}


# (case, kwargs, method list, batch sizes); the plan is sized for ~10 minutes on 2 cores
ONE_PASS = ["vanilla_grad", "grad_x_input", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam"]
SPEED_PLAN = [
    ("small_cnn", dict(size=64), ONE_PASS, (1, 16, 64)),
    ("small_cnn", dict(size=64), ["integrated_gradients", "smoothgrad"], (1, 16)),
    ("efficientnet_lite0", {}, ["vanilla_grad", "guided_backprop", "grad_cam", "guided_grad_cam"], (1, 16)),
    ("efficientnet_lite0", {}, ["vanilla_grad", "grad_cam"], (64,)),
    ("efficientnet_lite0", {}, ["integrated_gradients", "smoothgrad"], (1,)),
    ("vgg16", {}, ["vanilla_grad", "grad_cam"], (1,)),
]
# Left out on this 2-core machine to keep the run near 15 minutes: EfficientNet-Lite0 B=64 for
# the other methods, IG/SmoothGrad at B>1 on the big models, VGG-16 beyond B=1 (its backward
# pass alone takes ~0.25 s per image here). `python -m benchmarks.gpu` runs them on a GPU.
QUICK_PLAN = [("small_cnn", dict(size=16), ONE_PASS + ["integrated_gradients", "smoothgrad"], (1, 4))]


def run_speed(quick: bool, runs: int = 5, steps: int = 50) -> dict:
    from benchmarks import cases, speed

    plan, steps = (QUICK_PLAN, 4) if quick else (SPEED_PLAN, steps)
    rows, loaded = [], {}
    for name, kw, methods, batches in plan:
        key = (name, tuple(sorted(kw.items())))
        if key not in loaded:
            loaded.clear()
            loaded[key] = cases.CASES[name](**kw)
        case = loaded[key]
        for method in methods:
            for b in batches:
                t0 = time.perf_counter()
                r = speed.measure(case, method, b, runs=runs, steps=steps)
                rows.append(dataclasses.asdict(r))
                _save(
                    "speed",
                    {"env": environment(), "rows": rows, "runs": runs, "steps": steps, "quick": quick},
                )
                print(
                    f"[speed] {r.model} {method} B={b}: jaxsal {r.jaxsal_ms:.1f} ms, captum {r.captum_ms:.1f} ms, "
                    f"floor {r.floor_ms:.1f} ms ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    return {"env": environment(), "rows": rows, "runs": runs, "steps": steps, "quick": quick}


# ----------------------------------------------------------------------------- rendering


#: Reports of the method families with their own harness: (results/<name>.md, the command).
FAMILY_REPORTS = (
    ("propagation", "python -m benchmarks.propagation"),
    ("perturbation", "python -m benchmarks.perturbation"),
    ("pair", "python -m benchmarks.pair_parity"),
    (
        "sanity_propagation",
        "jaxsal sanity --methods lrp lrp_alpha2_beta1 deeplift guided_backprop vanilla_grad",
    ),
)


def render() -> str:
    from benchmarks import parity, speed

    par, spd, opt = _load("parity"), _load("speed"), _load("options")
    out = [(HERE / "RESULTS_HEAD.md").read_text().rstrip() + "\n"]
    env = (spd or par or {}).get("env")
    if env:
        out.append("## Machine and versions\n")
        out.append("| | |\n| --- | --- |")
        for k, v in env.items():
            out.append(f"| {k} | `{v}` |")
        out.append("")
    if par:
        out.append(f"## Parity (run {par['env']['date']}, `{par['env']['command']}`)\n")
        out.append("Forward pass of the Flax model vs its PyTorch twin (max abs diff / max abs logit):\n")
        out.append("| model | batch | rel. diff |\n| --- | ---: | ---: |")
        out += [f"| {f['model']} | {f['batch']} | {f['rel']:.1e} |" for f in par["forward"]]
        out.append("")
        rows = [parity.Row(**r) for r in par["rows"]]
        out.append(parity.markdown(rows))
        n_par = sum(r.kind == "parity" for r in rows)
        n_ok = sum(r.kind == "parity" and r.ok for r in rows)
        n_64 = sum(r.kind == "parity" and not r.ok and r.ok64 for r in rows)
        n_un = sum(r.kind == "parity" and not r.ok and r.rel64 is None for r in rows)
        n_tie = sum(
            r.kind == "parity"
            and not r.ok
            and not r.ok64
            and r.rel64_off_tie is not None
            and r.rel64_off_tie < parity.TOL64
            for r in rows
        )
        out.append(
            f"\n**{n_ok} of {n_par} parity rows are below {parity.TOL:g} in float32; {n_64} more agree to "
            f"{parity.TOL64:g} in float64 (float32 rounding at ReLU/max-pool kinks, see below); {n_tie} more "
            f"agree to {parity.TOL64:g} in float64 once IG's baseline is moved {parity.TIE_EPS:g} off the "
            f"exact max-pool ties of the all-zero input; {n_un} were not rerun in float64; "
            f"{n_par - n_ok - n_64 - n_tie - n_un} disagree.**\n"
        )
    if spd:
        e = spd["env"]
        out.append(f"## Speed (run {e['date']}, `{e['command']}`)\n")
        out.append(
            f"Medians of at least {spd['runs']} interleaved runs (up to 30 for workloads under ~30 ms); IG and SmoothGrad with {spd['steps']} "
            f"steps/samples; torch threads {e['torch_threads']}, JAX default threads on {e['cores']} cores; "
            f"load average at the end of the run {tuple(round(v, 1) for v in e['loadavg'])}.\n"
        )
        out.append(speed.markdown([speed.Timing(**r) for r in spd["rows"]]))
        out.append("")
        base = _load("speed_baseline")
        if base:
            out.append(before_after(base, spd))
    if opt:
        out.append(opt.get("markdown", ""))
    for name, command in FAMILY_REPORTS:  # written by their own scripts, embedded as they are
        path = RESULTS / f"{name}.md"
        if path.exists():
            text = path.read_text().strip().splitlines()
            title = text[0].lstrip("# ").strip() if text else name
            out.append(f"## {title}\n\n(`{command}`, from `benchmarks/results/{name}.md`)\n")
            out.append("\n".join("#" + line if line.startswith("#") else line for line in text[1:]))
            out.append("")
    tail = HERE / "RESULTS_TAIL.md"
    if tail.exists():
        out.append(tail.read_text())
    return "\n".join(out)


def before_after(base: dict, now: dict) -> str:
    """The jaxsal/Captum ratio of each workload in the stored baseline run and now."""
    from benchmarks import speed

    def key(r):
        return (r["model"], r["method"], r["batch"])

    old = {key(r): speed.Timing(**r) for r in base["rows"]}
    lines = [
        f"### Before and after the speed work\n\nBaseline: `results/speed_baseline.json`, the first full speed "
        f"run ({base['env']['date']}), before any change made for speed; after: the table above. Ratios "
        "are taken within each run (both libraries timed interleaved), so they compare across runs better "
        "than raw times on this shared machine.\n",
        "| model | method | B | jaxsal ms before | jaxsal ms after | jaxsal/Captum before | jaxsal/Captum after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in (speed.Timing(**r) for r in now["rows"]):
        o = old.get((r.model, r.method, r.batch))
        if o is None:
            continue
        lines.append(
            f"| {r.model} | {r.method} | {r.batch} | {o.jaxsal_ms:.1f} | {r.jaxsal_ms:.1f} | "
            f"{o.ratio:.2f} | **{r.ratio:.2f}** |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="parity,speed,options", help="comma-separated sections")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--render", action="store_true", help="only re-render RESULTS.md from results/*.json")
    args = ap.parse_args(argv)
    global RESULTS
    if args.quick:  # never overwrite the real results with smoke-test numbers
        RESULTS = HERE / "results_quick"
    warnings.filterwarnings("ignore", message="Setting backward hooks")
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")
    if not args.render:
        for section in args.only.split(","):
            t0 = time.perf_counter()
            if section == "parity":
                _save("parity", run_parity(args.quick))
            elif section == "speed":
                _save("speed", run_speed(args.quick, runs=args.runs))
            elif section == "options":
                from benchmarks import options

                _save("options", options.run(args.quick, runs=args.runs))
            else:
                raise SystemExit(f"unknown section {section!r}; choose from parity, speed, options")
            print(f"[{section}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.quick and not args.render:
        print(render())
    else:
        (HERE / "RESULTS.md").write_text(render())
        print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    raise SystemExit(main())

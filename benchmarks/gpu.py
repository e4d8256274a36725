"""The speed measurements of :mod:`benchmarks.speed` on a CUDA device, in one short run.

Usage::

    python -m benchmarks.gpu [--out gpu_results.json] [--budget-s 240] [--tiny]

Needs a CUDA build of PyTorch and a CUDA build of jaxlib (``pip install -U "jax[cuda12]"``)
plus captum; jaxsal from this repository. Each workload is measured as on the CPU:
jaxsal compiled once (compile time reported separately), Captum warmed up, then
interleaved timed calls with ``torch.cuda.synchronize`` / ``block_until_ready``, medians,
and the plain-gradient floors of both frameworks.

The run stops starting new workloads once ``--budget-s`` seconds have passed (default
240 s, so the whole run stays under 5 minutes including start-up) and writes the JSON
after every workload, so a cut-off run still leaves its results.

Without a GPU (either framework) it falls back to the CPU and says so in the JSON
(``"device": "cpu"``); ``--tiny`` runs a seconds-long plan for testing that path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

ONE_PASS = ["vanilla_grad", "grad_x_input", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam"]
# (case, kwargs, methods, batch sizes), in priority order
GPU_PLAN = [
    ("efficientnet_lite0", {}, ONE_PASS, (1, 16, 64)),
    ("efficientnet_lite0", {}, ["integrated_gradients", "smoothgrad"], (1, 16)),
    ("vgg16", {}, ["vanilla_grad", "guided_backprop", "grad_cam", "guided_grad_cam"], (1, 16, 64)),
    ("vgg16", {}, ["integrated_gradients", "smoothgrad"], (1,)),
    ("small_cnn", {"size": 64}, ONE_PASS + ["integrated_gradients", "smoothgrad"], (1, 64)),
    ("vgg16", {}, ["grad_x_input", "deconvnet"], (16,)),
]
TINY_PLAN = [("small_cnn", {"size": 16}, ["vanilla_grad", "integrated_gradients", "grad_cam"], (1, 2))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_results.json")
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="a seconds-long plan (tests the script)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    warnings.filterwarnings("ignore")

    import jax
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import cases, speed
    from benchmarks.__main__ import environment

    cuda = torch.cuda.is_available() and jax.default_backend() == "gpu"
    device = "cuda" if cuda else "cpu"
    info = {
        "device": device,
        "torch_cuda": torch.cuda.is_available(),
        "jax_backend": jax.default_backend(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "env": environment(),
        "budget_s": args.budget_s,
        "rows": [],
        "skipped": [],
    }
    if not cuda:
        print(
            f"no CUDA device for both frameworks (torch: {torch.cuda.is_available()}, jax: "
            f"{jax.default_backend()}): falling back to the CPU",
            flush=True,
        )
    if cuda:
        torch.backends.cudnn.benchmark = True
    steps = 4 if args.tiny else 50
    plan = TINY_PLAN if args.tiny else GPU_PLAN

    def save():
        info["elapsed_s"] = time.perf_counter() - t_start
        with open(args.out, "w") as fh:
            json.dump(info, fh, indent=1, default=float)

    for name, kw, methods, batches in plan:
        case = None
        for method in methods:
            for b in batches:
                if time.perf_counter() - t_start > args.budget_s:
                    info["skipped"].append(f"{name} {method} B={b}")
                    continue
                if case is None:
                    case = cases.CASES[name](**kw)
                try:
                    r = speed.measure(case, method, b, runs=args.runs, steps=steps, device=device)
                except Exception as e:  # noqa: BLE001 (e.g. out of memory: record and go on)
                    info["skipped"].append(f"{name} {method} B={b}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                row = dataclasses.asdict(r)
                row.update(ratio=r.ratio, overhead=r.overhead)
                info["rows"].append(row)
                print(
                    f"{r.model} {method} B={b}: jaxsal {r.jaxsal_ms:.2f} ms, captum {r.captum_ms:.2f} ms "
                    f"(x{r.ratio:.2f}), floor {r.floor_ms:.2f} ms",
                    flush=True,
                )
                save()
        if case is not None:
            case.torch_model.cpu()
        del case
    # Dataset-scale throughput (issue 13): jaxsal.explain_dataset over every local device
    # of this machine (vanilla gradient, images/s in steady state, first store incl.
    # compile separate), the small CNN and EfficientNet-Lite0.
    from benchmarks import dataset as dataset_bench

    info["dataset"] = []
    plan_ds = [("small_cnn", 128)] if args.tiny else [("small_cnn", 4096), ("efficientnet", 512)]
    for model, n in plan_ds:
        if time.perf_counter() - t_start > args.budget_s:
            info["skipped"].append(f"dataset {model} N={n}")
            continue
        try:
            r = dataset_bench.child("throughput", n, model)
        except Exception as e:  # noqa: BLE001 (record and go on)
            info["skipped"].append(f"dataset {model}: {type(e).__name__}: {str(e)[:200]}")
            continue
        info["dataset"].append(r)
        print(
            f"dataset {model} devices={r['devices']}: {r['images_per_s']:.1f} images/s "
            f"(first store incl. compile {r['first_store_s']:.1f} s)",
            flush=True,
        )
        save()
    save()
    print(
        f"wrote {args.out} ({len(info['rows'])} workloads, {len(info['skipped'])} skipped, "
        f"{info['elapsed_s']:.0f} s, device {device})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

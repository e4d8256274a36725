"""Input invariance (Kindermans et al. 2019) of every registered method, as a markdown table.

    python -m benchmarks.invariance                       # EfficientNet-Lite0 + shapes set
    python -m benchmarks.invariance --skip score_cam xrai # leave slow methods out

For each method, ``jaxsal.metrics.input_invariance`` shifts the input by a constant
(``--shift``, default -1) and folds the shift into the first layer's bias, then compares
the maps per example (relative L2 difference, tolerance 1e-3 in float32). Models:
EfficientNet-Lite0 (pretrained) on bundled photos, and the ShapesCNN (random
initialisation: invariance is a property of method and architecture, not of training)
on ``jaxsal.datasets.synthetic_shapes``. Hyper-parameters are cheap (``CHEAP``), not the
papers': the verdict does not depend on them. "expected" is Kindermans et al.'s verdict
where the paper gives one. Extra rows: IG and DeepLIFT with the reference shifted with
the input.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# Kindermans et al. 2019 (Sec. 3-4): which methods are input invariant.
EXPECTED = {
    "vanilla_grad": True,
    "smoothgrad": True,
    "guided_backprop": True,
    "deconvnet": True,
    "grad_cam": True,
    "grad_x_input": False,
    "integrated_gradients": False,
    "deeplift": False,
    "lrp": False,
    "integrated_gradients (baseline + shift)": True,
}


def cheap(size: int) -> dict:
    """Small hyper-parameters per registered method for ``size x size`` inputs."""
    import jax.numpy as jnp

    cell = size // 4
    grid = jnp.repeat(jnp.repeat(jnp.arange(16).reshape(4, 4), cell, 0), cell, 1)
    return {
        "integrated_gradients": {"steps": 8},
        "layer_integrated_gradients": {"steps": 8},
        "smoothgrad": {"n": 4},
        "smoothgrad_sq": {"n": 4},
        "vargrad": {"n": 4},
        "score_cam": {"batch_size": 64},
        "occlusion": {"window": (cell, cell), "strides": (cell, cell)},
        "feature_ablation": {"feature_mask": grid},
        "shapley_sampling": {"n": 1, "feature_mask": grid},
        "kernel_shap": {"n": 32, "feature_mask": grid},
        "lime": {"n": 32, "feature_mask": grid},
        "rise": {"n": 16, "grid": 4},
        "expected_gradients": {"n": 4},
        "guided_ig": {"steps": 4},
        "blur_ig": {"steps": 4, "max_sigma": 4.0},
        "xrai": {"steps": 4},
    }


def run_table(module, variables, layer, x, shift, skip, label, rows):
    import jax

    import jaxsal
    from jaxsal.cli import _common
    from jaxsal.metrics.invariance import input_invariance

    hyper_all = cheap(int(x.shape[1]))
    jobs = [(n, m, hyper_all.get(n, {}), ()) for n, m in jaxsal.methods().items() if n not in skip]
    jobs.append(
        (
            "integrated_gradients (baseline + shift)",
            jaxsal.get_method("integrated_gradients"),
            {"steps": 8},
            ("baseline",),
        )
    )
    jobs.append(("deeplift (baseline + shift)", jaxsal.get_method("deeplift"), {}, ("baseline",)))
    for name, method, hyper, moved in jobs:
        t = time.perf_counter()
        try:
            model = _common.model_for(method, module, variables, layer)
            r = input_invariance(
                method, model, x, shift, key=jax.random.key(0), hyper=hyper, shift_hyper=moved
            )
            diff = float(np.max(np.asarray(r.difference)))
            verdict = "pass" if bool(np.all(np.asarray(r.passed))) else "fail"
        except Exception as e:  # a method that cannot run here is reported, not hidden
            diff, verdict = float("nan"), f"error: {type(e).__name__}: {str(e)[:60]}"
        exp = EXPECTED.get(name)
        rows.append(
            (
                label,
                name,
                verdict,
                diff,
                "—" if exp is None else ("pass" if exp else "fail"),
                time.perf_counter() - t,
            )
        )
        print(f"  {label} {name}: {verdict} ({diff:.2e}, {rows[-1][-1]:.0f} s)", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shift", type=float, default=-1.0)
    ap.add_argument("--photos", nargs="+", default=["chelsea"])
    ap.add_argument("--skip", nargs="*", default=[], help="registry names to leave out everywhere")
    ap.add_argument(
        "--efficientnet-only",
        nargs="*",
        default=None,
        help="run only these registry names on EfficientNet-Lite0 (the slow model); default: all",
    )
    ap.add_argument("--no-efficientnet", action="store_true")
    ap.add_argument("--no-shapes", action="store_true")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from jaxsal import datasets, models

    rows: list = []
    if not args.no_shapes:
        data = datasets.synthetic_shapes(jax.random.key(0), 4, size=32)
        module = models.ShapesCNN()
        variables = module.init(jax.random.key(0), data.images[:1])
        run_table(
            module, variables, "conv3", data.images, args.shift, set(args.skip), "shapes (ShapesCNN)", rows
        )
    if not args.no_efficientnet:
        module, variables = models.efficientnet_lite0(pretrained=True)
        photos = models.sample_images()
        x = jnp.concatenate([jnp.asarray(models.preprocess(photos[p])) for p in args.photos])
        run_table(
            module,
            variables,
            models.EFFICIENTNET_GRADCAM_LAYER,
            x,
            args.shift,
            set(args.skip),
            "EfficientNet-Lite0",
            rows,
        )

    print()
    print(
        f"Input invariance, shift {args.shift:+g} folded into the first layer's bias; relative L2 difference "
        f"(max over examples), pass if <= 1e-3; load average {open('/proc/loadavg').read().split()[0]}."
    )
    print()
    print("| model | method | measured | max rel. difference | expected (Kindermans et al.) | time (s) |")
    print("|---|---|---|---|---|---|")
    for label, name, verdict, diff, exp, secs in rows:
        flag = "" if exp in ("—", verdict) else " **(differs)**"
        print(f"| {label} | {name} | {verdict}{flag} | {diff:.2e} | {exp} | {secs:.0f} |")


if __name__ == "__main__":
    main()

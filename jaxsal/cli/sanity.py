"""``jaxsal sanity``: the model-parameter randomisation sanity check, per method.

Adebayo et al.'s (2018) cascading randomisation on the pretrained EfficientNet-Lite0
and the bundled photos, for each method: prints the table of rank correlations,
SSIM and HOG similarity, and writes the figure (rows: methods, columns: randomisation
depth, :func:`jaxsal.viz.randomization_grid`) and the rank-correlation curves
(:func:`jaxsal.viz.randomization_curves`).

``--model vit_tiny`` runs it on the tiny ViT (:func:`jaxsal.models.vit_tiny`) and 32-px
synthetic shapes (one of each class, drawn from ``--seed``), randomising ``stem``,
``patch_embed``, ``block0`` .. ``block2``, ``norm`` and ``head`` from the top down, with
the ViT's demo methods (:data:`jaxsal.cli._models.VIT_SANITY_METHODS`). The models are
described in :mod:`jaxsal.cli._models`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from jaxsal.cli import _common, _models

#: EfficientNet-Lite0's default methods.
SANITY_METHODS = _models.EFFICIENTNET_SANITY_METHODS
#: ``--model vit_tiny``'s default methods.
VIT_SANITY_METHODS = _models.VIT_SANITY_METHODS


# ----------------------------------------------------------------------------- sanity


def run_sanity(
    *,
    model: str = _models.DEFAULT_MODEL,
    methods: Sequence[str] | None = None,
    images: Sequence[str] | None = None,
    depth: int = 1,
    layers: Sequence[str] | None = None,
    mode: str = "cascading",
    init: str = "initializer",
    seed: int = 0,
    smoothgrad_n: int = 8,
    ig_steps: int = 16,
    out: str | None = "jaxsal-sanity.png",
    hog: bool = True,
    progress: bool = True,
    stream=None,
) -> dict[str, Any]:
    """Cascading randomisation of ``model`` for each method; returns ``{method: RandomizationResult}``.

    ``model``: ``"efficientnet_lite0"`` (``images`` are bundled photo names, default
    chelsea and coffee) or ``"vit_tiny"`` (``images`` are indices into the synthetic
    shapes drawn from ``seed``, or image files; default one of each class), see
    :mod:`jaxsal.cli._models`. ``methods``: registry names, default the model's
    (:data:`SANITY_METHODS`, :data:`VIT_SANITY_METHODS`).
    """
    import jax

    import jaxsal
    from jaxsal.metrics import layer_names, model_parameter_randomization

    stream = stream or sys.stdout
    spec = _models.get(model)
    if out:  # checked before anything is computed
        out, _ = _common.output_path(out)
        _common.output_path(_curves_path(out))
    chosen = {n: jaxsal.get_method(n) for n in _common.resolve_methods(methods, spec.sanity_methods)}
    x = spec.sanity_inputs(images, seed).x
    module, variables, _, cam_layer = _models.load(spec.name)
    available = layer_names(variables, module=module, x=x[:1], depth=depth)
    order = list(layers) if layers else available
    hyper = {"n": smoothgrad_n, "steps": ig_steps, "noise_level": 0.15}
    results = {}
    for name in _common.progress(list(chosen), "methods", progress):
        t0 = time.perf_counter()
        make = functools.partial(  # variables -> attr, layer maps upsampled to the photo
            _common.build_attr,
            chosen[name],
            module,
            layer=cam_layer,
            hyper=hyper,
            size=x.shape[1:3],
            tokens=spec.tokens,
        )
        with _common.one_line_warnings("sanity", name):
            results[name] = model_parameter_randomization(
                make,
                variables,
                x,
                key=jax.random.key(seed),
                module=module,
                order=order,
                mode=mode,
                init=init,
                hog=hog,
                progress=progress,
            )
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    _print_sanity_table(results, stream)
    if out:
        write_sanity_figure(results, spec.deprocess(x), out)
        print(f"wrote {out} and {_curves_path(out)}", file=stream)
    return results


def _print_sanity_table(results, stream) -> None:
    import numpy as np

    first = next(iter(results.values()))
    w = max(len(n) for n in results) + 2
    print(
        f"Spearman rank correlation of |map| with the trained model's map, mean over images "
        f"({first.mode}; column = randomised down to that layer):",
        file=stream,
    )
    cols = [layer[-10:] for layer in first.layers]
    print(" " * w + " ".join(f"{c:>10}" for c in cols), file=stream)
    for name, r in results.items():
        vals = [_nanmean(v) for v in np.asarray(r.spearman_abs)]
        print(f"{name:<{w}}" + " ".join(f"{v:>10.3f}" for v in vals), file=stream)
    print("\nAfter the last step (mean over images):", file=stream)
    print(f"{'method':<{w}}{'rank |.|':>10}{'rank signed':>12}{'SSIM':>8}{'HOG':>8}", file=stream)
    for name, r in results.items():
        last = [_nanmean(np.asarray(a)[-1]) for a in (r.spearman_abs, r.spearman, r.ssim, r.hog)]
        print(f"{name:<{w}}{last[0]:>10.3f}{last[1]:>12.3f}{last[2]:>8.3f}{last[3]:>8.3f}", file=stream)


def _nanmean(a) -> float:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    return float(a[~np.isnan(a)].mean()) if (~np.isnan(a)).any() else float("nan")


def _curves_path(out: str) -> str:
    stem, dot, ext = out.rpartition(".")
    return f"{stem}-curves.{ext}" if dot else out + "-curves.png"


def write_sanity_figure(results, images, out: str, *, image_index: int = 0, percentile: float = 99.0) -> None:
    """Write :func:`jaxsal.viz.randomization_grid` to ``out`` and the curves next to it."""
    from jaxsal import viz

    grid = viz.randomization_grid(results, images, image_index=image_index, percentile=percentile)
    curves = viz.randomization_curves(results)
    for fig, path in ((grid, out), (curves, _curves_path(out))):
        fmt = os.path.splitext(path)[1][1:].lower() or "png"
        _common.write_atomically(path, lambda tmp, fig=fig, fmt=fmt: fig.savefig(tmp, dpi=100, format=fmt))


# ----------------------------------------------------------------------------- argparse


def add_subcommands(subparsers) -> None:
    """Add ``sanity`` to the ``jaxsal`` command line."""
    p = subparsers.add_parser(
        "sanity",
        help="model-parameter randomisation sanity check (Adebayo et al. 2018) on EfficientNet-Lite0 "
        "(or a tiny ViT)",
        description=(
            "Randomise EfficientNet-Lite0's layers from the top down (cascading) and measure how much "
            "each method's maps change (rank correlation, SSIM, HOG). Methods that barely change "
            "are insensitive to the model. With --model vit_tiny: the tiny ViT on 32-px synthetic shapes."
        ),
    )
    p.add_argument(
        "--model",
        choices=_models.MODEL_NAMES,
        default=_models.DEFAULT_MODEL,
        help="efficientnet_lite0: bundled ImageNet photos (default); vit_tiny: the tiny ViT on 32-px "
        "synthetic shapes, one of each class drawn from --seed unless --images is given",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="registry names (default: "
        + ", ".join(SANITY_METHODS)
        + "; with --model vit_tiny: "
        + ", ".join(VIT_SANITY_METHODS)
        + ")",
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="NAME",
        help="bundled photos (default: chelsea coffee); with --model vit_tiny: indices "
        f"0-{_models.SHAPES_POOL - 1} into the synthetic shapes drawn from --seed, or image files",
    )
    p.add_argument(
        "--depth",
        type=_common.int_at_least(1),
        default=1,
        help="group layers by the first DEPTH path components (default 1: blocks)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="explicit randomisation order, input to output (layer names or prefixes)",
    )
    p.add_argument("--mode", choices=("cascading", "independent"), default="cascading")
    p.add_argument(
        "--init",
        choices=("initializer", "normal", "shuffle"),
        default="initializer",
        help="re-initialisation: 'initializer' re-draws layers from the model's own initialisers and resets "
        "their BatchNorm statistics (Adebayo et al.; default); 'normal' draws kernels with the trained "
        "mean/std and keeps the trained statistics; 'shuffle' permutes each kernel",
    )
    p.add_argument("--seed", type=_common.seed, default=0)
    p.add_argument(
        "--smoothgrad-n", type=_common.int_at_least(1), default=8, help="SmoothGrad samples (default 8)"
    )
    p.add_argument(
        "--ig-steps", type=_common.int_at_least(1), default=16, help="Integrated Gradients steps (default 16)"
    )
    p.add_argument(
        "--out", default="jaxsal-sanity.png", help="figure path (default jaxsal-sanity.png; '' for none)"
    )
    p.add_argument("--no-hog", action="store_true", help="skip HOG similarity")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_sanity)


def _sanity(args: argparse.Namespace) -> int:
    try:
        run_sanity(
            model=getattr(args, "model", _models.DEFAULT_MODEL),
            methods=_common.split_list(args.methods, "--methods"),
            images=_common.split_list(args.images, "--images"),
            depth=args.depth,
            layers=_common.split_list(args.layers, "--layers"),
            mode=args.mode,
            init=args.init,
            seed=args.seed,
            smoothgrad_n=args.smoothgrad_n,
            ig_steps=args.ig_steps,
            out=args.out or None,
            hog=not args.no_hog,
            progress=not args.no_progress,
        )
    except _common.UsageError as e:
        return _common.usage_error("sanity", e)
    return 0

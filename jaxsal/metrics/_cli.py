"""``jaxsal sanity`` and ``jaxsal evaluate``: the metrics as commands.

``jaxsal sanity``: Adebayo et al.'s (2018) cascading model-parameter randomisation on
the pretrained EfficientNet-Lite0 and the bundled photos, for each method; writes a
figure (rows: methods, columns: randomisation depth) and the rank-correlation curves,
and prints the table.

``jaxsal evaluate``: trains :class:`jaxsal.metrics.SmallCNN` on the synthetic
ground-truth set and prints a table of localisation, faithfulness and robustness
metrics per method.

Both are wired into ``jaxsal`` by :func:`add_subcommands` (see :mod:`jaxsal.cli`).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

SANITY_METHODS = ("vanilla_grad", "guided_backprop", "grad_cam", "integrated_gradients", "smoothgrad")
EVALUATE_METHODS = (
    "vanilla_grad",
    "grad_x_input",
    "guided_backprop",
    "integrated_gradients",
    "smoothgrad",
    "grad_cam",
)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {v}")
        return v

    return parse


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


# ----------------------------------------------------------------------------- methods


def _resolve_methods(names: Sequence[str] | None, default: Sequence[str]) -> dict[str, Any]:
    import jaxsal  # noqa: F401  (registers every method)
    from jaxsal._src import registry

    names = list(names or default)
    return {n: registry.get_method(n) for n in names}  # ValueError lists the registered ones


def _hyper_for(method, hyper: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(method.factory).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {}
    return {k: v for k, v in hyper.items() if k in params and v is not None}


def make_attr_builder(
    method, module, layer: str | None, hyper: dict[str, Any], size: tuple[int, int]
) -> Callable:
    """``variables -> attr`` for a registered method, with layer maps upsampled to ``size``."""
    import jaxsal
    from jaxsal import flax as jflax

    kw = _hyper_for(method, hyper)

    def make(variables):
        if method.takes == "probe":
            if layer is None:
                raise ValueError(f"method {method.name!r} needs a layer to probe.")
            model = jflax.probe(module, variables, layer)
        else:
            model = lambda z: module.apply(variables, z)  # noqa: E731
        attr = method.build(model, **kw)
        if method.output != "layer":
            return attr

        def up(x, target=None, *, key=None):
            return jaxsal.upsample(attr(x, target, key=key), size)

        up.scores_fn = getattr(attr, "scores_fn", None)
        up.stochastic = getattr(attr, "stochastic", False)
        return up

    return make


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, file=sys.stderr)


# ----------------------------------------------------------------------------- sanity


def run_sanity(
    *,
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
    """Cascading randomisation of EfficientNet-Lite0 for each method; returns ``{method: RandomizationResult}``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsal import models
    from jaxsal.metrics.randomization import layer_names, model_parameter_randomization

    stream = stream or sys.stdout
    chosen = _resolve_methods(methods, SANITY_METHODS)
    photos = models.sample_images()
    names = list(images or ["chelsea", "coffee"])
    unknown = [n for n in names if n not in photos]
    if unknown:
        raise ValueError(f"unknown image(s) {unknown}; bundled photos: {', '.join(photos)}.")
    module, variables = models.efficientnet_lite0()
    x = jnp.concatenate([jnp.asarray(models.preprocess(photos[n])) for n in names])
    available = layer_names(variables, module=module, x=x[:1], depth=depth)
    order = list(layers) if layers else available
    hyper = {"n": smoothgrad_n, "steps": ig_steps, "noise_level": 0.15}
    results = {}
    for name in _progress(list(chosen), "methods", progress):
        m = chosen[name]
        t0 = time.perf_counter()
        make = make_attr_builder(m, module, models.EFFICIENTNET_GRADCAM_LAYER, hyper, x.shape[1:3])
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
        images_float = np.stack([models.preprocess(photos[n])[0] for n in names]) * 128 / 255 + 127 / 255
        write_sanity_figure(results, images_float, out)
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
    """Adebayo et al.-style figure: rows = methods, columns = original then each cascade step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    try:
        from jaxsal.viz import show_abs
    except ImportError:  # pragma: no cover
        show_abs = None
    first = next(iter(results.values()))
    ncol = 2 + len(first.layers)
    fig, axes = plt.subplots(len(results), ncol, figsize=(1.3 * ncol, 1.4 * len(results)), squeeze=False)
    for row, (name, r) in enumerate(results.items()):
        panels = [np.asarray(r.original[image_index])] + [np.asarray(m[image_index]) for m in r.maps]
        axes[row, 0].imshow(np.clip(images[image_index], 0, 1))
        axes[row, 0].set_ylabel(name, fontsize=7)
        for col, m in enumerate(panels, start=1):
            ax = axes[row, col]
            if show_abs is not None:
                show_abs(ax, m, percentile)
            else:  # pragma: no cover
                a = np.abs(m).sum(-1) if m.ndim == 3 else np.abs(m)
                ax.imshow(np.minimum(a, np.percentile(a, percentile)), cmap="gray")
            if row == 0:
                ax.set_title("original" if col == 1 else r.layers[col - 2], fontsize=6)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{first.mode} randomisation (top layer first)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, r in results.items():
        ax.plot(
            range(1, len(r.layers) + 1), np.nanmean(np.asarray(r.spearman_abs), 1), marker="o", label=name
        )
    ax.set_xticks(range(1, len(first.layers) + 1), first.layers, rotation=70, fontsize=6)
    ax.set_ylabel("rank correlation |map|")
    ax.set_ylim(-0.1, 1.05)
    ax.axhline(0, color="gray", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(_curves_path(out), dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- evaluate


def run_evaluate(
    *,
    methods: Sequence[str] | None = None,
    train_size: int = 2000,
    test_size: int = 64,
    size: int = 32,
    steps: int = 800,
    seed: int = 0,
    smoothgrad_n: int = 8,
    ig_steps: int = 16,
    sensitivity_samples: int = 4,
    road: bool = True,
    progress: bool = True,
    stream=None,
) -> dict[str, dict[str, float]]:
    """Train SmallCNN on :func:`synthetic_shapes`, then a table of metrics per method."""
    import jax
    import numpy as np

    from jaxsal.metrics import faithfulness, localization, robustness
    from jaxsal.metrics._common import reduce_channels
    from jaxsal.metrics.synthetic import SmallCNN, accuracy, synthetic_shapes, train_classifier

    stream = stream or sys.stdout
    chosen = _resolve_methods(methods, EVALUATE_METHODS)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    train = synthetic_shapes(jax.random.fold_in(key, 0), train_size, size=size)
    test = synthetic_shapes(jax.random.fold_in(key, 1), test_size, size=size)
    module = SmallCNN()
    trained = train_classifier(
        module, train.images, train.labels, key=jax.random.fold_in(key, 2), steps=steps
    )
    acc = float(accuracy(module, trained.variables, test.images, test.labels))
    print(
        f"SmallCNN on synthetic shapes ({train_size} train, {size}x{size}, {steps} steps): train acc "
        f"{float(trained.train_accuracy):.3f}, test acc {acc:.3f} ({time.perf_counter() - t0:.0f} s)",
        file=stream,
    )
    variables = trained.variables
    f = jax.jit(lambda z: module.apply(variables, z))
    x, y, mask = test.images, test.labels, test.masks
    layer = f"conv{len(module.features) - 1}"
    hyper = {"n": smoothgrad_n, "steps": ig_steps, "noise_level": 0.15}
    rows: dict[str, dict[str, float]] = {}
    for name in _progress(list(chosen), "methods", progress):
        m = chosen[name]
        attr = make_attr_builder(m, module, layer, hyper, x.shape[1:3])(variables)
        k = jax.random.fold_in(key, 3)
        maps = attr(x, y, key=k)
        pix = reduce_channels(maps, "abs")  # localisation and ranking use |map| summed over channels
        row = {
            "pointing": float(localization.pointing_game(pix, mask).accuracy),
            "mass": float(localization.relevance_mass_accuracy(pix, mask).mean),
            "rank": float(localization.relevance_rank_accuracy(pix, mask).mean),
            "del AUC": float(faithfulness.deletion(f, x, pix, y, steps=16, baseline="mean").auc.mean()),
            "ins AUC": float(
                faithfulness.insertion(f, x, pix, y, steps=16, baseline="blur", blur_sigma=2.0).auc.mean()
            ),
        }
        if road:
            r = faithfulness.road(f, x, pix, y, key=k, fractions=(0.1, 0.3, 0.5, 0.7, 0.9))
            row["ROAD MoRF"] = float(r.scores.mean())
        sens = robustness.max_sensitivity(
            attr, x[:16], y[:16], key=k, radius=0.02, samples=sensitivity_samples
        )
        row["max-sens"] = float(np.nanmean(np.asarray(sens.max_sensitivity)))
        rows[name] = row
    _print_eval_table(rows, stream)
    return rows


def _print_eval_table(rows, stream) -> None:
    cols = list(next(iter(rows.values())))
    w = max(len(n) for n in rows) + 2
    print(
        "\nmaps of the true class, |map| summed over channels. pointing/mass/rank, ins AUC: higher is better; "
        "del AUC, ROAD MoRF (mean prob.), max-sens: lower is better",
        file=stream,
    )
    print(f"{'method':<{w}}" + "".join(f"{c:>11}" for c in cols), file=stream)
    for name, row in rows.items():
        print(f"{name:<{w}}" + "".join(f"{row[c]:>11.3f}" for c in cols), file=stream)


# ----------------------------------------------------------------------------- argparse


def add_subcommands(subparsers) -> None:
    """Add ``sanity`` and ``evaluate`` to the ``jaxsal`` command line."""
    p = subparsers.add_parser(
        "sanity",
        help="model-parameter randomisation sanity check (Adebayo et al. 2018) on EfficientNet-Lite0",
        description=(
            "Randomise EfficientNet-Lite0's layers from the top down (cascading) and measure how much "
            "each method's maps change (rank correlation, SSIM, HOG). Methods that barely change "
            "are insensitive to the model."
        ),
    )
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="registry names (default: " + ", ".join(SANITY_METHODS) + ")",
    )
    p.add_argument("--images", nargs="+", metavar="NAME", help="bundled photos (default: chelsea coffee)")
    p.add_argument(
        "--depth",
        type=_int_at_least(1),
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoothgrad-n", type=_int_at_least(1), default=8, help="SmoothGrad samples (default 8)")
    p.add_argument(
        "--ig-steps", type=_int_at_least(1), default=16, help="Integrated Gradients steps (default 16)"
    )
    p.add_argument(
        "--out", default="jaxsal-sanity.png", help="figure path (default jaxsal-sanity.png; '' for none)"
    )
    p.add_argument("--no-hog", action="store_true", help="skip HOG similarity")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_sanity)

    q = subparsers.add_parser(
        "evaluate",
        help="localisation, faithfulness and robustness metrics per method on synthetic ground truth",
        description="Train a small CNN on jaxsal's synthetic shapes (known masks) and tabulate metrics per method.",
    )
    q.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="registry names (default: " + ", ".join(EVALUATE_METHODS) + ")",
    )
    q.add_argument("--train-size", type=_int_at_least(8), default=2000)
    q.add_argument("--test-size", type=_int_at_least(1), default=64)
    q.add_argument("--size", type=_int_at_least(16), default=32, help="image side in pixels (default 32)")
    q.add_argument("--steps", type=_int_at_least(1), default=800, help="training steps (default 800)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--smoothgrad-n", type=_int_at_least(1), default=8)
    q.add_argument("--ig-steps", type=_int_at_least(1), default=16)
    q.add_argument("--no-road", action="store_true", help="skip ROAD (the slowest metric)")
    q.add_argument("--no-progress", action="store_true", help="hide progress bars")
    q.set_defaults(func=_evaluate)


def _sanity(args: argparse.Namespace) -> int:
    run_sanity(
        methods=_split(args.methods),
        images=_split(args.images),
        depth=args.depth,
        layers=_split(args.layers),
        mode=args.mode,
        init=args.init,
        seed=args.seed,
        smoothgrad_n=args.smoothgrad_n,
        ig_steps=args.ig_steps,
        out=args.out or None,
        hog=not args.no_hog,
        progress=not args.no_progress,
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    run_evaluate(
        methods=_split(args.methods),
        train_size=args.train_size,
        test_size=args.test_size,
        size=args.size,
        steps=args.steps,
        seed=args.seed,
        smoothgrad_n=args.smoothgrad_n,
        ig_steps=args.ig_steps,
        road=not args.no_road,
        progress=not args.no_progress,
    )
    return 0

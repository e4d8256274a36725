"""``jaxsal evaluate``: localisation, faithfulness and robustness metrics per method.

Trains :class:`jaxsal.models.ShapesCNN` on :func:`jaxsal.datasets.synthetic_shapes`
(whose exact object masks are the ground truth), explains the test images' true
classes with each method and prints one row of metrics per method: pointing game,
relevance mass and rank accuracy, deletion and insertion AUC, ROAD and
max-sensitivity (see :mod:`jaxsal.metrics`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from jaxsal.cli import _common

EVALUATE_METHODS = (
    "vanilla_grad",
    "grad_x_input",
    "guided_backprop",
    "integrated_gradients",
    "smoothgrad",
    "grad_cam",
)


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
    """Train ShapesCNN on :func:`jaxsal.datasets.synthetic_shapes`, then a table of metrics per method."""
    import jax
    import numpy as np

    from jaxsal.datasets import synthetic_shapes
    from jaxsal.metrics import faithfulness, localization, reduce_channels, robustness
    from jaxsal.models import ShapesCNN, accuracy, train_classifier

    stream = stream or sys.stdout
    import jaxsal

    chosen = {n: jaxsal.get_method(n) for n in _common.resolve_methods(methods, EVALUATE_METHODS)}
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    train = synthetic_shapes(jax.random.fold_in(key, 0), train_size, size=size)
    test = synthetic_shapes(jax.random.fold_in(key, 1), test_size, size=size)
    module = ShapesCNN()
    trained = train_classifier(
        module, train.images, train.labels, key=jax.random.fold_in(key, 2), steps=steps
    )
    acc = float(accuracy(module, trained.variables, test.images, test.labels))
    print(
        f"ShapesCNN on synthetic shapes ({train_size} train, {size}x{size}, {steps} steps): train acc "
        f"{float(trained.train_accuracy):.3f}, test acc {acc:.3f} ({time.perf_counter() - t0:.0f} s)",
        file=stream,
    )
    variables = trained.variables
    f = jax.jit(lambda z: module.apply(variables, z))
    x, y, mask = test.images, test.labels, test.masks
    layer = f"conv{len(module.features) - 1}"
    hyper = {"n": smoothgrad_n, "steps": ig_steps, "noise_level": 0.15}
    rows: dict[str, dict[str, float]] = {}
    for name in _common.progress(list(chosen), "methods", progress):
        attr = _common.build_attr(chosen[name], module, variables, layer, hyper, size=x.shape[1:3])
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
    """Add ``evaluate`` to the ``jaxsal`` command line."""
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
    q.add_argument("--train-size", type=_common.int_at_least(8), default=2000)
    q.add_argument("--test-size", type=_common.int_at_least(1), default=64)
    q.add_argument(
        "--size", type=_common.int_at_least(16), default=32, help="image side in pixels (default 32)"
    )
    q.add_argument("--steps", type=_common.int_at_least(1), default=800, help="training steps (default 800)")
    q.add_argument("--seed", type=_common.seed, default=0)
    q.add_argument("--smoothgrad-n", type=_common.int_at_least(1), default=8)
    q.add_argument("--ig-steps", type=_common.int_at_least(1), default=16)
    q.add_argument("--no-road", action="store_true", help="skip ROAD (the slowest metric)")
    q.add_argument("--no-progress", action="store_true", help="hide progress bars")
    q.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    run_evaluate(
        methods=_common.split_list(args.methods, "--methods"),
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

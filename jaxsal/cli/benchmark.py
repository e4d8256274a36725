"""``jaxsal benchmark``: every method × every metric, with baselines and the metrics' reliability.

On a generated set with known ground truth (default
:func:`jaxsal.datasets.synthetic_shapes` with a trained :class:`jaxsal.models.ShapesCNN`;
any ``generator(key, n, size) -> (images, labels, masks)`` can be swapped in), each
method explains the true class of every test image, and each map is scored per image
by localisation (pointing game, relevance mass, relevance rank, weighted attribution
localisation, top-k intersection), complexity (sparseness, complexity) and
faithfulness metrics (deletion with two baselines, insertion, faithfulness
correlation). Three baseline rows that explain nothing show what a metric gives for
free: a random map, a Sobel edge map of the image and the image itself. The output is:

* the mean of each metric per method with a bootstrap 95% confidence interval
  (percentile bootstrap over the images, explicit key);
* the reliability of each metric (Tomsett et al., 2020, :func:`jaxsal.metrics.reliability.metric_reliability`):
  inter-rater (Krippendorff's alpha of the methods' rankings across images),
  inter-method (mean Spearman correlation between methods across images) and the
  internal consistency (Cronbach's alpha) of the two deletion variants;
* a markdown table and a heatmap figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxsal.cli import _common

#: The methods ``--quick`` runs (``--methods all`` runs every registered one).
QUICK_METHODS = ("vanilla_grad", "grad_x_input", "guided_backprop", "integrated_gradients", "grad_cam")
BASELINES = ("random map", "Sobel edges", "input")
#: Metric name -> higher is better.
METRICS = {
    "pointing": True,
    "rel. mass": True,
    "rel. rank": True,
    "attr. loc. (w)": True,
    "top-k": True,
    "sparseness": True,
    "complexity": False,
    "deletion (mean)": False,
    "deletion (blur)": False,
    "insertion": True,
    "faith. corr.": True,
}


def shapes_generator(key: Any, n: int, size: int):
    """The default generator: :func:`jaxsal.datasets.synthetic_shapes` as ``(images, labels, masks)``."""
    from jaxsal.datasets import synthetic_shapes

    d = synthetic_shapes(key, n, size=size)
    return d.images, d.labels, d.masks


def sobel_map(x):
    """``(B, H, W)`` gradient magnitude of the channel-mean image (3x3 Sobel, edge padding)."""
    import jax.numpy as jnp

    g = x.mean(-1)
    p = jnp.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = g.shape[1:]
    s = lambda i, j: p[:, i : i + h, j : j + w]  # noqa: E731
    gx = (s(0, 2) + 2 * s(1, 2) + s(2, 2)) - (s(0, 0) + 2 * s(1, 0) + s(2, 0))
    gy = (s(2, 0) + 2 * s(2, 1) + s(2, 2)) - (s(0, 0) + 2 * s(0, 1) + s(0, 2))
    return jnp.sqrt(gx**2 + gy**2)


def score_maps(f, x, y, mask, pix, key, *, top_k: int, runs: int, subset: int) -> dict[str, Any]:
    """Per-image scores ``(B,)`` of every metric in :data:`METRICS` for ``(B, H, W)`` maps."""
    import jax
    import numpy as np

    from jaxsal.metrics import faithfulness, fidelity, localization
    from jaxsal.metrics.concentration import complexity, sparseness

    out = {
        "pointing": localization.pointing_game(pix, mask).hits.astype(float),
        "rel. mass": localization.relevance_mass_accuracy(pix, mask).per_example,
        "rel. rank": localization.relevance_rank_accuracy(pix, mask).per_example,
        "attr. loc. (w)": localization.attribution_localisation(pix, mask, weighted=True).per_example,
        "top-k": localization.top_k_intersection(pix, mask, top_k).per_example,
        "sparseness": sparseness(pix).per_example,
        "complexity": complexity(pix).per_example,
        "deletion (mean)": faithfulness.deletion(f, x, pix, y, steps=8, baseline="mean").auc,
        "deletion (blur)": faithfulness.deletion(f, x, pix, y, steps=8, baseline="blur", blur_sigma=2.0).auc,
        "insertion": faithfulness.insertion(f, x, pix, y, steps=8, baseline="blur", blur_sigma=2.0).auc,
        "faith. corr.": fidelity.faithfulness_correlation(
            f, x, pix, y, key=jax.random.fold_in(key, 7), runs=runs, subset_size=subset, baseline="mean"
        ).correlation,
    }
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def bootstrap_ci(values, key, n_boot: int = 1000, level: float = 0.95):
    """Percentile bootstrap CI of the mean of ``values`` ``(N,)`` over resampled images."""
    import jax
    import numpy as np

    v = np.asarray(values, np.float64)
    idx = np.asarray(jax.random.randint(key, (n_boot, v.size), 0, v.size))
    means = np.nanmean(v[idx], axis=1)
    lo, hi = np.nanpercentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(np.nanmean(v)), float(lo), float(hi)


def run_benchmark(
    *,
    methods: Sequence[str] | None = None,
    generator: Callable | None = None,
    out: str = "benchmark",
    quick: bool = False,
    train_size: int = 1000,
    test_size: int = 32,
    size: int = 32,
    steps: int = 400,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
    stream=None,
) -> dict[str, Any]:
    """Run the benchmark and write ``<out>/benchmark.md`` and ``<out>/benchmark.png``.

    Args:
      methods: registry names (``["all"]`` or None: every registered method; with
        ``quick`` and None: :data:`QUICK_METHODS`).
      generator: ``generator(key, n, size) -> (images, labels, masks)``; default
        :func:`shapes_generator`.
      out: output folder (created).
      quick: tiny settings (a few hundred training images, 16 test images of 16x16,
        cheap method hyper-parameters).
      train_size: training images.
      test_size: test images (the benchmark's units).
      size: image side in pixels.
      steps: training steps.
      seed: seed of every key (data, training, random baseline, bootstrap).
      n_boot: bootstrap resamples.
      progress: show progress bars.
      stream: where to print (default stdout).

    Returns:
      ``{"rows": {name: {metric: (mean, lo, hi)}}, "scores": (M, N, K) array,
      "reliability": MetricReliability, "names": [...], "paths": (md, png)}``.
    """
    import jax
    import numpy as np

    import jaxsal
    from jaxsal.metrics import reduce_channels
    from jaxsal.metrics.reliability import metric_reliability
    from jaxsal.models import ShapesCNN, accuracy, train_classifier

    stream = stream or sys.stdout
    generator = generator or shapes_generator
    if quick:
        train_size, test_size, size, steps = (
            min(train_size, 256),
            min(test_size, 16),
            min(size, 16),
            min(steps, 60),
        )
    default = QUICK_METHODS if quick else tuple(jaxsal.methods())
    names = _common.resolve_methods(methods, default)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    xt, yt, _ = generator(jax.random.fold_in(key, 0), train_size, size)
    x, y, mask = generator(jax.random.fold_in(key, 1), test_size, size)
    module = ShapesCNN()
    trained = train_classifier(module, xt, yt, key=jax.random.fold_in(key, 2), steps=steps)
    variables = trained.variables
    acc = float(accuracy(module, variables, x, y))
    print(f"ShapesCNN: test accuracy {acc:.3f} ({time.perf_counter() - t0:.0f} s)", file=stream)
    f = jax.jit(lambda z: module.apply(variables, z))
    layer = f"conv{len(module.features) - 1}"
    hyper = {"n": 4 if quick else 16, "steps": 8 if quick else 32, "noise_level": 0.15}
    if quick:
        hyper.update(window=(4, 4), strides=(4, 4), samples=16, num_samples=16, batch_size=16)
    kw = dict(top_k=max(1, size * size // 20), runs=16 if quick else 50, subset=max(1, size * size // 20))
    mkey = jax.random.fold_in(key, 3)
    maps: dict[str, Any] = {
        "random map": jax.random.uniform(jax.random.fold_in(key, 4), x.shape[:3]),
        "Sobel edges": sobel_map(x),
        "input": reduce_channels(x, "abs"),
    }
    failed = {}
    for name in _common.progress(names, "methods", progress):
        try:
            attr = _common.build_attr(
                jaxsal.get_method(name), module, variables, layer, hyper, size=x.shape[1:3]
            )
            maps[name] = reduce_channels(attr(x, y, key=mkey), "abs")
        except Exception as e:  # one method that cannot run on this model must not stop the table
            failed[name] = _common.one_line(e)
    scores = {n: score_maps(f, x, y, mask, m, mkey, **kw) for n, m in maps.items()}
    metric_names = list(METRICS)
    table = np.stack([np.stack([scores[n][m] for m in metric_names], -1) for n in scores])  # (M, N, K)
    table = np.where(np.isfinite(table), table, 0.0)  # a constant map has no correlation: score 0
    reliability = metric_reliability(
        table,
        methods=list(scores),
        metrics=metric_names,
        variants={"deletion": ["deletion (mean)", "deletion (blur)"]},
    )
    bkey = jax.random.fold_in(key, 5)
    rows = {
        n: {
            m: bootstrap_ci(scores[n][m], jax.random.fold_in(bkey, j), n_boot)
            for j, m in enumerate(metric_names)
        }
        for n in scores
    }
    os.makedirs(out, exist_ok=True)
    md = os.path.join(out, "benchmark.md")
    png = os.path.join(out, "benchmark.png")
    text = _markdown(rows, reliability, failed, acc, test_size, size)

    def write_text(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    _common.write_atomically(md, write_text)
    _common.write_atomically(png, lambda tmp: _heatmap(rows, tmp))
    print(text, file=stream)
    return {
        "rows": rows,
        "scores": table,
        "reliability": reliability,
        "names": list(scores),
        "paths": (md, png),
    }


def _markdown(rows, rel, failed, acc, n, size) -> str:
    metrics = list(METRICS)
    arrow = {m: "↑" if up else "↓" for m, up in METRICS.items()}
    lines = [
        f"ShapesCNN test accuracy {acc:.3f}; {n} test images of {size}x{size}; maps = |map| summed over "
        "channels; mean [95% bootstrap CI].",
        "",
        "| method | " + " | ".join(f"{m} {arrow[m]}" for m in metrics) + " |",
        "| --- |" + " ---: |" * len(metrics),
    ]
    for name, row in rows.items():
        label = f"*{name}*" if name in BASELINES else name
        cells = [f"{row[m][0]:.3f} [{row[m][1]:.3f}, {row[m][2]:.3f}]" for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reliability of the metrics (Tomsett et al., 2020), over all rows above:",
        "",
        "| metric | inter-rater α (Krippendorff) | inter-method ρ (mean Spearman) |",
        "| --- | ---: | ---: |",
    ]
    for j, m in enumerate(rel.metrics):
        lines.append(f"| {m} | {rel.inter_rater[j]:.3f} | {rel.inter_method[j]:.3f} |")
    for g, a in rel.internal_consistency.items():
        lines.append(f"\nInternal consistency (Cronbach's α) of the {g} variants: {a:.3f}")
    for name, why in failed.items():
        lines.append(f"\n{name} did not run: {why}")
    return "\n".join(lines) + "\n"


def _heatmap(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(METRICS)
    m = np.array([[rows[n][k][0] for k in metrics] for n in rows])
    m = np.where(np.array([METRICS[k] for k in metrics])[None], m, -m)  # higher is better everywhere
    lo, hi = m.min(0), m.max(0)
    z = (m - lo) / np.where(hi > lo, hi - lo, 1)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(metrics), 1 + 0.35 * len(rows)))
    ax.imshow(z, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(metrics)), metrics, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_title("per metric: worst (dark) to best (bright)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- argparse


def add_subcommands(subparsers) -> None:
    """Add ``benchmark`` to the ``jaxsal`` command line."""
    q = subparsers.add_parser(
        "benchmark",
        help="every method x every metric on synthetic ground truth, with baselines and metric reliability",
        description="Train a small CNN on synthetic shapes and score every method with every metric, "
        "next to a random map, a Sobel edge map and the input; writes a markdown table and a heatmap.",
    )
    q.add_argument("--methods", nargs="+", metavar="NAME", help="registry names or 'all' (default: all)")
    q.add_argument("--out", default="benchmark", help="output folder (default ./benchmark)")
    q.add_argument("--quick", action="store_true", help="tiny settings and five methods")
    q.add_argument("--train-size", type=_common.int_at_least(8), default=1000)
    q.add_argument("--test-size", type=_common.int_at_least(2), default=32)
    q.add_argument("--size", type=_common.int_at_least(16), default=32, help="image side in pixels")
    q.add_argument("--steps", type=_common.int_at_least(1), default=400, help="training steps")
    q.add_argument("--seed", type=_common.seed, default=0)
    q.add_argument("--bootstrap", type=_common.int_at_least(10), default=1000, help="bootstrap resamples")
    q.add_argument("--no-progress", action="store_true", help="hide progress bars")
    q.set_defaults(func=_benchmark)


def _benchmark(args: argparse.Namespace) -> int:
    run_benchmark(
        methods=_common.split_list(args.methods, "--methods"),
        out=args.out,
        quick=args.quick,
        train_size=args.train_size,
        test_size=args.test_size,
        size=args.size,
        steps=args.steps,
        seed=args.seed,
        n_boot=args.bootstrap,
        progress=not args.no_progress,
    )
    return 0

"""Fragility of maps on EfficientNet-Lite0 (Ghorbani, Abid & Zou 2019), with a random control.

    python -m benchmarks.fragility                 # 3 photos, vanilla gradient, IG, SmoothGrad
    python -m benchmarks.fragility --steps 4 --photos chelsea coffee astronaut

The top-k attack (k = 1000 of 224 x 224 pixels, as the paper) at the paper's budget:
8 intensity levels of 255, i.e. ``epsilon = 8 / 128`` for this model's inputs
``(u8 - 127) / 128``, step ``epsilon / 8`` (one level), inputs kept in the valid range
``[-127/128, 1]``. The ReLU6 units are softplus (beta = 10) for the attack's gradient
only. The control is a random sign perturbation of the same size. Prints a markdown
table and writes ``benchmarks/results/fragility.png`` (original / attacked / random maps).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURE = os.path.join(ROOT, "benchmarks", "results", "fragility.png")
EPSILON = 8 / 128  # 8 intensity levels of 255 (Ghorbani et al. 2019), in (u8 - 127) / 128 units
BOUNDS = (-127 / 128, 128 / 128)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", nargs="+", default=["chelsea", "coffee", "astronaut"])
    ap.add_argument("--methods", nargs="+", default=["vanilla_grad", "integrated_gradients", "smoothgrad"])
    ap.add_argument("--steps", type=int, default=8, help="attack steps (paper: up to a few hundred)")
    ap.add_argument("--ig-steps", type=int, default=8)
    ap.add_argument("--smoothgrad-n", type=int, default=4)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--beta", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", default=FIGURE)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import jaxsal
    from jaxsal import models
    from jaxsal.metrics.fragility import fragility_attack, plot_fragility

    module, variables = models.efficientnet_lite0(pretrained=True)
    labels_txt = list(models.imagenet_labels())
    photos = models.sample_images()
    x = jnp.concatenate([jnp.asarray(models.preprocess(photos[p])) for p in args.photos])

    def f(z):
        return module.apply(variables, z)

    factories = {
        "vanilla_grad": jaxsal.vanilla_grad,
        "integrated_gradients": lambda g: jaxsal.integrated_gradients(g, steps=args.ig_steps),
        "smoothgrad": lambda g: jaxsal.smoothgrad(jaxsal.vanilla_grad(g), n=args.smoothgrad_n),
        "grad_x_input": jaxsal.grad_x_input,
    }
    rows, results = [], {}
    for name in args.methods:
        t = time.perf_counter()
        r = fragility_attack(
            factories[name],
            f,
            x,
            epsilon=EPSILON,
            steps=args.steps,
            k=args.k,
            key=jax.random.key(args.seed),
            bounds=BOUNDS,
            beta=args.beta,
        )
        jax.block_until_ready(r.x_adv)
        secs = time.perf_counter() - t
        results[name] = r
        for i, p in enumerate(args.photos):
            rows.append(
                (
                    name,
                    p,
                    labels_txt[int(r.labels[i])].split(",")[0],
                    bool(r.adv_labels[i] == r.labels[i]),
                    int(r.best_step[i]),
                    float(r.topk_intersection[i]),
                    float(r.random_topk_intersection[i]),
                    float(r.spearman[i]),
                    float(r.random_spearman[i]),
                    float(r.center_shift[i]),
                    float(r.random_center_shift[i]),
                    float(jnp.abs(r.x_adv[i] - x[i]).max() * 128),
                    secs,
                )
            )
        print(f"{name}: {secs:.0f} s", flush=True)
        for row in rows[-len(args.photos) :]:
            print("  " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row), flush=True)

    print()
    print(
        f"EfficientNet-Lite0, top-k attack, k = {args.k}, epsilon = 8/255 levels ({EPSILON:.4f} input units), "
        f"{args.steps} steps of 1 level, softplus beta = {args.beta}; IG {args.ig_steps} steps, "
        f"SmoothGrad n = {args.smoothgrad_n}; load average {open('/proc/loadavg').read().split()[0]}."
    )
    print()
    print(
        "| method | photo | label | label kept | step | top-k ∩ attack | top-k ∩ random | Spearman attack "
        "| Spearman random | centre shift attack (px) | centre shift random (px) | max abs delta (levels) | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {'yes' if r[3] else 'NO'} | {r[4]} | {r[5]:.3f} | {r[6]:.3f} | "
            f"{r[7]:.3f} | {r[8]:.3f} | {r[9]:.1f} | {r[10]:.1f} | {r[11]:.1f} | {r[12]:.0f} |"
        )
    for name, r in results.items():
        print(
            f"\n{name}: mean top-k intersection attack {float(np.mean(r.topk_intersection)):.3f} vs random "
            f"{float(np.mean(r.random_topk_intersection)):.3f}; labels kept: "
            f"{bool(np.all(np.asarray(r.adv_labels) == np.asarray(r.labels)))}"
        )

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        name = args.methods[0]
        images = np.stack([models.preprocess(photos[p])[0] for p in args.photos]) * 128 + 127
        fig = plot_fragility(
            results[name],
            np.clip(images, 0, 255).astype(np.uint8),
            titles=[f"{p} ({name})" for p in args.photos],
        )
        os.makedirs(os.path.dirname(args.figure), exist_ok=True)
        fig.savefig(args.figure, dpi=90)
        plt.close(fig)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()

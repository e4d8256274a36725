"""Train the committed transformers: ``python -m jaxsal.models.train_transformers {vit,text}``.

* ``vit``: :class:`jaxsal.models.vit.ViT` on a stream of fresh shapes (32 px): every
  step draws its batch with the generator of :func:`jaxsal.datasets.synthetic_shapes`
  from the step's key, so the model never sees an image twice (a fixed set of 20 000
  overfitted: training loss 0.02, held-out accuracy 0.91 after 3000 steps). Held-out
  accuracy on 2000 images of ``synthetic_shapes(key=1)``;
* ``text``: :class:`jaxsal.models.text.TextTransformer` on 20 000 sequences of
  ``text_task(key=0)``, held out on 2000 of ``key=1``.

AdamW with a linear warm-up and a cosine decay, float32, a fixed seed. Writes
``jaxsal/models/weights/{vit_tiny,text_tiny}.npz`` (or ``--out``) and prints the sha256
and the held-out accuracy to paste into :mod:`jaxsal.models.vit` / :mod:`jaxsal.models.text`.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal.models._npz import WEIGHTS_DIR, save_params

CONFIGS = {
    "vit": dict(steps=4000, batch=128, lr=2e-3, weight_decay=0.05, n_train=0),  # n_train=0: fresh data
    "text": dict(steps=1500, batch=64, lr=2e-3, weight_decay=0.01, n_train=20000),
}


def _data(which: str, n_train: int):
    if which == "vit":
        from jaxsal.datasets import synthetic_shapes
        from jaxsal.models.vit import ViT

        te = synthetic_shapes(1, 2000)
        if n_train == 0:  # a stream: the batch is drawn in the step (see train)
            return ViT(), (te.images[:2], None), (te.images, te.labels)
        tr = synthetic_shapes(0, n_train)
        return ViT(), (tr.images, tr.labels), (te.images, te.labels)
    from jaxsal.models.text import TextTransformer, text_task

    tr, te = text_task(0, n_train), text_task(1, 2000)
    return TextTransformer(), (tr.tokens, tr.labels), (te.tokens, te.labels)


def train(which: str, *, steps: int | None = None, seed: int = 0, log_every: int = 100, on_log=None):
    """Train one model; returns ``(params, held-out accuracy, seconds)``.

    ``on_log(step, params)``, if given, is called at every log line (e.g. to save a checkpoint).
    """
    import optax

    cfg = dict(CONFIGS[which])
    if steps is not None:
        cfg["steps"] = steps
    module, (xs, ys), (xt, yt) = _data(which, cfg["n_train"])
    key = jax.random.key(seed)
    params = module.init(jax.random.fold_in(key, 0), xs[:2])["params"]
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg["lr"], max(1, cfg["steps"] // 20), cfg["steps"])
    tx = optax.adamw(sched, weight_decay=cfg["weight_decay"])
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        logits = module.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def batch(k):
        if ys is None:  # fresh shapes from the step's key
            from jaxsal.datasets import _one

            images, _, labels = jax.vmap(lambda kk: _one(kk, xs.shape[1]))(jax.random.split(k, cfg["batch"]))
            return images, labels
        idx = jax.random.randint(k, (cfg["batch"],), 0, xs.shape[0])
        return xs[idx], ys[idx]

    @jax.jit
    def step(p, s, k):
        loss, g = jax.value_and_grad(loss_fn)(p, *batch(k))
        with jax.numpy_dtype_promotion("standard"):
            upd, s = tx.update(g, s, p)
            return optax.apply_updates(p, upd), s, loss

    predict = jax.jit(lambda p, x: module.apply({"params": p}, x).argmax(-1))
    t0 = time.perf_counter()
    for i, k in enumerate(jax.random.split(jax.random.fold_in(key, 1), cfg["steps"])):
        params, opt_state, loss = step(params, opt_state, k)
        if log_every and (i % log_every == 0 or i == cfg["steps"] - 1):
            print(f"{which} step {i:5d} loss {float(loss):.4f}  {time.perf_counter() - t0:7.1f}s", flush=True)
            if on_log is not None:
                on_log(i, params)
    seconds = time.perf_counter() - t0
    preds = jnp.concatenate([predict(params, xt[i : i + 500]) for i in range(0, xt.shape[0], 500)])
    acc = float((preds == yt).mean())
    print(f"{which}: {n_params} parameters, held-out accuracy {acc:.4f}, {seconds:.0f}s", flush=True)
    return params, acc, seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=None, help="output .npz (default: the package's weights/)")
    ap.add_argument("--checkpoint", default=None, help="also save the weights to this .npz at every log line")
    args = ap.parse_args(argv)
    name = {"vit": "vit_tiny", "text": "text_tiny"}[args.model]
    out = args.out or os.path.join(WEIGHTS_DIR, f"{name}.npz")
    ckpt = None
    if args.checkpoint:
        ckpt = lambda i, p: save_params(args.checkpoint, p)  # noqa: E731
    params, acc, _ = train(args.model, steps=args.steps, on_log=ckpt)
    digest = save_params(out, params)
    print(f"wrote {out}\n{name.upper()}_SHA256 = {digest!r}\n{name.upper()}_ACCURACY = {acc:.4f}")


if __name__ == "__main__":
    main()

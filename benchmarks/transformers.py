"""Transformers: localisation with ``vit_tiny`` on the shapes set, decisive-token share with ``text_tiny``.

``python -m benchmarks.transformers [--n 64] [--out benchmarks/results/transformers.md]``

* ViT: for every applicable method (input gradients, path and smoothing methods, the CAM
  family on the last block's ``ln1`` tokens through :class:`jaxsal.Tokens`, the attention
  methods, and AttnLRP when it is registered), the pointing game and relevance mass
  accuracy (:mod:`jaxsal.metrics`) against the shapes' exact masks, on ``n`` held-out
  images (``synthetic_shapes(key=1)``), explaining the predicted class. Layer maps
  ``(B, 8, 8)`` are upsampled bilinearly to 32 x 32; input maps are summed over channels
  (absolute value for unsigned methods).
* Text: the share of ``|R|`` (summed over the embedding dimension per token) on the
  decisive ``A`` and ``B`` tokens, for IG, Gradient x Input and SmoothGrad at the
  embedding layer (``jaxsal.at_layer``), on the held-out sequences that contain both,
  next to the share a uniform map would give.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxsal
from jaxsal import metrics
from jaxsal._src import attention as _attention  # noqa: F401  (registers the attention methods)
from jaxsal._src.tokens import Tokens


def _vit_methods(model, v):
    f = jax.jit(lambda x: model.apply(v, x))
    tokens = Tokens(grid=(8, 8), prefix=1)
    from jaxsal._src.probe import with_tokens
    from jaxsal.models.vit import VIT_CAM_LAYER

    p = with_tokens(jaxsal.flax.probe(model, v, VIT_CAM_LAYER), tokens)
    reg = jaxsal.methods()
    out = {}
    for name, hyper in [
        ("vanilla_grad", {}),
        ("grad_x_input", {}),
        ("integrated_gradients", {"steps": 16}),
        ("smoothgrad", {"n": 16}),
    ]:
        if name in reg:
            out[name] = (reg[name].build(f, **hyper), reg[name].signed)
    for name in ("grad_cam", "grad_cam_pp", "hires_cam", "xgrad_cam", "layer_cam", "eigen_cam"):
        if name in reg:
            out[name] = (reg[name].build(p), False)
    for name in ("raw_attention", "attention_rollout", "attention_flow", "gradient_rollout"):
        out[name] = (reg[name].build(f, tokens=tokens), False)
    try:  # AttnLRP, when registered (jaxsal.lrp(f, composite="attn_lrp"))
        out["attn_lrp"] = (jaxsal.lrp(f, composite="attn_lrp"), True)
    except Exception as e:  # noqa: BLE001 - reported in the table
        print(f"attn_lrp unavailable: {type(e).__name__}: {e}")
    return out


def vit_table(n: int) -> str:
    from jaxsal.datasets import synthetic_shapes
    from jaxsal.models import vit_tiny

    model, v = vit_tiny()
    data = synthetic_shapes(1, n)
    x, mask = data.images, data.masks
    preds = jax.jit(lambda x: model.apply(v, x))(x).argmax(-1)
    acc = float((preds == data.labels).mean())
    rows = ["| method | pointing game | relevance mass | s |", "| --- | ---: | ---: | ---: |"]
    for name, (attr, signed) in _vit_methods(model, v).items():
        t0 = time.perf_counter()
        try:
            r = np.asarray(jax.jit(lambda x, t, attr=attr: attr(x, t, key=jax.random.key(0)))(x, preds))
        except Exception as e:  # noqa: BLE001
            rows.append(f"| {name} | error: {type(e).__name__} | | |")
            print(name, "failed:", e)
            continue
        if r.ndim == 4:  # input maps (B, H, W, 3)
            r = r.sum(-1) if signed else np.abs(r).sum(-1)
        if r.shape[1:] != mask.shape[1:]:
            r = np.asarray(jaxsal.upsample(jnp.asarray(r), mask.shape[1:]))
        pg = float(metrics.pointing_game(r, mask).accuracy)
        rm = float(metrics.relevance_mass_accuracy(r, mask).mean)
        dt = time.perf_counter() - t0
        rows.append(f"| {name} | {pg:.3f} | {rm:.3f} | {dt:.0f} |")
        print(rows[-1], flush=True)
    area = float(mask.mean())
    head = (
        f"vit_tiny on {n} held-out shapes (accuracy on them {acc:.3f}); explaining the predicted class. "
        f"Mask area {area:.3f} of the image (a uniform map's relevance mass)."
    )
    return head + "\n\n" + "\n".join(rows)


def text_table(n: int) -> str:
    from jaxsal.models.text import TEXT_PAD, TEXT_VOCAB, text_task, text_tiny

    model, v = text_tiny()
    data = text_task(1, n)
    keep = np.asarray(data.decisive.sum(1) == 2)
    ids = np.asarray(data.tokens)[keep]
    dec = np.asarray(data.decisive)[keep]
    x = jax.nn.one_hot(ids, TEXT_VOCAB)
    base = jax.nn.one_hot(np.full_like(ids, TEXT_PAD), TEXT_VOCAB)
    p = jaxsal.flax.probe(model, v, "embed")
    layer = jaxsal.at_layer(p)
    methods = {
        "integrated_gradients": jaxsal.integrated_gradients(layer, steps=32, baseline=base),
        "grad_x_input": jaxsal.grad_x_input(layer),
        "smoothgrad": jaxsal.smoothgrad(jaxsal.vanilla_grad(layer), n=16, noise_level=0.1),
    }
    rows = ["| method (at the embeddings) | decisive-token share of abs(R) |", "| --- | ---: |"]
    key = jax.random.key(0)
    for name, attr in methods.items():
        r = np.asarray(jax.jit(lambda x, k, attr=attr: attr(x, key=k))(x, key))
        per_token = np.abs(r.sum(-1))  # (N, L): summed over the embedding dimension
        share = (per_token * dec).sum(1) / np.maximum(per_token.sum(1), 1e-30)
        rows.append(f"| {name} | {share.mean():.3f} |")
        print(rows[-1], flush=True)
    uniform = float(dec.sum(1).mean() / dec.shape[1])
    head = (
        f"text_tiny on the {keep.sum()} of {n} held-out sequences that contain both A and B "
        f"(decisive tokens); a uniform map would give {uniform:.3f}."
    )
    return head + "\n\n" + "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="held-out ViT images")
    ap.add_argument("--n-text", type=int, default=400, help="held-out text sequences")
    ap.add_argument("--only", choices=("vit", "text"), default=None, help="run one of the two tables")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "transformers.md"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    md = ""
    if args.only in (None, "vit"):
        md += f"## Localisation with vit_tiny\n\n{vit_table(args.n)}\n\n"
    if args.only in (None, "text"):
        md += f"## Decisive tokens with text_tiny\n\n{text_table(args.n_text)}\n"
    md += f"\n(total {time.perf_counter() - t0:.0f} s, load {open('/proc/loadavg').read().split()[0]})\n"
    with open(args.out, "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()

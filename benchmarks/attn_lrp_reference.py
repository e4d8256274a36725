"""A hand-written, layer-by-layer NumPy reference of AttnLRP for a small pre-LN transformer.

Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers" (ICML 2024), with the rules of LXT 2.1 (``lxt.explicit.functional``)
written out in float64 NumPy, one function per rule, and no autodiff: every Jacobian
product is spelled out. It reads the Flax parameters of ``tests/test_attn_lrp.py``'s
``TinyTransformer`` (``nn.MultiHeadDotProductAttention``, ``nn.LayerNorm`` /
``nn.RMSNorm``) and follows its forward pass:

``tokens (B, T, Din) -> dense embed + pos -> depth x [x + MHA(LN(x)), x + MLP(LN(x))]
-> LN -> CLS token or token mean -> dense head``.

The stabiliser is jaxsal's ``s(z) = z + eps * sign0(z)``; the query's ``1/sqrt(d_head)``
is merged into the query projection (the canonization jaxsal applies; LXT's ε rule on
the unmerged layer differs from it by O(ε)). Besides the input relevance it books what
each absorbing site takes (``leaks``): the ε rules' constants (biases, positional
embeddings, LayerNorm biases) and the softmax's implicit bias, so that
``sum(R_x) + sum(leaks) == S_c`` holds exactly (a conservation identity the tests check).
"""

from __future__ import annotations

import numpy as np


def _stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


class Book:
    """Sums of relevance absorbed per kind of site."""

    def __init__(self):
        self.leaks: dict[str, float] = {}

    def add(self, kind, r_out, r_in_total):
        self.leaks[kind] = self.leaks.get(kind, 0.0) + float(np.sum(r_out) - r_in_total)


# ----------------------------------------------------------------------------- one rule each


def dense_fwd(x, w, b):
    """``x (..., I) @ w (I, O) + b (O,)``."""
    return x @ w + (0.0 if b is None else b)


def dense_lrp(x, w, b, r, eps, book=None):
    """ε rule: ``R_x = x * ((R / s(z)) @ wᵀ)``."""
    z = dense_fwd(x, w, b)
    rx = x * ((r / _stab(z, eps)) @ w.T)
    if book is not None:
        book.add("bias", r, rx.sum())
    return rx


def add_lrp(a, b, r, eps, book=None, kind="sum"):
    """ε rule on ``a + b`` (residual; ``b`` a constant: the constant's share is absorbed)."""
    s = r / _stab(a + b, eps)
    ra, rb = a * s, b * s
    if book is not None:
        book.add(kind, r, ra.sum() + (rb.sum() if kind == "stabiliser" else 0.0))
    return ra, rb


def layer_norm_fwd(x, scale, bias, var_eps=1e-6, rms=False):
    if rms:
        inv = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + var_eps)
        return x * inv * scale, inv
    mean = x.mean(-1, keepdims=True)
    var = np.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
    inv = 1.0 / np.sqrt(var + var_eps)
    return (x - mean) * inv * scale + bias, inv


def layer_norm_lrp(x, scale, bias, r, eps, rms=False, book=None):
    """ε rule on the whole norm with ``1/std`` held constant (LXT's ``layer_norm``).

    ``y = C(x) * inv * scale + bias`` with ``C`` the centring (the identity for RMSNorm);
    ``Cᵀ = C`` so ``R_x = x * C(R / s(y) * inv * scale)``.
    """
    y, inv = layer_norm_fwd(x, scale, bias, rms=rms)
    v = r / _stab(y, eps) * inv * scale
    if not rms:
        v = v - v.mean(-1, keepdims=True)
    rx = x * v
    if book is not None:
        book.add("bias", r, rx.sum())
    return rx


def softmax_fwd(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_lrp(z, r, book=None):
    """Prop. 3.1: ``R_z = z * (R - s * sum(R))`` over the last axis."""
    s = softmax_fwd(z)
    rz = np.where(np.isneginf(z), 0.0, z) * (r - s * r.sum(-1, keepdims=True))
    if book is not None:
        book.add("softmax", r, rz.sum())
    return rz


def matmul_lrp(a, b, r, eps):
    """Uniform rule (Prop. 3.3) on ``a @ b`` over the last two axes: ε rule of ``2ab``, each half."""
    y = a @ b
    s = r / _stab(2.0 * y, eps)
    return a * (s @ np.swapaxes(b, -1, -2)), b * (np.swapaxes(a, -1, -2) @ s)


# ----------------------------------------------------------------------------- the model


def _mha(p, h, heads):
    """Flax ``MultiHeadDotProductAttention`` forward with the cache the backward needs."""
    B, T, D = h.shape
    dh = p["query"]["kernel"].shape[-1]
    wq = p["query"]["kernel"].reshape(D, heads * dh) / np.sqrt(dh)
    bq = p["query"]["bias"].reshape(-1) / np.sqrt(dh)
    wk, bk = p["key"]["kernel"].reshape(D, -1), p["key"]["bias"].reshape(-1)
    wv, bv = p["value"]["kernel"].reshape(D, -1), p["value"]["bias"].reshape(-1)
    wo, bo = p["out"]["kernel"].reshape(heads * dh, D), p["out"]["bias"]

    def split(t):  # (B, T, H*dh) -> (B, H, T, dh)
        return t.reshape(B, T, heads, dh).transpose(0, 2, 1, 3)

    q, k, v = (split(dense_fwd(h, w, b)) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    kt = np.swapaxes(k, -1, -2)
    z = q @ kt
    a = softmax_fwd(z)
    o = a @ v
    oc = o.transpose(0, 2, 1, 3).reshape(B, T, heads * dh)
    out = dense_fwd(oc, wo, bo)
    return out, dict(h=h, q=q, kt=kt, z=z, a=a, v=v, oc=oc, w=((wq, bq), (wk, bk), (wv, bv), (wo, bo)))


def _mha_lrp(c, r, heads, eps, stab, book):
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = c["w"]
    B, T, _ = c["h"].shape
    dh = c["q"].shape[-1]
    roc = dense_lrp(c["oc"], wo, bo, r, eps, book)
    ro = roc.reshape(B, T, heads, dh).transpose(0, 2, 1, 3)
    ra, rv = matmul_lrp(c["a"], c["v"], ro, stab)
    rz = softmax_lrp(c["z"], ra, book)
    rq, rkt = matmul_lrp(c["q"], c["kt"], rz, stab)
    rk = np.swapaxes(rkt, -1, -2)

    def merge(t):  # (B, H, T, dh) -> (B, T, H*dh)
        return t.transpose(0, 2, 1, 3).reshape(B, T, heads * dh)

    h = c["h"]
    return (
        dense_lrp(h, wq, bq, merge(rq), eps, book)
        + dense_lrp(h, wk, bk, merge(rk), eps, book)
        + dense_lrp(h, wv, bv, merge(rv), eps, book)
    )


def forward(params, x, *, depth, heads, pool="cls", rms=False, return_cache=False):
    """The transformer's scores ``(B, C)`` (and the cache for :func:`attn_lrp`)."""
    p = params
    cache: dict = {"x": x}
    e = dense_fwd(x, p["embed"]["kernel"], p["embed"]["bias"])
    cache["e"] = e
    h = e + p["pos"]
    blocks = []
    for i in range(depth):
        b = p[f"block{i}"]
        c: dict = {"x0": h}
        n1, _ = layer_norm_fwd(h, b["ln1"]["scale"], b["ln1"].get("bias"), rms=rms)
        att, c["att"] = _mha(b["attn"], n1, heads)
        c["n1"], c["att_out"] = n1, att
        h1 = h + att
        c["x1"] = h1
        n2, _ = layer_norm_fwd(h1, b["ln2"]["scale"], b["ln2"].get("bias"), rms=rms)
        u = dense_fwd(n2, b["fc1"]["kernel"], b["fc1"]["bias"])
        g = gelu_tanh(u)
        m = dense_fwd(g, b["fc2"]["kernel"], b["fc2"]["bias"])
        c.update(n2=n2, u=u, g=g, m=m)
        h = h1 + m
        blocks.append(c)
    cache["blocks"], cache["xL"] = blocks, h
    nf, _ = layer_norm_fwd(h, p["ln"]["scale"], p["ln"].get("bias"), rms=rms)
    cache["nf"] = nf
    pooled = nf[:, 0] if pool == "cls" else nf.mean(1)
    cache["pooled"] = pooled
    scores = dense_fwd(pooled, p["head"]["kernel"], p["head"]["bias"])
    return (scores, cache) if return_cache else scores


def attn_lrp(params, x, target, *, depth, heads, pool="cls", rms=False, eps=1e-6, stab=1e-6):
    """``(R_x, leaks)``: AttnLRP of ``S_target`` at the input tokens, and the absorbed sums."""
    p = params
    book = Book()
    scores, c = forward(params, x, depth=depth, heads=heads, pool=pool, rms=rms, return_cache=True)
    B = x.shape[0]
    r = np.zeros_like(scores)
    r[np.arange(B), target] = scores[np.arange(B), target]
    rp = dense_lrp(c["pooled"], p["head"]["kernel"], p["head"]["bias"], r, eps, book)
    nf = c["nf"]
    rn = np.zeros_like(nf)
    if pool == "cls":
        rn[:, 0] = rp
    else:
        s = nf.sum(1)  # reduce_sum (ε rule), then / T (relevance passes)
        rn = nf * (rp / _stab(s, stab))[:, None, :]
        book.add("bias", rp, rn.sum())  # the pool's stabiliser only
    rh = layer_norm_lrp(c["xL"], p["ln"]["scale"], p["ln"].get("bias"), rn, stab, rms=rms, book=book)
    for i in reversed(range(depth)):
        b, cb = p[f"block{i}"], c["blocks"][i]
        r1, rm = add_lrp(cb["x1"], cb["m"], rh, stab, book, "stabiliser")
        rg = dense_lrp(cb["g"], b["fc2"]["kernel"], b["fc2"]["bias"], rm, eps, book)
        ru = rg  # GELU: identity rule
        rn2 = dense_lrp(cb["n2"], b["fc1"]["kernel"], b["fc1"]["bias"], ru, eps, book)
        r1 = r1 + layer_norm_lrp(
            cb["x1"], b["ln2"]["scale"], b["ln2"].get("bias"), rn2, stab, rms=rms, book=book
        )
        r0, ratt = add_lrp(cb["x0"], cb["att_out"], r1, stab, book, "stabiliser")
        rn1 = _mha_lrp(cb["att"], ratt, heads, eps, stab, book)
        rh = r0 + layer_norm_lrp(
            cb["x0"], b["ln1"]["scale"], b["ln1"].get("bias"), rn1, stab, rms=rms, book=book
        )
    # embedding + pos: jaxsal merges the positional embedding into the embedding's bias
    e = c["e"]
    w, bias = p["embed"]["kernel"], p["embed"]["bias"] + p["pos"]
    z = x @ w + bias
    rx = x * ((rh / _stab(z, eps)) @ w.T)
    book.add("bias", rh, rx.sum())
    del e
    return rx, book.leaks

"""A tiny Vision Transformer (Dosovitskiy et al. 2021, https://arxiv.org/abs/2010.11929) for the shapes set.

:class:`ViT` is a standard pre-LN ViT in Flax linen: a 3x3 convolutional stem, a patch
embedding (a ``p x p`` convolution with stride ``p``), a learned CLS token and position
embeddings, ``depth`` blocks ``x + MHSA(LN(x))``, ``x + MLP(LN(x))`` (GELU), a final
LayerNorm and a dense head on the CLS token. :func:`vit_tiny` loads the committed weights
trained on :func:`jaxsal.datasets.synthetic_shapes` (32 px, 4-px patches, an 8 x 8 grid
of patch tokens after the CLS token) by ``python -m jaxsal.models.train_transformers vit``.

Layer names, for probes (:func:`jaxsal.flax.probe`), ``i = 0 .. depth-1``:

* ``"block{i}"``: the token activations ``(B, 1 + h*w, D)`` after block ``i``;
* ``"block{i}/ln1"``: the normalised tokens entering block ``i``'s attention. The last
  block's ``ln1`` (``VIT_CAM_LAYER``) is the usual Grad-CAM layer of a ViT: only the
  CLS token of the last block's output reaches the head, so the gradient with respect
  to the patch tokens of ``"block{depth-1}"`` itself is zero;
* ``"block{i}/attn/probs"``: the attention probabilities ``(B, heads, T, T)``, a plain
  :func:`jax.nn.softmax` over the keys (last axis), so the softmax matcher finds it in
  the jaxpr too.

Use :class:`jaxsal.Tokens` (``Tokens(grid=(8, 8), prefix=1)``) to present a token layer
to the CAM family as an ``(B, 8, 8, D)`` map.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsal._src.tokens import Tokens
from jaxsal.datasets import SHAPES

Array = jax.Array

__all__ = [
    "VIT_CAM_LAYER",
    "VIT_TINY_ACCURACY",
    "VIT_TINY_SHA256",
    "VIT_TOKENS",
    "Attention",
    "Block",
    "LayerNorm",
    "ViT",
    "vit_tiny",
]

#: sha256 of ``jaxsal/models/weights/vit_tiny.npz`` (the file bytes).
VIT_TINY_SHA256 = "a2d6a1f7f7a4832db1de8dc51690849db420fa3a5e0e6628e34fd4ef79415643"
#: Held-out accuracy of :func:`vit_tiny` (2000 images of ``synthetic_shapes(key=1)``), after the
#: script's 4000 steps on a stream of fresh shapes (537 s on 2 CPU cores).
VIT_TINY_ACCURACY = 0.9535
#: The Grad-CAM layer of :func:`vit_tiny`: the last block's pre-attention LayerNorm.
VIT_CAM_LAYER = "block2/ln1"
#: The token layout of :func:`vit_tiny`'s token layers: one CLS token, then an 8 x 8 grid of patches.
VIT_TOKENS = Tokens(grid=(8, 8), prefix=1)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, ``(x - mean) / sqrt(var + eps) * scale + bias``.

    The parameters are cast to the input's dtype, so a float64 input runs in float64
    under strict dtype promotion.
    """

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        lead = (1,) * (x.ndim - 1)  # same rank as x: no implicit rank promotion
        scale = self.param("scale", nn.initializers.ones, (d,)).astype(x.dtype).reshape(lead + (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,)).astype(x.dtype).reshape(lead + (d,))
        mean = x.mean(-1, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(-1, keepdims=True)
        return xc * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class Softmax(nn.Module):
    """``jax.nn.softmax`` over the last axis, as a named submodule so probes can read it."""

    @nn.compact
    def __call__(self, logits: Array) -> Array:
        return jax.nn.softmax(logits, axis=-1)


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, name=name, kernel_init=nn.initializers.xavier_uniform())


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(q kᵀ / sqrt(d_head)) v``, heads concatenated, projected.

    Submodules ``qkv`` (one dense layer for queries, keys and values), ``probs`` (the
    softmax, output ``(B, heads, T, T)``) and ``out``.
    """

    heads: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, t, d = x.shape
        hd = d // self.heads
        qkv = _dense(3 * d, "qkv")(x).reshape(b, t, 3, self.heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, hd)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        probs = Softmax(name="probs")(logits)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d)
        return _dense(d, "out")(out)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + fc2(gelu(fc1(ln2(x))))``."""

    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x + Attention(self.heads, name="attn")(LayerNorm(name="ln1")(x))
        h = _dense(self.mlp_dim, "fc1")(LayerNorm(name="ln2")(x))
        h = jax.nn.gelu(h, approximate=False)
        return x + _dense(x.shape[-1], "fc2")(h)


def _cls_encoder(m: nn.Module, x: Array, positions: int) -> Array:
    """Tokens ``(B, T, D)`` to logits: CLS token prepended, position embeddings added, blocks, LayerNorm, head on CLS.

    Called from ``m``'s compact ``__call__`` (:class:`ViT`, the text transformer): the
    parameters ``cls`` and ``pos`` (``positions`` of them, the first ``1 + T`` used) and
    the submodules ``block{i}``, ``norm`` and ``head`` are ``m``'s, sized by its ``depth``,
    ``heads``, ``mlp_dim`` and ``num_classes``.
    """
    b, t, d = x.shape
    cls = m.param("cls", nn.initializers.normal(0.02), (1, 1, d)).astype(x.dtype)
    pos = m.param("pos", nn.initializers.normal(0.02), (1, positions, d)).astype(x.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1) + pos[:, : 1 + t]
    for i in range(m.depth):
        x = Block(m.heads, m.mlp_dim, name=f"block{i}")(x)
    x = LayerNorm(name="norm")(x)
    return nn.Dense(m.num_classes, name="head")(x[:, 0])


class ViT(nn.Module):
    """A pre-LN Vision Transformer with a 3x3 convolutional stem, NHWC inputs in ``[0, 1]``.

    Attributes:
      num_classes: outputs of the head.
      patch: patch side in pixels (the image side must be a multiple).
      dim: token width ``D``.
      depth: number of blocks.
      heads: attention heads per block.
      mlp_dim: hidden width of each block's MLP.
      stem: channels of the 3x3 convolution before patchifying (0: none).
      center: subtracted from the input first.
    """

    num_classes: int = len(SHAPES)
    patch: int = 4
    dim: int = 48
    depth: int = 3
    heads: int = 3
    mlp_dim: int = 96
    stem: int = 16
    center: float = 0.5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x - self.center
        if self.stem:
            x = jax.nn.gelu(nn.Conv(self.stem, (3, 3), name="stem")(x), approximate=False)
        p = self.patch
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(x)
        b, h, w, d = x.shape
        return _cls_encoder(self, x.reshape(b, h * w, d), 1 + h * w)


def vit_tiny() -> tuple[ViT, dict]:
    """The tiny ViT trained on the 32-px synthetic shapes, and its variables.

    About 73k parameters: 3x3 stem (16 channels), 4-px patches (an 8 x 8 grid), D = 48,
    3 blocks of 3 heads, MLP width 96. Trained by ``python -m jaxsal.models.train_transformers vit``
    (fixed seed); the weights ship in the package and are checked against
    ``VIT_TINY_SHA256`` before loading (NumPy ``.npz``, no pickle). Held-out accuracy:
    ``VIT_TINY_ACCURACY`` (0.9535, on 2000 images of ``synthetic_shapes(key=1)``), after
    4000 AdamW steps of 128 freshly drawn shapes each (537 s on 2 CPU cores). A retrained
    file needs both constants updated.

    Returns:
      ``(module, variables)``; ``module.apply(variables, x)`` maps ``(B, 32, 32, 3)``
      images in ``[0, 1]`` to ``(B, 4)`` logits.

    Example::

      model, v = jaxsal.models.vit_tiny()
      p = jaxsal.flax.probe(model, v, jaxsal.models.VIT_CAM_LAYER)
      p = jaxsal.with_tokens(p, jaxsal.models.VIT_TOKENS)   # tokens (B, 65, 48) -> map (B, 8, 8, 48)
      cam = jaxsal.grad_cam(p)(images)                       # (B, 8, 8)
      roll = jaxsal.attention_rollout(lambda x: model.apply(v, x), tokens=jaxsal.models.VIT_TOKENS)(images)
    """
    from jaxsal.models._npz import load_params

    return ViT(), {"params": load_params("vit_tiny.npz", VIT_TINY_SHA256)}

"""A tiny text transformer for a synthetic task with known decisive tokens: "is there an A before a B?".

Sequences are :data:`TEXT_LENGTH` token ids from a vocabulary of :data:`TEXT_VOCAB`:
``PAD = 0`` (never in the data; the usual baseline for attribution at the embeddings),
``A = 1``, ``B = 2`` and fillers ``3 .. TEXT_VOCAB-1``. The label is 1 when some ``A``
occurs before some ``B``. Half the sequences are positive (one ``A``, then one ``B``);
the negatives have the two in the other order (half of them), or only one of them, so the model must read the order, not just the presence. The decisive tokens
are the ``A`` and the ``B`` (:func:`text_task` returns their mask).

:class:`TextTransformer` embeds the ids (``"embed"``, output ``(B, L, D)``: the layer for
:func:`jaxsal.at_layer`), prepends a learned CLS token, adds position embeddings, runs
pre-LN blocks (the ViT's :class:`jaxsal.models.vit.Block`, names ``"block{i}"``,
``"block{i}/attn/probs"``) and reads the CLS token with a dense head.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsal.datasets import _as_key
from jaxsal.models.vit import _cls_encoder

Array = jax.Array

__all__ = [
    "TEXT_A",
    "TEXT_B",
    "TEXT_LENGTH",
    "TEXT_PAD",
    "TEXT_TINY_ACCURACY",
    "TEXT_TINY_SHA256",
    "TEXT_VOCAB",
    "TextTask",
    "TextTransformer",
    "text_task",
    "text_tiny",
]

TEXT_PAD, TEXT_A, TEXT_B = 0, 1, 2
TEXT_VOCAB = 16
TEXT_LENGTH = 12
#: sha256 of ``jaxsal/models/weights/text_tiny.npz`` (the file bytes).
TEXT_TINY_SHA256 = "784738a2c8a062d77b85502d5afc7553c80ae54c8043eca2cf8a72bf40cccecb"
#: Held-out accuracy of :func:`text_tiny` (2000 sequences of ``text_task(key=1)``).
TEXT_TINY_ACCURACY = 1.0


class TextTask(NamedTuple):
    """Attributes:
    tokens: ``(N, L)`` int32 token ids.
    labels: ``(N,)`` int32, 1 when an ``A`` precedes a ``B``.
    decisive: ``(N, L)`` bool, the positions of the ``A`` and ``B`` tokens.
    """

    tokens: Array
    labels: Array
    decisive: Array


def _one(key: Array, length: int, vocab: int) -> tuple[Array, Array]:
    ks = jax.random.split(key, 4)
    seq = jax.random.randint(ks[0], (length,), 3, vocab)
    case = jax.random.randint(ks[1], (), 0, 8)  # 0-3 positive, 4-5 B..A, 6 A only, 7 B only
    i, j = jnp.sort(jax.random.choice(ks[2], length, (2,), replace=False))
    first = jnp.where(case < 4, TEXT_A, jnp.where(case < 6, TEXT_B, jnp.where(case == 6, TEXT_A, TEXT_B)))
    second = jnp.where(case < 4, TEXT_B, TEXT_A)
    seq = seq.at[i].set(first)
    seq = jnp.where(case < 6, seq.at[j].set(second), seq)
    return seq.astype(jnp.int32), (case < 4).astype(jnp.int32)


def text_task(key: Any, n: int, *, length: int = TEXT_LENGTH, vocab: int = TEXT_VOCAB) -> TextTask:
    """``n`` sequences of the A-before-B task, deterministic given ``key`` (a JAX key or an int seed).

    Args:
      key: a JAX PRNG key or an int seed.
      n: number of sequences.
      length: tokens per sequence (at least 2).
      vocab: vocabulary size (at least 4: PAD, A, B and one filler).

    Returns:
      A :class:`TextTask`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}.")
    if not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"length must be an int >= 2; got {length!r}.")
    if not isinstance(vocab, (int, np.integer)) or vocab < 4:
        raise ValueError(f"vocab must be an int >= 4; got {vocab!r}.")
    keys = jax.random.split(_as_key(key), int(n))
    tokens, labels = jax.jit(jax.vmap(lambda k: _one(k, int(length), int(vocab))))(keys)
    return TextTask(tokens, labels, (tokens == TEXT_A) | (tokens == TEXT_B))


class TokenEmbed(nn.Module):
    """Token embedding ``(B, L) int -> (B, L, D)``; also takes one-hot (or any weights over the vocabulary) ``(B, L, V)`` floats.

    The float form, ``x @ embedding``, lets attribution methods that need a floating
    input (:func:`jaxsal.at_layer` with Integrated Gradients) run on the model:
    ``jax.nn.one_hot(tokens, vocab)`` gives the same output as the ids.
    """

    vocab: int
    dim: int

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        table = self.param("embedding", nn.initializers.normal(1.0), (self.vocab, self.dim))
        if jnp.issubdtype(tokens.dtype, jnp.floating):
            if tokens.ndim != 3 or tokens.shape[-1] != self.vocab:
                raise ValueError(
                    f"float tokens must be one-hot rows of shape (B, L, {self.vocab}); got {tokens.shape}. "
                    f"Use jax.nn.one_hot(ids, {self.vocab})."
                )
            return tokens @ table.astype(tokens.dtype)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"tokens must be (B, L) int ids; got shape {tuple(tokens.shape)}, dtype {tokens.dtype}."
            )
        if not isinstance(tokens, jax.core.Tracer):  # jnp.take would silently fill out-of-range ids with NaN
            ids = np.asarray(tokens)
            if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
                raise ValueError(
                    f"tokens must be ids 0 <= id < vocab = {self.vocab}; got ids from {ids.min()} to {ids.max()}."
                )
        return jnp.take(table, tokens, axis=0)


class TextTransformer(nn.Module):
    """Token embedding, CLS token, position embeddings, pre-LN blocks, final LayerNorm, head on CLS.

    Attributes:
      vocab: vocabulary size.
      length: maximum sequence length (position embeddings).
      num_classes: outputs of the head.
      dim: token width ``D``.
      depth: number of blocks.
      heads: attention heads per block.
      mlp_dim: hidden width of each block's MLP.
    """

    vocab: int = TEXT_VOCAB
    length: int = TEXT_LENGTH
    num_classes: int = 2
    dim: int = 32
    depth: int = 2
    heads: int = 2
    mlp_dim: int = 64

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        """``(B, L)`` int ids, or one-hot floats ``(B, L, vocab)``, to ``(B, num_classes)`` logits."""
        if tokens.ndim < 2 or tokens.shape[1] > self.length:
            raise ValueError(
                f"tokens must be (B, L) ids or (B, L, {self.vocab}) one-hot rows with L <= length = {self.length}; "
                f"got shape {tuple(tokens.shape)}."
            )
        x = TokenEmbed(self.vocab, self.dim, name="embed")(tokens)
        return _cls_encoder(self, x, 1 + self.length)


def text_tiny() -> tuple[TextTransformer, dict]:
    """The tiny text transformer trained on :func:`text_task`, and its variables.

    D = 32, 2 blocks of 2 heads, MLP width 64, vocabulary 16, length 12. Trained by
    ``python -m jaxsal.models.train_transformers text`` (fixed seed); the weights ship in
    the package, checked against ``TEXT_TINY_SHA256`` (NumPy ``.npz``, no pickle).
    Held-out accuracy: ``TEXT_TINY_ACCURACY``.

    Returns:
      ``(module, variables)``; ``module.apply(variables, tokens)`` maps ``(B, L)`` int
      token ids to ``(B, 2)`` logits (class 1: an ``A`` before a ``B``).
    """
    from jaxsal.models._npz import load_params

    return TextTransformer(), {"params": load_params("text_tiny.npz", TEXT_TINY_SHA256)}

"""RISE: randomised input sampling (forward passes only)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src.perturbation import acc_dtype, check_images, clean_scores, forward_rows
from jaxsal._src.registry import Method, register

Array = jax.Array


def rise_mask(key: Array, height: int, width: int, grid: int, p: float, dtype=jnp.float32) -> Array:
    """One RISE mask ``(height, width)`` in ``[0, 1]`` (Petsiuk et al. 2018, Sec. 3.2).

    A ``grid x grid`` array of Bernoulli(``p``) cells (1 = keep) is upsampled
    bilinearly (half-pixel centres, ``jax.image.resize``) to
    ``((grid + 1) ch, (grid + 1) cw)`` with cell size ``ch = ceil(height / grid)``,
    ``cw = ceil(width / grid)``, and cropped to ``(height, width)`` at a random shift
    in ``[0, ch) x [0, cw)``.
    """
    k_cells, k_dy, k_dx = jax.random.split(key, 3)
    ch, cw = math.ceil(height / grid), math.ceil(width / grid)
    cells = jax.random.bernoulli(k_cells, p, (grid, grid)).astype(dtype)
    up = jax.image.resize(cells, ((grid + 1) * ch, (grid + 1) * cw), "linear")
    dy = jax.random.randint(k_dy, (), 0, ch)
    dx = jax.random.randint(k_dx, (), 0, cw)
    return jnp.clip(jax.lax.dynamic_slice(up, (dy, dx), (height, width)), 0.0, 1.0)  # no rounding overshoot


def rise(
    f: Callable, *, n: int = 4000, grid: int = 7, p: float = 0.5, batch_size: int | None = None
) -> contract.Attribution:
    r"""RISE (Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for
    Explanation of Black-box Models", https://arxiv.org/abs/1806.07421).

    ``n`` random masks :math:`M_s \in [0, 1]^{H \times W}` (a
    ``grid x grid`` Bernoulli(``p``) grid, upsampled bilinearly and randomly shifted)
    multiply the image (all channels), and the saliency is the score-weighted mean
    mask, normalised by the keep probability:

    .. math:: R^c(x) = \frac{1}{n\,p} \sum_{s=1}^{n} S_c(x \odot M_s)\, M_s

    As the paper, the raw score is used (pass ``target=`` a callable such as
    ``lambda s: jax.nn.softmax(s)[:, c]`` for the class probability the paper uses).
    The masks depend on ``key`` only (the same masks for every example, as in the
    reference code); mask ``s`` is drawn from ``jax.random.fold_in(key, s)``.

    Args:
      f: model ``x (B, H, W, C) -> raw scores (B, C')``; only forward passes are used.
      n: number of masks (static), >= 1; the paper uses 4000 for ResNet50 (8000 for VGG16).
      grid: cells per side of the random grid (static), >= 1; the paper uses 7.
      p: probability of keeping a cell, in (0, 1); the paper uses 0.5.
      batch_size: at most this many masked images go through ``f`` per call (``None``:
        all ``n * B`` at once); masks are made and summed in chunks of the same size.
        The result does not depend on it.

    Returns:
      ``attr(x, target=None, *, key)`` of shape ``x.shape`` (the same value on every
      channel); ``key`` is required. Same key, same result.

    Example::

      attr = jaxsal.rise(f, n=4000, batch_size=100)
      r = attr(images, key=jax.random.key(0))
    """
    contract.check_callable(f)
    n = contract.check_positive_int(n, "n")
    grid = contract.check_positive_int(grid, "grid")
    batch_size = contract.check_optional_batch_size(batch_size)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise ValueError(f"p (the probability of keeping a cell) must be a float in (0, 1); got {p!r}.")
    p = float(p)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        check_images(x, "rise")
        key = contract.check_key(key, "rise")
        _, hh, ww, _ = x.shape
        target, _ = clean_scores(f, x, target, batch_size)
        dtype = acc_dtype(x.dtype)

        def mask(s):
            return rise_mask(jax.random.fold_in(key, s), hh, ww, grid, p, dtype)

        def row(s, e):
            return x[e] * mask(s).astype(x.dtype)[:, :, None]

        v = forward_rows(f, row, n, x, target, batch_size)  # (n, B)
        # Sum the score-weighted masks in chunks of at most batch_size masks.
        size = n if batch_size is None else min(batch_size, n)
        chunks = -(-n // size)
        weights = jnp.zeros((chunks * size, x.shape[0]), dtype).at[:n].set(v)
        ids = jnp.arange(chunks * size).reshape(chunks, size)

        def add(acc, s_w):
            s, w = s_w
            masks = jax.vmap(mask)(s)
            return acc + jnp.einsum("sb,shw->bhw", w, masks, precision=jax.lax.Precision.HIGHEST), None

        acc = contract.varying_like(jnp.zeros((x.shape[0], hh, ww), dtype), weights)
        acc, _ = jax.lax.scan(add, acc, (ids, weights.reshape(chunks, size, -1)))
        out = acc / (n * p)
        return jnp.broadcast_to(out[..., None], x.shape).astype(x.dtype)

    hyper = {"n": n, "grid": grid, "p": p, "batch_size": batch_size}
    return contract.Attribution(attr, f, stochastic=True, name="rise", hyper=hyper)


register(Method("rise", rise, "f", "perturbation", "RISE", "Petsiuk et al. 2018", stochastic=True))

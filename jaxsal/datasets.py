"""Datasets for evaluating attributions: synthetic shapes with exact masks, and digits.

* :func:`synthetic_shapes` -- one shape per image with its pixel mask, the ground truth
  of the localisation metrics;
* :func:`load_digits` -- scikit-learn's bundled 8x8 handwritten digits, for the data
  randomisation test (:func:`jaxsal.metrics.data_randomization`).

Both load offline, in seconds. A small CNN to train on them is
:class:`jaxsal.models.ShapesCNN`, with :func:`jaxsal.models.train_classifier`.

:func:`synthetic_shapes` draws one object per image (disk, square, triangle or cross:
the class) in a random colour at a random position and size, on a textured
background (two random sinusoidal gratings plus pixel noise, in random tints). The
object's exact pixel mask is returned, so localisation metrics
(:mod:`jaxsal.metrics.localization`) have a ground truth. Colour and background carry
no class information: only the shape does. Everything is drawn from one JAX key, so
the same key gives the same dataset on every machine.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SHAPES", "ShapesDataset", "load_digits", "synthetic_shapes"]

Array = jax.Array

SHAPES = ("disk", "square", "triangle", "cross")


class ShapesDataset(NamedTuple):
    """Attributes:
    images: ``(N, S, S, 3)`` float32 in ``[0, 1]``.
    masks: ``(N, S, S)`` bool, the object's pixels (never empty).
    labels: ``(N,)`` int32 index into ``class_names``.
    class_names: the shape names.
    """

    images: Array
    masks: Array
    labels: Array
    class_names: tuple[str, ...]


def _as_key(key: Any) -> Array:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if not hasattr(key, "dtype"):
        raise TypeError(f"key must be a JAX PRNG key or an int seed; got {type(key).__name__}.")
    return key


def _shape_mask(cls: Array, dy: Array, dx: Array, r: Array) -> Array:
    disk = dy**2 + dx**2 <= r**2
    square = jnp.maximum(jnp.abs(dy), jnp.abs(dx)) <= 0.8 * r
    # apex at the top (dy = -r), base at dy = 0.8 r, half-width growing to r
    tri = (dy >= -r) & (dy <= 0.8 * r) & (jnp.abs(dx) <= (dy + r) / 1.8)
    bar = r / 3
    cross = ((jnp.abs(dx) <= bar) & (jnp.abs(dy) <= r)) | ((jnp.abs(dy) <= bar) & (jnp.abs(dx) <= r))
    return jnp.select([cls == 0, cls == 1, cls == 2], [disk, square, tri], cross)


def _one(key: Array, size: int) -> tuple[Array, Array, Array]:
    ks = jax.random.split(key, 10)
    cls = jax.random.randint(ks[0], (), 0, len(SHAPES))
    r = jax.random.uniform(ks[1], (), minval=0.16 * size, maxval=0.26 * size)
    cy, cx = jax.random.uniform(ks[2], (2,), minval=r + 1, maxval=size - r - 1)
    yy, xx = jnp.meshgrid(
        jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij"
    )
    mask = _shape_mask(cls, yy - cy, xx - cx, r)
    # background: two gratings (1.5-6 cycles per image), random orientation, phase and tint
    freq = jax.random.uniform(ks[3], (2,), minval=1.5, maxval=6.0) * 2 * jnp.pi / size
    theta = jax.random.uniform(ks[4], (2,), maxval=jnp.pi)
    phase = jax.random.uniform(ks[5], (2,), maxval=2 * jnp.pi)
    proj = xx[..., None] * jnp.cos(theta)[None, None] + yy[..., None] * jnp.sin(theta)[None, None]
    gratings = jnp.sin(proj * freq[None, None] + phase[None, None])  # (S, S, 2)
    tints = jax.random.uniform(ks[6], (2, 3), minval=0.1, maxval=0.25)
    bg = 0.5 + gratings @ tints + 0.05 * jax.random.normal(ks[7], (size, size, 3))
    colour = jax.random.uniform(ks[8], (3,))
    obj = colour[None, None] + 0.03 * jax.random.normal(ks[9], (size, size, 3))
    img = jnp.clip(jnp.where(mask[..., None], obj, bg), 0.0, 1.0)
    return img, mask, cls.astype(jnp.int32)


def synthetic_shapes(key: Any, n: int, *, size: int = 32) -> ShapesDataset:
    """``n`` images of ``size x size`` pixels with one shape each, and their masks.

    Deterministic given ``key`` (a JAX key or an int seed). Classes are uniform at
    random; radius 16-26% of ``size``; the object lies fully inside the image.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 12:
        raise ValueError(f"size must be an int >= 12 pixels; got {size!r}.")
    keys = jax.random.split(_as_key(key), int(n))
    images, masks, labels = jax.jit(jax.vmap(lambda k: _one(k, int(size))))(keys)
    return ShapesDataset(images, masks, labels, SHAPES)


def load_digits() -> tuple[Array, Array]:
    """scikit-learn's 8x8 digits as ``(1797, 8, 8, 1)`` float32 in ``[-0.5, 0.5]`` and labels."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn (its bundled digits): pip install 'jaxsal[metrics]'"
        ) from None
    d = _load()
    images = (d.images.astype(np.float32) / 16.0 - 0.5)[..., None]
    return jnp.asarray(images), jnp.asarray(d.target.astype(np.int32))

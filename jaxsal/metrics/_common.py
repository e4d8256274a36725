"""Shared checks and conventions of :mod:`jaxsal.metrics`.

Conventions used by every metric:

* A *map* is an attribution for a batch: ``(B, H, W)`` (already one value per pixel,
  e.g. Grad-CAM) or ``(B, H, W, C)`` (input-shaped, channels last as in Flax).
* Channel reduction (:func:`reduce_channels`): ``"sum"`` is the signed sum over the
  channel axis, ``"abs"`` the sum of absolute values. Metrics say which one they use.
* Errors are raised here, at the boundary, with messages that name the argument.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.normalize import reduce_channels as _reduce

Array = jax.Array
Reduce = Literal["sum", "abs"]


def _shape(a: Any) -> tuple[int, ...] | None:
    s = getattr(a, "shape", None)
    return None if s is None else tuple(s)


def as_array(a: Any, name: str) -> Array:
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    if _shape(a) is None:
        raise TypeError(f"{name} must be an array; got {type(a).__name__}.")
    return jnp.asarray(a)


def reduce_channels(maps: Any, reduce: Reduce = "sum", name: str = "maps") -> Array:
    """``(B, H, W)`` or ``(B, H, W, C)`` maps to ``(B, H, W)`` pixel maps.

    ``reduce="sum"``: signed sum over channels; ``reduce="abs"``: sum of absolute
    values over channels. A ``(B, H, W)`` map is returned as is for ``"sum"`` and as
    its absolute value for ``"abs"``.
    """
    maps = as_array(maps, name)
    if maps.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (B, H, W) or (B, H, W, C) (channels last); got shape "
            f"{tuple(maps.shape)}. Add a batch axis with `{name}[None]` for a single map."
        )
    if reduce not in ("sum", "abs"):
        raise ValueError(f"reduce must be 'sum' or 'abs'; got {reduce!r}.")
    if maps.ndim == 3:
        return jnp.abs(maps) if reduce == "abs" else maps
    return _reduce(maps, "abs_sum" if reduce == "abs" else "sum")


def check_same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}. Resize the maps to a common resolution first "
            f"(e.g. `jax.image.resize`)."
        )


def check_pixel_map(maps: Array, x: Array, name: str = "attribution") -> Array:
    """An attribution for ``x`` (``(B, H, W, C)``): return its ``(B, H, W)`` signed pixel map."""
    if maps.ndim == 4 and tuple(maps.shape) == tuple(x.shape):
        return maps.sum(-1)
    if maps.ndim == 3 and tuple(maps.shape) == tuple(x.shape[:3]):
        return maps
    raise ValueError(
        f"{name} must have the shape of x {tuple(x.shape)} or x without its channel axis "
        f"{tuple(x.shape[:3])}; got {tuple(maps.shape)}. Upsample layer-resolution maps "
        f"(e.g. Grad-CAM) to the input size first."
    )


def check_image_batch(x: Any, name: str = "x") -> Array:
    x = as_array(x, name)
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images of shape (B, H, W, C) (channels last); got shape "
            f"{tuple(x.shape)}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype; got {x.dtype}. Use `{name}.astype(jnp.float32)`."
        )
    return x


def check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> Array:
    """Boolean ``(B, H, W)`` ground-truth mask; every example must mark at least one pixel."""
    mask = as_array(mask, name)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have the maps' shape (B, H, W) = {tuple(shape)}; got {tuple(mask.shape)}. "
            f"Reduce the mask over channels (`{name}.any(-1)`) or resize it."
        )
    mask = mask.astype(bool)
    if not isinstance(mask, jax.core.Tracer):
        empty = np.flatnonzero(~np.asarray(mask).reshape(mask.shape[0], -1).any(1))
        if empty.size:
            raise ValueError(
                f"{name} is empty (no True pixel) for example(s) {empty.tolist()[:10]}; localisation "
                f"against an empty ground truth is undefined. Drop those examples."
            )
    return mask


def check_fraction_grid(steps: Any, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} must be an int >= 1; got {steps!r}.")
    return int(steps)

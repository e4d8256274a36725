"""Resizing layer maps to the input's resolution (as Grad-CAM does, Selvaraju et al. 2017)."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array

_METHODS = {"bilinear": "linear", "nearest": "nearest"}


def upsample(
    maps: Array, size: tuple[int, int], method: Literal["bilinear", "nearest"] = "bilinear"
) -> Array:
    """Resize maps ``(B, h, w)`` or ``(B, h, w, K)`` to ``(B, H, W)`` / ``(B, H, W, K)``.

    Pure and jittable (``size`` and ``method`` are static), differentiable, no
    normalisation. Pixel centres are at half-integer positions: output pixel ``i``
    samples the input at ``u = (i + 1/2) * h / H - 1/2``, clamped to ``[0, h - 1]``,
    which is PyTorch's ``F.interpolate(..., align_corners=False)``. ``"bilinear"``
    interpolates linearly in ``u`` (and likewise along the width); it equals
    PyTorch's ``mode="bilinear", antialias=False`` for upsampling and for
    downsampling (no antialiasing filter is applied). ``"nearest"`` takes the
    input pixel ``floor((i + 1/2) * h / H)``, PyTorch's ``mode="nearest-exact"``
    (PyTorch's legacy ``"nearest"`` uses ``floor(i * h / H)`` instead).

    Args:
      maps: float array ``(B, h, w)`` or ``(B, h, w, K)``.
      size: the output's spatial size ``(H, W)``, e.g. ``x.shape[1:3]``.
      method: ``"bilinear"`` (default, as in Grad-CAM) or ``"nearest"``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}; got {method!r}.")
    maps = jnp.asarray(maps)
    if maps.ndim not in (3, 4):
        raise ValueError(f"maps must have shape (B, h, w) or (B, h, w, K); got shape {maps.shape}.")
    if not jnp.issubdtype(maps.dtype, jnp.floating):
        raise TypeError(f"maps must be floating; got dtype {maps.dtype}. Use `maps.astype(jnp.float32)`.")
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError(f"size must be a pair of ints (H, W), e.g. x.shape[1:3]; got {size!r}.") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive; got {(height, width)}.")
    shape = (maps.shape[0], height, width, *maps.shape[3:])
    return jax.image.resize(maps, shape, method=_METHODS[method], antialias=False)

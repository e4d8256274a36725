"""Pure normalisation of attribution maps for display.

jaxsal methods return raw, unnormalised attributions. Everything a
figure needs on top of that, reducing the colour channels and mapping values to a
fixed range, lives here as small pure functions: jittable, batched over the leading
axis ``B`` (every statistic is computed *per example*), and testable without a
display. :mod:`jaxsal.viz` only calls these and draws.

Shapes: a map is ``(B, H, W, C)`` (input-shaped, channels last) or ``(B, H, W)``
(one value per pixel, e.g. after :func:`reduce_channels` or a Grad-CAM map).

The percentile clipping follows the visualisation of Smilkov et al. (2017),
"SmoothGrad: removing noise by adding noise", https://arxiv.org/abs/1706.03825,
Sec. 3: a few very large gradient values would otherwise squash every other pixel
to black, so values above the ``q``-th percentile of ``|m|`` are saturated.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxsal._src.numerics import safe_divide

Array = jax.Array
Reduction = Literal["sum", "abs_sum", "max_abs", "l2"]

__all__ = [
    "REDUCTIONS",
    "abs_percentile",
    "minmax",
    "reduce_channels",
    "signed_symmetric",
]

REDUCTIONS: tuple[str, ...] = ("sum", "abs_sum", "max_abs", "l2")


def reduce_channels(m: Array, how: Reduction = "sum", axis: int = -1) -> Array:
    """Collapse the channel axis of a map, ``(B, H, W, C) -> (B, H, W)``.

    With ``m_c`` the map's value in channel ``c`` at one pixel:

    * ``"sum"``: ``sum_c m_c``. Keeps the sign, so positive and negative channel
      contributions cancel. For complete methods (Integrated Gradients) the pixel
      values still add up to the explained score difference. Use for signed maps.
    * ``"abs_sum"``: ``sum_c |m_c|``. Total magnitude, sign discarded; what the
      SmoothGrad paper and PAIR's ``VisualizeImageGrayscale`` use for absolute maps.
    * ``"max_abs"``: ``max_c |m_c|``. Simonyan et al. (2013), "Deep Inside
      Convolutional Networks", Sec. 3.1: the saliency of a pixel is the largest
      gradient magnitude over its colour channels.
    * ``"l2"``: ``sqrt(sum_c m_c^2)``, the Euclidean norm of the per-pixel vector.

    Args:
      m: the map; ``axis`` is its channel axis (default: last).
      how: one of ``"sum"``, ``"abs_sum"``, ``"max_abs"``, ``"l2"``.
      axis: the channel axis.

    Returns:
      ``m`` without ``axis``, in ``m``'s dtype.
    """
    m = jnp.asarray(m)
    if how == "sum":
        return jnp.sum(m, axis=axis)
    if how == "abs_sum":
        return jnp.sum(jnp.abs(m), axis=axis)
    if how == "max_abs":
        return jnp.max(jnp.abs(m), axis=axis)
    if how == "l2":
        return jnp.sqrt(jnp.sum(jnp.square(m), axis=axis))
    raise ValueError(f"how must be one of {', '.join(map(repr, REDUCTIONS))}; got {how!r}.")


def _per_example_percentile(a: Array, q: float) -> Array:
    """The ``q``-th percentile of ``a`` over all non-batch axes, broadcastable to ``a``."""
    flat = a.reshape(a.shape[0], -1)
    v = jnp.percentile(flat, q, axis=1)
    return v.reshape((a.shape[0],) + (1,) * (a.ndim - 1))


def _check_batched(m: Array, name: str) -> Array:
    m = jnp.asarray(m)
    if m.ndim < 2:
        raise ValueError(
            f"{name} must be batched, shape (B, H, W) or (B, H, W, C); got shape {tuple(m.shape)}. "
            f"Use `{name}[None]` for a single map."
        )
    if not jnp.issubdtype(m.dtype, jnp.floating):
        m = m.astype(jnp.float32)
    return m


def abs_percentile(m: Array, q: float = 99.0) -> Array:
    """Absolute map clipped at its ``q``-th percentile and scaled to ``[0, 1]``, per example.

    ``out = min(|m| / P_q(|m|), 1)`` where ``P_q`` is the ``q``-th percentile (linear
    interpolation, as :func:`numpy.percentile`) of ``|m|`` over all non-batch axes of
    one example. An example whose percentile is 0 (e.g. an all-zero map) maps to 0.
    Reduce the channels first (e.g. ``reduce_channels(m, "abs_sum")``) if you want one
    value per pixel; otherwise channels are normalised jointly.

    Args:
      m: ``(B, ...)`` map.
      q: percentile in ``[0, 100]``; 99 saturates the top 1 % of values.
    """
    m = _check_batched(m, "m")
    a = jnp.abs(m)
    return jnp.clip(safe_divide(a, _per_example_percentile(a, q)), 0, 1)


def signed_symmetric(m: Array, q: float = 99.0) -> Array:
    """Signed map scaled to ``[-1, 1]`` with 0 kept at 0, per example.

    ``out = clip(m / P_q(|m|), -1, 1)``: one symmetric limit ``P_q(|m|)`` for both
    signs, so a diverging colour map with limits ``[-1, 1]`` shows 0 as its neutral
    colour and equal magnitudes of either sign with equal intensity. An example
    whose percentile is 0 maps to 0.

    Args:
      m: ``(B, ...)`` map.
      q: percentile of ``|m|`` in ``[0, 100]`` used as the symmetric limit.
    """
    m = _check_batched(m, "m")
    v = _per_example_percentile(jnp.abs(m), q)
    return jnp.clip(safe_divide(m, v), -1, 1)


def minmax(m: Array) -> Array:
    """Affine rescaling to ``[0, 1]`` per example: ``(m - min m) / (max m - min m)``.

    This is the Grad-CAM paper's visualisation step (Selvaraju et al., 2017,
    https://arxiv.org/abs/1610.02391). A constant example maps to 0.

    Args:
      m: ``(B, ...)`` map.
    """
    m = _check_batched(m, "m")
    axes = tuple(range(1, m.ndim))
    lo = jnp.min(m, axis=axes, keepdims=True)
    hi = jnp.max(m, axis=axes, keepdims=True)
    return safe_divide(m - lo, hi - lo)

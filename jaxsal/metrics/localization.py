"""Localisation against ground truth: pointing game, relevance mass and rank accuracy,
attribution localisation and top-k intersection.

These compare a map with a known object mask (e.g. :func:`jaxsal.datasets.synthetic_shapes`).

* Pointing game (Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, 2018, "Top-down Neural
  Attention by Excitation Backprop", IJCV, https://arxiv.org/abs/1608.00507): a hit
  when the map's maximum falls on the object, optionally within a tolerance.
* Relevance mass accuracy and relevance rank accuracy (Arras, Osman & Samek, 2022,
  "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural network
  explanations", Information Fusion 81, https://arxiv.org/abs/2003.07258, Sec. 4.2).
* Attribution localisation (Kohlbrenner, Bauer, Nakajima, Binder, Samek & Lapuschkin,
  2020, "Towards Best Practice in Explaining Neural Network Decisions with LRP",
  IJCNN, https://arxiv.org/abs/1910.09840): the share of positive
  relevance inside the mask, optionally weighted by the inverse relative mask size.
* Top-k intersection (Theiner, Müller-Budack & Ewerth, 2022, "Interpretable Semantic
  Photo Geolocation", WACV, https://arxiv.org/abs/2104.14995): the fraction of
  the ``k`` most relevant pixels that lie inside the mask.

Protocol choices: input-shaped maps ``(B, H, W, C)`` are reduced to one value per
pixel by the **signed sum over channels** (pass ``(B, H, W)`` maps to choose your own
reduction, e.g. ``jaxsal.metrics.reduce_channels(m, "abs")``); masks are ``(B, H, W)``
booleans. Every function is pure JAX and jittable (the empty-mask check is skipped
under ``jit``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src.numerics import safe_divide
from jaxsal.metrics._common import check_mask, reduce_channels

# Quantus 0.6 deviations (jaxsal follows the papers; the maps in the parity test are
# non-negative, where both agree):
# * AttributionLocalisation computes the image size as ``x_batch[2:].size`` (the size of
#   the batch from its third example, not of one image) and, with ``weighted=True``,
#   multiplies by |mask| / |image| where Kohlbrenner et al. divide; it uses |R| (abs=True)
#   rather than the positive relevance R+.
# * RelevanceMassAccuracy sums the signed map (abs=False), Arras et al. the positive part.

Array = jax.Array


class PointingGame(NamedTuple):
    """Per-example hits and the mean hit rate.

    Attributes:
      hits: ``(B,)`` bool, whether the maximum lies on (or within ``tolerance`` of) the mask.
      points: ``(B, 2)`` int, the ``(row, col)`` of each map's maximum.
      accuracy: scalar, the fraction of hits.
    """

    hits: Array
    points: Array
    accuracy: Array


class Localization(NamedTuple):
    """Per-example scores and their batch mean."""

    per_example: Array
    mean: Array


def _dilate(mask: Array, radius: int) -> Array:
    """Dilate ``(B, H, W)`` masks with a Euclidean disk of ``radius`` pixels."""
    if radius <= 0:
        return mask
    t = jnp.arange(-radius, radius + 1)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).astype(jnp.float32)
    out = jax.lax.conv_general_dilated(mask[:, None].astype(jnp.float32), disk[None, None], (1, 1), "SAME")
    return out[:, 0] > 0


def pointing_game(maps: Any, mask: Any, *, tolerance: int = 0) -> PointingGame:
    """The pointing game (Zhang et al., 2018).

    The map's maximum (after the channel reduction described in the module docstring)
    is a hit when it lies inside ``mask`` dilated by a disk of ``tolerance`` pixels
    (Zhang et al. use 15 pixels at 224x224; the default 0 means "on the object").
    Ties for the maximum: the first in row-major order.
    """
    maps = reduce_channels(maps, "sum")
    mask = check_mask(mask, maps.shape)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels; got {tolerance}.")
    b, h, w = maps.shape
    idx = jnp.argmax(maps.reshape(b, -1), axis=1)
    rows, cols = idx // w, idx % w
    grown = _dilate(mask, int(tolerance))
    hits = grown.reshape(b, -1)[jnp.arange(b), idx]
    return PointingGame(hits, jnp.stack([rows, cols], 1), hits.mean())


def relevance_mass_accuracy(maps: Any, mask: Any) -> Localization:
    """Relevance mass accuracy (Arras et al., 2022, Eq. 4).

    .. math:: \\mathrm{RMA} = \\frac{\\sum_{p \\in \\mathrm{GT}} R_p^+}{\\sum_p R_p^+}

    the share of the map's positive relevance ``R^+ = max(R, 0)`` that falls inside the
    ground-truth mask (in ``[0, 1]``; 1 = all positive evidence on the object). A map
    without positive relevance scores 0.
    """
    maps = reduce_channels(maps, "sum")
    mask = check_mask(mask, maps.shape)
    pos = jnp.maximum(maps, 0)
    inside = jnp.where(mask, pos, 0).sum((1, 2))
    total = pos.sum((1, 2))
    per = safe_divide(inside, total)
    return Localization(per, per.mean())


def relevance_rank_accuracy(maps: Any, mask: Any) -> Localization:
    """Relevance rank accuracy (Arras et al., 2022, Eq. 5).

    With ``K = |GT|`` the mask size, the fraction of the ``K`` highest-relevance pixels
    that lie inside the mask (in ``[0, 1]``). Ties at the threshold are broken by
    row-major pixel index.
    """
    maps = reduce_channels(maps, "sum")
    mask = check_mask(mask, maps.shape)
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    order = jnp.argsort(-flat, axis=1, stable=True)
    rank = jnp.argsort(order, axis=1)
    k = mask.reshape(b, -1).sum(1)
    top = rank < k[:, None]
    per = (top & mask.reshape(b, -1)).sum(1) / k  # int / int: true division, float32
    return Localization(per, per.mean())


def attribution_localisation(maps: Any, mask: Any, *, weighted: bool = False) -> Localization:
    """Attribution localisation (Kohlbrenner et al., 2020).

    .. math:: \\mu = \\frac{R^+_{\\mathrm{in}}}{R^+_{\\mathrm{tot}}}, \\qquad
              \\mu_w = \\mu \\, \\frac{S_{\\mathrm{tot}}}{S_{\\mathrm{in}}}

    with :math:`R^+` the positive relevance (after the signed channel sum) inside the mask
    and in total, and :math:`S` the pixel counts of the image and of the mask. The
    unweighted :math:`\\mu` is the same quantity as Arras et al.'s relevance mass
    accuracy (:func:`relevance_mass_accuracy`); the weighted :math:`\\mu_w` rewards
    concentrating relevance on small objects (1 = relevance spread uniformly, as a
    random map would be in expectation). A map without positive relevance scores 0.

    Args:
      maps: ``(B, H, W)`` or ``(B, H, W, C)`` attribution maps.
      mask: ``(B, H, W)`` boolean ground truth; an empty mask raises ``ValueError``.
      weighted: return :math:`\\mu_w` instead of :math:`\\mu`.

    Returns:
      :class:`Localization`.
    """
    maps = reduce_channels(maps, "sum")
    mask = check_mask(mask, maps.shape)
    per = relevance_mass_accuracy(maps, mask).per_example
    if weighted:
        size = maps.shape[1] * maps.shape[2]
        per = per * (size / mask.reshape(mask.shape[0], -1).sum(1))
    return Localization(per, per.mean())


def top_k_intersection(
    maps: Any, mask: Any, k: int = 1000, *, concept_influence: bool = False
) -> Localization:
    """Top-k intersection (Theiner et al., 2022).

    .. math:: \\mathrm{TKI} = \\frac{|\\mathrm{top}_k(R) \\cap \\mathrm{GT}|}{k}

    the fraction of the ``k`` pixels with the highest (signed, channel-summed) relevance
    that lie inside the mask. Ties at the threshold are broken by row-major pixel index.
    With ``concept_influence=True`` the score is divided by the mask's relative size
    :math:`|\\mathrm{GT}| / (H W)`, so 1 is what a uniformly random ranking scores.

    Args:
      maps: ``(B, H, W)`` or ``(B, H, W, C)`` attribution maps.
      mask: ``(B, H, W)`` boolean ground truth; an empty mask raises ``ValueError``.
      k: how many top pixels, ``1 <= k <= H * W`` (Theiner et al. and Quantus use 1000
        at 224x224).
      concept_influence: normalise by the relative mask size.

    Returns:
      :class:`Localization`.
    """
    maps = reduce_channels(maps, "sum")
    mask = check_mask(mask, maps.shape)
    b, h, w = maps.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= h * w:
        raise ValueError(
            f"k must be an int between 1 and the number of pixels H * W = {h * w}; got {k!r}. "
            f"Use a smaller k for {h}x{w} maps."
        )
    flat = mask.reshape(b, -1)
    order = jnp.argsort(-maps.reshape(b, -1), axis=1, stable=True)[:, :k]
    per = jnp.take_along_axis(flat, order, axis=1).sum(1) / k
    if concept_influence:
        per = per * (h * w / flat.sum(1))
    return Localization(per, per.mean())

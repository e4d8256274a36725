"""Concentration of a map (sparseness, complexity): is the explanation on few pixels?

* :func:`sparseness` (Chalasani, Chen, Chowdhury, Wu & Jha, 2020, "Concise
  Explanations of Neural Networks using Adversarial Training", ICML,
  https://arxiv.org/abs/1810.06583, Sec. 5): the Gini index of the absolute map
  (Hurley & Rickard, 2009), 0 for a uniform map, ``1 - 1/d`` for a single pixel.
* :func:`complexity` (Bhatt, Weller & Moura, 2020, "Evaluating and Aggregating
  Feature-based Model Explanations", IJCAI, https://arxiv.org/abs/2005.00631, Eq. 6):
  the entropy of the fractional contribution distribution, 0 for a single pixel,
  ``log d`` for a uniform map.

Both use the absolute pixel map: a ``(B, H, W, C)`` map is reduced by the sum of
absolute values over channels (:func:`jaxsal.metrics.reduce_channels` with ``"abs"``);
pass ``(B, H, W)`` maps to choose another reduction. Both are pure JAX and jittable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src.numerics import safe_divide
from jaxsal.metrics._common import reduce_channels

Array = jax.Array


class MapStatistic(NamedTuple):
    """Per-example values and their batch mean.

    Attributes:
      per_example: ``(B,)`` the statistic of each map.
      mean: scalar, the batch mean.
    """

    per_example: Array
    mean: Array


def _flat_abs(maps: Any) -> Array:
    a = reduce_channels(maps, "abs")
    a = a.reshape(a.shape[0], -1)
    return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.float32)


def sparseness(maps: Any) -> MapStatistic:
    """Sparseness: the Gini index of the absolute map (Chalasani et al., 2020).

    .. math:: G(a) = \\frac{\\sum_{k=1}^{d} (2k - d - 1)\\, a_{(k)}}{d \\sum_{k=1}^{d} a_{(k)}}

    with :math:`a_{(1)} \\le \\dots \\le a_{(d)}` the ``d`` absolute pixel values in
    ascending order. Higher is sparser. An all-zero map scores 0.

    Quantus 0.6 adds ``1e-7`` to every value before sorting (a shift of order
    ``1e-7 / mean(a)`` in the score); jaxsal computes the index as defined.

    Args:
      maps: ``(B, H, W)`` or ``(B, H, W, C)`` attribution maps.

    Returns:
      :class:`MapStatistic` with the Gini index in ``[0, 1 - 1/d]`` per example.
    """
    a = jnp.sort(_flat_abs(maps), axis=1)
    d = a.shape[1]
    k = jnp.arange(1, d + 1, dtype=a.dtype)[None, :]
    per = safe_divide(((2 * k - d - 1) * a).sum(1), d * a.sum(1))
    return MapStatistic(per, per.mean())


def complexity(maps: Any) -> MapStatistic:
    """Complexity: entropy of the fractional contributions (Bhatt et al., 2020, Eq. 6).

    .. math:: \\mu_C(a) = -\\sum_{i=1}^{d} p_i \\log p_i, \\qquad
              p_i = \\frac{|a_i|}{\\sum_j |a_j|}

    (natural logarithm, ``0 log 0 = 0``). Lower is less complex. An all-zero map scores 0.

    Args:
      maps: ``(B, H, W)`` or ``(B, H, W, C)`` attribution maps.

    Returns:
      :class:`MapStatistic` with the entropy in ``[0, log d]`` per example.
    """
    a = _flat_abs(maps)
    p = safe_divide(a, a.sum(1, keepdims=True))
    per = -jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0).sum(1)
    return MapStatistic(per, per.mean())

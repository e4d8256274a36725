"""Robustness: max-sensitivity of an explanation (Yeh et al., 2019).

Yeh, Hsieh, Suggala, Inouye & Ravikumar (2019), "On the (In)fidelity and Sensitivity
of Explanations", NeurIPS, https://arxiv.org/abs/1901.09392, Eq. 3:

.. math:: \\mathrm{SENS}_{\\max}(\\Phi, f, x, r)
          = \\max_{\\lVert y - x \\rVert_\\infty \\le r} \\lVert \\Phi(f, y) - \\Phi(f, x) \\rVert_2

estimated by Monte Carlo, as in the paper and in Quantus: ``samples`` points ``y``
drawn uniformly from the L-infinity ball of radius ``radius`` around ``x`` (in the
model's input units). With ``normalize=True`` (default) the difference is divided by
``||Phi(f, x)||_2`` so the number is comparable across methods with different scales.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src.contract import as_attribution, check_input, check_key, check_positive_int, resolve_target_at

Array = jax.Array


class Sensitivity(NamedTuple):
    """Attributes:
    max_sensitivity: ``(B,)`` the largest (normalised) change over the samples.
    sensitivities: ``(samples, B)`` every sample's change.
    """

    max_sensitivity: Array
    sensitivities: Array


def max_sensitivity(
    attr: Callable,
    x: Any,
    target: Any = None,
    *,
    key: Array,
    radius: float = 0.02,
    samples: int = 8,
    normalize: bool = True,
) -> Sensitivity:
    """Monte-Carlo max-sensitivity of ``attr`` at ``x`` (Yeh et al., 2019).

    Args:
      attr: an attribution function following the jaxsal contract.
      x: ``(B, ...)`` inputs.
      target: as in the contract; ``None`` is resolved once on the clean ``x`` (via
        ``attr.scores_fn`` when the method exposes it), so every perturbed input
        explains the same class.
      key: PRNG key. Sample ``s`` uses ``fold_in(key, s)`` split into a perturbation
        key and an attribution key; the clean map uses ``fold_in(key, samples)``
        when ``attr`` is stochastic. Same key, same result.
      radius: L-infinity radius of the uniform perturbations, in input units
        (default 0.02; Yeh et al. and Quantus use 0.02-0.2 depending on scaling).
      samples: number of Monte-Carlo perturbations.
      normalize: divide by ``||attr(x)||_2`` (an all-zero clean map gives ``inf`` or
        ``nan``).
    """
    x = check_input(x)
    key = check_key(key, "max_sensitivity")
    samples = check_positive_int(samples, "samples")
    if not radius > 0:
        raise ValueError(f"radius must be > 0 (L-infinity ball in input units); got {radius}.")
    attr = as_attribution(attr, "max_sensitivity")
    target = resolve_target_at(attr.scores_fn, x, target, who="max_sensitivity")
    base = attr(x, target, key=jax.random.fold_in(key, samples))
    axes = tuple(range(1, base.ndim))
    norm = jnp.sqrt((base**2).sum(axes))

    def one(s):
        kp, ka = jax.random.split(jax.random.fold_in(key, s))
        y = x + jax.random.uniform(kp, x.shape, x.dtype, -radius, radius)
        d = jnp.sqrt(((attr(y, target, key=ka) - base) ** 2).sum(axes))
        return d / norm if normalize else d

    sens = jax.lax.map(one, jnp.arange(samples))
    return Sensitivity(sens.max(0), sens)

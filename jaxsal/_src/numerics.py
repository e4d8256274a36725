"""Small numerical helpers shared by the methods, the normalisers and the metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def safe_divide(num: Array, den: Array, fill: float = 0.0) -> Array:
    """``num / den`` where ``den != 0``, else ``fill``.

    The denominator is replaced before dividing, so no ``inf``/``NaN`` is formed and
    gradients stay finite (an all-zero map stays all zero).
    """
    ok = den != 0
    return jnp.where(
        ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.asarray(fill, jnp.result_type(num, den))
    )

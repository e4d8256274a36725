"""Smoothing wrappers: SmoothGrad, SmoothGrad-squared and VarGrad around ANY method.

A wrapper is *how samples are aggregated*; the wrapped ``attr`` is *how* each sample
is explained. ``smoothgrad(integrated_gradients(f))`` or
``smoothgrad(grad_cam(probe))`` just work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src.gradients import vanilla_grad
from jaxsal._src.registry import Method, register

Array = jax.Array


class _Moments(NamedTuple):
    count: int
    mean: Array
    m2: Array  # sum of squared deviations from the mean


def _combine(a: _Moments, b: _Moments) -> _Moments:
    """Chan et al. (1979) pairwise update of mean and squared deviations."""
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n)
    return _Moments(n, mean, m2)


def noise_sigma(x: Array, noise_level: float) -> Array:
    r"""Per-example noise scale :math:`\sigma_b = \text{noise\_level}\,(\max_i x_{b,i} - \min_i x_{b,i})`.

    Shape ``(B, 1, ..., 1)``, broadcasting against ``x``.
    """
    axes = tuple(range(1, x.ndim))
    span = jnp.max(x, axis=axes, keepdims=True) - jnp.min(x, axis=axes, keepdims=True)
    return jnp.asarray(noise_level, x.dtype) * span


def _noisy_moments(attr: Callable, *, n: int, noise_level: float, batch_size: int | None, name: str):
    if not callable(attr):
        raise TypeError(
            f"{name} wraps an attribution function attr(x, target, key=...); got {type(attr).__name__}. "
            f"Example: jaxsal.{name}(jaxsal.vanilla_grad(f))."
        )
    n = contract.check_positive_int(n, "n")
    batch_size = contract.check_optional_batch_size(batch_size)
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)):
        raise TypeError(
            f"noise_level must be a float (fraction of each example's value range); got {noise_level!r}."
        )
    if not noise_level >= 0:
        raise ValueError(f"noise_level must be >= 0 (the paper suggests 0.1-0.2); got {noise_level}.")
    chunk = n if batch_size is None else min(batch_size, n)
    n_full, rest = divmod(n, chunk)
    scores_fn = getattr(attr, "scores_fn", None)

    def moments(x, target, key):
        x = contract.check_input(x)
        key = contract.check_key(key, name)
        target = contract.resolve_target(scores_fn, x, target)
        sigma = noise_sigma(x, noise_level)

        def one(k):
            k_noise, k_inner = jax.random.split(k)
            noisy = x + sigma * jax.random.normal(k_noise, x.shape, x.dtype)
            return attr(noisy, target, key=k_inner)

        def stats(ks):
            maps = jax.vmap(one)(ks)
            mean = jnp.mean(maps, axis=0)
            return _Moments(ks.shape[0], mean, jnp.sum(jnp.square(maps - mean), axis=0))

        keys = jax.random.split(key, n)
        if n_full == 1 and rest == 0:
            return stats(keys)
        full = keys[: n_full * chunk].reshape((n_full, chunk) + keys.shape[1:])
        first = stats(full[0])

        def body(acc, ks):
            return _combine(acc, stats(ks)), None

        acc, _ = jax.lax.scan(lambda a, k: body(a, k), first, full[1:])
        acc = _Moments(n_full * chunk, acc.mean, acc.m2)
        if rest:
            acc = _combine(acc, stats(keys[n_full * chunk :]))
        return acc

    return moments, scores_fn


_SIGMA_DOC = r"""
    The noise is :math:`g_i \sim N(0, \sigma_b^2)` with, per example ``b``,
    :math:`\sigma_b = \text{noise\_level} \cdot (\max(x_b) - \min(x_b))`, the
    definition of Smilkov et al. (2017) and of the seed (7.2.5), which suggests
    ``noise_level`` 0.1-0.2. Other libraries differ: Captum's ``stdevs`` is an
    absolute standard deviation, PAIR saliency's ``stdev_spread`` is this fraction.

    Args:
      attr: any jaxsal attribution function (or any ``attr(x, target, *, key)``).
      n: number of noisy samples (static); the paper suggests 50.
      noise_level: :math:`\sigma / (x_{max} - x_{min})`, >= 0.
      batch_size: at most this many noisy copies of the batch are explained at once
        (memory bound); ``None`` vectorises all ``n``. Same key => same noise, so the
        result does not depend on ``batch_size`` beyond float rounding.

    Returns:
      ``sg(x, target=None, *, key)``: ``key`` (a JAX PRNG key) is required.
      ``target=None`` is resolved once, on the clean ``x``. Each sample's key is split
      from ``key``, and a stochastic ``attr`` receives its own sub-key.
"""


def smoothgrad(
    attr: Callable, *, n: int = 50, noise_level: float = 0.15, batch_size: int | None = None
) -> contract.Attribution:
    moments, scores_fn = _noisy_moments(
        attr, n=n, noise_level=noise_level, batch_size=batch_size, name="smoothgrad"
    )

    def sg(x, target=None, *, key=None):
        return moments(x, target, key).mean

    return contract.attribution(sg, scores_fn=scores_fn, stochastic=True)


smoothgrad.__doc__ = (
    r"""SmoothGrad (Smilkov, Thorat, Kim, Viégas & Wattenberg 2017, "SmoothGrad:
    removing noise by adding noise", https://arxiv.org/abs/1706.03825).

    .. math:: R_{sg}(x) = \frac{1}{n} \sum_{i=1}^{n} R(x + g_i)
"""
    + _SIGMA_DOC
)


def smoothgrad_sq(
    attr: Callable, *, n: int = 50, noise_level: float = 0.15, batch_size: int | None = None
) -> contract.Attribution:
    moments, scores_fn = _noisy_moments(
        attr, n=n, noise_level=noise_level, batch_size=batch_size, name="smoothgrad_sq"
    )

    def sq(x, target=None, *, key=None):
        m = moments(x, target, key)
        return jnp.square(m.mean) + m.m2 / m.count

    return contract.attribution(sq, scores_fn=scores_fn, stochastic=True)


smoothgrad_sq.__doc__ = (
    r"""SmoothGrad-Squared (Hooker, Erhan, Kindermans & Kim 2019, "A Benchmark for
    Interpretability Methods in Deep Neural Networks", https://arxiv.org/abs/1806.10758).

    .. math:: R_{sg^2}(x) = \frac{1}{n} \sum_{i=1}^{n} R(x + g_i)^2

    Same as Captum's ``NoiseTunnel(nt_type="smoothgrad_sq")`` up to the noise scale.
"""
    + _SIGMA_DOC
)


def vargrad(
    attr: Callable, *, n: int = 50, noise_level: float = 0.15, batch_size: int | None = None
) -> contract.Attribution:
    moments, scores_fn = _noisy_moments(
        attr, n=n, noise_level=noise_level, batch_size=batch_size, name="vargrad"
    )

    def vg(x, target=None, *, key=None):
        m = moments(x, target, key)
        return m.m2 / m.count

    return contract.attribution(vg, scores_fn=scores_fn, stochastic=True)


vargrad.__doc__ = (
    r"""VarGrad (Adebayo, Gilmer, Goodfellow & Kim 2018, "Local Explanation Methods for
    Deep Neural Networks Lack Sensitivity to Parameter Values", https://arxiv.org/abs/1810.03307).

    .. math:: R_{vg}(x) = \frac{1}{n} \sum_{i=1}^{n} \big(R(x + g_i) - R_{sg}(x)\big)^2

    the population variance over the noisy samples (as Captum's ``vargrad``). It is
    computed with a numerically stable pairwise update, not as ``E[R^2] - E[R]^2``.
"""
    + _SIGMA_DOC
)


def _wrap_vanilla(wrapper):
    """Registry factory: ``wrapper`` around Vanilla Gradient, with the wrapper's signature."""

    def factory(f, *, n: int = 50, noise_level: float = 0.15, batch_size: int | None = None):
        return wrapper(vanilla_grad(f), n=n, noise_level=noise_level, batch_size=batch_size)

    factory.__doc__ = wrapper.__doc__
    return factory


_FAST = {"n": 4}
register(
    Method(
        "smoothgrad",
        _wrap_vanilla(smoothgrad),
        "f",
        "smoothing",
        "SmoothGrad",
        "Smilkov et al. 2017",
        stochastic=True,
        fast=_FAST,
        captum="NoiseTunnel(Saliency, smoothgrad)",
    )
)
register(
    Method(
        "smoothgrad_sq",
        _wrap_vanilla(smoothgrad_sq),
        "f",
        "smoothing",
        "SmoothGrad²",
        "Hooker et al. 2019",
        stochastic=True,
        fast=_FAST,
    )
)
register(
    Method(
        "vargrad",
        _wrap_vanilla(vargrad),
        "f",
        "smoothing",
        "VarGrad",
        "Adebayo et al. 2018",
        stochastic=True,
        fast=_FAST,
    )
)

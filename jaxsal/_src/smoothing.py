"""Smoothing wrappers: SmoothGrad, SmoothGrad-squared and VarGrad around ANY method.

A wrapper is *how samples are aggregated*; the wrapped ``attr`` is *how* each sample
is explained. ``smoothgrad(integrated_gradients(f))`` or
``smoothgrad(grad_cam(probe))`` just work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
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
    mean = a.mean + delta * jnp.asarray(b.count / n, delta.dtype)
    m2 = a.m2 + b.m2 + delta * delta * jnp.asarray(a.count * b.count / n, delta.dtype)
    return _Moments(n, mean, m2)


def noise_sigma(x: Array, noise_level: float) -> Array:
    r"""Per-example noise scale :math:`\sigma_b = \text{noise\_level}\,(\max_i x_{b,i} - \min_i x_{b,i})`.

    Shape ``(B, 1, ..., 1)``, broadcasting against ``x``.
    """
    axes = tuple(range(1, x.ndim))
    span = jnp.max(x, axis=axes, keepdims=True) - jnp.min(x, axis=axes, keepdims=True)
    return jnp.asarray(noise_level, x.dtype) * span


def check_noise_level(noise_level: Any) -> float:
    """``noise_level`` as a finite float >= 0, or a clear error."""
    scalar = (
        isinstance(noise_level, (int, float, np.integer, np.floating))
        or getattr(noise_level, "shape", None) == ()
    )
    if isinstance(noise_level, bool) or not scalar:
        raise TypeError(
            f"noise_level must be a float (fraction of each example's value range); got {noise_level!r}."
        )
    value = float(noise_level)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"noise_level must be >= 0 and finite (the paper suggests 0.1-0.2); got {value}.")
    return value


def _noisy_moments(attr: Any, *, n: int, noise_level: float, batch_size: int | None, name: str):
    inner = contract.as_attribution(attr, name)
    n = contract.check_positive_int(n, "n")
    batch_size = contract.check_optional_batch_size(batch_size)
    noise_level = check_noise_level(noise_level)

    def moments(x, target, key):
        x = contract.check_input(x)
        key = contract.check_key(key, name)
        target = contract.resolve_target_at(inner.scores_fn, x, target, who=name)
        sigma = noise_sigma(x, noise_level)
        b = max(x.shape[0], 1)
        # At most batch_size rows per model call: whole noisy copies of the batch while
        # they fit, else one copy explained batch_size examples at a time.
        chunk = n if batch_size is None else max(1, min(n, batch_size // b))
        sub = batch_size if batch_size is not None and batch_size < b else None
        n_full, rest = divmod(n, chunk)

        def one(k):
            k_noise, k_inner = jax.random.split(k)
            noisy = x + sigma * jax.random.normal(k_noise, x.shape, x.dtype)
            if sub is None:
                return inner(noisy, target, key=k_inner)
            return contract.in_batches(lambda xc, tc: inner(xc, tc, key=k_inner), noisy, target, sub)

        def stats(ks):
            maps = jax.vmap(one)(ks)
            mean = jnp.mean(maps, axis=0)
            return _Moments(ks.shape[0], mean, jnp.sum(jnp.square(maps - mean[None]), axis=0))

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

    def wrap(fn, wrapper):
        hyper = {"n": n, "noise_level": noise_level, "batch_size": batch_size, "attr": inner}
        return contract.Attribution(
            fn,
            inner.scores_fn,
            stochastic=True,
            output=inner.output,
            name=f"{wrapper}({inner.name})",
            hyper=hyper,
        )

    return moments, wrap


_SIGMA_DOC = r"""
    The noise is :math:`g_i \sim N(0, \sigma_b^2)` with, per example ``b``,
    :math:`\sigma_b = \text{noise\_level} \cdot (\max(x_b) - \min(x_b))`, the
    definition of Smilkov et al. (2017), who found ``noise_level`` 0.1-0.2 to work
    best. Other libraries differ: Captum's ``stdevs`` is an
    absolute standard deviation, PAIR saliency's ``stdev_spread`` is this fraction.

    Args:
      attr: any jaxsal :class:`~jaxsal.Attribution`. A plain function
        ``attr(x, target, *, key)`` works too, but states no score function, so it
        then needs an explicit ``target`` (wrap it with :func:`jaxsal.attribution` to
        have ``target=None`` resolved).
      n: number of noisy samples (static); the paper suggests 50.
      noise_level: :math:`\sigma / (x_{max} - x_{min})`, >= 0.
      batch_size: at most this many rows (noisy images) go through the model per
        call (memory bound): ``batch_size // B`` noisy copies of the batch at once, or,
        when ``batch_size < B``, one copy split into chunks of ``batch_size``
        examples. ``None`` vectorises all ``n * B``. Same key, same noise, so the
        result does not depend on ``batch_size`` beyond float rounding (exactly for
        a deterministic ``attr``; a stochastic ``attr`` split into chunks draws its
        own randomness per chunk).

    Returns:
      ``sg(x, target=None, *, key)``: ``key`` (a JAX PRNG key) is required.
      ``target=None`` is resolved once, on the clean ``x``. Each sample's key is split
      from ``key``, and a stochastic ``attr`` receives its own sub-key.
"""


def smoothgrad(
    attr: Callable, *, n: int = 50, noise_level: float = 0.15, batch_size: int | None = None
) -> contract.Attribution:
    moments, wrap = _noisy_moments(
        attr, n=n, noise_level=noise_level, batch_size=batch_size, name="smoothgrad"
    )

    def sg(x, target=None, *, key=None):
        return moments(x, target, key).mean

    return wrap(sg, "smoothgrad")


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
    moments, wrap = _noisy_moments(
        attr, n=n, noise_level=noise_level, batch_size=batch_size, name="smoothgrad_sq"
    )

    def sq(x, target=None, *, key=None):
        m = moments(x, target, key)
        return jnp.square(m.mean) + m.m2 / m.count

    return wrap(sq, "smoothgrad_sq")


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
    moments, wrap = _noisy_moments(attr, n=n, noise_level=noise_level, batch_size=batch_size, name="vargrad")

    def vg(x, target=None, *, key=None):
        m = moments(x, target, key)
        return m.m2 / m.count

    return wrap(vg, "vargrad")


vargrad.__doc__ = (
    r"""VarGrad (Adebayo, Gilmer, Goodfellow & Kim 2018, "Local Explanation Methods for
    Deep Neural Networks Lack Sensitivity to Parameter Values", https://arxiv.org/abs/1810.03307).

    .. math:: R_{vg}(x) = \frac{1}{n} \sum_{i=1}^{n} \big(R(x + g_i) - R_{sg}(x)\big)^2

    the population variance over the noisy samples (as Captum's ``vargrad``). It is
    computed with a numerically stable pairwise update, not as ``E[R^2] - E[R]^2``.
"""
    + _SIGMA_DOC
)


register(
    Method(
        "smoothgrad",
        smoothgrad,
        "f",
        "smoothing",
        "SmoothGrad",
        "Smilkov et al. 2017",
        stochastic=True,
        wraps="vanilla_grad",
        captum="NoiseTunnel(Saliency, smoothgrad)",
    )
)
register(
    Method(
        "smoothgrad_sq",
        smoothgrad_sq,
        "f",
        "smoothing",
        "SmoothGrad²",
        "Hooker et al. 2019",
        stochastic=True,
        wraps="vanilla_grad",
    )
)
register(
    Method(
        "vargrad",
        vargrad,
        "f",
        "smoothing",
        "VarGrad",
        "Adebayo et al. 2018",
        stochastic=True,
        wraps="vanilla_grad",
    )
)

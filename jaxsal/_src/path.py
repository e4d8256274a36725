"""Path methods: Integrated Gradients and its quadrature rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src.at_layer import AtLayer
from jaxsal._src.registry import Method, register
from jaxsal._src.relu_rules import with_fast_max_pool

Array = jax.Array

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
_LEGGAUSS_MAX = 100  # above this many nodes, Gauss-Legendre comes from SciPy


class Quadrature(NamedTuple):
    """Nodes ``alphas`` in [0, 1] and weights with ``sum(weights) == 1``."""

    alphas: np.ndarray
    weights: np.ndarray
    exact_degree: int  # polynomials up to this degree integrate exactly on [0, 1]


def quadrature(method: str, steps: int) -> Quadrature:
    r"""The nodes and weights of ``method`` with ``steps`` points, in float64.

    ``riemann_left``/``riemann_right``/``riemann_middle`` and ``gausslegendre`` use
    exactly Captum's nodes and weights (``captum.attr._utils.approximation_methods``);
    above 100 Gauss-Legendre nodes they come from :func:`scipy.special.roots_legendre`
    (equal to NumPy's to ~1e-13) because NumPy's ``leggauss`` takes cubic time.

    ``riemann_trapezoid`` differs from Captum on purpose. Captum places its nodes at
    ``linspace(0, 1, n)`` (spacing ``1/(n-1)``) but uses weights ``1/n`` with halved
    ends, which sum to ``(n-1)/n``: its integral is scaled down by that factor (e.g.
    2 % at n = 50) and IG loses completeness. jaxsal uses the correct composite
    trapezoid weights ``1/(n-1)``, halved at both ends, so they sum to 1; Captum's
    result equals jaxsal's times ``(n-1)/n``.

    Exactness (checked in the tests): left/right rules integrate constants exactly,
    middle and trapezoid rules polynomials of degree 1, Gauss-Legendre with ``n``
    nodes polynomials of degree ``2n - 1``.
    """
    if method not in RULES:
        raise ValueError(f"method must be one of {RULES}; got {method!r}.")
    n = contract.check_positive_int(steps, "steps", 2 if method == "riemann_trapezoid" else 1)
    if method == "gausslegendre":
        if n <= _LEGGAUSS_MAX:  # NumPy's, as Captum: O(n^3) (eigenvalues of a dense companion matrix)
            x, w = np.polynomial.legendre.leggauss(n)
        else:  # SciPy's: the same nodes to ~1e-13 in O(n^2) time and O(n) memory
            from scipy.special import roots_legendre

            x, w = roots_legendre(n)
        return Quadrature(0.5 * (1.0 + x), 0.5 * w, 2 * n - 1)
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[0] /= 2
        w[-1] /= 2
        return Quadrature(np.linspace(0.0, 1.0, n), w, 1)
    w = np.full(n, 1.0 / n)
    if method == "riemann_left":
        return Quadrature(np.linspace(0.0, 1.0 - 1.0 / n, n), w, 0)
    if method == "riemann_right":
        return Quadrature(np.linspace(1.0 / n, 1.0, n), w, 0)
    return Quadrature(np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n), w, 1)


def integrated_gradients(
    f: Callable,
    *,
    baseline: Array | float | None = None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution
    for Deep Networks", https://arxiv.org/abs/1703.01365).

    .. math::

       R^c_i(x) = (x_i - x'_i) \int_0^1 \frac{\partial S_c(x' + \alpha (x - x'))}{\partial x_i}\, d\alpha
                \approx (x_i - x'_i) \sum_{s=1}^{m} w_s \,
                \frac{\partial S_c(x' + \alpha_s (x - x'))}{\partial x_i}

    with baseline :math:`x'` (``baseline``, zeros by default), quadrature nodes
    :math:`\alpha_s` and weights :math:`w_s` from ``method`` with :math:`m` =
    ``steps`` (:func:`quadrature`; same nodes and weights as Captum's rule of that
    name, except the corrected ``riemann_trapezoid``). ``target=None`` explains the
    class predicted at ``x`` itself, at every path point.

    Completeness: :math:`\sum_i R^c_i = S_c(x) - S_c(x')` up to the quadrature error;
    :func:`jaxsal.completeness_gap` returns the per-example gap.

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``.
      baseline: ``None`` (zeros), or an array broadcasting to ``x`` (a scalar, one
        example, or one baseline per example).
      steps: number of path points ``m`` (static). >= 2 for ``riemann_trapezoid``.
      method: ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
        ``"riemann_trapezoid"`` or ``"gausslegendre"``.
      batch_size: at most this many path points (rows ``x' + alpha (x - x')``) go
        through the model at once; ``None`` sends all ``steps * B`` in one batch.
        Results do not depend on it beyond float rounding.
    """
    quad = quadrature(method, steps)
    batch_size = contract.check_optional_batch_size(batch_size)
    if isinstance(f, AtLayer):
        return f.lift(
            integrated_gradients,
            name="integrated_gradients",
            baseline=baseline,
            steps=steps,
            method=method,
            batch_size=batch_size,
        )
    contract.check_callable(f)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        base = contract.check_baseline(baseline, x)
        target = contract.resolve_target_at(f, x, target, who="integrated_gradients")
        b = x.shape[0]
        if b == 0:  # an empty batch: an empty map, as for every other method
            return jnp.zeros_like(x)
        alphas = jnp.asarray(quad.alphas, x.dtype)
        weights = jnp.asarray(quad.weights, x.dtype)
        rows = steps * b
        # Row r = s * B + e: path point s of example e.
        row_alpha = jnp.repeat(alphas, b)
        row_weight = jnp.repeat(weights, b)
        row_example = jnp.tile(jnp.arange(b), steps)
        row_target = target
        if target is not None and not callable(target):
            row_target = jnp.tile(jnp.broadcast_to(jnp.asarray(target), (b,)), steps)
        delta = x - base
        model = with_fast_max_pool(f)

        def weighted_grad(alpha, weight, example, tgt):
            pts = base[example] + _expand(alpha, x.ndim) * delta[example]
            scores, pullback = jax.vjp(model, pts)
            contract.check_scores(scores, pts.shape[0])
            cot = contract.target_cotangent(scores, tgt) * weight[:, None]
            return pullback(cot)[0]

        chunk = rows if batch_size is None else min(batch_size, rows)
        if chunk > b:  # whole steps per chunk avoid a scatter-add (every chunk start is then a multiple of B)
            chunk -= chunk % b
        n_full, rest = divmod(rows, chunk)

        def chunk_sum(start, size, acc):
            sl = lambda a: jax.lax.dynamic_slice_in_dim(a, start, size)  # noqa: E731
            tgt = row_target if (row_target is None or callable(row_target)) else sl(row_target)
            g = weighted_grad(sl(row_alpha), sl(row_weight), sl(row_example), tgt)
            if size % b == 0:  # whole path steps: rows are examples 0..B-1, repeated
                return acc + g.reshape((size // b,) + x.shape).sum(axis=0)
            return acc.at[sl(row_example)].add(g)

        acc = jnp.zeros_like(x)
        if n_full == 1 and rest == 0:
            acc = chunk_sum(0, chunk, acc)
        else:
            acc = jax.lax.fori_loop(0, n_full, lambda i, a: chunk_sum(i * chunk, chunk, a), acc)
            if rest:
                acc = chunk_sum(n_full * chunk, rest, acc)
        return delta * acc

    hyper = {"baseline": baseline, "steps": steps, "method": method, "batch_size": batch_size}
    return contract.Attribution(attr, f, name="integrated_gradients", hyper=hyper)


def _expand(v: Array, ndim: int) -> Array:
    return v.reshape(v.shape + (1,) * (ndim - 1))


class Completeness(NamedTuple):
    """``gap = sum(attributions) - (f(x) - f(baseline))`` per example, and its parts."""

    gap: Array
    attribution_sum: Array
    score_difference: Array

    @property
    def relative_gap(self) -> Array:
        """``|gap| / |f(x) - f(baseline)|``."""
        return jnp.abs(self.gap) / jnp.abs(self.score_difference)


def completeness_gap(
    f: Callable, attributions: Array, x: Array, target=None, *, baseline: Array | float | None = None
) -> Completeness:
    r"""Completeness check for path methods (Sundararajan et al. 2017, Prop. 1).

    Returns per example :math:`\sum_i R_i - (S_c(x) - S_c(x'))`, the quantity Captum
    calls the convergence delta. Use the same ``target`` and ``baseline`` as the
    attribution call; ``target=None`` is the class predicted at ``x``.

    Example::

      ig = jaxsal.integrated_gradients(f, steps=50)
      r = ig(x, y)
      c = jaxsal.completeness_gap(f, r, x, y)
      print(c.relative_gap)        # ~1e-4 for a smooth model at 50 steps
    """
    x = contract.check_input(x)
    if attributions.shape != x.shape:
        raise ValueError(f"attributions must be shaped like x {x.shape}; got {attributions.shape}.")
    base = contract.check_baseline(baseline, x)
    scores = f(x)
    contract.check_scores(scores, x.shape[0])
    target = contract.resolve_target(scores, target)
    s_x = contract.select(scores, target)
    s_b = contract.select(f(base), target)
    total = attributions.reshape(x.shape[0], -1).sum(axis=1)
    return Completeness(total - (s_x - s_b), total, s_x - s_b)


register(
    Method(
        "integrated_gradients",
        integrated_gradients,
        "f",
        "path",
        "Integrated Gradients",
        "Sundararajan et al. 2017",
        signed=True,
        captum="IntegratedGradients",
    )
)

"""Surrogate-model methods: KernelSHAP and LIME fit a linear model of the score on
binary "group present" features, from sampled coalitions (forward passes only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src.perturbation import (
    _MASK_DOC,
    check_feature_mask,
    clean_scores,
    forward_rows,
    groups,
)
from jaxsal._src.registry import Method, register

Array = jax.Array


def _fold(key: Array, n: int) -> Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def shapley_kernel_coalitions(key: Array, n: int, num: int) -> Array:
    r"""``n`` coalitions ``(n, num)`` (bool) from the Shapley kernel, in complementary pairs.

    Coalition ``2q`` has size :math:`m \in [1, M-1]` with probability
    :math:`\propto (M-1) / (m (M-m))` (the Shapley kernel summed over the
    :math:`\binom{M}{m}` coalitions of that size) and is uniform among those of its size,
    drawn from ``fold_in(key, q)``; coalition ``2q + 1`` is its complement (the kernel is
    symmetric, and pairs halve the variance: Covert & Lee 2021).
    """
    sizes = np.arange(1, num)
    logits = jnp.asarray(np.log((num - 1) / (sizes * (num - sizes))))

    def one(k):
        k_size, k_set = jax.random.split(k)
        m = jax.random.categorical(k_size, logits) + 1
        rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_set, (num,))))
        return rank < m

    pairs = jax.vmap(one)(_fold(key, -(-n // 2)))
    both = jnp.stack([pairs, ~pairs], axis=1).reshape(-1, num)
    return both[:n]


def _null_space_basis(num: int) -> np.ndarray:
    """An orthonormal basis ``(num, num - 1)`` of the vectors summing to zero."""
    a = np.eye(num)
    a[:, 0] = 1.0
    q, _ = np.linalg.qr(a)
    return q[:, 1:]


def kernel_shap(
    f: Callable,
    feature_mask: Any = None,
    *,
    n: int = 200,
    baseline: Array | float = 0.0,
    num_features: int | None = None,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""KernelSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
    Predictions", https://arxiv.org/abs/1705.07874).

    Coalitions :math:`z \in \{0, 1\}^M` of the :math:`M` groups switch groups between
    ``x`` (1) and ``baseline`` (0); :math:`v(z) = S_c(x_z)`. KernelSHAP solves the
    weighted least-squares problem with the Shapley kernel
    :math:`\pi(z) = (M - 1) / \big(\binom{M}{|z|} |z| (M - |z|)\big)` under the
    efficiency constraint:

    .. math::

       \phi = \arg\min_{\phi} \sum_z \pi(z) \big(v(z) - v(0) - z^\top \phi\big)^2
       \quad \text{s.t.} \quad \textstyle\sum_g \phi_g = v(1) - v(0)

    whose exact solution (all :math:`2^M - 2` coalitions) is the Shapley values. Here
    ``n`` coalitions are *sampled from* :math:`\pi` (sizes :math:`1 .. M-1`, in
    complementary pairs) and weighted equally, the
    sampling estimator of Lundberg & Lee and Covert & Lee (2021,
    https://arxiv.org/abs/2012.01536); the constrained problem is solved exactly
    (least squares on the sum-zero subspace, minimum norm if ``n < M - 1``). So
    :math:`\sum_g \phi_g = S_c(x) - S_c(\text{baseline})` always, the values converge to
    the Shapley values as ``n`` grows, and on a model linear in the groups they are
    exact once the coalitions span the space. Each element of a group gets
    :math:`\phi_g`. Captum's ``KernelShap`` samples the same way but fits an
    unconstrained linear regression (its all-on/all-off rows carry a large weight
    instead of the constraint). Costs ``n + 2`` forward passes per example.

    Args:
      f: model ``x -> raw scores (B, C)``; only forward passes are used."""
    contract.check_callable(f)
    check_feature_mask(feature_mask, num_features)
    n = contract.check_positive_int(n, "n")
    batch_size = contract.check_optional_batch_size(batch_size)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        key = contract.check_key(key, "kernel_shap")
        g = groups(feature_mask, x, num_features)
        base = contract.check_baseline(baseline, x)
        target, s_x = clean_scores(f, x, target, batch_size)
        num = g.num
        if num == 1:
            z = jnp.zeros((1, 1), bool)
        else:
            z = shapley_kernel_coalitions(key, n, num)
        rows = z.shape[0] if num > 1 else 0

        def row(s, e):
            on = z[jnp.minimum(s, z.shape[0] - 1)] & (s < rows)  # the last row: the baseline
            return jnp.where(g.keep(on, e), x[e], base[e])

        v = forward_rows(f, row, rows + 1, x, target, batch_size)
        s_base = v[-1]
        delta = s_x - s_base  # (B,)
        if num == 1:
            phi = delta[None]
        else:
            dtype = v.dtype
            zf = z.astype(dtype)
            q = jnp.asarray(_null_space_basis(num), dtype)  # phi = delta / M + q @ psi
            y = (v[:-1] - s_base[None]) - zf.sum(axis=1, keepdims=True) * (delta / num)[None]
            psi = jnp.linalg.lstsq(zf @ q, y)[0]  # (M-1, B)
            phi = (delta / num)[None] + q @ psi
        return g.spread(phi.T, x).astype(x.dtype)

    hyper = {"feature_mask": feature_mask, "n": n, "baseline": baseline, "num_features": num_features}
    return contract.Attribution(
        attr, f, stochastic=True, name="kernel_shap", hyper={**hyper, "batch_size": batch_size}
    )


kernel_shap.__doc__ += (
    _MASK_DOC
    + r"""
      n: number of sampled coalitions (static), >= 1; more than ``M`` is needed for a
        determined fit.
      baseline: the value of switched-off elements: a scalar or an array broadcasting to ``x``.
      batch_size: at most this many perturbed inputs go through ``f`` per call (``None``:
        all at once). The result does not depend on it.

    Returns:
      ``attr(x, target=None, *, key)``; ``key`` is required (the coalitions are drawn
      from it, the same for every example). Same key, same result.

    Example::

      mask = jaxsal.segments(images, "slic", n_segments=50)
      phi = jaxsal.kernel_shap(f, mask, n=500, batch_size=64)(images, key=jax.random.key(0))
    """
)


def lime_coalitions(key: Array, n: int, num: int) -> Array:
    """``n`` coalitions ``(n, num)``: the all-present one first, then each group present
    with probability 1/2 (row ``s`` drawn from ``fold_in(key, s)``)."""
    draws = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (num,)))(_fold(key, n))
    return draws.at[0].set(True)


def lime(
    f: Callable,
    feature_mask: Any = None,
    *,
    n: int = 200,
    kernel_width: float = 0.75,
    baseline: Array | float = 0.0,
    num_features: int | None = None,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""LIME (Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?": Explaining the
    Predictions of Any Classifier", https://arxiv.org/abs/1602.04938).

    Binary interpretable features: :math:`z \in \{0, 1\}^M` switches the :math:`M`
    groups between ``x`` (1) and ``baseline`` (0). ``n`` samples :math:`z_s` (the
    first all ones, the others with each group present with probability 1/2, as
    Captum's default ``perturb_func``) are weighted by an exponential kernel on their
    cosine distance to the all-ones vector (the original input),

    .. math::

       \pi(z) = \exp\!\big(-d(z)^2 / w^2\big), \quad
       d(z) = 1 - \cos(z, \mathbf{1}) = 1 - \sqrt{|z| / M}

    (:math:`d = 1` for the empty coalition; :math:`w` = ``kernel_width``), and the
    surrogate is the weighted least-squares linear model with an intercept:

    .. math:: (b, \phi) = \arg\min \sum_s \pi(z_s) \big(S_c(x_{z_s}) - b - z_s^\top \phi\big)^2

    Each element of a group gets :math:`\phi_g`. Choices that differ from Captum's
    ``Lime`` defaults, on purpose: the distance is taken between interpretable
    vectors, as in the LIME paper and the reference ``lime_image``, not between the
    perturbed and original *inputs*; the surrogate is unregularised weighted least
    squares (minimum norm when under-determined), not Captum's
    ``SkLearnLasso(alpha=0.01)``, so on a model linear in the groups the coefficients
    are the exact group contributions. ``kernel_width=0.75`` (the issue's default; LIME's
    tabular explainer uses ``0.75 sqrt(M)``, ``lime_image`` 0.25, Captum 1.0).
    Costs ``n + 1`` forward passes per example.

    Args:
      f: model ``x -> raw scores (B, C)``; only forward passes are used."""
    contract.check_callable(f)
    check_feature_mask(feature_mask, num_features)
    n = contract.check_positive_int(n, "n")
    batch_size = contract.check_optional_batch_size(batch_size)
    width = float(kernel_width)
    if not width > 0 or not np.isfinite(width):
        raise ValueError(f"kernel_width must be a finite float > 0; got {kernel_width!r}.")

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        key = contract.check_key(key, "lime")
        g = groups(feature_mask, x, num_features)
        base = contract.check_baseline(baseline, x)
        target, _ = clean_scores(f, x, target, batch_size)
        num = g.num
        z = lime_coalitions(key, n, num)

        def row(s, e):
            return jnp.where(g.keep(z[s], e), x[e], base[e])

        v = forward_rows(f, row, n, x, target, batch_size)  # (n, B)
        dtype = v.dtype
        size = z.sum(axis=1).astype(dtype)
        dist = jnp.where(size > 0, 1.0 - jnp.sqrt(size / num), 1.0).astype(dtype)
        sw = jnp.exp(-0.5 * jnp.square(dist) / width**2)  # sqrt of pi
        design = jnp.concatenate([jnp.ones((n, 1), dtype), z.astype(dtype)], axis=1)
        coef = jnp.linalg.lstsq(design * sw[:, None], v * sw[:, None])[0]  # (M + 1, B)
        return g.spread(coef[1:].T, x).astype(x.dtype)

    hyper = {
        "feature_mask": feature_mask,
        "n": n,
        "kernel_width": width,
        "baseline": baseline,
        "num_features": num_features,
    }
    return contract.Attribution(
        attr, f, stochastic=True, name="lime", hyper={**hyper, "batch_size": batch_size}
    )


lime.__doc__ += (
    _MASK_DOC
    + r"""
      n: number of samples (static), >= 1; more than ``M + 1`` for a determined fit.
      kernel_width: :math:`w` of the exponential kernel, > 0.
      baseline: the value of switched-off elements: a scalar or an array broadcasting to ``x``.
      batch_size: at most this many perturbed inputs go through ``f`` per call (``None``:
        all at once). The result does not depend on it.

    Returns:
      ``attr(x, target=None, *, key)``; ``key`` is required. Same key, same result.

    Example::

      mask = jaxsal.segments(images, "quickshift")
      coef = jaxsal.lime(f, mask, n=1000)(images, key=jax.random.key(0))
    """
)


_FAMILY = "perturbation"
register(
    Method(
        "kernel_shap",
        kernel_shap,
        "f",
        _FAMILY,
        "KernelSHAP",
        "Lundberg & Lee 2017",
        stochastic=True,
        signed=True,
        captum="KernelShap",
    )
)
register(
    Method(
        "lime",
        lime,
        "f",
        _FAMILY,
        "LIME",
        "Ribeiro et al. 2016",
        stochastic=True,
        signed=True,
        captum="Lime",
    )
)

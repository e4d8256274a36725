"""Sparseness and complexity, and the localisation additions (attribution localisation,
top-k intersection), against closed forms and naive references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import entropy

from jaxsal.metrics.concentration import complexity, sparseness
from jaxsal.metrics.localization import attribution_localisation, relevance_mass_accuracy, top_k_intersection


def _gini_pairs(a):
    """Gini as the mean absolute difference: sum_ij |a_i - a_j| / (2 d sum a)."""
    a = np.abs(np.asarray(a, np.float64)).ravel()
    return np.abs(a[:, None] - a[None, :]).sum() / (2 * a.size * a.sum())


def test_sparseness_closed_forms_and_naive_reference():
    d = 36
    uniform = jnp.ones((1, 6, 6))
    one_hot = jnp.zeros((1, 6, 6)).at[0, 2, 3].set(-4.0)
    np.testing.assert_allclose(sparseness(uniform).per_example, [0.0], atol=1e-6)
    np.testing.assert_allclose(sparseness(one_hot).per_example, [1 - 1 / d], atol=1e-6)
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 6, 6, 2))
    with jax.enable_x64(True):
        got = sparseness(jnp.asarray(maps)).per_example
        assert got.dtype == jnp.float64
        ref = [_gini_pairs(np.abs(m).sum(-1)) for m in maps]  # channels: sum of |.|
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert float(sparseness(jnp.zeros((1, 4, 4))).mean) == 0.0


def test_complexity_closed_forms_and_scipy():
    np.testing.assert_allclose(complexity(jnp.ones((1, 6, 6))).per_example, [np.log(36)], rtol=1e-6)
    np.testing.assert_allclose(
        complexity(jnp.zeros((1, 6, 6)).at[0, 1, 1].set(3.0)).per_example, [0.0], atol=1e-7
    )
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(4, 5, 5))
    maps[0, :2] = 0.0  # zeros contribute 0 log 0 = 0
    with jax.enable_x64(True):
        got = complexity(jnp.asarray(maps)).per_example
        np.testing.assert_allclose(got, [entropy(np.abs(m).ravel()) for m in maps], rtol=1e-12)


def test_complexity_metrics_jit_scale_invariance_and_errors():
    maps = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    for fn in (sparseness, complexity):
        np.testing.assert_allclose(jax.jit(fn)(maps).per_example, fn(maps).per_example, rtol=1e-6)
        np.testing.assert_allclose(fn(7.0 * maps).per_example, fn(maps).per_example, rtol=1e-5)
        with pytest.raises(ValueError, match=r"\(B, H, W\)"):
            fn(jnp.ones((8, 8)))


MASK = jnp.zeros((2, 4, 4), bool).at[:, :2, :2].set(True)  # 4 of 16 pixels


def test_attribution_localisation_by_hand():
    m = jnp.zeros((2, 4, 4)).at[:, 0, 0].set(3.0).at[:, 3, 3].set(1.0).at[:, 1, 1].set(-2.0)
    # positive relevance 3 + 1 = 4, 3 inside: mu = 0.75; weighted by |image| / |mask| = 16/4
    np.testing.assert_allclose(attribution_localisation(m, MASK).per_example, [0.75, 0.75])
    np.testing.assert_allclose(attribution_localisation(m, MASK, weighted=True).per_example, [3.0, 3.0])
    np.testing.assert_allclose(
        attribution_localisation(m, MASK).per_example, relevance_mass_accuracy(m, MASK).per_example
    )
    # a uniform map scores the mask's share, and 1 when weighted
    np.testing.assert_allclose(attribution_localisation(jnp.ones((2, 4, 4)), MASK, weighted=True).mean, 1.0)


def test_top_k_intersection_by_hand():
    m = jnp.arange(16.0)[::-1].reshape(1, 4, 4)  # ranks row-major: (0,0) highest
    mask = MASK[:1]
    # top 3 pixels are (0,0), (0,1), (0,2): two inside
    np.testing.assert_allclose(top_k_intersection(m, mask, k=3).per_example, [2 / 3])
    # top 6: (0,0..3), (1,0), (1,1): four inside; concept influence divides by 4/16
    np.testing.assert_allclose(top_k_intersection(m, mask, k=6).per_example, [4 / 6])
    np.testing.assert_allclose(
        top_k_intersection(m, mask, k=6, concept_influence=True).per_example, [4 / 6 * 4]
    )
    np.testing.assert_allclose(top_k_intersection(m, mask, k=16).per_example, [4 / 16])
    np.testing.assert_allclose(jax.jit(top_k_intersection, static_argnums=2)(m, mask, 3).per_example, [2 / 3])


def test_localisation_additions_bad_input():
    maps = jnp.ones((2, 4, 4))
    with pytest.raises(ValueError, match="k must be an int between 1 and the number of pixels H \\* W = 16"):
        top_k_intersection(maps, MASK, k=17)
    with pytest.raises(ValueError, match="k must be"):
        top_k_intersection(maps, MASK, k=0)
    empty = MASK.at[1].set(False)
    for fn in (attribution_localisation, top_k_intersection):
        with pytest.raises(ValueError, match=r"empty \(no True pixel\) for example\(s\) \[1\]"):
            fn(maps, empty) if fn is attribution_localisation else fn(maps, empty, k=2)

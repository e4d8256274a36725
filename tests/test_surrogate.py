"""KernelSHAP and LIME: exact on linear models, KernelSHAP's efficiency constraint and its
convergence to the enumerated Shapley values, keys and batch_size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GRID4
from test_perturbation import errors, group_sums, linear_model, per_group, tabular_model

import jaxsal
from jaxsal._src.surrogate import shapley_kernel_coalitions

KEY = jax.random.key(0)
T = jnp.array([0, 3, 1])


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
def test_exact_group_contributions_on_a_linear_model(method):
    f, w = linear_model()
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    base = 0.2
    contrib = np.asarray((x - base)[..., None] * w[None])[..., 1]
    attr = getattr(jaxsal, method)(f, GRID4, n=64, baseline=base)
    r = jax.jit(lambda x: attr(x, 1, key=KEY))(x)
    np.testing.assert_allclose(per_group(r, GRID4, 16), group_sums(contrib, GRID4, 16), rtol=1e-4, atol=1e-4)


def test_kernel_shap_is_efficient_for_any_n(cnn):
    for n in (3, 20):
        attr = jaxsal.kernel_shap(cnn.f, GRID4, n=n, baseline=0.1)
        r = jax.jit(lambda x, a=attr: a(x, T, key=KEY))(cnn.x)
        s = cnn.f(cnn.x) - cnn.f(jnp.full_like(cnn.x, 0.1))
        np.testing.assert_allclose(
            per_group(r, GRID4, 16).sum(1), np.asarray(s)[np.arange(3), T], rtol=1e-4, atol=1e-4
        )


def test_kernel_shap_converges_to_exact_enumeration():
    f, x, base = tabular_model()
    exact, err = errors(jaxsal.kernel_shap, f, x, base, (16, 128, 2048))
    assert err[0] > err[1] > err[2], err
    assert err[2] < 0.03 * np.abs(exact).max(), err


def test_shapley_kernel_sampling_follows_the_kernel():
    """Sizes m in 1..M-1 with P(m) ~ (M-1)/(m(M-m)); complementary pairs."""
    num = 8
    z = np.asarray(shapley_kernel_coalitions(KEY, 20000, num))
    np.testing.assert_array_equal(z[1::2], ~z[0::2])
    sizes = z[0::2].sum(1)
    assert sizes.min() >= 1 and sizes.max() <= num - 1
    m = np.arange(1, num)
    p = (num - 1) / (m * (num - m))
    p /= p.sum()
    freq = np.bincount(sizes, minlength=num)[1:] / sizes.size
    np.testing.assert_allclose(freq, p, atol=0.015)


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
def test_keys_and_batch_size(cnn, method):
    factory = getattr(jaxsal, method)
    run = jax.jit(lambda x, k, bs: factory(cnn.f, GRID4, n=40, batch_size=bs)(x, T, key=k), static_argnums=2)
    a = run(cnn.x, KEY, None)
    np.testing.assert_array_equal(a, run(cnn.x, KEY, None))
    assert not np.allclose(a, run(cnn.x, jax.random.key(1), None))
    np.testing.assert_allclose(run(cnn.x, KEY, 7), a, rtol=1e-4, atol=1e-5)


def test_lime_kernel_weights_samples_by_cosine_distance():
    """With one group present at a time (a model of one group only), LIME's slope is the
    weighted difference of means, whatever the kernel: check against a direct WLS."""
    f, w = linear_model(shape=(4,), classes=1)
    x = jnp.asarray([[1.0, -2.0, 0.5, 3.0]])
    f2 = lambda z: jnp.tanh(f(z))  # noqa: E731  nonlinear: the kernel matters
    mask = np.arange(4)
    r = np.asarray(jax.jit(lambda x: jaxsal.lime(f2, mask, n=50, kernel_width=0.5)(x, 0, key=KEY))(x))[0]
    from jaxsal._src.surrogate import lime_coalitions

    z = np.asarray(lime_coalitions(KEY, 50, 4), np.float64)
    y = np.asarray(f2(jnp.asarray(z * np.asarray(x), jnp.float32)))[:, 0]
    d = np.where(z.sum(1) > 0, 1 - np.sqrt(z.sum(1) / 4), 1.0)
    pi = np.exp(-(d**2) / 0.25)
    design = np.c_[np.ones(50), z]
    coef = np.linalg.solve(design.T @ (pi[:, None] * design), design.T @ (pi * y))
    np.testing.assert_allclose(r, coef[1:], rtol=1e-3, atol=1e-4)

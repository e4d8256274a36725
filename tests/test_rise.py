"""RISE against a naive loop over the same masks, its mask statistics, keys and batch_size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src.rise import rise_mask

KEY = jax.random.key(0)
T = jnp.array([0, 3, 1])


def test_rise_equals_a_naive_loop_over_its_masks(cnn):
    n, grid, p = 12, 3, 0.4
    r = jaxsal.rise(cnn.f, n=n, grid=grid, p=p, batch_size=5)(cnn.x, T, key=KEY)
    ref = np.zeros((3, 8, 8))
    for s in range(n):
        m = np.asarray(rise_mask(jax.random.fold_in(KEY, s), 8, 8, grid, p))
        score = np.asarray(cnn.f(cnn.x * m[None, :, :, None]))[np.arange(3), T]
        ref += score[:, None, None] * m[None]
    ref /= n * p
    np.testing.assert_allclose(r, np.broadcast_to(ref[..., None], r.shape), rtol=1e-4, atol=1e-5)


def test_rise_masks_are_smooth_shifted_bernoulli_grids():
    masks = np.stack([np.asarray(rise_mask(jax.random.fold_in(KEY, s), 32, 32, 4, 0.3)) for s in range(200)])
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean() - 0.3) < 0.03
    assert len(np.unique(masks[0])) > 2  # bilinear, not binary


def test_rise_of_a_constant_model_is_the_constant(cnn):
    """S(x . M) = c for every mask: R = c mean(M) / p -> c."""
    f = lambda x: jnp.full((x.shape[0], 2), 3.0) + 0.0 * x[:, :1, 0, 0]  # noqa: E731
    r = jax.jit(lambda x: jaxsal.rise(f, n=500, grid=4, p=0.5)(x, 0, key=KEY))(cnn.x)
    np.testing.assert_allclose(np.asarray(r).mean(), 3.0, rtol=0.05)


def test_rise_keys_and_batch_size(cnn):
    run = jax.jit(
        lambda x, k, bs: jaxsal.rise(cnn.f, n=20, grid=3, batch_size=bs)(x, T, key=k), static_argnums=2
    )
    a = run(cnn.x, KEY, None)
    np.testing.assert_array_equal(a, run(cnn.x, KEY, None))
    assert not np.allclose(a, run(cnn.x, jax.random.key(1), None))
    np.testing.assert_allclose(run(cnn.x, KEY, 7), a, rtol=1e-5, atol=1e-6)


def test_rise_bad_input(cnn):
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="p "):
            jaxsal.rise(cnn.f, p=p)
    with pytest.raises(ValueError, match="grid"):
        jaxsal.rise(cnn.f, grid=0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        jaxsal.rise(cnn.f, n=0)
    with pytest.raises(ValueError, match="x must have shape"):
        jaxsal.rise(cnn.f, n=2)(cnn.x[:, :, :, 0], 0, key=KEY)
    with pytest.raises(ValueError, match="key"):
        jaxsal.rise(cnn.f, n=2)(cnn.x, 0)

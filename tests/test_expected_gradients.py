"""Expected Gradients: one baseline converges to IG, completeness in expectation, draws
per (sample, example), keys, batch_size and bad input."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SmallCNN

import jaxsal

KEY = jax.random.key(0)
T = jnp.array([0, 3, 1])


@pytest.fixture(scope="module")
def smooth():
    """The small CNN with tanh activations and biases (IG's integrand varies along the path)."""
    module = SmallCNN(act=nn.tanh)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    v = module.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: a + 0.1, v)
    return (lambda z: module.apply(v, z)), x


def test_one_baseline_converges_to_integrated_gradients(smooth):
    f, x = smooth
    base = jnp.full((1,) + x.shape[1:], 0.5)
    ig = jaxsal.integrated_gradients(f, baseline=base[0], steps=64)(x, T)
    errs = []
    for n in (16, 1024):
        eg = jax.jit(lambda xx, n=n: jaxsal.expected_gradients(f, base, n=n, batch_size=512)(xx, T, key=KEY))(
            x
        )
        errs.append(float(jnp.abs(eg - ig).max() / jnp.abs(ig).max()))
    assert errs[1] < errs[0] / 3 and errs[1] < 0.05, errs


def test_completeness_in_expectation(smooth):
    f, x = smooth
    refs = jax.random.normal(jax.random.key(5), (4,) + x.shape[1:])
    eg = jaxsal.expected_gradients(f, refs, n=2048, batch_size=1024)(x, T, key=KEY)
    expected = np.asarray(f(x))[np.arange(3), T] - np.asarray(f(refs))[:, np.asarray(T)].mean(0)
    total = np.asarray(eg).reshape(3, -1).sum(1)
    np.testing.assert_allclose(total, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


def test_keys_batch_size_and_default_baselines(cnn):
    refs = jax.random.normal(jax.random.key(5), (3,) + cnn.x.shape[1:])
    for baselines in (refs, None):

        def eg(x, k, bs, baselines=baselines):
            return jaxsal.expected_gradients(cnn.f, baselines, n=6, batch_size=bs)(x, T, key=k)

        run = jax.jit(eg, static_argnums=2)
        a = run(cnn.x, KEY, None)
        np.testing.assert_array_equal(a, run(cnn.x, KEY, None))
        assert not np.allclose(a, run(cnn.x, jax.random.key(1), None))
        np.testing.assert_allclose(run(cnn.x, KEY, 5), a, rtol=1e-4, atol=1e-6)


def test_bad_input(cnn):
    with pytest.raises(ValueError, match="baselines"):
        jaxsal.expected_gradients(cnn.f, jnp.zeros((0, 8, 8, 3)))
    with pytest.raises(ValueError, match="baselines"):
        jaxsal.expected_gradients(cnn.f, jnp.zeros((2, 8, 8)))(cnn.x, T, key=KEY)
    with pytest.raises(ValueError, match="n must be >= 1"):
        jaxsal.expected_gradients(cnn.f, n=0)
    with pytest.raises(ValueError, match="key"):
        jaxsal.expected_gradients(cnn.f)(cnn.x, T)

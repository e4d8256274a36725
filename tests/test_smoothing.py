"""SmoothGrad, SmoothGrad-squared and VarGrad: naive references and noise semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal

KEY = jax.random.key(0)


def naive_samples(attr, x, target, key, n, noise_level):
    """Loop re-implementation of the documented sampling: one split per sample."""
    axes = tuple(range(1, x.ndim))
    sigma = noise_level * (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True))
    out = []
    for k in jax.random.split(key, n):
        k_noise, k_inner = jax.random.split(k)
        out.append(attr(x + sigma * jax.random.normal(k_noise, x.shape, x.dtype), target, key=k_inner))
    return jnp.stack(out)


@pytest.fixture(scope="module")
def setup(cnn):
    return cnn.f, cnn.x, jnp.array([1, 0, 4])


@pytest.mark.parametrize(
    "wrapper, reduce",
    [
        (jaxsal.smoothgrad, lambda s: s.mean(0)),
        (jaxsal.smoothgrad_sq, lambda s: (s**2).mean(0)),
        (jaxsal.vargrad, lambda s: s.var(0)),
    ],
    ids=["smoothgrad", "smoothgrad_sq", "vargrad"],
)
def test_wrappers_equal_naive_loop(setup, wrapper, reduce):
    f, x, t = setup
    attr = jaxsal.vanilla_grad(f)
    samples = naive_samples(attr, x, t, KEY, 6, 0.15)
    np.testing.assert_allclose(
        jax.jit(wrapper(attr, n=6))(x, t, key=KEY), reduce(samples), rtol=1e-4, atol=1e-8
    )


@pytest.mark.parametrize(
    "wrapper, batch_size",
    [
        (jaxsal.smoothgrad, 1),
        (jaxsal.smoothgrad, 4),
        (jaxsal.smoothgrad_sq, 4),
        (jaxsal.vargrad, 4),
        (jaxsal.vargrad, 6),
    ],
)
def test_chunking_does_not_change_the_result(setup, wrapper, batch_size):
    f, x, t = setup
    attr = jaxsal.grad_x_input(f)
    full = jax.jit(wrapper(attr, n=6))(x, t, key=KEY)
    chunked = jax.jit(wrapper(attr, n=6, batch_size=batch_size))(x, t, key=KEY)
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "inner",
    [jaxsal.vanilla_grad, jaxsal.guided_backprop, lambda f: jaxsal.integrated_gradients(f, steps=4)],
    ids=["vanilla", "guided", "ig"],
)
def test_zero_noise_equals_the_wrapped_method(setup, inner):
    f, x, t = setup
    attr = inner(f)
    np.testing.assert_allclose(
        jaxsal.smoothgrad(attr, n=3, noise_level=0.0)(x, t, key=KEY), attr(x, t), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_allclose(
        jaxsal.vargrad(attr, n=3, noise_level=0.0)(x, t, key=KEY), jnp.zeros_like(x), atol=1e-10
    )


def test_noise_sigma_is_a_fraction_of_each_examples_range():
    # An "attribution" that returns its input exposes the noise: VarGrad is then sigma^2.
    identity = jaxsal._src.contract.attribution(lambda x, target=None, *, key=None: x, scores_fn=None)
    x = jnp.stack([jnp.linspace(0.0, 1.0, 64), jnp.linspace(-10.0, 30.0, 64)])  # ranges 1 and 40
    var = jax.jit(jaxsal.vargrad(identity, n=4000, noise_level=0.1))(x, key=KEY)
    np.testing.assert_allclose(var.mean(axis=1), [(0.1 * 1.0) ** 2, (0.1 * 40.0) ** 2], rtol=0.05)
    np.testing.assert_allclose(jaxsal.noise_sigma(x, 0.1)[:, 0], [0.1, 4.0], rtol=1e-6)


def test_target_none_is_resolved_once_on_the_clean_input(setup):
    f, x, _ = setup
    predicted = jnp.argmax(f(x), axis=1)
    sg = jaxsal.smoothgrad(jaxsal.vanilla_grad(f), n=4, noise_level=1.0)
    np.testing.assert_array_equal(sg(x, key=KEY), sg(x, predicted, key=KEY))


def test_nested_stochastic_wrappers_get_independent_keys(setup):
    f, x, t = setup
    inner = jaxsal.smoothgrad(jaxsal.vanilla_grad(f), n=2)
    outer = jaxsal.smoothgrad(inner, n=2, noise_level=0.0)
    a = outer(x, t, key=KEY)
    # With zero outer noise the two outer samples differ only through their inner keys.
    assert not np.allclose(a, inner(x, t, key=KEY))
    np.testing.assert_array_equal(a, outer(x, t, key=KEY))


def test_accepts_raw_uint32_keys(setup):
    f, x, t = setup
    sg = jaxsal.smoothgrad(jaxsal.vanilla_grad(f), n=2)
    np.testing.assert_array_equal(sg(x, t, key=jax.random.PRNGKey(3)), sg(x, t, key=jax.random.PRNGKey(3)))

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
    "wrapper, copies",
    [
        (jaxsal.smoothgrad, 1),
        (jaxsal.smoothgrad, 4),
        (jaxsal.smoothgrad_sq, 4),
        (jaxsal.vargrad, 4),
        (jaxsal.vargrad, 6),
    ],
)
def test_chunking_does_not_change_the_result(setup, wrapper, copies):
    f, x, t = setup
    attr = jaxsal.grad_x_input(f)
    full = jax.jit(wrapper(attr, n=6))(x, t, key=KEY)
    # batch_size counts rows: `copies` noisy copies of the batch per model call
    chunked = jax.jit(wrapper(attr, n=6, batch_size=copies * x.shape[0]))(x, t, key=KEY)
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-9)


def max_rows(fn, *args, primitive="tanh"):
    """The most rows any ``primitive`` op of ``fn``'s jaxpr sees (all axes but the last)."""

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == primitive:
                yield int(np.prod(eqn.invars[0].aval.shape[:-1]))
            for v in eqn.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                        yield from walk(getattr(sub, "jaxpr", sub))

    return max(walk(jax.make_jaxpr(fn)(*args).jaxpr))


@pytest.mark.parametrize("batch_size", [1, 2, 4, 5, 7, None])
@pytest.mark.parametrize("wrapper", [jaxsal.smoothgrad, jaxsal.vargrad])
def test_batch_size_bounds_rows_per_model_call(wrapper, batch_size):
    """At most batch_size rows reach the model per call, even below one copy of the batch; same result."""
    w = jax.random.normal(jax.random.key(3), (12, 4))
    f = lambda x: jnp.tanh(x.reshape(x.shape[0], -1)) @ w  # noqa: E731
    x = jax.random.normal(jax.random.key(4), (3, 2, 2, 3))
    t = jnp.array([0, 3, 1])
    full = wrapper(jaxsal.vanilla_grad(f), n=5)
    chunked = wrapper(jaxsal.vanilla_grad(f), n=5, batch_size=batch_size)
    run = lambda attr: lambda x: attr(x, t, key=KEY)  # noqa: E731
    expected = (
        5 * 3 if batch_size is None else (batch_size if batch_size < 3 else 3 * min(5, batch_size // 3))
    )
    assert max_rows(run(chunked), x) == expected
    np.testing.assert_allclose(run(chunked)(x), run(full)(x), rtol=1e-5, atol=1e-7)


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
    var = jax.jit(jaxsal.vargrad(identity, n=4000, noise_level=0.1))(
        x, 0, key=KEY
    )  # no scores: explicit target
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

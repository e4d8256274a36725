"""Bad inputs at the contract's boundary (issue 16): non-finite pixels, batch-mixing
models, batches of keys, unbatched inputs, empty batches and large quadratures.

The non-finite tests run through the registry, so every registered method (including
ones added later) is covered.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build, tol

import jaxsal
from jaxsal._src.path import quadrature

METHODS = list(jaxsal.methods().values())
IDS = [m.name for m in METHODS]
KEY = jax.random.key(42)
TARGET = jnp.array([0, 3, 1])


def _poisoned(x, value):
    return x.at[1, 2, 3, 0].set(value)


@pytest.mark.parametrize("value", [jnp.nan, jnp.inf])
def test_nonfinite_input_eager_raises_naming_the_example(value, cnn):
    for method in METHODS:
        attr = build(method, cnn)
        with pytest.raises(ValueError, match=r"NaN or inf values in example 1 \(of 3\)"):
            attr(_poisoned(cnn.x, value), TARGET, key=KEY)
        with pytest.raises(ValueError, match="example 1"):  # NumPy input too
            attr(np.asarray(_poisoned(cnn.x, value)), TARGET, key=KEY)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_nonfinite_input_under_jit_gives_a_nan_map_for_that_example_only(method, cnn):
    attr = build(method, cnn)
    run = jax.jit(lambda x, t, k: attr(x, t, key=k))
    clean = run(cnn.x, TARGET, KEY)
    for value in (jnp.nan, -jnp.inf):
        out = run(_poisoned(cnn.x, value), TARGET, KEY)
        assert bool(jnp.all(jnp.isnan(out[1]))), f"{method.name}: the broken example's map is not NaN"
        keep = np.array([0, 2])
        assert bool(jnp.all(jnp.isfinite(out[keep])))
        np.testing.assert_allclose(out[keep], clean[keep], **tol(out.dtype))


def test_nonfinite_through_wrappers_and_vmap(cnn):
    sg = jaxsal.smoothgrad(jaxsal.vanilla_grad(cnn.f), n=2)
    xs = jnp.stack([cnn.x, _poisoned(cnn.x, jnp.nan)])
    out = jax.jit(jax.vmap(lambda x: sg(x, TARGET, key=KEY)))(xs)
    assert bool(jnp.all(jnp.isfinite(out[0]))) and bool(jnp.all(jnp.isnan(out[1, 1])))
    assert bool(jnp.all(jnp.isfinite(out[1, 0])))
    with pytest.raises(ValueError, match="example 1"):
        sg(_poisoned(cnn.x, jnp.nan), TARGET, key=KEY)


# ----------------------------------------------------------------------------- independence


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(6)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(4)(nn.relu(x))


@pytest.fixture(scope="module")
def bn():
    module = _BNNet()
    x = jax.random.normal(jax.random.key(3), (4, 8, 8, 3))
    variables = module.init(jax.random.key(0), x, train=False)

    def train_mode(z):
        return module.apply(variables, z, train=True, mutable=["batch_stats"])[0]

    return x, (lambda z: module.apply(variables, z, train=False)), train_mode


def test_check_independent_flags_batch_mixing_models(cnn, bn):
    x, _, train_mode = bn
    with pytest.raises(ValueError, match="mixes the examples of a batch.*BatchNorm"):
        jaxsal.check_independent(train_mode, x)

    def centred(z):
        return cnn.f(z - z.mean(0, keepdims=True))

    with pytest.raises(ValueError, match="mixes the examples"):
        jaxsal.check_independent(centred, cnn.x)
    # B = 1: alone and in the batch agree, but next to other examples they do not.
    with pytest.raises(ValueError, match="next to other examples"):
        jaxsal.check_independent(centred, cnn.x[:1])
    # and this is the silent failure it guards against: an identically zero map
    assert float(jnp.max(jnp.abs(jaxsal.vanilla_grad(centred)(cnn.x[:1])))) == 0.0


def test_check_independent_gradient_level_mixing(cnn):
    # Scores are independent, gradients are not (a straight-through batch term).
    def leaky(z):
        m = z.mean(0, keepdims=True)
        return cnn.f(z + m - jax.lax.stop_gradient(m))

    np.testing.assert_allclose(leaky(cnn.x), cnn.f(cnn.x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="input gradients"):
        jaxsal.check_independent(leaky, cnn.x)


def test_check_independent_passes_every_model_fixture(cnn, nnx_cnn, bn):
    jaxsal.check_independent(cnn.f, cnn.x)
    jaxsal.check_independent(nnx_cnn.model, nnx_cnn.x)
    x, inference, _ = bn
    jaxsal.check_independent(inference, x)
    jaxsal.check_independent(cnn.f, cnn.x[:1])
    with jax.enable_x64(True):
        variables = jax.tree.map(lambda a: a.astype(jnp.float64), cnn.variables)
        jaxsal.check_independent(lambda z: cnn.module.apply(variables, z), cnn.x.astype(jnp.float64))


def test_check_independent_errors(cnn):
    with pytest.raises(TypeError, match="callable"):
        jaxsal.check_independent(None, cnn.x)
    with pytest.raises(ValueError, match="example 1"):
        jaxsal.check_independent(cnn.f, _poisoned(cnn.x, jnp.nan))
    jaxsal.check_independent(cnn.f, cnn.x[:0])  # nothing to compare


# ----------------------------------------------------------------------------- argument errors


W = jax.random.normal(jax.random.key(5), (8 * 8 * 3, 5))


def linear(z):
    return jnp.reshape(z, (z.shape[0], 8 * 8 * 3)) @ W


def test_a_batch_of_keys_is_refused_by_name(cnn):
    sg = jaxsal.smoothgrad(jaxsal.vanilla_grad(linear), n=2)
    keys = jax.random.split(KEY, 3)
    with pytest.raises(ValueError, match=r"one PRNG key.*shape \(3,\)"):
        sg(cnn.x, TARGET, key=keys)
    with pytest.raises(ValueError, match="one PRNG key"):
        sg(cnn.x, TARGET, key=jax.random.PRNGKey(0)[None])
    assert sg(cnn.x, TARGET, key=jax.random.PRNGKey(0)).shape == cnn.x.shape  # a raw uint32 key works


def test_unbatched_x_error_names_the_argument(cnn):
    with pytest.raises(Exception) as info:  # noqa: B017 - whatever the model raises
        jaxsal.vanilla_grad(cnn.f)(cnn.x[0], 0)
    text = str(info.value) + " ".join(getattr(info.value, "__notes__", []))
    assert "x of shape (8, 8, 3)" in text and "x[None]" in text


def test_empty_batch(cnn):
    for name in ("integrated_gradients", "vanilla_grad", "grad_x_input", "smoothgrad"):
        out = jaxsal.get_method(name).build(linear)(cnn.x[:0], key=KEY)
        assert out.shape == (0,) + cnn.x.shape[1:], name


def test_gauss_legendre_nodes_are_cheap_and_exact():
    t = time.perf_counter()
    q = quadrature("gausslegendre", 6000)
    took = time.perf_counter() - t
    assert took < 15, took  # 73 s (cubic) before
    assert q.weights.sum() == pytest.approx(1.0, abs=1e-12)
    # exact for a polynomial of high degree: int_0^1 a^k da = 1 / (k + 1)
    for k in (0, 1, 7, 200):
        assert float(np.sum(q.weights * q.alphas**k)) == pytest.approx(1 / (k + 1), rel=1e-10)
    small = quadrature("gausslegendre", 50)  # NumPy's (Captum's) nodes for small n
    x, w = np.polynomial.legendre.leggauss(50)
    np.testing.assert_array_equal(small.alphas, 0.5 * (1 + x))
    big, ref = quadrature("gausslegendre", 101), np.polynomial.legendre.leggauss(101)
    np.testing.assert_allclose(big.alphas, 0.5 * (1 + ref[0]), atol=1e-14)
    np.testing.assert_allclose(big.weights, 0.5 * ref[1], atol=1e-14)


@pytest.mark.parametrize("bad", [float("inf"), np.float32("inf"), float("nan"), -0.1])
def test_noise_level_must_be_finite(cnn, bad):
    with pytest.raises(ValueError, match="finite"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(cnn.f), noise_level=bad)


@pytest.mark.parametrize("ok", [np.float32(0.1), np.float64(0.1), jnp.float32(0.1), jnp.asarray(0.1)])
def test_noise_level_accepts_numpy_and_jax_scalars(cnn, ok):
    sg = jaxsal.smoothgrad(jaxsal.vanilla_grad(cnn.f), n=2, noise_level=ok)
    assert sg.hyper["noise_level"] == pytest.approx(0.1)


def test_concrete_input_closed_over_inside_jit_is_checked_not_traced():
    """A concrete x captured by a jitted closure is still concrete: it is checked, not traced."""
    f = lambda z: z.reshape((z.shape[0], -1))[:, :3] * 2.0  # noqa: E731
    x = jnp.ones((2, 4, 4, 1))
    attr = jaxsal.vanilla_grad(f)
    assert jax.jit(lambda k: attr(x, 0, key=k))(jax.random.key(0)).shape == x.shape
    bad = x.at[1, 0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="example 1"):
        jax.jit(lambda k: attr(bad, 0, key=k))(jax.random.key(0))

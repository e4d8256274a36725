"""Input invariance (Kindermans et al. 2019): the paper's pass/fail table on the small CNN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST

import jaxsal
from jaxsal import flax as jflax
from jaxsal.metrics.invariance import input_invariance, shifted_model

SHIFT = -1.0  # Kindermans et al.: MNIST in [0, 1] shifted to [-1, 0]
KEY = jax.random.key(0)

# (registry name, extra hyper-parameters, expected verdict): Kindermans et al. 2019, Sec. 3-4.
TABLE = [
    ("vanilla_grad", {}, True),
    ("smoothgrad", {}, True),  # the same key: the same noise for both models
    ("guided_backprop", {}, True),
    ("deconvnet", {}, True),
    ("grad_cam", {}, True),
    ("grad_x_input", {}, False),
    ("integrated_gradients", {}, False),  # zero baseline
    ("deeplift", {}, False),  # zero reference
    ("lrp", {"composite": "epsilon"}, False),
    ("lrp", {"composite": "epsilon_plus"}, False),
]


def _model(method, cnn):
    if method.takes == "f":
        return cnn.f
    return jflax.probe(cnn.module, cnn.variables, cnn.layer)


@pytest.mark.parametrize(("name", "extra", "expected"), TABLE, ids=[f"{n}-{e}" for n, e, _ in TABLE])
def test_kindermans_table(cnn, name, extra, expected):
    method = jaxsal.get_method(name)
    hyper = {**FAST.get(name, {}), **extra}
    r = input_invariance(method, _model(method, cnn), cnn.x, SHIFT, key=KEY, hyper=hyper)
    assert r.passed.shape == (cnn.x.shape[0],)
    if expected:
        assert bool(r.passed.all()), r.difference
    else:
        assert not bool(r.passed.any()), r.difference
        assert float(r.difference.min()) > 100 * r.tolerance  # a clear failure, not rounding


def test_ig_with_shifted_baseline_passes(cnn):
    r = input_invariance(
        jaxsal.integrated_gradients, cnn.f, cnn.x, SHIFT, hyper={"steps": 8}, shift_hyper=("baseline",)
    )
    assert bool(r.passed.all()), r.difference
    # a non-zero baseline moved with the input passes too, one kept in place does not
    hyper = {"steps": 8, "baseline": 0.3}
    moved = input_invariance(
        jaxsal.integrated_gradients, cnn.f, cnn.x, SHIFT, hyper=hyper, shift_hyper="baseline"
    )
    kept = input_invariance(jaxsal.integrated_gradients, cnn.f, cnn.x, SHIFT, hyper=hyper)
    assert bool(moved.passed.all()) and not bool(kept.passed.any())


def test_shifted_model_absorbs_the_shift_in_the_first_bias(cnn):
    shift = jnp.asarray([0.5, -1.0, 2.0])  # per channel
    f_s = shifted_model(cnn.f, shift, cnn.x)
    z = cnn.x + shift[None, None, None]
    np.testing.assert_allclose(f_s(z), cnn.f(cnn.x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f_s(z[:1]), cnn.f(cnn.x[:1]), rtol=1e-5, atol=1e-5)  # any batch
    # the first conv reads z itself: the traced model has no subtraction before it
    jaxpr = jax.make_jaxpr(f_s)(cnn.x).jaxpr
    first = next(i for i, e in enumerate(jaxpr.eqns) if e.primitive.name == "conv_general_dilated")
    assert jaxpr.eqns[first].invars[0] is jaxpr.invars[0]
    # composing instead: LRP would see the original layer input and pass trivially
    lrp = jaxsal.get_method("lrp")
    r = input_invariance(lrp, cnn.f, cnn.x, SHIFT, absorb="input")
    assert bool(r.passed.all())


def test_grad_x_input_closed_form():
    w = jnp.asarray([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]])
    b = jnp.asarray([0.1, -0.2])

    def f(x):
        return x @ w + b[None]

    x = jnp.asarray([[1.0, 2.0, -1.0], [0.5, 0.0, 2.0]])
    m = jnp.asarray([0.5, -1.0, 2.0])
    r = input_invariance(jaxsal.grad_x_input, f, x, m, target=1)
    g = w[:, 1]
    expected = jnp.linalg.norm(g * m) / jnp.linalg.norm(g[None] * x, axis=1)
    np.testing.assert_allclose(r.difference, expected, rtol=1e-5)
    np.testing.assert_allclose(r.shifted_maps, (x + m[None]) * g[None], rtol=1e-6)
    with jax.enable_x64(True):
        x64, m64 = x.astype(jnp.float64), m.astype(jnp.float64)
        r64 = input_invariance(jaxsal.vanilla_grad, lambda z: z @ w.astype(jnp.float64), x64, m64, target=0)
        assert r64.tolerance == 1e-8 and float(r64.difference.max()) == 0.0


def test_bad_arguments(cnn):
    with pytest.raises(ValueError, match="shift"):
        input_invariance(jaxsal.vanilla_grad, cnn.f, cnn.x, jnp.ones((3, 1, 1, 1)))  # per example
    with pytest.raises(ValueError, match="absorb"):
        input_invariance(jaxsal.vanilla_grad, cnn.f, cnn.x, 1.0, absorb="bias")
    with pytest.raises(TypeError, match="method"):
        input_invariance("vanilla_grad", cnn.f, cnn.x, 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        input_invariance(jaxsal.vanilla_grad, cnn.f, cnn.x, 1.0, tolerance=-1.0)
    with pytest.raises(ValueError, match="absorb='input'"):
        shifted_model(lambda z: jnp.tanh(z).sum((1, 2))[:, :2], 1.0, cnn.x)  # no linear layer

"""Bad input gets a clear ValueError/TypeError naming the argument and the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST

import jaxsal

# Small images, so that the methods that slide or group over (H, W) (occlusion, RISE,
# KernelSHAP, ...) get as far as the checks under test.
W = jnp.ones((8 * 8 * 3, 3))
F = lambda x: x.reshape((x.shape[0], -1)) @ W  # noqa: E731
X = jnp.ones((2, 8, 8, 3))


def _maker(method):
    """``f -> attr(x, t)`` for a registered input method (stochastic ones get a fixed key)."""

    def make(f):
        attr = method.build(f, **FAST.get(method.name, {}))
        return (lambda x, t=None: attr(x, t, key=jax.random.key(0))) if method.stochastic else attr

    return make


# Every registered method that takes the model f, from the registry. The attention family
# needs a transformer (on this linear F it refuses to run: "no attention softmax found",
# tested in tests/test_attention.py, as its own bad input).
INPUT_METHODS = {m.name: _maker(m) for m in jaxsal.methods(takes="f").values() if m.family != "attention"}


@pytest.fixture(params=list(INPUT_METHODS))
def make(request):
    import warnings

    warnings.filterwarnings("ignore", message="jaxsal: no ReLU found")
    return INPUT_METHODS[request.param]


def test_integer_input(make):
    with pytest.raises(TypeError, match=r"x must have a floating dtype.*astype"):
        make(F)(jnp.ones((2, 8, 8, 3), jnp.int32), 0)


@pytest.mark.parametrize("target", [3, -1, np.array([0, 5]), jnp.array([0, 7])])
def test_target_out_of_range(make, target):
    with pytest.raises(ValueError, match=r"out of range for 3 classes"):
        make(F)(X, target)


@pytest.mark.parametrize("target", [np.array([0, 1, 2]), np.zeros((2, 1), int)])
def test_target_wrong_shape(make, target):
    with pytest.raises(ValueError, match=r"target must be a scalar or have shape \(B,\) = \(2,\)"):
        make(F)(X, target)


def test_float_target(make):
    with pytest.raises(TypeError, match="integer class indices"):
        make(F)(X, jnp.array([0.0, 1.0]))


@pytest.mark.parametrize(
    "bad_f, fix",
    [
        (lambda x: x.sum(axis=(1, 2, 3)), r"regression output of shape \(B,\)"),
        (lambda x: F(x)[None], r"scores of shape \(2, C\)"),
        (lambda x: F(x)[:1], r"scores of shape \(2, C\)"),
    ],
)
def test_f_output_not_b_by_c(make, bad_f, fix):
    with pytest.raises(ValueError, match=fix):
        make(bad_f)(X, 0)


def test_callable_target_with_wrong_output_shape(make):
    with pytest.raises(ValueError, match="callable target"):
        make(F)(X, lambda s: s)


@pytest.mark.parametrize("n", [0, -3])
def test_n_below_one(n):
    for wrapper in (jaxsal.smoothgrad, jaxsal.smoothgrad_sq, jaxsal.vargrad):
        with pytest.raises(ValueError, match="n must be >= 1"):
            wrapper(jaxsal.vanilla_grad(F), n=n)
    with pytest.raises(TypeError, match="n must be an int"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(F), n=2.5)


def test_steps_below_one():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        jaxsal.integrated_gradients(F, steps=0)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        jaxsal.integrated_gradients(F, steps=1, method="riemann_trapezoid")


def test_negative_noise_level():
    with pytest.raises(ValueError, match="noise_level must be >= 0"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(F), noise_level=-0.1)
    with pytest.raises(TypeError, match="noise_level must be a float"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(F), noise_level="high")


def test_stochastic_method_without_key():
    with pytest.raises(ValueError, match=r"needs an explicit PRNG key.*jax.random.key"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(F), n=2)(X, 0)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(F), n=2)(X, 0, key=0)


def test_unknown_ig_method():
    with pytest.raises(ValueError, match=r"method must be one of .*gausslegendre"):
        jaxsal.integrated_gradients(F, method="simpson")


def test_bad_batch_size_and_model():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        jaxsal.integrated_gradients(F, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        jaxsal.smoothgrad(jaxsal.vanilla_grad(F), batch_size=0)
    with pytest.raises(TypeError, match="f must be a callable"):
        jaxsal.vanilla_grad("model")
    with pytest.raises(TypeError, match="smoothgrad wraps an attribution function"):
        jaxsal.smoothgrad(None)
    with pytest.raises(ValueError, match="rule must be one of"):
        jaxsal.with_relu_rule(F, "lrp")


def test_scalar_input_and_unknown_registry_name():
    with pytest.raises(ValueError, match="leading batch axis"):
        jaxsal.vanilla_grad(F)(jnp.float32(1.0), 0)
    with pytest.raises(ValueError, match="unknown method 'saliency'; choose from: vanilla_grad"):
        jaxsal.get_method("saliency")


def test_errors_are_raised_under_jit_too():
    with pytest.raises(ValueError, match="out of range"):
        jax.jit(lambda x: jaxsal.vanilla_grad(F)(x, 3))(X)
    with pytest.raises(ValueError, match=r"scores of shape \(2, C\)"):
        jax.jit(jaxsal.vanilla_grad(lambda x: x.sum(axis=(1, 2, 3))))(X)

"""The common contract, run on every registered method (STYLE 7-8).

Every method in the registry must: match jit and eager, return the documented
shape and the input's dtype, work under vmap over an extra leading axis, not
retrace for new values of the same shapes, compose with SmoothGrad, and follow the
key rules (deterministic: key ignored; stochastic: key required, reproducible).
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build, model_of, tol

import jaxsal

# This file runs on one xdist worker (pyproject: --dist loadfile), so a method's tests share
# its compiled function (``compiled`` below) instead of each compiling it again.
METHODS = list(jaxsal.methods().values())
IDS = [m.name for m in METHODS]
KEY = jax.random.key(42)
TARGET = jnp.array([0, 3, 1])
# DeconvNet's backward pass never looks at the forward activations, so on a CNN
# without max-pooling its map does not depend on the input at all (a known property,
# tested in test_gradients.py): noise cannot change it.
INPUT_INDEPENDENT = {"deconvnet"}


def expected_shape(method, cnn):
    if method.output == "input":
        return cnn.x.shape
    if method.output == "activation":
        return (cnn.x.shape[0], 4, 4, 8)  # the probed "features" layer's activation
    return (cnn.x.shape[0], 4, 4)  # a map at the "features" layer's resolution


_COMPILED: dict = {}


def compiled(method, cnn):
    """``(attr, run, traces)``: ``method`` built on the float32 CNN, ``run = jax.jit(x, t, k ->
    attr(x, t, key=k))`` shared by this module's tests of the method, and ``traces``, how
    often ``run`` was traced. Every call in this module passes the same shapes and dtypes,
    so ``run`` must be traced once whatever the values (test_no_retrace_for_new_values)."""
    if method.name not in _COMPILED:
        attr = build(method, cnn)
        traces = []

        @jax.jit
        def run(x, t, k):
            traces.append(1)
            return attr(x, t, key=k)

        _COMPILED[method.name] = (attr, run, traces)
    return _COMPILED[method.name]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_jit_equals_eager_shape_and_dtype(method, cnn):
    attr, run, _ = compiled(method, cnn)
    eager = attr(cnn.x, TARGET, key=KEY)
    jitted = run(cnn.x, TARGET, KEY)
    assert eager.shape == expected_shape(method, cnn)
    assert eager.dtype == cnn.x.dtype
    assert bool(jnp.all(jnp.isfinite(eager)))
    assert float(jnp.max(jnp.abs(eager))) > 0, "an all-zero map cannot be checked"
    np.testing.assert_allclose(jitted, eager, **tol(eager.dtype))


@pytest.fixture(params=["float64", "bfloat16"])
def typed_cnn(request, cnn):
    """The small CNN with its variables and input cast to one dtype (float64 under x64).

    float32, the default, runs through every other test of this suite."""
    dtype = jnp.dtype(request.param)
    with jax.enable_x64(dtype == jnp.float64):
        variables = jax.tree.map(lambda a: a.astype(dtype), cnn.variables)
        yield types.SimpleNamespace(
            module=cnn.module,
            variables=variables,
            x=cnn.x.astype(dtype),
            f=lambda inp: cnn.module.apply(variables, inp),
            layer=cnn.layer,
        )


# float64 against float32: the same network in two precisions (float32 rounding only).
F64_VS_F32 = dict(rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_every_dtype(method, typed_cnn, cnn):
    """float64 and bfloat16 (float32: the tests above): the input's dtype out, finite, and
    (deterministic methods) float64 equal to float32 to float32 rounding. Compiled only:
    jit == eager is the first test's, in float32."""
    x = typed_cnn.x
    attr = build(method, typed_cnn)
    out = jax.jit(lambda x, t, k: attr(x, t, key=k))(x, TARGET, KEY)
    assert out.dtype == x.dtype
    assert out.shape == expected_shape(method, cnn)
    assert bool(jnp.all(jnp.isfinite(out)))
    if x.dtype == jnp.float64 and not method.stochastic:  # noise draws depend on the dtype
        ref = jax.jit(lambda x, t: build(method, cnn)(x, t, key=KEY))(cnn.x, TARGET)  # under x64: its own
        scale = float(jnp.max(jnp.abs(ref)))
        np.testing.assert_allclose(out / scale, ref / scale, **F64_VS_F32)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_vmap_over_extra_axis_equals_loop(method, cnn):
    attr, run, _ = compiled(method, cnn)  # compiled: jit == eager is the first test's
    xs = jnp.stack([cnn.x, cnn.x[::-1] * 0.5])
    batched = jax.jit(jax.vmap(lambda x: attr(x, TARGET, key=KEY)))(xs)
    looped = jnp.stack([run(x, TARGET, KEY) for x in xs])
    np.testing.assert_allclose(batched, looped, **tol(batched.dtype))


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_no_retrace_for_new_values(method, cnn):
    _, run, traces = compiled(method, cnn)
    run(cnn.x, TARGET, KEY).block_until_ready()
    run(cnn.x + 1.0, jnp.array([4, 2, 0]), jax.random.key(7)).block_until_ready()
    assert len(traces) == 1


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_composes_with_smoothgrad(method, cnn):
    """SmoothGrad of the method: its shape, finite, changed by the noise, reproducible.

    (Zero noise giving back the map is SmoothGrad's own property, tests/test_smoothing.py;
    per method it is the vmap test's, since SmoothGrad vmaps the method over its samples.)"""
    attr, run, _ = compiled(method, cnn)
    smoothed = jax.jit(lambda x, k: jaxsal.smoothgrad(attr, n=2, noise_level=0.2)(x, TARGET, key=k))
    sg = smoothed(cnn.x, KEY)
    assert sg.shape == expected_shape(method, cnn)
    assert bool(jnp.all(jnp.isfinite(sg)))
    np.testing.assert_array_equal(sg, smoothed(cnn.x, KEY))
    if method.name not in INPUT_INDEPENDENT:
        assert not np.allclose(sg, run(cnn.x, TARGET, KEY)), "noise must change the smoothed map"


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_key_semantics(method, cnn):
    attr, run, _ = compiled(method, cnn)
    a = run(cnn.x, TARGET, KEY)
    b = run(cnn.x, TARGET, KEY)
    np.testing.assert_array_equal(a, b)
    if method.stochastic:
        assert method.stochastic == bool(getattr(attr, "stochastic", False))
        c = run(cnn.x, TARGET, jax.random.key(43))
        assert not np.allclose(a, c), "a different key must give a different result"
        with pytest.raises(ValueError, match="key"):
            attr(cnn.x, TARGET)
    else:
        np.testing.assert_allclose(attr(cnn.x, TARGET), a, **tol(a.dtype))  # eager, no key


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_target_none_is_the_predicted_class(method, cnn):
    attr, run, _ = compiled(method, cnn)
    predicted = jnp.argmax(model_of(method, cnn)(cnn.x), axis=1).astype(TARGET.dtype)
    np.testing.assert_allclose(attr(cnn.x, key=KEY), run(cnn.x, predicted, KEY), **tol(cnn.x.dtype))


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_registry_entry_is_documented(method):
    factory_doc = (method.factory.__doc__ or "") + (
        getattr(jaxsal, method.name, method.factory).__doc__ or ""
    )
    assert method.paper and method.title
    if hasattr(jaxsal, method.name):
        assert len(factory_doc) > 200, f"{method.name} needs a docstring with its paper and equation"

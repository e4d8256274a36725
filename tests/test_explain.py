"""``explain``: several methods in one call equal the separate calls; keys per method."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal._src.explain import explain
from jaxsal._src.gradients import grad_x_input, vanilla_grad
from jaxsal._src.path import integrated_gradients
from jaxsal._src.smoothing import smoothgrad

TOL = dict(rtol=1e-6, atol=1e-6)
W = jax.random.normal(jax.random.key(0), (12, 4))


def model(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ W)


X = jax.random.normal(jax.random.key(1), (3, 2, 2, 3))
T = jnp.array([0, 2, 3])


def _methods():
    return {
        "vanilla": vanilla_grad,  # a factory
        "gxi": grad_x_input(model),  # a built attribution
        "ig": functools.partial(integrated_gradients, steps=8),
        "sg": lambda f: smoothgrad(vanilla_grad(f), n=4),
        "sg2": lambda f: smoothgrad(grad_x_input(f), n=4),  # stochastic, too
    }


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("groups", [None, [["vanilla", "gxi", "ig"], ["sg", "sg2"]]])
def test_equals_separate_calls_with_the_same_key(jit, groups):
    key = jax.random.key(5)
    run = explain(model, _methods(), jit=jit, groups=groups)
    got = run(X, T, key=key)
    assert list(got) == list(_methods())
    for name, m in _methods().items():
        attr = m(model) if not hasattr(m, "stochastic") else m
        np.testing.assert_allclose(got[name], attr(X, T, key=key), **TOL)


def test_fold_keys_gives_each_method_its_own_key():
    key = jax.random.key(5)
    got = explain(model, _methods(), fold_keys=True)(X, T, key=key)
    names = list(_methods())
    for name in ("sg", "sg2"):
        want = _methods()[name](model)(X, T, key=jax.random.fold_in(key, names.index(name)))
        np.testing.assert_allclose(got[name], want, **TOL)
    same = explain(model, _methods())(X, T, key=key)
    assert not np.allclose(got["sg"], same["sg"])
    np.testing.assert_allclose(got["vanilla"], same["vanilla"], **TOL)


def test_groups_default_one_per_method():
    run = explain(model, _methods(), groups=[["gxi", "vanilla"]])
    assert run.groups == [["gxi", "vanilla"], ["ig"], ["sg"], ["sg2"]]
    assert explain(model, {"v": vanilla_grad}).groups == [["v"]]


def test_errors():
    with pytest.raises(ValueError, match="non-empty"):
        explain(model, {})
    with pytest.raises(TypeError, match=r"methods\['v'\]"):
        explain(model, {"v": 3})
    with pytest.raises(ValueError, match="not in methods"):
        explain(model, {"v": vanilla_grad}, groups=[["w"]])
    with pytest.raises(ValueError, match="twice"):
        explain(model, {"v": vanilla_grad}, groups=[["v"], ["v"]])
    with pytest.raises(ValueError, match="stochastic"):
        explain(model, _methods())(X, T)
    # deterministic methods need no key
    out = explain(model, {"v": vanilla_grad})(X, T)
    np.testing.assert_allclose(out["v"], vanilla_grad(model)(X, T), **TOL)

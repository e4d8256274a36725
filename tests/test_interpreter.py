"""The open rule interpreter: matchers find units, rules replace them, nothing else changes."""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SmallCNN

import jaxsal
from jaxsal._src import interpreter as interp
from jaxsal._src.linear import LINEAR, LinearInfo
from jaxsal._src.max_pool import MAX_POOL
from jaxsal._src.relu import RELU, count_relus

# ----------------------------------------------------------------------------- the linear matcher


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(7, name="fc1")(x))
        x = nn.relu(nn.Dense(6, name="fc2")(x))
        return nn.Dense(3, use_bias=False, name="out")(x)


def test_linear_matcher_finds_the_layers_of_a_cnn_in_data_flow_order(cnn):
    units = interp.find_units(cnn.f, cnn.x, matcher=LINEAR)
    assert [u.info.kind for u in units] == ["conv", "conv", "dense", "dense"]
    assert [u.index for u in units] == [0, 1, 2, 3] and units[0].first and not units[1].first
    assert [u.scope.split("/", 1)[1] for u in units] == ["features/conv1", "features/conv2", "fc1", "head"]
    for u in units:
        assert isinstance(u.info, LinearInfo) and u.info.weight == 1 and u.info.data == 0 and u.info.bias == 2
        assert len(u.inputs) == 3 and len(u.eqns) == 2  # product + bias add
    assert units[1].info.params["window_strides"] == (2, 2)
    assert units[0].info.primitive == "conv_general_dilated" and units[3].info.primitive == "dot_general"
    # the weight operand is the kernel: its shape is the kernel's
    kernel = cnn.variables["params"]["features"]["conv1"]["kernel"]
    assert units[0].inputs[1].aval.shape == kernel.shape


def test_linear_matcher_on_an_mlp_inside_jit_and_scan():
    m = MLP()
    x = jnp.ones((2, 5))
    v = m.init(jax.random.key(0), x)

    def f(z):
        h = jax.jit(lambda z: m.apply(v, z))(z)
        w = jnp.ones((3, 3))
        return jax.lax.scan(lambda c, _: (c @ w, None), h, None, length=2)[0]

    units = interp.find_units(f, x, matcher=LINEAR)
    assert [u.info.kind for u in units] == ["dense"] * 4
    assert [u.index for u in units] == [0, 1, 2, 3]
    assert [u.info.bias for u in units] == [2, 2, None, None]  # "out" and the scan body have no bias
    assert units[2].scope.endswith("out")


def test_products_of_two_inputs_are_not_layers():
    def attention(x):
        q = x @ jnp.ones((4, 4))
        return jax.nn.softmax(q @ q.T) @ x

    units = interp.find_units(attention, jnp.ones((3, 4)), matcher=LINEAR)
    assert len(units) == 1 and units[0].info.weight == 1


# ----------------------------------------------------------------------------- open rules


def _mlp_fn():
    k1, k2 = jax.random.split(jax.random.key(0))
    w1, w2 = jax.random.normal(k1, (4, 5)), jax.random.normal(k2, (5, 2))
    return (lambda x: jax.nn.relu(x @ w1 + 0.1) @ w2), w1, w2


def test_a_user_backward_rule_on_linear_units_plugs_in_without_touching_the_engine():
    f, w1, w2 = _mlp_fn()
    x = jax.random.normal(jax.random.key(1), (3, 4))
    seen = []

    def doubled(unit, inputs, y, g):  # twice the ordinary data gradient, no weight gradient
        seen.append(unit.index)
        _, vjp = jax.vjp(unit.apply, *inputs)
        return (2.0 * vjp(g)[0],) + (None,) * (len(inputs) - 1)

    g = interp.interpret(f, [(LINEAR, interp.backward_rule(doubled))])
    np.testing.assert_allclose(jax.jit(g)(x), f(x), rtol=1e-6)
    got = jax.jit(jax.grad(lambda z: g(z).sum()))(x)
    np.testing.assert_allclose(got, 4.0 * jax.grad(lambda z: f(z).sum())(x), rtol=1e-6)
    assert sorted(set(seen)) == [0, 1]


def test_a_user_backward_rule_for_relus_equals_a_hand_written_twin():
    f, w1, w2 = _mlp_fn()
    x = jax.random.normal(jax.random.key(2), (3, 4))

    def leaky(unit, inputs, y, g):
        assert unit.kind == "relu" and unit.info.hi == np.inf
        return (jnp.where(inputs[0] > 0, g, 0.1 * g),)

    @jax.custom_vjp
    def twin(v):
        return jnp.maximum(v, 0.0)

    twin.defvjp(lambda v: (twin(v), v), lambda v, g: (jnp.where(v > 0, g, 0.1 * g),))
    ref = lambda z: twin(z @ w1 + 0.1) @ w2  # noqa: E731
    got = jax.jit(jaxsal.vanilla_grad(jaxsal.with_relu_rule(f, leaky)))(x, 1)
    np.testing.assert_allclose(got, jax.jit(jaxsal.vanilla_grad(ref))(x, 1), rtol=1e-6)
    assert not np.allclose(got, jax.jit(jaxsal.vanilla_grad(f))(x, 1))


def test_earlier_pairs_win_and_units_are_evaluated_once(cnn):
    calls = []

    def count(unit, forward, *inputs):
        calls.append(unit.kind)
        return forward(*inputs)

    g = interp.interpret(cnn.f, [(RELU, count), (LINEAR, count), (MAX_POOL, count)])
    np.testing.assert_allclose(g(cnn.x), cnn.f(cnn.x), rtol=1e-6)
    assert calls.count("relu") == 3 and calls.count("linear") == 4


def test_bad_matchers_and_rules_are_refused():
    with pytest.raises(TypeError, match="Matcher"):
        interp.interpret(jnp.sin, [(lambda view: [], lambda *a: a)])
    with pytest.raises(TypeError, match="callable"):
        interp.interpret(jnp.sin, [(RELU, "guided")])
    with pytest.raises(ValueError, match="rule must be one of"):
        jaxsal.with_relu_rule(jnp.sin, "gradient")

    def leaky_unit(view):  # sin + cos as a unit, though sin's result is also used outside it
        (sin, cos, _) = view.jaxpr.eqns
        yield interp.Unit("bad", (0, 1), tuple(sin.invars), cos.outvars[0])

    def f(x):
        y = jnp.sin(x)
        return jnp.cos(y) + y

    bad = interp.Matcher("bad", leaky_unit)
    with pytest.raises(ValueError, match="used outside"):
        interp.interpret(f, [(bad, lambda u, fw, *a: fw(*a))])(1.0)
    with pytest.raises(ValueError, match=r"returned float32\[2\]; the unit computes float32\[3\]"):
        interp.interpret(jax.nn.relu, [(RELU, lambda u, fw, x: x[:2])])(jnp.ones(3))


# ----------------------------------------------------------------------------- inlined jit parameters


def test_inlined_jit_warns_once_about_a_dropped_donation(monkeypatch):
    monkeypatch.setattr(interp, "_WARNED", set())
    donating = jax.jit(lambda v: jax.nn.relu(v) * 2.0, donate_argnums=0)
    f = lambda x: donating(x * 1.0).sum(axis=1, keepdims=True)  # noqa: E731
    x = jnp.array([1.0, -1.0])
    with pytest.warns(UserWarning, match="non-default 'donated_invars'"):
        jaxsal.guided_backprop(f)(x[None], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxsal.guided_backprop(f)(x[None], 0)  # once per process
        # a plain jit has only default parameters: no warning
        jaxsal.guided_backprop(lambda x: jax.jit(jax.nn.relu)(x).sum(axis=1, keepdims=True))(x[None], 0)


# ----------------------------------------------------------------------------- clamps and dtypes


def test_clamp_guarding_a_square_root_is_not_a_relu():
    def f(x):
        return jnp.sqrt(jnp.maximum(x, 0.0) + 1e-6) + jax.nn.relu(x)

    assert count_relus(jax.make_jaxpr(f)(jnp.ones(3)).jaxpr) == 1


@pytest.mark.parametrize("norm", ["layer", "group", "batch_train"])
def test_normalisation_clamps_are_not_relus(norm):
    x = jnp.ones((2, 4, 4, 8))
    layer = {
        "layer": nn.LayerNorm(),
        "group": nn.GroupNorm(num_groups=2),
        "batch_train": nn.BatchNorm(use_running_average=False),
    }[norm]
    v = layer.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(lambda z: layer.apply(v, z, mutable=["batch_stats"]))(x)
    assert "max" in str(jaxpr)  # the fast variance's clamp is there...
    assert count_relus(jaxpr.jaxpr) == 0  # ... and is not a ReLU


def test_relu_after_a_layernorm_is_still_a_relu():
    ln = nn.LayerNorm()
    x = jnp.ones((2, 6))
    v = ln.init(jax.random.key(0), x)
    f = lambda z: jax.nn.relu(ln.apply(v, z) - 0.1) + jnp.maximum(ln.apply(v, z), 0.0)  # noqa: E731
    assert count_relus(jax.make_jaxpr(f)(x).jaxpr) == 2


def test_count_matches_for_the_conftest_cnn():
    m = SmallCNN()
    x = jnp.ones((1, 8, 8, 3))
    v = m.init(jax.random.key(0), x)
    assert count_relus(jax.make_jaxpr(lambda z: m.apply(v, z))(x).jaxpr) == 3

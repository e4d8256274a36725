"""Reference tests for the gradient methods and the ReLU-rule interpreter."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NNXCNN, SmallCNN
from flax import nnx
from jax import lax

import jaxsal

# ----------------------------------------------------------------------------- seed 7.2.1 / 7.2.2

PRE = jnp.array([[1.0, 0.0], [-1.0, -10.0]])  # activation X_n
UPSTREAM = jnp.array([[0.4, 1.1], [-0.5, -0.1]])  # gradient at X_{n+1}
SEED = {
    "vanilla": [[0.4, 0.0], [0.0, 0.0]],
    "deconvnet": [[0.4, 1.1], [0.0, 0.0]],
    "guided": [[0.4, 0.0], [0.0, 0.0]],
}
SPELLINGS = {
    "jax.nn.relu": jax.nn.relu,
    "flax.linen.relu": nn.relu,
    "flax.nnx.relu": nnx.relu,
    "maximum(x, 0)": lambda x: jnp.maximum(x, 0.0),
    "maximum(0, x)": lambda x: jnp.maximum(0.0, x),
    "jax.nn.relu6": jax.nn.relu6,
    "clip(x, 0, 6)": lambda x: jnp.clip(x, 0.0, 6.0),
}
METHOD_OF_RULE = {"deconvnet": jaxsal.deconvnet, "guided": jaxsal.guided_backprop}


def seed_model(relu):
    """Scores (1, 1) = sum(UPSTREAM * relu(x)): the gradient reaching relu's output is UPSTREAM."""
    return lambda x: jnp.sum(UPSTREAM * relu(x[0]))[None, None]


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("rule", list(SEED))
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_seed_worked_example(spelling, rule, use_jit):
    f = seed_model(SPELLINGS[spelling])
    if rule == "vanilla":
        attr = jaxsal.vanilla_grad(jaxsal.with_relu_rule(f, "vanilla"))
    else:
        attr = METHOD_OF_RULE[rule](f)
    run = jax.jit(attr) if use_jit else attr
    np.testing.assert_allclose(run(PRE[None], 0)[0], SEED[rule], atol=1e-7)


@pytest.mark.parametrize("spelling", ["jax.nn.relu", "flax.linen.relu", "flax.nnx.relu", "jax.nn.relu6"])
def test_plain_vanilla_grad_matches_seed_for_library_relus(spelling):
    # The library ReLUs define d relu(0) = 0, as the seed's rule does. (jnp.maximum
    # has derivative 0.5 at a tie; with_relu_rule(f, "vanilla") gives the seed's rule.)
    out = jaxsal.vanilla_grad(seed_model(SPELLINGS[spelling]))(PRE[None], 0)[0]
    np.testing.assert_allclose(out, SEED["vanilla"], atol=1e-7)


def test_relu6_forward_mask_is_open_interval():
    x = jnp.array([[-1.0, 0.0, 3.0, 6.0, 7.0]])
    f = lambda v: jnp.sum(jax.nn.relu6(v) * jnp.array([[1.0, 1.0, -1.0, 1.0, 1.0]]))[None, None]  # noqa: E731
    np.testing.assert_array_equal(jaxsal.guided_backprop(f)(x, 0), [[0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(jaxsal.deconvnet(f)(x, 0), [[1, 1, 0, 1, 1]])
    np.testing.assert_array_equal(
        jaxsal.vanilla_grad(jaxsal.with_relu_rule(f, "vanilla"))(x, 0), [[0, 0, -1, 0, 0]]
    )


# ----------------------------------------------------------------------------- closed forms


@pytest.fixture(scope="module")
def linear():
    w = jax.random.normal(jax.random.key(0), (6, 4))
    x = jax.random.normal(jax.random.key(1), (5, 6))
    return w, x, (lambda v: v @ w)


@pytest.mark.parametrize("t", [0, 3])
def test_linear_closed_forms(linear, t):
    w, x, f = linear
    expected = jnp.broadcast_to(w[:, t], x.shape)
    np.testing.assert_allclose(jaxsal.vanilla_grad(f)(x, t), expected, rtol=1e-6)
    np.testing.assert_allclose(jaxsal.grad_x_input(f)(x, t), x * w[:, t][None], rtol=1e-6)


def test_per_example_targets_and_callable(linear):
    w, x, f = linear
    t = jnp.array([0, 1, 2, 3, 0])
    np.testing.assert_allclose(jaxsal.vanilla_grad(f)(x, t), w[:, t].T, rtol=1e-6)
    # A callable objective: the margin of class 1 over class 2.
    margin = lambda s: s[:, 1] - s[:, 2]  # noqa: E731
    np.testing.assert_allclose(
        jaxsal.vanilla_grad(f)(x, margin), jnp.broadcast_to(w[:, 1] - w[:, 2], x.shape), rtol=1e-5
    )


def test_traced_out_of_range_target_gives_nan_not_a_clamped_class(linear):
    w, x, f = linear
    out = jax.jit(jaxsal.vanilla_grad(f))(x, jnp.array([0, 1, 9, 3, -1]))
    assert bool(jnp.all(jnp.isnan(out[2]))) and bool(jnp.all(jnp.isnan(out[4])))
    np.testing.assert_allclose(out[0], w[:, 0], rtol=1e-6)


def test_vanilla_grad_matches_finite_differences_on_a_cnn(cnn):
    f64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), cnn.variables)
    x = np.asarray(cnn.x, np.float64)
    with jax.enable_x64(True):
        f = lambda v: cnn.module.apply(f64, v)  # noqa: E731
        grad = np.asarray(jaxsal.vanilla_grad(f)(jnp.asarray(x), 2))
        rng = np.random.default_rng(0)
        for _ in range(3):
            v = rng.normal(size=x.shape)
            eps = 1e-6
            fd = (
                np.asarray(f(jnp.asarray(x + eps * v)))[:, 2] - np.asarray(f(jnp.asarray(x - eps * v)))[:, 2]
            ) / (2 * eps)
            np.testing.assert_allclose(np.sum((grad * v).reshape(3, -1), axis=1), fd, rtol=1e-6)


# ----------------------------------------------------------------------------- twins


def _twin_relu(rule):
    """An independent custom_vjp ReLU with the rule written out by hand."""

    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0.0)

    def fwd(x):
        return relu(x), x

    def bwd(x, g):
        if rule == "deconvnet":
            return (jnp.where(g > 0, g, 0.0),)
        return (jnp.where((x > 0) & (g > 0), g, 0.0),)

    relu.defvjp(fwd, bwd)
    return relu


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_linen_cnn_equals_hand_written_twin(cnn, rule):
    twin = SmallCNN(act=_twin_relu(rule))
    twin_f = lambda x: twin.apply(cnn.variables, x)  # noqa: E731
    np.testing.assert_allclose(twin_f(cnn.x), cnn.f(cnn.x), rtol=1e-6)
    got = METHOD_OF_RULE[rule](cnn.f)(cnn.x, 1)
    want = jaxsal.vanilla_grad(twin_f)(cnn.x, 1)
    assert float(jnp.max(jnp.abs(want))) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # ... and differs from the plain gradient, so the test could fail.
    assert not np.allclose(got, jaxsal.vanilla_grad(cnn.f)(cnn.x, 1), atol=1e-6)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_nnx_cnn_equals_hand_written_twin(nnx_cnn, rule):
    model = nnx_cnn.model
    twin = NNXCNN(nnx.Rngs(0), act=_twin_relu(rule))
    np.testing.assert_allclose(twin(nnx_cnn.x), model(nnx_cnn.x), rtol=1e-6)
    got = METHOD_OF_RULE[rule](model)(nnx_cnn.x, 2)
    want = jaxsal.vanilla_grad(twin)(nnx_cnn.x, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, jaxsal.vanilla_grad(model)(nnx_cnn.x, 2), atol=1e-6)


def test_deconvnet_ignores_the_input_without_max_pooling(cnn):
    # Zeiler & Fergus' backward pass only keeps max-pool switches from the forward pass.
    a = jaxsal.deconvnet(cnn.f)(cnn.x, 1)
    b = jaxsal.deconvnet(cnn.f)(cnn.x * -3.0 + 1.0, 1)
    np.testing.assert_allclose(a, b, rtol=1e-5)


# ----------------------------------------------------------------------------- control flow


def _control_flow_model(relu):
    @jax.custom_jvp
    def odd(v):  # a custom_jvp without ReLU: its own (deliberately unusual) derivative must survive
        return jnp.sin(v)

    odd.defjvps(lambda t, ans, v: 3.0 * t * jnp.cos(v))

    def f(x):
        h = x[0]
        h = lax.scan(lambda c, row: (c, relu(row - 0.1)), 0.0, h)[1]
        h = lax.cond(jnp.sum(h) > -1e9, lambda a: relu(a + 0.2), lambda a: a, h)
        h = jax.checkpoint(lambda a: relu(a - 0.05))(h)
        h = lax.fori_loop(0, 2, lambda i, a: relu(a * 1.1 - 0.02), h)
        h = odd(h)
        return jnp.sum(h * jnp.linspace(-1.0, 1.0, h.size).reshape(h.shape))[None, None]

    return f


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_relus_inside_control_flow_and_custom_derivatives(rule):
    x = jax.random.normal(jax.random.key(3), (1, 4, 5))
    f = _control_flow_model(jax.nn.relu)
    twin = _control_flow_model(_twin_relu(rule))
    np.testing.assert_allclose(jaxsal.with_relu_rule(f, rule)(x), f(x), rtol=1e-6)
    got = METHOD_OF_RULE[rule](f)(x, 0)
    np.testing.assert_allclose(got, jaxsal.vanilla_grad(twin)(x, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.jit(METHOD_OF_RULE[rule](f))(x, 0), got, rtol=1e-5, atol=1e-7)


def test_relu_inside_while_loop_forward_is_unchanged():
    # Reverse-mode AD cannot pass a while_loop at all, so only the forward pass can be checked.
    def f(x):
        return lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, jax.nn.relu(c[1]) - 0.5), (0, x))[1]

    x = jax.random.normal(jax.random.key(4), (2, 3))
    g = jaxsal.with_relu_rule(f, "guided")
    np.testing.assert_array_equal(g(x), f(x))
    np.testing.assert_array_equal(jax.jit(g)(x), f(x))


def test_model_without_relu_warns():
    f = lambda x: jnp.tanh(x) @ jnp.ones((3, 2))  # noqa: E731
    with pytest.warns(UserWarning, match="no ReLU found"):
        jaxsal.guided_backprop(f)(jnp.ones((1, 3)), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxsal.guided_backprop(lambda x: jax.nn.relu(x) @ jnp.ones((3, 2)))(jnp.ones((1, 3)), 0)


def test_integer_max_is_not_a_relu():
    def f(x):
        idx = jnp.maximum(jnp.arange(3) - 1, 0)  # integer max: index arithmetic, not a ReLU
        return (x[:, idx] * 2.0).sum(axis=1, keepdims=True)

    with pytest.warns(UserWarning, match="no ReLU found"):
        out = jaxsal.guided_backprop(f)(jnp.array([[1.0, -2.0, 3.0]]), 0)
    np.testing.assert_allclose(out, [[4.0, 2.0, 0.0]])


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_custom_vjp_containing_a_relu_is_re_evaluated_with_the_rule(rule):
    @jax.custom_vjp
    def block(v):
        return jax.nn.relu(v) * 2.0

    block.defvjp(lambda v: (block(v), v), lambda v, g: (g * 100.0,))  # a custom rule the ReLU rule replaces
    f = lambda x: jnp.sum(block(x[0] - 0.3) * jnp.array([1.0, -1.0, 2.0]))[None, None]  # noqa: E731
    twin_relu = _twin_relu(rule)
    twin = lambda x: jnp.sum(twin_relu(x[0] - 0.3) * 2.0 * jnp.array([1.0, -1.0, 2.0]))[None, None]  # noqa: E731
    x = jnp.array([[1.0, 2.0, -1.0]])
    np.testing.assert_allclose(METHOD_OF_RULE[rule](f)(x, 0), jaxsal.vanilla_grad(twin)(x, 0), rtol=1e-6)


def test_readme_jit_pattern_takes_variables_as_an_argument(cnn):
    traces = []

    @jax.jit
    def explain(variables, x, y):
        traces.append(1)
        return jaxsal.guided_backprop(lambda v: cnn.module.apply(variables, v))(x, y)

    y = jnp.array([0, 1, 2])
    a = explain(cnn.variables, cnn.x, y)
    scaled = jax.tree_util.tree_map(lambda p: p * 1.5, cnn.variables)
    b = explain(scaled, cnn.x, y)
    assert len(traces) == 1
    assert not np.allclose(a, b), "new variables must change the result (they are not baked in)"
    np.testing.assert_allclose(
        b, jaxsal.guided_backprop(lambda v: cnn.module.apply(scaled, v))(cnn.x, y), rtol=1e-5, atol=1e-7
    )


# ----------------------------------------------------------------------------- numerical clamps, dtypes


class _Transformerish(nn.Module):
    """Dense - LayerNorm - act - tanh - LayerNorm - Dense; LayerNorm's fast variance holds
    max(0, E[x²] − E[x]²). ``act=None`` is GELU (a model with no ReLU)."""

    act: Callable | None = None

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(name="ln1")(nn.Dense(8, name="fc1")(x))
        h = nn.gelu(h) if self.act is None else self.act(h)
        h = nn.LayerNorm(name="ln2")(jnp.tanh(nn.Dense(8, name="fc2")(h)))
        return nn.Dense(3, name="head")(h)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_layernorm_clamp_is_not_a_relu(rule):
    x = jax.random.normal(jax.random.key(5), (2, 5))
    m = _Transformerish()
    v = m.init(jax.random.key(6), x)
    f = lambda z: m.apply(v, z)  # noqa: E731
    with pytest.warns(UserWarning, match="no ReLU found"):
        got = jax.jit(METHOD_OF_RULE[rule](f))(x, 1)
    np.testing.assert_array_equal(got, jax.jit(jaxsal.vanilla_grad(f))(x, 1))


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_relus_next_to_layernorm_are_rewritten_and_the_clamp_left_alone(rule):
    x = jax.random.normal(jax.random.key(7), (3, 5))
    m = _Transformerish(act=nn.relu)
    v = m.init(jax.random.key(8), x)
    f = lambda z: m.apply(v, z)  # noqa: E731
    twin = lambda z: _Transformerish(act=_twin_relu(rule)).apply(v, z)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = jax.jit(METHOD_OF_RULE[rule](f))(x, 2)
    np.testing.assert_allclose(got, jax.jit(jaxsal.vanilla_grad(twin))(x, 2), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, jax.jit(jaxsal.vanilla_grad(f))(x, 2), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("spelling", ["jax.nn.relu", "maximum(x, 0)", "clip(x, 0, 6)"])
def test_relus_are_found_in_every_float_dtype(dtype, spelling):
    from jaxsal._src.relu import count_relus

    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        relu = SPELLINGS[spelling]
        assert count_relus(jax.make_jaxpr(relu)(jnp.ones(3, dt)).jaxpr) == 1
        f = lambda x: jnp.sum(UPSTREAM.astype(dt) * relu(x[0]))[None, None]  # noqa: E731
        for rule in ("deconvnet", "guided"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = METHOD_OF_RULE[rule](f)(PRE.astype(dt)[None], 0)[0]
            assert got.dtype == dt
            want = jnp.asarray(SEED[rule], jnp.float32).astype(dt)  # UPSTREAM rounded to dt
            np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))

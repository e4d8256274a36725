"""The elementwise max-pool derivative that every gradient method uses (max_pool.py).

XLA differentiates ``reduce_window`` max through ``select_and_scatter``, slow on CPU;
jaxsal re-evaluates non-overlapping max-pools with an elementwise derivative. These
tests pin that the derivative is *exactly* XLA's (first maximum of each window in
row-major order, ties included) and that the rewrite is applied where it should be and
nowhere else.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src.max_pool import _max_pool, count_max_pools, with_fast_max_pool


def _xla_pool(window, strides=None, padding="VALID"):
    return lambda z: jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, window, strides or window, padding)


CASES = [
    ((2, 8, 8, 3), (1, 2, 2, 1)),  # nn.max_pool(x, (2, 2), (2, 2))
    ((2, 9, 7, 3), (1, 2, 2, 1)),  # odd sizes: VALID drops the last row/column
    ((2, 9, 9, 2), (1, 3, 3, 1)),
    ((5, 6), (1, 3)),
    ((3, 8, 8, 4), (1, 2, 2, 2)),  # pooling over channels too
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(("shape", "window"), CASES)
def test_derivative_equals_select_and_scatter_exactly(shape, window, ties):
    rng = np.random.default_rng(0)
    # small integers make most windows hold several equal maxima
    x = (
        rng.integers(0, 3, size=shape).astype(np.float32)
        if ties
        else rng.normal(size=shape).astype(np.float32)
    )
    ref_y, ref_vjp = jax.vjp(_xla_pool(window), x)
    y, vjp = jax.vjp(lambda z: _max_pool(z, window), x)
    np.testing.assert_array_equal(y, ref_y)
    g = rng.normal(size=ref_y.shape).astype(np.float32)
    np.testing.assert_array_equal(vjp(g)[0], ref_vjp(g)[0])
    t = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(
        jax.jvp(lambda z: _max_pool(z, window), (x,), (t,))[1], jax.jvp(_xla_pool(window), (x,), (t,))[1]
    )


def _cnn(z):
    h = jax.nn.relu(z)
    h = nn.max_pool(h, (2, 2), (2, 2))
    return jnp.stack([h.sum((1, 2, 3)), (h**2).sum((1, 2, 3))], axis=1)


def test_gradient_methods_use_it_and_agree_with_plain_autodiff():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    t = jnp.array([0, 1])
    for method in (jaxsal.vanilla_grad, jaxsal.grad_x_input, jaxsal.guided_backprop):
        jaxpr = str(jax.make_jaxpr(lambda z, method=method: method(_cnn)(z, t))(x))
        assert "select_and_scatter" not in jaxpr, method.__name__
    # ... while plain autodiff of the same model does use select_and_scatter
    assert "select_and_scatter" in str(jax.make_jaxpr(jax.grad(lambda z: _cnn(z).sum()))(x))
    plain = jax.grad(lambda z: jnp.take_along_axis(_cnn(z), t[:, None], 1).sum())(x)
    np.testing.assert_array_equal(jaxsal.vanilla_grad(_cnn)(x, t), plain)
    ig = jaxsal.integrated_gradients(_cnn, steps=4)
    assert "select_and_scatter" not in str(jax.make_jaxpr(lambda z: ig(z, t))(x))


def test_second_order_and_vmap():
    f = with_fast_max_pool(lambda z: _cnn(z).sum())
    ref = lambda z: _cnn(z).sum()  # noqa: E731
    x = jax.random.normal(jax.random.key(1), (1, 4, 4, 2))
    np.testing.assert_allclose(jax.hessian(f)(x), jax.hessian(ref)(x), atol=1e-6)
    xs = jax.random.normal(jax.random.key(2), (3, 1, 4, 4, 2))
    np.testing.assert_array_equal(jax.vmap(jax.grad(f))(xs), jax.vmap(jax.grad(ref))(xs))


def _avg_pool(z):
    with jax.numpy_dtype_promotion("standard"):  # flax divides by an int64 window size
        return nn.avg_pool(z, (2, 2), (2, 2))


@pytest.mark.parametrize(
    "pool",
    [
        lambda z: nn.max_pool(z, (3, 3), (2, 2)),  # overlapping windows
        lambda z: nn.max_pool(z, (2, 2), (2, 2), padding="SAME"),
        lambda z: _avg_pool(z),
        lambda z: jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 1, 1, 1), (1, 1, 1, 1), "VALID"),
    ],
    ids=["overlapping", "padded", "avg", "window-1"],
)
def test_other_pools_are_left_alone(pool):
    x = jnp.zeros((1, 7, 7, 2))
    assert count_max_pools(jax.make_jaxpr(pool)(x).jaxpr) == 0


def test_found_inside_jit_and_scan():
    @jax.jit
    def inner(z):
        return nn.max_pool(z, (2, 2), (2, 2))

    def scanned(z):
        return jax.lax.scan(lambda c, _: (c, inner(c).sum()), z, None, length=2)[1].sum()

    x = jax.random.normal(jax.random.key(3), (1, 4, 4, 1))
    assert count_max_pools(jax.make_jaxpr(scanned)(x).jaxpr) >= 1
    fast = with_fast_max_pool(scanned)
    assert "select_and_scatter" not in str(jax.make_jaxpr(jax.grad(fast))(x))
    np.testing.assert_array_equal(jax.grad(fast)(x), jax.grad(scanned)(x))


def test_compatibility_module_re_exports_the_same_objects():
    from jaxsal._src import max_pool, relu, relu_rules

    assert relu_rules._max_pool is max_pool._max_pool
    assert relu_rules.with_fast_max_pool is max_pool.with_fast_max_pool
    assert relu_rules.with_relu_rule is relu.with_relu_rule and relu_rules.RULES == relu.RULES
    x = jax.random.normal(jax.random.key(5), (1, 4, 4, 2))
    closed = jax.make_jaxpr(_cnn)(x)
    out = relu_rules.eval_with_rule(closed.jaxpr, closed.consts, x, rule="guided")
    np.testing.assert_array_equal(out[0], _cnn(x))

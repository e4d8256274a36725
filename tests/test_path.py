"""Integrated Gradients: quadrature rules, closed forms, completeness, chunking."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SmallCNN

import jaxsal
from jaxsal._src.path import RULES

# ----------------------------------------------------------------------------- rules


def captum_nodes_weights(method, n):
    """Captum's definitions (captum/attr/_utils/approximation_methods.py), written out."""
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + x), 0.5 * w
    w = np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        w[0] /= 2
        w[-1] /= 2
        return np.linspace(0, 1, n), w
    return {
        "riemann_left": np.linspace(0, 1 - 1 / n, n),
        "riemann_right": np.linspace(1 / n, 1, n),
        "riemann_middle": np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n),
    }[method], w


@pytest.mark.parametrize("n", [2, 7, 50])
@pytest.mark.parametrize("method", RULES)
def test_rule_weights_sum_to_one_and_integrate_polynomials(method, n):
    q = jaxsal.quadrature(method, n)
    assert q.alphas.shape == q.weights.shape == (n,)
    assert np.all((q.alphas >= 0) & (q.alphas <= 1))
    np.testing.assert_allclose(q.weights.sum(), 1.0, rtol=1e-12)
    for degree in range(q.exact_degree + 1):
        np.testing.assert_allclose(np.sum(q.weights * q.alphas**degree), 1 / (degree + 1), rtol=1e-10)
    # ... and the promise is tight: one degree more is not exact (visible in float64 for small n).
    d = q.exact_degree + 1
    if n <= 7:
        assert abs(np.sum(q.weights * q.alphas**d) - 1 / (d + 1)) > 1e-12


@pytest.mark.parametrize("method", RULES)
def test_rules_use_captums_nodes_and_weights_except_trapezoid(method):
    n = 9
    q = jaxsal.quadrature(method, n)
    alphas, weights = captum_nodes_weights(method, n)
    np.testing.assert_allclose(q.alphas, alphas, rtol=1e-12, atol=1e-15)
    if method == "riemann_trapezoid":
        # Captum's weights sum to (n-1)/n: ours are Captum's scaled by n/(n-1).
        np.testing.assert_allclose(weights.sum(), (n - 1) / n)
        np.testing.assert_allclose(q.weights, weights * n / (n - 1), rtol=1e-12)
    else:
        np.testing.assert_allclose(q.weights, weights, rtol=1e-12)


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("method", RULES)
def test_linear_model_ig_is_exact_for_every_rule(method):
    w = jax.random.normal(jax.random.key(0), (6, 4))
    x = jax.random.normal(jax.random.key(1), (5, 6))
    base = jax.random.normal(jax.random.key(2), (6,))
    f = lambda v: v @ w  # noqa: E731
    for baseline, b in ((None, jnp.zeros((1, 6))), (base, base[None])):
        ig = jaxsal.integrated_gradients(f, baseline=baseline, steps=5, method=method)
        np.testing.assert_allclose(ig(x, 2), (x - b) * w[:, 2][None], rtol=2e-5, atol=1e-6)


def test_quadratic_model_needs_the_right_rule():
    # f(x) = sum(x^2): the integrand is linear in alpha, so rules exact to degree >= 1
    # give IG = x^2 exactly, while left/right Riemann are off by x^2 / n.
    f = lambda v: jnp.sum(v**2, axis=1, keepdims=True)  # noqa: E731
    x = jnp.array([[1.0, -2.0, 3.0]])
    for method, n in (("gausslegendre", 1), ("riemann_middle", 4), ("riemann_trapezoid", 4)):
        np.testing.assert_allclose(
            jaxsal.integrated_gradients(f, steps=n, method=method)(x, 0), x**2, rtol=1e-6
        )
    np.testing.assert_allclose(
        jaxsal.integrated_gradients(f, steps=4, method="riemann_left")(x, 0), x**2 * 0.75, rtol=1e-6
    )


# ----------------------------------------------------------------------------- completeness


def _with_random_biases(variables, scale=0.1):
    def perturb(path, a):
        if "bias" in jax.tree_util.keystr(path):
            return a + scale * jax.random.normal(jax.random.key(len(jax.tree_util.keystr(path))), a.shape)
        return a

    return jax.tree_util.tree_map_with_path(perturb, variables)


def test_completeness_on_a_smooth_flax_cnn():
    module = SmallCNN(act=nn.softplus)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    variables = _with_random_biases(module.init(jax.random.key(0), x))
    f = lambda v: module.apply(variables, v)  # noqa: E731
    r = jax.jit(jaxsal.integrated_gradients(f, steps=50))(x)
    c = jaxsal.completeness_gap(f, r, x)
    assert float(jnp.min(jnp.abs(c.score_difference))) > 1e-2
    assert float(jnp.max(c.relative_gap)) < 1e-3
    np.testing.assert_allclose(c.gap, c.attribution_sum - c.score_difference, rtol=1e-6)


def test_completeness_on_a_relu_cnn_converges_with_steps():
    # A ReLU network's path integrand is piecewise constant in alpha, so no rule is
    # exact and Gauss-Legendre loses its high order: the gap shrinks only ~1/steps.
    module = SmallCNN()
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    variables = _with_random_biases(module.init(jax.random.key(0), x))
    f = lambda v: module.apply(variables, v)  # noqa: E731
    gaps = {}
    for steps in (50, 800):
        r = jax.jit(jaxsal.integrated_gradients(f, steps=steps, batch_size=512))(x)
        gaps[steps] = float(jnp.mean(jaxsal.completeness_gap(f, r, x).relative_gap))
    assert gaps[50] < 5e-2
    assert gaps[800] < gaps[50] / 4


def test_completeness_gap_checks_shapes(cnn):
    with pytest.raises(ValueError, match="shaped like x"):
        jaxsal.completeness_gap(cnn.f, jnp.zeros((1, 2)), cnn.x)


# ----------------------------------------------------------------------------- chunking & targets


@pytest.mark.parametrize("batch_size", [1, 4, 7, 1000])
def test_batch_size_does_not_change_the_result(cnn, batch_size):
    ig = lambda **kw: jax.jit(jaxsal.integrated_gradients(cnn.f, steps=5, method="riemann_middle", **kw))  # noqa: E731
    np.testing.assert_allclose(ig(batch_size=batch_size)(cnn.x, 1), ig()(cnn.x, 1), rtol=1e-5, atol=1e-7)


def test_target_none_is_resolved_at_the_input_not_at_path_points(cnn):
    predicted = jnp.argmax(cnn.f(cnn.x), axis=1)
    ig = jaxsal.integrated_gradients(cnn.f, steps=4)
    np.testing.assert_allclose(ig(cnn.x), ig(cnn.x, predicted), rtol=1e-6)


def test_baseline_broadcasts_and_is_checked(cnn):
    one = jnp.full(cnn.x.shape[1:], 0.3)
    ig = lambda b: jaxsal.integrated_gradients(cnn.f, baseline=b, steps=4)(cnn.x, 0)  # noqa: E731
    np.testing.assert_allclose(ig(one), ig(jnp.broadcast_to(one, cnn.x.shape)), rtol=1e-6)
    np.testing.assert_allclose(ig(0.3), ig(one), rtol=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        ig(jnp.zeros((5, 5)))

"""Attributions as typed values, the one target resolver, and the public extension points
(``jaxsal.attribution``, ``jaxsal.cam``, ``jaxsal.at_layer``) against closed forms."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST, build, model_of

import jaxsal
from jaxsal._src import contract

KEY = jax.random.key(0)
TOL = dict(rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- typed values


@pytest.mark.parametrize("method", list(jaxsal.methods().values()), ids=list(jaxsal.methods()))
def test_every_factory_returns_an_attribution_with_its_metadata(method, cnn):
    attr = build(method, cnn)
    assert isinstance(attr, jaxsal.Attribution)
    assert attr.stochastic == method.stochastic
    assert attr.output == method.output
    assert callable(attr.scores_fn)
    np.testing.assert_allclose(attr.scores_fn(cnn.x), model_of(method, cnn)(cnn.x), **TOL)
    assert attr.name and attr.name in repr(attr)
    with pytest.raises(TypeError):
        attr.hyper["new"] = 1  # read-only


def test_wrapped_plain_function_never_resolves_the_target_on_noisy_inputs(cnn):
    """0.1.0 bug: metadata on closures was lost in a lambda, so SmoothGrad resolved
    target=None on every noisy copy (3.55 max abs difference). Now it raises."""
    vg = jaxsal.vanilla_grad(cnn.f)
    sg = jaxsal.smoothgrad(vg, n=8, noise_level=0.5)
    wrapped = [
        lambda x, t=None, *, key=None: vg(x, t, key=key),
        functools.partial(vg.__call__),
        vg.fn,
    ]
    for w in wrapped:
        plain = jaxsal.smoothgrad(w, n=8, noise_level=0.5)
        with pytest.raises(
            ValueError, match=r"cannot resolve target=None.*jaxsal.attribution\(fn, scores_fn=f\)"
        ):
            plain(cnn.x, key=KEY)
        t = jnp.argmax(cnn.f(cnn.x), axis=1)
        np.testing.assert_array_equal(plain(cnn.x, t, key=KEY), sg(cnn.x, key=KEY))
        stated = jaxsal.smoothgrad(jaxsal.attribution(w, scores_fn=cnn.f), n=8, noise_level=0.5)
        np.testing.assert_array_equal(stated(cnn.x, key=KEY), sg(cnn.x, key=KEY))
    # What 0.1.0 computed for the lambda: the argmax taken on every noisy copy. It differs here.
    sigma = jaxsal.noise_sigma(cnn.x, 0.5)
    noisy = [
        cnn.x + sigma * jax.random.normal(jax.random.split(k)[0], cnn.x.shape)
        for k in jax.random.split(KEY, 8)
    ]
    moved = sum(int(jnp.sum(jnp.argmax(cnn.f(z), 1) != t)) for z in noisy)
    per_copy = jnp.mean(jnp.stack([vg(z) for z in noisy]), axis=0)
    assert moved > 0 and float(jnp.max(jnp.abs(per_copy - sg(cnn.x, key=KEY)))) > 1e-3


def test_metrics_refuse_target_none_for_a_plain_function(cnn):
    vg = jaxsal.vanilla_grad(cnn.f)
    plain = lambda x, t=None, *, key=None: vg(x, t)  # noqa: E731
    with pytest.raises(ValueError, match="max_sensitivity cannot resolve target=None"):
        jaxsal.metrics.max_sensitivity(plain, cnn.x, key=KEY, samples=2)
    a = jaxsal.metrics.max_sensitivity(plain, cnn.x, 1, key=KEY, samples=2)
    b = jaxsal.metrics.max_sensitivity(vg, cnn.x, 1, key=KEY, samples=2)
    np.testing.assert_array_equal(a.sensitivities, b.sensitivities)


def test_attribution_validates_its_fields():
    with pytest.raises(TypeError, match="fn must be callable"):
        jaxsal.Attribution(3, None)
    with pytest.raises(TypeError, match="scores_fn must be a callable"):
        jaxsal.attribution(lambda x, t=None, *, key=None: x, scores_fn="model")
    with pytest.raises(ValueError, match="output must be 'input', 'layer' or 'activation'"):
        jaxsal.attribution(lambda x, t=None, *, key=None: x, scores_fn=None, output="pixels")
    with pytest.raises(TypeError, match="smoothgrad wraps an attribution function"):
        jaxsal.smoothgrad(42)


def test_wrappers_carry_the_inner_metadata(cnn):
    p = jaxsal.flax.probe(cnn.module, cnn.variables, cnn.layer)
    sg = jaxsal.smoothgrad(jaxsal.grad_cam(p), n=3)
    assert sg.output == "layer" and sg.stochastic and sg.name == "smoothgrad(grad_cam)"
    assert sg.hyper["n"] == 3 and sg.hyper["attr"].name == "grad_cam"
    assert jaxsal.integrated_gradients(cnn.f, steps=7).hyper["steps"] == 7


def test_one_target_resolver():
    scores = jnp.array([[0.0, 2.0, 1.0], [3.0, 3.0, -1.0]])
    np.testing.assert_array_equal(contract.resolve_target(scores, None), [1, 0])  # ties: lowest index
    assert contract.resolve_target(scores, 2) == 2
    fn = lambda s: s[:, 0]  # noqa: E731
    assert contract.resolve_target(scores, fn) is fn
    with pytest.raises(ValueError, match="out of range for 3 classes"):
        contract.resolve_target(scores, 3)
    with pytest.raises(ValueError, match="target must be a scalar or have shape"):
        contract.resolve_target(scores, np.array([0, 1, 2]))


# ----------------------------------------------------------------------------- cam(probe, weights_fn)


def test_cam_with_user_weights_equals_the_builtin_variants(cnn):
    p = jaxsal.flax.probe(cnn.module, cnn.variables, cnn.layer)
    t = jnp.array([0, 3, 1])
    mean_grad = lambda a, g: g.mean(axis=(1, 2), keepdims=True)  # noqa: E731
    np.testing.assert_allclose(jaxsal.cam(p, mean_grad)(cnn.x, t), jaxsal.grad_cam(p)(cnn.x, t), **TOL)
    np.testing.assert_allclose(
        jaxsal.cam(p, lambda a, g: g, relu=False)(cnn.x, t), jaxsal.hires_cam(p, relu=False)(cnn.x, t), **TOL
    )
    # a new variant: |gradient|-weighted; by hand
    _, a, g = jaxsal._src.probe.layer_gradient(p, cnn.x, t)
    np.testing.assert_allclose(
        jaxsal.cam(p, lambda a, g: jnp.abs(g))(cnn.x, t), jax.nn.relu((jnp.abs(g) * a).sum(-1)), **TOL
    )
    with pytest.raises(ValueError, match=r"does not broadcast to the activations"):
        jaxsal.cam(p, lambda a, g: g[:, :1, :1, :3])(cnn.x, t)
    with pytest.raises(TypeError, match="weights_fn must be a callable"):
        jaxsal.cam(p, "mean")


# ----------------------------------------------------------------------------- at_layer


def _linear_head_probe():
    """A ReLU feature layer and a linear head: closed forms at the layer."""
    kf = jax.random.normal(jax.random.key(2), (6, 5))
    w = jax.random.normal(jax.random.key(3), (5, 4))
    bias = jnp.array([0.1, -0.2, 0.3, 0.0])
    features = lambda x: jax.nn.relu(x @ kf)  # noqa: E731
    head = lambda a: a @ w + bias[None]  # noqa: E731
    x = jax.random.normal(jax.random.key(4), (3, 6))
    return jaxsal.probe(features, head, name="hidden"), features, w, x


def test_at_layer_closed_forms_on_a_linear_head():
    p, features, w, x = _linear_head_probe()
    t = jnp.array([0, 2, 3])
    a = features(x)
    wt = w[:, t].T  # (B, 5)
    np.testing.assert_allclose(jaxsal.vanilla_grad(jaxsal.at_layer(p))(x, t), wt, **TOL)
    np.testing.assert_allclose(jaxsal.layer_grad_x_activation(p)(x, t), a * wt, **TOL)
    # IG on a linear head is exact for every rule: (A(x) - A(x')) w_c, baseline an input mapped through
    base = jnp.full((6,), 0.3)
    for rule in ("riemann_left", "gausslegendre"):
        lig = jaxsal.layer_integrated_gradients(p, baseline=base, steps=3, method=rule)
        np.testing.assert_allclose(lig(x, t), (a - features(base[None])) * wt, **TOL)


def test_at_layer_sees_skip_connections_and_is_completeness_exact_in_layer_space():
    class Residual(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.tanh(nn.Dense(5, name="inner")(x))
            return nn.Dense(3, name="out")(h) + nn.Dense(3, name="skip")(x)

    m = Residual()
    x = jax.random.normal(jax.random.key(5), (4, 6))
    v = m.init(jax.random.key(6), x)
    p = jaxsal.flax.probe(m, v, "inner")
    t = jnp.array([0, 1, 2, 1])
    # d score / d inner-output, by hand: through tanh and "out" only; "skip" does not depend on it
    z = x @ v["params"]["inner"]["kernel"] + v["params"]["inner"]["bias"][None]
    expected = (1 - jnp.tanh(z) ** 2) * v["params"]["out"]["kernel"][:, t].T
    np.testing.assert_allclose(jaxsal.vanilla_grad(jaxsal.at_layer(p))(x, t), expected, **TOL)
    # completeness at the layer: sum R = S(x) - S(x; inner <- inner(x'))
    r = jaxsal.layer_integrated_gradients(p, steps=64)(x, t)
    scores, a = p.run(x, None)
    _, a0 = p.run(jnp.zeros_like(x), None)
    s_base = p.run(x, a0 - a)[0]
    gap = r.sum(1) - (scores[jnp.arange(4), t] - s_base[jnp.arange(4), t])
    assert float(jnp.max(jnp.abs(gap))) < 1e-5


def test_at_layer_composes_bounds_rows_and_resolves_targets_on_the_clean_input(cnn):
    p = jaxsal.flax.probe(cnn.module, cnn.variables, cnn.layer)
    predicted = jnp.argmax(cnn.f(cnn.x), axis=1)
    lig = jaxsal.layer_integrated_gradients(p, steps=8)
    np.testing.assert_allclose(lig(cnn.x), lig(cnn.x, predicted), **TOL)
    bounded = jaxsal.layer_integrated_gradients(p, steps=8, batch_size=3)
    np.testing.assert_allclose(bounded(cnn.x, predicted), lig(cnn.x, predicted), **TOL)
    lg = jaxsal.vanilla_grad(jaxsal.at_layer(p))
    sg0 = jaxsal.smoothgrad(lg, n=2, noise_level=0.0)
    np.testing.assert_allclose(sg0(cnn.x, key=KEY), lg(cnn.x), **TOL)
    assert jaxsal.smoothgrad(lg, n=3)(cnn.x, key=KEY).shape == (3, 4, 4, 8)
    # the same gradient as the probe's own layer gradient (what Grad-CAM averages)
    _, _, g = jaxsal._src.probe.layer_gradient(p, cnn.x, predicted)
    np.testing.assert_allclose(lg(cnn.x), g, **TOL)


def test_at_layer_bad_input(cnn):
    with pytest.raises(TypeError, match="probe must be a jaxsal probe"):
        jaxsal.at_layer(cnn.f)
    p = jaxsal.flax.probe(cnn.module, cnn.variables, cnn.layer)
    with pytest.raises(ValueError, match="at a layer the baseline is an input"):
        jaxsal.layer_integrated_gradients(p, baseline=jnp.zeros((4, 4, 8)), **FAST["integrated_gradients"])(
            cnn.x
        )

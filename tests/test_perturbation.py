"""Occlusion, feature ablation and Shapley value sampling against closed forms, naive loops,
exact enumeration and (float64, small CNN) Captum; bad input; non-differentiable models."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GRID4

import jaxsal

KEY = jax.random.key(0)
T = jnp.array([0, 3, 1])


def linear_model(shape=(8, 8, 3), classes=4, seed=0):
    w = jax.random.normal(jax.random.key(seed), (math.prod(shape), classes))
    return (lambda x: x.reshape(x.shape[0], -1) @ w), w.reshape(shape + (classes,))


def group_sums(values: np.ndarray, mask: np.ndarray, num: int) -> np.ndarray:
    """Per example, the sum of ``values (B, H, W, C)`` over each group of ``mask (H, W)``."""
    m = np.broadcast_to(np.asarray(mask)[..., None], values.shape[1:])
    return np.stack([[v[m == g].sum() for g in range(num)] for v in np.asarray(values, np.float64)])


def per_group(attr: np.ndarray, mask: np.ndarray, num: int) -> np.ndarray:
    """The (constant) value of each group in a map, read at the group's first pixel."""
    m = np.asarray(mask)
    first = [np.argwhere(m == g)[0] for g in range(num)]
    return np.stack([[a[i, j, 0] for i, j in first] for a in np.asarray(attr)])


def exact_shapley(v, num: int) -> np.ndarray:
    """Shapley values by enumeration of all coalitions; ``v(z)`` for z a bool tuple."""
    phi = np.zeros(num)
    for g in range(num):
        others = [i for i in range(num) if i != g]
        for size in range(num):
            w = math.factorial(size) * math.factorial(num - size - 1) / math.factorial(num)
            for sub in itertools.combinations(others, size):
                z = np.zeros(num, bool)
                z[list(sub)] = True
                without = v(z)
                z[g] = True
                phi[g] += w * (v(z) - without)
    return phi


# ----------------------------------------------------------------------------- occlusion


def naive_occlusion(f, x, target, window, strides, baseline=0.0):
    """Loops over Captum's window positions: ceil((H - h) / s) + 1 per axis, cut at the border."""
    x = np.asarray(x, np.float64)
    b, hh, ww, _ = x.shape
    total, count = np.zeros((b, hh, ww)), np.zeros((hh, ww))
    s_x = np.asarray(f(jnp.asarray(x, jnp.float32)))[np.arange(b), target]
    for r in range(0, math.ceil((hh - window[0]) / strides[0]) * strides[0] + 1, strides[0]):
        for c in range(0, math.ceil((ww - window[1]) / strides[1]) * strides[1] + 1, strides[1]):
            occ = x.copy()
            occ[:, r : r + window[0], c : c + window[1]] = baseline
            drop = s_x - np.asarray(f(jnp.asarray(occ, jnp.float32)))[np.arange(b), target]
            total[:, r : r + window[0], c : c + window[1]] += drop[:, None, None]
            count[r : r + window[0], c : c + window[1]] += 1
    return total / count


@pytest.mark.parametrize("window,strides", [((3, 3), (2, 2)), ((2, 4), (1, 3)), ((8, 8), (1, 1))])
def test_occlusion_equals_a_naive_loop(cnn, window, strides):
    attr = jaxsal.occlusion(cnn.f, window=window, strides=strides, baseline=0.5)
    r = np.asarray(attr(cnn.x, T))
    ref = naive_occlusion(cnn.f, cnn.x, np.asarray(T), window, strides, baseline=0.5)
    np.testing.assert_allclose(r, np.broadcast_to(ref[..., None], r.shape), rtol=1e-4, atol=1e-5)


def test_occlusion_and_feature_ablation_on_a_linear_model():
    """1 x 1 windows = ablating each pixel: the drop is the pixel's contribution x_i w_i
    summed over channels, and feature ablation with the grid gives the group's."""
    f, w = linear_model()
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    contrib = np.asarray(x[..., None] * w[None])[..., 2]  # (B, H, W, C) for class 2
    occ = np.asarray(jax.jit(lambda x: jaxsal.occlusion(f, window=1, strides=1)(x, 2))(x))
    np.testing.assert_allclose(occ[..., 0], contrib.sum(-1), rtol=1e-4, atol=1e-5)
    fa = np.asarray(jax.jit(lambda x: jaxsal.feature_ablation(f, GRID4)(x, 2))(x))
    np.testing.assert_allclose(per_group(fa, GRID4, 16), group_sums(contrib, GRID4, 16), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- batching, models


@pytest.mark.parametrize(
    "name,hyper",
    [
        ("occlusion", {"window": (3, 3), "strides": (2, 2)}),
        ("feature_ablation", {"feature_mask": GRID4}),
        ("shapley_sampling", {"feature_mask": GRID4, "n": 2}),
    ],
)
def test_result_does_not_depend_on_batch_size(cnn, name, hyper):
    factory = getattr(jaxsal, name)
    run = jax.jit(lambda x, bs: factory(cnn.f, **hyper, batch_size=bs)(x, T, key=KEY), static_argnums=1)
    ref = run(cnn.x, None)
    for bs in (1, 7):
        np.testing.assert_allclose(run(cnn.x, bs), ref, rtol=1e-5, atol=1e-6)


def test_batch_size_bounds_every_model_call(cnn):
    seen = []

    def f(x):
        seen.append(x.shape[0])
        return cnn.f(x)

    for attr in (
        jaxsal.occlusion(f, window=3, strides=2, batch_size=5),
        jaxsal.feature_ablation(f, batch_size=5),
        jaxsal.shapley_sampling(f, GRID4, n=3, batch_size=5),
        jaxsal.kernel_shap(f, GRID4, n=30, batch_size=5),
        jaxsal.lime(f, GRID4, n=30, batch_size=5),
        jaxsal.rise(f, n=40, batch_size=5),
    ):
        seen.clear()
        jax.eval_shape(lambda x, a=attr: a(x, key=KEY), cnn.x)  # target=None: the clean pass too
        assert seen and max(seen) <= 5, (attr.name, seen)


def rounding_model(cnn):
    """Not differentiable: rounded scores plus a one-hot of an argmax inside."""

    def f(x):
        s = cnn.f(x)
        return jnp.round(s * 100) / 100 + jax.nn.one_hot(jnp.argmax(x.reshape(x.shape[0], -1), axis=1) % 5, 5)

    return f


def test_forward_only_methods_explain_non_differentiable_models(cnn):
    f = rounding_model(cnn)
    # Its gradient is zero everywhere (round and argmax): gradient methods see nothing.
    assert float(jnp.max(jnp.abs(jaxsal.vanilla_grad(f)(cnn.x, T)))) == 0.0
    for attr in (  # the others share their machinery (forward_rows)
        jaxsal.occlusion(f, window=3, strides=2),
        jaxsal.kernel_shap(f, GRID4, n=40),
        jaxsal.rise(f, n=16, grid=3),
    ):
        r = jax.jit(lambda x, a=attr: a(x, T, key=KEY))(cnn.x)
        assert r.shape == cnn.x.shape and bool(jnp.all(jnp.isfinite(r))), attr.name
        assert float(jnp.max(jnp.abs(r))) > 0, attr.name


# ----------------------------------------------------------------------------- Shapley sampling


@pytest.mark.parametrize("n", [1, 3])
def test_shapley_sampling_efficiency_holds_for_any_n(cnn, n):
    base = 0.3
    r = jax.jit(lambda x: jaxsal.shapley_sampling(cnn.f, GRID4, n=n, baseline=base)(x, T, key=KEY))(cnn.x)
    total = per_group(r, GRID4, 16).sum(axis=1)
    s = (
        np.asarray(cnn.f(cnn.x))[np.arange(3), T]
        - np.asarray(cnn.f(jnp.full_like(cnn.x, base)))[np.arange(3), T]
    )
    np.testing.assert_allclose(total, s, rtol=1e-5, atol=1e-5)


def tabular_model():
    """An 8-feature model with interactions, and an input with a nonzero baseline."""
    w = np.array([0.5, -1.0, 2.0, 0.3, -0.7, 1.1, 0.0, 0.9])

    def f(x):
        lin = x @ jnp.asarray(w, x.dtype)
        inter = x[:, 0] * x[:, 1] - 2.0 * x[:, 2] * x[:, 5] * x[:, 7] + jnp.tanh(x[:, 3] + x[:, 4])
        return jnp.stack([lin + inter, -lin], axis=1)

    x = jnp.asarray([[1.0, 2.0, -1.0, 0.5, 1.5, 0.8, -2.0, 1.2]])
    base = jnp.asarray([0.2, -0.1, 0.0, 0.3, 0.0, -0.5, 0.1, 0.0])
    return f, x, base


def enumerated_shapley(f, x, base):
    xs, bs = np.asarray(x[0]), np.asarray(base)
    cache = {}

    def v(z):
        key = z.tobytes()
        if key not in cache:
            cache[key] = float(f(jnp.asarray(np.where(z, xs, bs)[None], jnp.float32))[0, 0])
        return cache[key]

    return exact_shapley(v, 8)


def errors(method, f, x, base, ns, keys=4):
    exact = enumerated_shapley(f, x, base)
    mask = np.arange(8)
    out = []
    for n in ns:
        attr = method(f, mask, n=n, baseline=base)
        run = jax.jit(lambda xx, k, a=attr: a(xx, 0, key=k))
        err = [np.abs(np.asarray(run(x, jax.random.key(i)))[0] - exact).max() for i in range(keys)]
        out.append(float(np.mean(err)))
    return exact, out


def test_shapley_sampling_converges_to_exact_enumeration():
    f, x, base = tabular_model()
    # the full curve to n = 2048 is in benchmarks/results/perturbation.md
    exact, err = errors(jaxsal.shapley_sampling, f, x, base, (4, 32, 256))
    scale = np.abs(exact).max()
    assert err[0] > err[1] > err[2], err
    assert err[2] < 0.06 * scale, (err, scale)


def test_shapley_sampling_is_exact_on_a_linear_model():
    f, w = linear_model()
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    contrib = np.asarray((x - 0.2)[..., None] * w[None])[..., 1]
    r = jax.jit(lambda x: jaxsal.shapley_sampling(f, GRID4, n=1, baseline=0.2)(x, 1, key=KEY))(x)
    np.testing.assert_allclose(per_group(r, GRID4, 16), group_sums(contrib, GRID4, 16), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- feature masks


def test_feature_mask_shapes_broadcast_alike(cnn):
    ref = jaxsal.feature_ablation(cnn.f, GRID4)(cnn.x, T)
    per_example = jnp.broadcast_to(GRID4, (3, 8, 8))
    like_x = jnp.broadcast_to(GRID4[None, ..., None], cnn.x.shape)
    for m in (np.asarray(GRID4), per_example, like_x, lambda x: GRID4):
        np.testing.assert_allclose(jaxsal.feature_ablation(cnn.f, m)(cnn.x, T), ref, rtol=1e-6, atol=1e-7)


def test_traced_mask_needs_num_features_and_out_of_range_ids_give_nan(cnn):
    fn = lambda x: jnp.asarray(GRID4)[None] + jnp.zeros(x.shape[:-1], jnp.int32)  # noqa: E731  traced under jit
    with pytest.raises(ValueError, match="num_features"):
        jax.jit(lambda x: jaxsal.feature_ablation(cnn.f, fn)(x, T))(cnn.x)
    ref = jaxsal.feature_ablation(cnn.f, GRID4)(cnn.x, T)
    r = jax.jit(lambda x: jaxsal.feature_ablation(cnn.f, fn, num_features=16)(x, T))(cnn.x)
    np.testing.assert_allclose(r, ref, rtol=1e-6, atol=1e-7)
    r = jax.jit(lambda x: jaxsal.feature_ablation(cnn.f, fn, num_features=10)(x, T))(cnn.x)
    assert bool(jnp.all(jnp.isnan(r)))


def test_slic_superpixels_inside_jit(cnn):
    from functools import partial

    seg = partial(jaxsal.segments, method="slic", n_segments=6, max_segments=40)
    host = jaxsal.segments(np.asarray(cnn.x), "slic", n_segments=6)
    ref = jaxsal.feature_ablation(cnn.f, host)(cnn.x, T)
    r = jax.jit(lambda x: jaxsal.feature_ablation(cnn.f, seg, num_features=40)(x, T))(cnn.x)
    np.testing.assert_allclose(r, ref, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- Captum (float64)


def test_occlusion_and_feature_ablation_equal_captum_in_float64():
    pytest.importorskip("captum")
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    import torch
    from captum.attr import FeatureAblation, Occlusion

    from benchmarks import cases

    case = cases.small_cnn(batch=2, size=8)
    tm = case.torch_model.double()
    xt = torch.from_numpy(np.ascontiguousarray(case.x.astype(np.float64).transpose(0, 3, 1, 2)))
    tgt = torch.from_numpy(case.target)
    with jax.enable_x64(True):
        v = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), case.variables)
        f = lambda z: case.module.apply(v, z)  # noqa: E731
        x = jnp.asarray(case.x, jnp.float64)
        t = jnp.asarray(case.target)
        occ = np.asarray(jaxsal.occlusion(f, window=(3, 3), strides=(2, 2), baseline=0.25)(x, t))
        mask = np.asarray(jaxsal.segments(np.asarray(x), "grid", cells=3))  # (B, H, W)
        fa = np.asarray(jaxsal.feature_ablation(f, mask, baseline=0.25)(x, t))
    occ_captum = Occlusion(tm)
    occ_captum.use_weights = False  # its own division casts to float32: divide its float64 total here
    ref = occ_captum.attribute(
        xt, sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2), baselines=0.25, target=tgt
    )
    cover = np.zeros(8)
    for start in range(0, 7, 2):  # ceil((8 - 3) / 2) + 1 = 4 windows per axis, cut at the border
        cover[start : start + 3] += 1
    ref = ref / torch.from_numpy(np.outer(cover, cover))
    fm = torch.from_numpy(mask.astype(np.int64))[:, None].expand(-1, 3, -1, -1)
    ref_fa = FeatureAblation(tm).attribute(xt, feature_mask=fm, baselines=0.25, target=tgt)
    for a, r in ((occ, ref), (fa, ref_fa)):
        r = r.detach().double().numpy().transpose(0, 2, 3, 1)
        assert np.abs(a - r).max() / np.abs(r).max() < 1e-10


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_errors_naming_the_argument(cnn):
    with pytest.raises(ValueError, match="window"):
        jaxsal.occlusion(cnn.f, window=(9, 3))(cnn.x, T)
    with pytest.raises(ValueError, match="strides"):
        jaxsal.occlusion(cnn.f, window=3, strides=0)
    with pytest.raises(ValueError, match="strides"):
        jaxsal.occlusion(cnn.f, window=2, strides=3)
    with pytest.raises(ValueError, match="feature_mask"):
        jaxsal.feature_ablation(cnn.f, np.zeros((7, 8), np.int32))(cnn.x, T)
    for bad in (np.zeros((8, 8), np.float32), np.zeros((8, 8), bool), -np.ones((8, 8), np.int32)):
        with pytest.raises(ValueError, match="feature_mask"):
            jaxsal.feature_ablation(cnn.f, bad)
    with pytest.raises(ValueError, match="feature_mask"):
        jaxsal.kernel_shap(cnn.f, lambda x: jnp.zeros(x.shape[1:3], jnp.float32))(cnn.x, T, key=KEY)
    for factory in (jaxsal.shapley_sampling, jaxsal.kernel_shap, jaxsal.lime, jaxsal.rise):
        with pytest.raises(ValueError, match="n must be >= 1"):
            factory(cnn.f, n=0)
    with pytest.raises(ValueError, match="kernel_width"):
        jaxsal.lime(cnn.f, kernel_width=0.0)
    with pytest.raises(ValueError, match="num_features"):
        jaxsal.feature_ablation(cnn.f, GRID4, num_features=8)(cnn.x, T)
    with pytest.raises(ValueError, match="key"):
        jaxsal.shapley_sampling(cnn.f, GRID4, n=1)(cnn.x, T)

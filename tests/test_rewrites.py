"""The convolution speed rewrites: exact in float64, forward and every derivative, and
switched by ``jaxsal.config.rewrites``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxsal._src import config, rewrites
from jaxsal._src import interpreter as interp
from jaxsal._src.cam import grad_cam
from jaxsal._src.gradients import deconvnet, guided_backprop, vanilla_grad
from jaxsal._src.path import integrated_gradients
from jaxsal._src.probe import probe
from jaxsal._src.smoothing import smoothgrad

TOL = dict(rtol=1e-10, atol=1e-10)
LAYOUTS = [("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW")]


def _case(rng, form: str, layout):
    """Random shapes, strides (some > kernel), paddings (some negative), dilations."""
    k = tuple(int(v) for v in rng.integers(1, 4, 2))
    s = tuple(int(v) for v in rng.integers(1, 5, 2))
    pad = [tuple(int(v) for v in rng.integers(-1, 3, 2)) for _ in range(2)]
    ld = tuple(int(v) for v in rng.integers(1, 3, 2))
    rd = tuple(int(v) for v in rng.integers(1, 3, 2))
    h, w = (int(v) for v in rng.integers(5, 12, 2))  # odd and even sizes
    if form == "grouped":
        g = int(rng.integers(2, 5))
        i, o = 1, g * int(rng.integers(1, 3))  # channel multiplier 1 or 2
    else:
        g, i, o = 1, int(rng.integers(1, 5)), int(rng.integers(1, 5))
        if form == "pointwise":
            k = (1, 1)
        elif k == (1, 1):
            k = (2, 3)
    x = rng.normal(size=(2, h, w, g * i))
    kern = rng.normal(size=(*k, i, o))
    if layout[0] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if layout[1] == "OIHW":
        kern = kern.transpose(3, 2, 0, 1)
    kw = dict(
        window_strides=s,
        padding=pad,
        lhs_dilation=ld,
        rhs_dilation=rd,
        dimension_numbers=layout,
        feature_group_count=g,
    )
    return jnp.asarray(x), jnp.asarray(kern), kw


@pytest.mark.parametrize("form", ["grouped", "pointwise", "im2col"])
@pytest.mark.parametrize("seed", range(4))
def test_rewrite_equals_lax_conv(form, seed):
    rng = np.random.default_rng(100 * seed + len(form))
    with jax.enable_x64(True):
        while True:  # a case with a non-empty output
            x, w, kw = _case(rng, form, LAYOUTS[seed % 3])

            def f(x, w, kw=kw):
                return lax.conv_general_dilated(x, w, **kw)

            if all(jax.eval_shape(f, x, w).shape):
                break

        assert len(interp.find_units(f, x, w, matcher=rewrites.REWRITES[form][0])) == 1
        g = interp.interpret(f, [rewrites.REWRITES[form]], speed=False)
        jaxpr = jax.make_jaxpr(g)(x, w)
        assert "conv_general_dilated" not in str(jaxpr)
        y = f(x, w)
        np.testing.assert_allclose(g(x, w), y, **TOL)
        ct = jnp.asarray(rng.normal(size=y.shape))
        for a, b in zip(jax.vjp(f, x, w)[1](ct), jax.vjp(g, x, w)[1](ct), strict=True):
            np.testing.assert_allclose(b, a, **TOL)
        t = (jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=w.shape)))
        np.testing.assert_allclose(jax.jvp(g, (x, w), t)[1], jax.jvp(f, (x, w), t)[1], **TOL)
        if seed:
            return
        # second order: the Hessian-vector product of a scalar loss
        loss_f = lambda x: jnp.sum(jnp.tanh(f(x, w)))  # noqa: E731
        loss_g = lambda x: jnp.sum(jnp.tanh(g(x, w)))  # noqa: E731
        hvp = lambda L: jax.jvp(jax.grad(L), (x,), (t[0],))[1]  # noqa: E731
        np.testing.assert_allclose(hvp(loss_g), hvp(loss_f), **TOL)


def test_stride_larger_than_kernel_and_odd_size():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 7, 9, 3)))
        w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 2, 1, 3)))

        def f(x, w):
            return lax.conv_general_dilated(
                x, w, (3, 4), "SAME", dimension_numbers=LAYOUTS[0], feature_group_count=3
            )

        g = rewrites.with_rewrites(f, "all")
        np.testing.assert_allclose(g(x, w), f(x, w), **TOL)
        np.testing.assert_allclose(
            jax.grad(lambda x: g(x, w).sum())(x), jax.grad(lambda x: f(x, w).sum())(x), **TOL
        )


def test_left_alone():
    """batch_group_count, groups with several input channels, integer dtypes: not matched."""
    x = jnp.ones((4, 6, 6, 4))
    cases = [
        (jnp.ones((3, 3, 4, 4)), dict(batch_group_count=2)),
        (jnp.ones((3, 3, 2, 4)), dict(feature_group_count=2)),
    ]
    for w, extra in cases:

        def f(x, w, extra=extra):
            return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=LAYOUTS[0], **extra)

        for m, _ in rewrites.REWRITES.values():
            assert interp.find_units(f, x, w, matcher=m) == []
    xi, wi = jnp.ones((1, 5, 5, 2), jnp.int32), jnp.ones((1, 1, 2, 2), jnp.int32)
    fi = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=LAYOUTS[0])  # noqa: E731
    assert interp.find_units(fi, xi, wi, matcher=rewrites.POINTWISE) == []


def test_config_modes():
    assert rewrites.selected("auto", backend="cpu") == rewrites.AUTO_CPU
    assert rewrites.selected("auto", backend="gpu") == ()
    assert rewrites.selected("all", backend="gpu") == tuple(rewrites.REWRITES)
    assert rewrites.selected(False) == ()
    assert config.get_rewrites() == "auto"
    with config.using(rewrites=False):
        assert config.get_rewrites() is False
        with config.using(rewrites="all"):
            assert config.get_rewrites() == "all"
        assert config.get_rewrites() is False
    assert config.get_rewrites() == "auto"
    with pytest.raises(ValueError, match="rewrites"):
        config.check_rewrites("fast")
    with pytest.raises(ValueError, match="rewrites"), config.using(rewrites="yes"):
        pass
    with pytest.raises(TypeError, match="f must be callable"):
        rewrites.with_rewrites(3)


class DepthwiseNet(nn.Module):
    """A user's model: stem 3x3, 1x1 expand, depthwise 3x3 (stride 2), ReLU, max-pool, 1x1, GAP, dense."""

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        x = nn.relu(nn.Conv(8, (1, 1), name="expand")(x))
        x = nn.Conv(8, (3, 3), strides=2, feature_group_count=8, name="dw")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.Conv(6, (1, 1), name="project")(x)
        if features_only:
            return x
        x = nn.relu(x)
        return nn.Dense(5, name="head")(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def dwnet():
    with jax.enable_x64(True):
        m = DepthwiseNet()
        x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3), jnp.float64)
        v = jax.tree.map(lambda a: a.astype(jnp.float64), m.init(jax.random.key(1), x.astype(jnp.float32)))
    return m, v, x


def _methods(m, v):
    f = lambda x: m.apply(v, x)  # noqa: E731
    p = probe(
        lambda x: m.apply(v, x, features_only=True),
        lambda a: nn.Dense(5).apply({"params": v["params"]["head"]}, jnp.mean(nn.relu(a), axis=(1, 2))),
    )
    return {
        "vanilla_grad": (vanilla_grad(f), None),
        "guided_backprop": (guided_backprop(f), None),
        "deconvnet": (deconvnet(f), None),
        "integrated_gradients": (integrated_gradients(f, steps=4), None),
        "smoothgrad": (smoothgrad(vanilla_grad(f), n=3), jax.random.key(7)),
        "grad_cam": (grad_cam(p), None),
    }


#: methods that reach the interpreter (grad_cam differentiates a probe directly).
REWRITTEN = {"vanilla_grad", "guided_backprop", "deconvnet", "integrated_gradients", "smoothgrad"}


@pytest.mark.parametrize(
    "name", ["vanilla_grad", "guided_backprop", "deconvnet", "integrated_gradients", "smoothgrad", "grad_cam"]
)
def test_methods_agree_with_rewrites_on_and_off(dwnet, name):
    m, v, x = dwnet
    with jax.enable_x64(True):
        attr, key = _methods(m, v)[name]
        t = jnp.array([1, 3])
        out = {}
        for mode in (False, "auto", "all"):
            with config.using(rewrites=mode):
                out[mode] = attr(x, t, key=key)
                jaxpr = str(jax.make_jaxpr(lambda x: attr(x, t, key=key))(x))
            n_conv = jaxpr.count("conv_general_dilated")
            if name in REWRITTEN:
                # off: stem, expand, dw, project (and their transposes); all: none left
                assert (n_conv == 0) == (mode == "all"), (mode, n_conv)
        assert out[False].dtype == jnp.float64
        np.testing.assert_allclose(out["auto"], out[False], **TOL)
        np.testing.assert_allclose(out["all"], out[False], **TOL)


def test_auto_on_cpu_leaves_kxk_and_rewrites_depthwise(dwnet):
    m, v, x = dwnet
    f = lambda x: m.apply(v, x)  # noqa: E731
    with jax.enable_x64(True):
        assert rewrites.count(f, x, mode="all") == {"grouped": 1, "pointwise": 2, "im2col": 1}
        with config.using(rewrites="auto"):
            jaxpr = str(jax.make_jaxpr(lambda x: vanilla_grad(f)(x, 1))(x))
    if jax.default_backend() == "cpu":
        # only the 3x3 stem is left (its forward and its input gradient)
        assert 1 <= jaxpr.count("conv_general_dilated") <= 2
        assert "feature_group_count=8" not in jaxpr

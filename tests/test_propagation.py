"""LRP and DeepLIFT: naive NumPy references, axioms, canonization, unmodified models, bad input.

Parity with Zennit and Captum on the same weights is in tests/test_parity_zennit.py,
tests/test_parity_deeplift.py and benchmarks/propagation.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal import rules


@pytest.fixture(autouse=True)
def _float64():
    """Every test here runs in float64 (scoped: other test files keep float32)."""
    with jax.enable_x64(True):
        yield


F64 = jnp.float64


# ----------------------------------------------------------------------------- a naive reference


def _stab(z, e):
    return z + np.where(z >= 0, 1.0, -1.0) * e


def _ref_dense(rule, x, W, b, R):
    """One dense layer z = x @ W + b by the rule, written out in NumPy (Zennit's definitions)."""
    pos, neg = (lambda a: np.maximum(a, 0)), (lambda a: np.minimum(a, 0))
    name = type(rule).__name__
    if name == "Epsilon":
        s = R / _stab(x @ W + b, rule.epsilon)
        return x * (s @ W.T)
    if name == "ZPlus":
        s = R / _stab(pos(x) @ pos(W) + neg(x) @ neg(W) + pos(b), rule.stabilizer)
        return pos(x) * (s @ pos(W).T) + neg(x) * (s @ neg(W).T)
    if name == "AlphaBeta":
        sp = R / _stab(pos(x) @ pos(W) + neg(x) @ neg(W) + pos(b), rule.stabilizer)
        sn = R / _stab(pos(x) @ neg(W) + neg(x) @ pos(W) + neg(b), rule.stabilizer)
        return rule.alpha * (pos(x) * (sp @ pos(W).T) + neg(x) * (sp @ neg(W).T)) - rule.beta * (
            pos(x) * (sn @ neg(W).T) + neg(x) * (sn @ pos(W).T)
        )
    if name == "Gamma":
        g = rule.gamma
        wu, wd = W + g * pos(W), W + g * neg(W)
        z = x @ W + b
        su = np.where(z > 0, R, 0) / _stab(pos(x) @ wu + neg(x) @ wd + b + g * pos(b), rule.stabilizer)
        sd = np.where(z < 0, R, 0) / _stab(pos(x) @ wd + neg(x) @ wu + b + g * neg(b), rule.stabilizer)
        return pos(x) * (su @ wu.T) + neg(x) * (su @ wd.T) + pos(x) * (sd @ wd.T) + neg(x) * (sd @ wu.T)
    if name == "ZBox":
        lo, hi = np.broadcast_to(rule.low, x.shape), np.broadcast_to(rule.high, x.shape)
        z = x @ W + b - (lo @ pos(W) + pos(b)) - (hi @ neg(W) + neg(b))
        s = R / _stab(z, rule.stabilizer)
        return x * (s @ W.T) - lo * (s @ pos(W).T) - hi * (s @ neg(W).T)
    if name == "Flat":
        s = R / _stab(np.ones_like(x) @ np.ones_like(W), rule.stabilizer)
        return s @ np.ones_like(W).T
    if name == "WSquare":
        s = R / _stab(np.ones_like(x) @ (W * W) + b * b, rule.stabilizer)
        return s @ (W * W).T
    raise AssertionError(name)


def _ref_lrp(layers, x, target, choose, residual=False):
    """LRP through ``dense -> relu -> ... -> dense`` (``residual``: hidden blocks are ``h + relu(dense(h))``)."""
    acts, h = [x], x
    for k, (W, b) in enumerate(layers):
        z = h @ W + b
        if k == len(layers) - 1:
            out = z
        elif residual and k > 0:
            out = h + np.maximum(z, 0)
        else:
            out = np.maximum(z, 0)
        h = out
        acts.append(h)
    R = np.zeros_like(h)
    R[np.arange(len(x)), target] = h[np.arange(len(x)), target]
    for k in reversed(range(len(layers))):
        W, b = layers[k]
        layer = rules.Layer("dense", k, k == 0)
        inp = acts[k]
        if residual and 0 < k < len(layers) - 1:  # Norm on h + relu(z): split by contribution
            branch = acts[k + 1] - inp
            s = R / _stab(acts[k + 1], 1e-6)
            r_skip, r_branch = inp * s, branch * s
            R = r_skip + _ref_dense(choose(layer), inp, W, b, r_branch)  # relu passes
        else:
            R = _ref_dense(choose(layer), inp, W, b, R)
    return R


def _mlp_layers(sizes, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(m, n)) / np.sqrt(m), rng.normal(size=n) * 0.3 if bias else np.zeros(n))
        for m, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def _apply(layers, x, relu=jax.nn.relu, residual=False):
    h = x
    for k, (W, b) in enumerate(layers):
        z = h @ jnp.asarray(W) + jnp.asarray(b)[None]
        if k == len(layers) - 1:
            return z
        h = h + relu(z) if residual and k > 0 else relu(z)
    return h


X = np.random.default_rng(1).normal(size=(3, 6))
LAYERS = _mlp_layers([6, 5, 5, 4])
TARGET = np.array([0, 2, 3])

ALL_RULES = [
    rules.Epsilon(1e-3),
    rules.ZPlus(),
    rules.AlphaBeta(2.0, 1.0),
    rules.AlphaBeta(1.0, 0.0),
    rules.Gamma(0.25),
    rules.Flat(),
    rules.WSquare(),
]


@pytest.mark.parametrize("rule", ALL_RULES + [rules.ZBox(-3.0, 3.0)], ids=lambda r: repr(r))
def test_every_rule_equals_the_numpy_reference_on_the_first_layer(rule):
    choose = lambda layer: rule if layer.first else rules.Epsilon(1e-6)  # noqa: E731
    f = lambda x: _apply(LAYERS, x)  # noqa: E731
    got = jaxsal.lrp(f, choose)(jnp.asarray(X, F64), TARGET)
    want = _ref_lrp(LAYERS, X, TARGET, choose)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: repr(r))
def test_every_rule_equals_the_numpy_reference_on_every_layer(rule):
    f = lambda x: _apply(LAYERS, x)  # noqa: E731
    got = jaxsal.lrp(f, lambda layer: rule)(jnp.asarray(X, F64), TARGET)
    want = _ref_lrp(LAYERS, X, TARGET, lambda layer: rule)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-12)


def test_deep_taylor_is_zbox_at_the_input_and_zplus_above():
    """Montavon et al. 2017: z^B for the bounded input layer, z⁺ for every ReLU layer above."""
    lo, hi = -3.0, 3.0
    deep_taylor = lambda layer: rules.ZBox(lo, hi) if layer.first else rules.ZPlus()  # noqa: E731
    layers = _mlp_layers([6, 5, 5, 4], seed=3, bias=False)
    f = lambda x: _apply(layers, x)  # noqa: E731
    x = np.clip(X, lo, hi)
    got = np.asarray(jaxsal.lrp(f, deep_taylor)(jnp.asarray(x, F64), TARGET))
    np.testing.assert_allclose(got, _ref_lrp(layers, x, TARGET, deep_taylor), rtol=1e-10, atol=1e-12)
    # with no biases and a positive score every layer conserves: the map sums to the score
    scores = np.asarray(f(jnp.asarray(x)))[np.arange(3), TARGET]
    keep = scores > 0
    assert keep.any()
    np.testing.assert_allclose(got.sum(1)[keep], scores[keep], rtol=1e-5)


# ----------------------------------------------------------------------------- axioms


class CNN(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), use_bias=self.bias)(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), use_bias=self.bias)(x))
        # nn.avg_pool's own division is not strict-promotion clean: the same primitive by hand
        x = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, (1, 2, 2, 1), (1, 1, 1, 1), "VALID")
        x = x / jnp.asarray(4.0, x.dtype)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(10, use_bias=self.bias)(x))
        return nn.Dense(4, use_bias=self.bias)(x)


def _cnn(bias, seed=0):
    m = CNN(bias)
    x = jax.random.uniform(jax.random.key(seed + 1), (2, 12, 12, 3), F64, -1.0, 1.0)
    v = _f64(m.init(jax.random.key(seed), x.astype(jnp.float32)))
    if bias:  # Flax starts biases at zero: make them matter
        leaves, tree = jax.tree_util.tree_flatten_with_path(v)
        rng = np.random.default_rng(seed)
        v = jax.tree_util.tree_unflatten(
            tree,
            [
                a + 0.05 * rng.normal(size=a.shape) if "bias" in jax.tree_util.keystr(p) else a
                for p, a in leaves
            ],
        )
    return (lambda z: m.apply(v, z)), x


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, F64), tree)


@pytest.mark.parametrize("composite", jaxsal.rules.COMPOSITES)
def test_conservation_with_zero_biases(composite):
    f, x = _cnn(bias=False)
    attr = jaxsal.lrp(f, composite, epsilon=1e-12, stabilizer=1e-12, low=-1.0, high=1.0)
    r = attr(x)
    scores = f(x)
    np.testing.assert_allclose(np.asarray(r.sum((1, 2, 3))), np.asarray(scores.max(1)), rtol=1e-5)


def test_biases_break_conservation_so_the_test_can_fail():
    f, x = _cnn(bias=True)
    r = jaxsal.lrp(f, "epsilon", epsilon=1e-12)(x)
    assert np.max(np.abs(np.asarray(r.sum((1, 2, 3)) - f(x).max(1)))) > 1e-4


def test_zplus_relevance_is_nonnegative_where_the_input_is():
    f, x = _cnn(bias=True, seed=3)
    x = jnp.abs(x)
    scores = f(x)
    target = jnp.argmax(scores, 1)
    assert np.all(np.asarray(scores.max(1)) > 0)
    r = jaxsal.lrp(f, lambda layer: rules.ZPlus())(x, target)
    assert float(r.min()) >= 0.0
    assert float(r.max()) > 0.0


def test_lrp0_on_a_linear_model_is_gradient_times_input():
    w = jax.random.normal(jax.random.key(0), (12 * 12 * 3, 5), F64)
    f = lambda z: z.reshape((z.shape[0], -1)) @ w + 0.0  # noqa: E731
    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3), F64)
    got = jaxsal.lrp(f, "epsilon", epsilon=1e-300)(x, 3)
    want = jaxsal.grad_x_input(f)(x, 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-14)


def test_deeplift_summation_to_delta():
    f, x = _cnn(bias=True)
    x0 = jax.random.uniform(jax.random.key(9), x.shape, F64, -0.5, 0.5)
    for t in (0, 3):
        r = jaxsal.deeplift(f, baseline=x0)(x, t)
        delta = f(x)[:, t] - f(x0)[:, t]
        np.testing.assert_allclose(np.asarray(r.sum((1, 2, 3))), np.asarray(delta), rtol=1e-10, atol=1e-12)
    # and it is not the gradient: DeepLIFT differs from grad x (x - x0) on this ReLU net
    g = jaxsal.vanilla_grad(f)(x, 3) * (x - x0)
    assert float(jnp.abs(g - jaxsal.deeplift(f, baseline=x0)(x, 3)).max()) > 1e-3


def test_deeplift_shap_is_the_mean_over_baselines_and_sums_to_delta():
    f, x = _cnn(bias=True)
    bl = jax.random.uniform(jax.random.key(4), (3,) + x.shape[1:], F64, -1.0, 1.0)
    r = jaxsal.deeplift_shap(f, bl)(x, 1)
    each = [jaxsal.deeplift(f, baseline=bl[k])(x, 1) for k in range(3)]
    np.testing.assert_allclose(np.asarray(r), np.asarray(sum(each) / 3), rtol=1e-10, atol=1e-13)
    delta = f(x)[:, 1] - f(bl)[:, 1].mean()
    np.testing.assert_allclose(np.asarray(r.sum((1, 2, 3))), np.asarray(delta), rtol=1e-10)


def _ref_deeplift(layers, x, x0, target, residual=False):
    """DeepLIFT-Rescale through the dense ReLU net, written out (multipliers by the chain rule)."""

    def forward(h):
        pre, outs = [], [h]
        for k, (W, b) in enumerate(layers):
            z = h @ W + b
            pre.append(z)
            if k == len(layers) - 1:
                h = z
            else:
                h = h + np.maximum(z, 0) if residual and k > 0 else np.maximum(z, 0)
            outs.append(h)
        return pre, outs

    p1, _ = forward(x)
    p0, _ = forward(x0)
    m = np.zeros((len(x), layers[-1][0].shape[1]))
    m[np.arange(len(x)), target] = 1.0
    for k in reversed(range(len(layers))):
        W, _ = layers[k]
        if k < len(layers) - 1:
            dz = p1[k] - p0[k]
            da = np.maximum(p1[k], 0) - np.maximum(p0[k], 0)
            slope = np.where(np.abs(dz) < 1e-10, (p1[k] > 0).astype(float), da / np.where(dz == 0, 1, dz))
            m_branch = m * slope
            m = (m + m_branch @ W.T) if residual and k > 0 else m_branch @ W.T
        else:
            m = m @ W.T
    return (x - x0) * m


# ----------------------------------------------------------------------------- unmodified models


def _relu_once(z):
    return jax.nn.relu(z)


SPELLINGS = {
    "the same relu function reused": lambda layers: lambda x: _apply(layers, x, relu=_relu_once),
    "jnp.maximum(x, 0)": lambda layers: lambda x: _apply(layers, x, relu=lambda z: jnp.maximum(z, 0.0)),
    "jnp.maximum(0, x)": lambda layers: lambda x: _apply(layers, x, relu=lambda z: jnp.maximum(0.0, z)),
    "jax.checkpoint": lambda layers: jax.checkpoint(lambda x: _apply(layers, x)),
    "inside jit": lambda layers: jax.jit(lambda x: _apply(layers, x)),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_unmodified_models_equal_the_reference(spelling):
    f = SPELLINGS[spelling](LAYERS)
    x = jnp.asarray(X, F64)
    choose = lambda layer: rules.Epsilon(1e-6) if layer.kind == "dense" else None  # noqa: E731
    np.testing.assert_allclose(
        np.asarray(jaxsal.lrp(f, choose)(x, TARGET)),
        _ref_lrp(LAYERS, X, TARGET, choose),
        rtol=1e-10,
        atol=1e-13,
    )
    x0 = np.full_like(X, 0.2)
    np.testing.assert_allclose(
        np.asarray(jaxsal.deeplift(f, baseline=x0)(x, TARGET)),
        _ref_deeplift(LAYERS, X, x0, TARGET),
        rtol=1e-10,
        atol=1e-13,
    )


def test_residual_connection_equals_the_reference():
    layers = _mlp_layers([6, 5, 5, 5, 4], seed=2)
    f = lambda x: _apply(layers, x, residual=True)  # noqa: E731
    x = jnp.asarray(X, F64)
    choose = lambda layer: rules.ZPlus() if layer.index % 2 else rules.Epsilon(1e-6)  # noqa: E731
    np.testing.assert_allclose(
        np.asarray(jaxsal.lrp(f, choose)(x, TARGET)),
        _ref_lrp(layers, X, TARGET, choose, residual=True),
        rtol=1e-10,
        atol=1e-13,
    )
    x0 = np.zeros_like(X)
    np.testing.assert_allclose(
        np.asarray(jaxsal.deeplift(f)(x, TARGET)),
        _ref_deeplift(layers, X, x0, TARGET, residual=True),
        rtol=1e-10,
    )


def test_relus_inside_lax_scan_equal_the_unrolled_reference():
    layers = _mlp_layers([5, 5, 5, 5, 3], seed=4)
    hidden_w = jnp.stack([jnp.asarray(w) for w, _ in layers[1:-1]])
    hidden_b = jnp.stack([jnp.asarray(b) for _, b in layers[1:-1]])
    (w0, b0), (wl, bl) = layers[0], layers[-1]

    def f(x):
        h = jax.nn.relu(x @ jnp.asarray(w0) + jnp.asarray(b0)[None])

        def body(h, wb):
            w, b = wb
            return jax.nn.relu(h @ w + b[None]), None

        h, _ = jax.lax.scan(body, h, (hidden_w, hidden_b))
        return h @ jnp.asarray(wl) + jnp.asarray(bl)[None]

    x = np.random.default_rng(5).normal(size=(3, 5))
    choose = lambda layer: rules.ZPlus() if layer.first else rules.Epsilon(0.01)  # noqa: E731
    got = jaxsal.lrp(f, choose)(jnp.asarray(x), TARGET % 3)
    # inside the scan body the one traced layer is the same unit at every step: its index is 1
    want = _ref_lrp(layers, x, TARGET % 3, choose)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-13)
    x0 = np.full_like(x, -0.1)
    np.testing.assert_allclose(
        np.asarray(jaxsal.deeplift(f, baseline=x0)(jnp.asarray(x), TARGET % 3)),
        _ref_deeplift(layers, x, x0, TARGET % 3),
        rtol=1e-10,
    )


# ----------------------------------------------------------------------------- canonization


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(5, (3, 3), use_bias=False, name="c1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn1")(x))
        h = nn.Conv(5, (3, 3), name="c2")(x)
        h = nn.BatchNorm(use_running_average=True, name="bn2")(h)
        x = nn.relu(x + h)
        x = x.mean(axis=(1, 2))
        return nn.Dense(3, name="fc")(x)


class ConvFolded(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(5, (3, 3), name="c1")(x))
        h = nn.Conv(5, (3, 3), name="c2")(x)
        x = nn.relu(x + h)
        x = x.mean(axis=(1, 2))
        return nn.Dense(3, name="fc")(x)


def _fold(p, s, eps=1e-5):
    """Fold an inference BatchNorm into the conv before it, by hand."""
    a = p["scale"] / np.sqrt(s["var"] + eps)
    return a, p["bias"] - s["mean"] * a


def test_batchnorm_is_merged_into_the_layer_before_it():
    m = ConvBN()
    x = jax.random.uniform(jax.random.key(0), (2, 7, 7, 3), F64, -1, 1)
    v = jax.tree_util.tree_map(
        lambda a: np.asarray(a, np.float64), m.init(jax.random.key(1), x.astype(jnp.float32))
    )
    rng = np.random.default_rng(0)
    for bn in ("bn1", "bn2"):  # non-trivial statistics, and one negative scale
        v["params"][bn]["scale"] = rng.normal(size=5)
        v["params"][bn]["scale"][0] = -abs(v["params"][bn]["scale"][0])
        v["params"][bn]["bias"] = rng.normal(size=5) * 0.2
        v["batch_stats"][bn]["mean"] = rng.normal(size=5) * 0.3
        v["batch_stats"][bn]["var"] = rng.uniform(0.5, 2.0, size=5)
    a1, c1 = _fold(v["params"]["bn1"], v["batch_stats"]["bn1"])
    a2, c2 = _fold(v["params"]["bn2"], v["batch_stats"]["bn2"])
    folded = {
        "params": {
            "c1": {"kernel": v["params"]["c1"]["kernel"] * a1, "bias": c1},
            "c2": {"kernel": v["params"]["c2"]["kernel"] * a2, "bias": v["params"]["c2"]["bias"] * a2 + c2},
            "fc": v["params"]["fc"],
        }
    }
    f = lambda z: m.apply(v, z)  # noqa: E731
    g = lambda z: ConvFolded().apply(folded, z)  # noqa: E731
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(g(x)), rtol=1e-10)
    units = jaxsal.find_units(f, x, matcher=jaxsal._src.propagation.LAYERS)
    assert [len(u.info.chain) > 0 for u in units] == [True, True, False]
    for composite in ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"):
        got = jaxsal.lrp(f, composite, low=-1.0, high=1.0)(x)
        want = jaxsal.lrp(g, composite, low=-1.0, high=1.0)(x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-8, atol=1e-12)


def test_layer_description_names_the_flax_module():
    seen = []

    def choose(layer):
        seen.append(layer)
        return rules.Epsilon()

    f, x = _cnn(bias=True)
    jaxsal.lrp(f, choose)(x)
    assert [s.kind for s in seen] == ["conv", "conv", "dense", "dense"]
    assert [s.index for s in seen] == [0, 1, 2, 3] and seen[0].first and not seen[1].first
    assert all(s.scope.startswith("CNN/") for s in seen), [s.scope for s in seen]


def test_differentiable_with_respect_to_the_parameters():
    layers = _mlp_layers([6, 5, 4], seed=7)

    def loss(params):
        f = lambda x: _apply(params, x)  # noqa: E731
        return jnp.sum(jaxsal.lrp(f, "epsilon", epsilon=0.1)(jnp.asarray(X), TARGET) ** 2)

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layers]
    g = jax.grad(loss)(params)
    w0 = params[0][0]
    d = np.zeros(w0.shape)
    d[1, 2] = 1.0
    h = 1e-6
    up = [(w0 + h * d, params[0][1])] + params[1:]
    dn = [(w0 - h * d, params[0][1])] + params[1:]
    fd = (loss(up) - loss(dn)) / (2 * h)
    np.testing.assert_allclose(float(g[0][0][1, 2]), float(fd), rtol=1e-5)
    assert float(jnp.abs(g[1][0]).max()) > 0


# ----------------------------------------------------------------------------- bad input


def test_unknown_composite_lists_the_valid_ones():
    with pytest.raises(ValueError, match="epsilon_plus_flat"):
        jaxsal.lrp(lambda x: x, "zplus_everywhere")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=-0.1), "gamma"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(stabilizer=0.0), "stabilizer"),
        (dict(composite="epsilon_gamma_box", low=1.0, high=0.0), "low < high"),
        (dict(composite="epsilon_gamma_box", low=1.0, high=1.0), "low < high"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs, match):
    kwargs = {"composite": "epsilon_gamma_box", "low": -1.0, "high": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        jaxsal.lrp(lambda x: x, **kwargs)


def test_gamma_box_without_bounds_names_both():
    with pytest.raises(ValueError, match="low.*high"):
        jaxsal.lrp(lambda x: x, "epsilon_gamma_box")


def test_rules_validate_their_arguments():
    with pytest.raises(ValueError, match="alpha - beta"):
        rules.AlphaBeta(2.0, 2.0)
    with pytest.raises(TypeError, match="gamma"):
        rules.Gamma("big")


def test_a_composite_must_return_a_rule():
    f, x = _cnn(bias=True)
    with pytest.raises(TypeError, match="return a rule"):
        jaxsal.lrp(f, lambda layer: "epsilon")(x)


def test_a_model_without_linear_layers_warns():
    f = lambda x: jnp.tanh(x).reshape((x.shape[0], -1))[:, :4]  # noqa: E731
    x = jnp.ones((2, 3, 3, 1), F64)
    with pytest.warns(UserWarning, match="no linear layer"):
        jaxsal.lrp(f)(x)


def test_deeplift_shap_refuses_empty_or_misshaped_baselines():
    f, x = _cnn(bias=True)
    with pytest.raises(ValueError, match="non-empty"):
        jaxsal.deeplift_shap(f, jnp.zeros((0, 12, 12, 3)))
    with pytest.raises(ValueError, match=r"\(K, 12, 12, 3\)"):
        jaxsal.deeplift_shap(f, jnp.zeros((2, 5, 5, 3)))(x)

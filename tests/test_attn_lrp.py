"""AttnLRP (``jaxsal.lrp(f, "attn_lrp")``): a NumPy reference, conservation, unmodified models, bad input.

The reference (``benchmarks/attn_lrp_reference.py``) writes every AttnLRP rule out in
float64 NumPy for the small transformer below; parity with LXT 2.1 itself (on a
PyTorch twin) is in ``tests/test_parity_lxt.py``.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src import attn_lrp as A

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import attn_lrp_reference as ref  # noqa: E402


@pytest.fixture(autouse=True)
def _float64():
    """Every test here runs in float64 (scoped: other test files keep float32)."""
    with jax.enable_x64(True):
        yield


B, T, DIN, DIM, HEADS, MLP, CLASSES, DEPTH = 2, 5, 6, 8, 2, 16, 4, 2
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
NORM64 = dict(F64, force_float32_reductions=False)  # flax's float32 reduction promotion is "strict"-unsafe


class Block(nn.Module):
    heads: int
    mlp: int
    rms: bool = False
    attention: bool = True

    @nn.compact
    def __call__(self, x):
        norm = nn.RMSNorm if self.rms else nn.LayerNorm
        if self.attention:
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn", **F64)(
                norm(name="ln1", **NORM64)(x)
            )
        h = nn.Dense(self.mlp, name="fc1", **F64)(norm(name="ln2", **NORM64)(x))
        return x + nn.Dense(x.shape[-1], name="fc2", **F64)(nn.gelu(h))


class TinyTransformer(nn.Module):
    """Tokens ``(B, T, Din)`` -> dense embedding + positions -> pre-LN blocks -> LN -> CLS/mean -> head."""

    depth: int = DEPTH
    heads: int = HEADS
    pool: str = "cls"
    rms: bool = False
    attention: bool = True

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(DIM, name="embed", **F64)(x)
        h = h + self.param("pos", nn.initializers.normal(0.5), (1, x.shape[1], DIM), x.dtype)
        for i in range(self.depth):
            h = Block(self.heads, MLP, self.rms, self.attention, name=f"block{i}")(h)
        h = (nn.RMSNorm if self.rms else nn.LayerNorm)(name="ln", **NORM64)(h)
        h = h[:, 0] if self.pool == "cls" else h.mean(axis=1)
        return nn.Dense(CLASSES, name="head", **F64)(h)


@functools.cache
def _setup(zero_bias=False, seed=0, **kw):
    model = TinyTransformer(**kw)
    x = jax.random.normal(jax.random.key(100 + seed), (B, T, DIN), jnp.float64)
    params = model.init(jax.random.key(seed), x)["params"]
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.key(200 + seed), len(leaves))
    new = []
    for (path, leaf), k in zip(leaves, keys, strict=True):
        name = jax.tree_util.keystr(path)
        # random biases, LayerNorm scales around 1 and positions: every rule's constant is in play
        if "bias" in name or "pos" in name:
            leaf = jnp.zeros_like(leaf) if zero_bias else 0.3 * jax.random.normal(k, leaf.shape, leaf.dtype)
        elif "scale" in name:
            leaf = 1.0 + 0.2 * jax.random.normal(k, leaf.shape, leaf.dtype)
        new.append(leaf.astype(jnp.float64))
    params = jax.tree_util.tree_unflatten(tree, new)
    f = jax.jit(lambda inp: model.apply({"params": params}, inp))
    return model, params, f, x


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


# ----------------------------------------------------------------------------- what is found


def test_every_part_of_the_transformer_gets_its_rule():
    _, _, f, x = _setup()
    kinds = [u.kind for u in A.find_attn_lrp_units(f, x)]
    per_block = {"linear": 6, "norm": 2, "softmax": 1, "bilinear": 2, "elementwise": 1, "sum": 2}
    for kind, n in per_block.items():
        extra = {"linear": 2, "norm": 1}.get(kind, 0)  # embedding + head, final LayerNorm
        assert kinds.count(kind) == DEPTH * n + extra, (kind, kinds)
    assert "product" not in kinds  # LayerNorm's x * rsqrt(var) is a norm, not a product of two values


def test_softmax_and_norm_units_span_their_equations():
    _, _, f, x = _setup()
    units = A.find_attn_lrp_units(f, x)
    soft = [u for u in units if u.kind == "softmax"]
    assert all(u.info == (3,) for u in soft)  # the key axis of (B, H, Tq, Tk)
    norms = [u for u in units if u.kind == "norm"]
    names = {u.jaxpr.eqns[i].primitive.name for u in norms for i in u.eqns}
    assert {"reduce_sum", "rsqrt", "sub", "mul", "add"} <= names


# ----------------------------------------------------------------------------- the NumPy reference


@pytest.mark.parametrize(
    "kw",
    [dict(pool="cls"), dict(pool="mean"), dict(pool="cls", rms=True)],
    ids=["cls-layernorm", "mean-layernorm", "cls-rmsnorm"],
)
def test_equals_the_numpy_reference_float64(kw):
    _, params, f, x = _setup(**kw)
    target = jnp.array([1, 3])
    got = np.asarray(jaxsal.lrp(f, "attn_lrp")(x, target))
    want, _ = ref.attn_lrp(_np(params), np.asarray(x), np.asarray(target), depth=DEPTH, heads=HEADS, **kw)
    np.testing.assert_allclose(
        np.asarray(f(x)), ref.forward(_np(params), np.asarray(x), depth=DEPTH, heads=HEADS, **kw), rtol=1e-12
    )
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-6
    assert np.abs(want).max() > 1e-3  # a real comparison, not of two zero maps


def test_the_reference_can_tell_rules_apart():
    """A gradient (no rules) and the ε-LRP composite differ from the reference by far more than 1e-6."""
    _, params, f, x = _setup()
    target = jnp.array([1, 3])
    want, _ = ref.attn_lrp(_np(params), np.asarray(x), np.asarray(target), depth=DEPTH, heads=HEADS)
    for other in (jaxsal.grad_x_input(f)(x, target), jaxsal.lrp(f, "epsilon")(x, target)):
        other = np.asarray(other)
        scale = np.abs(want).max()
        assert np.abs(other - want).max() / scale > 1e-2 or np.abs(other).max() < 0.5 * scale


# ----------------------------------------------------------------------------- conservation


def test_conservation_without_attention_and_biases():
    """LayerNorm/RMSNorm, GELU, residuals, pooling and dense layers with zero biases: Σ R = S_c up to ε."""
    for kw in (dict(pool="cls"), dict(pool="mean", rms=True)):
        _, _, f, x = _setup(zero_bias=True, attention=False, **kw)
        attr = jaxsal.lrp(f, "attn_lrp", epsilon=1e-12, stabilizer=1e-12)
        scores = f(x)
        target = jnp.argmax(scores, 1)
        total = np.asarray(attr(x).sum(axis=(1, 2)))
        s_c = np.asarray(scores[jnp.arange(B), target])
        np.testing.assert_allclose(total, s_c, rtol=1e-9)


def test_conservation_identity_with_attention_and_biases():
    """Σ R_x + (what biases, positions and the softmax's implicit bias absorb) = S_c, to 1e-9.

    The absorbed shares are booked site by site by the NumPy reference; only the
    stabilisers (ε = 1e-12 here) are not booked.
    """
    _, params, f, x = _setup()
    target = jnp.array([0, 2])
    got = np.asarray(jaxsal.lrp(f, "attn_lrp", epsilon=1e-12, stabilizer=1e-12)(x, target))
    _, leaks = ref.attn_lrp(
        _np(params), np.asarray(x), np.asarray(target), depth=DEPTH, heads=HEADS, eps=1e-12, stab=1e-12
    )
    s_c = float(np.asarray(f(x))[np.arange(B), np.asarray(target)].sum())
    assert abs(got.sum() + leaks["bias"] + leaks["softmax"] - s_c) < 1e-9 * max(1.0, abs(s_c))
    assert abs(leaks["softmax"]) > 1e-6 and abs(leaks["bias"]) > 1e-6  # both sites do absorb here


def test_biases_break_conservation_so_the_test_can_fail():
    _, _, f, x = _setup(attention=False)
    scores = f(x)
    target = jnp.argmax(scores, 1)
    total = np.asarray(jaxsal.lrp(f, "attn_lrp", epsilon=1e-12, stabilizer=1e-12)(x).sum(axis=(1, 2)))
    assert np.abs(total - np.asarray(scores[jnp.arange(B), target])).max() > 1e-3


def test_epsilon_absorbs_relevance():
    _, _, f, x = _setup(zero_bias=True, attention=False)
    small = jaxsal.lrp(f, "attn_lrp", epsilon=1e-12)(x).sum()
    large = jaxsal.lrp(f, "attn_lrp", epsilon=1.0)(x).sum()
    assert abs(float(small - large)) > 1e-4


# ----------------------------------------------------------------------------- unmodified models


def test_nnx_style_closure_and_inline_softmax_spelling():
    """A hand-written attention (einsum, ``exp / sum`` softmax, ``x * rsqrt`` RMSNorm) is found too."""
    k = jax.random.split(jax.random.key(7), 5)
    wq, wk, wv = (jax.random.normal(kk, (DIN, DIN), jnp.float64) / 3 for kk in k[:3])
    wo = jax.random.normal(k[3], (DIN, 3), jnp.float64)

    def f(x):
        n = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
        q, kk, v = n @ wq, n @ wk, n @ wv
        s = jnp.einsum("btd,bsd->bts", q, kk)
        e = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))
        a = e / e.sum(-1, keepdims=True)
        h = x + jax.nn.silu(jnp.einsum("bts,bsd->btd", a, v))
        return h.mean(1) @ wo

    x = jax.random.normal(k[4], (B, T, DIN), jnp.float64)
    kinds = sorted(u.kind for u in A.find_attn_lrp_units(f, x))
    assert kinds.count("softmax") == 1 and kinds.count("norm") == 1 and kinds.count("bilinear") == 2
    r = jaxsal.lrp(f, "attn_lrp")(x)
    assert r.shape == x.shape and bool(jnp.all(jnp.isfinite(r)))


def test_a_shift_of_the_input_itself_passes_relevance():
    """``f(x - 0.5)``: preprocessing on the input passes relevance (an ε rule would divide by x - 0.5)."""
    _, _, f, x = _setup()
    shifted = jaxsal.lrp(lambda inp: f(inp - 0.5), "attn_lrp")(x + 0.5)
    np.testing.assert_allclose(shifted, jaxsal.lrp(f, "attn_lrp")(x), rtol=1e-9, atol=1e-12)


def test_jit_equals_eager():
    _, _, f, x = _setup()
    attr = jaxsal.lrp(f, "attn_lrp")
    np.testing.assert_allclose(jax.jit(attr)(x), attr(x), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.heavy
def test_the_vit_architecture_gets_every_rule_and_runs():
    """jaxsal.models.vit's ViT (custom LayerNorm, fused qkv, named softmax, exact GELU), random weights.

    The trained ``vit_tiny`` weights are not needed for what is checked: which rule each
    part gets, and that the relevance is finite and sums to the score's sign.
    """
    from jaxsal.models import vit

    module = vit.ViT(dim=12, depth=2, heads=2, mlp_dim=16, stem=4)
    x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3), jnp.float64)
    variables = module.init(jax.random.key(0), x.astype(jnp.float32))
    variables = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), variables)
    f = jax.jit(lambda inp: module.apply(variables, inp))
    units = A.find_attn_lrp_units(f, x)
    kinds = [u.kind for u in units]
    assert kinds.count("softmax") == 2 and kinds.count("bilinear") == 4 and kinds.count("norm") == 5
    assert kinds.count("linear") == 2 + 2 * 4 + 1  # stem, patch embedding, qkv/out/fc1/fc2, head
    scopes = {u.scope for u in units if u.kind == "norm"}
    assert {"ViT/block0/ln1", "ViT/block1/ln2", "ViT/norm"} <= scopes
    r = jaxsal.lrp(f, "attn_lrp", epsilon=1e-12, stabilizer=1e-12)(x)
    s_c = f(x).max(axis=1)
    assert r.shape == x.shape and bool(jnp.all(jnp.isfinite(r)))
    total = r.sum(axis=(1, 2, 3))
    assert bool(jnp.all(jnp.abs(total) <= 2 * jnp.abs(s_c)))  # at most the biases' and softmax's share lost


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "op, name",
    [(lambda h: jnp.cumsum(h, axis=1), "cumsum"), (lambda h: jnp.sort(h, axis=-1), "sort")],
    ids=["cumsum", "sort"],
)
def test_a_primitive_without_a_rule_is_named(op, name):
    w = jax.random.normal(jax.random.key(0), (DIN, 3), jnp.float64)

    def f(x):
        return op(x @ jnp.eye(DIN)).mean(1) @ w

    x = jnp.ones((B, T, DIN))
    with pytest.raises(ValueError, match=f"no rule for the primitive.*'{name}'"):
        jaxsal.lrp(f, "attn_lrp")(x)
    assert jnp.all(jnp.isfinite(jaxsal.grad_x_input(f)(x)))  # the model itself is fine


def test_a_quotient_of_two_branches_is_refused():
    w1, w2 = jnp.ones((DIN, 4)), jnp.full((DIN, 4), 2.0)

    def f(x):
        return ((x @ w1) / (x @ w2 + 10.0)).mean(1)

    with pytest.raises(ValueError, match="'div'"):
        jaxsal.lrp(f, "attn_lrp")(jnp.ones((B, T, DIN)))


def test_bounds_are_refused_for_attn_lrp():
    with pytest.raises(ValueError, match="epsilon_gamma_box"):
        jaxsal.lrp(lambda x: x, "attn_lrp", low=0.0, high=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        jaxsal.lrp(lambda x: x, "attn_lrp", epsilon=0.0)


def test_unknown_composite_mentions_attn_lrp():
    with pytest.raises(ValueError, match="attn_lrp"):
        jaxsal.lrp(lambda x: x, "attn")

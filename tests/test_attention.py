"""Attention methods: NumPy loop references for rollout, flow and gradient rollout; errors (the common contract: tests/test_contract.py).

The attention probabilities of the references are read with Flax's
``capture_intermediates`` (not jaxsal's softmax matcher), their gradients with
per-layer probes on ``block{i}/attn/probs``; the loops are written out in NumPy.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal import flax as jflax
from jaxsal._src import attention as att
from jaxsal._src.registry import methods
from jaxsal._src.tokens import Tokens
from jaxsal.models.vit import ViT

# the tiny ViT of tests/conftest.py (the contract suite): 8 x 8 inputs, 2-px patches, a 4 x 4 grid, 5 classes
MODEL = ViT(num_classes=5, patch=2, dim=8, depth=2, heads=2, mlp_dim=16, stem=0)
X = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
VARS = MODEL.init(jax.random.key(0), X)
TOKENS = Tokens(grid=(4, 4))
TARGET = jnp.array([0, 3, 1])
METHODS = list(methods(family="attention").values())
IDS = [m.name for m in METHODS]


def f(x):
    return MODEL.apply(VARS, x)


def _attentions(x):
    """``[(B, H, T, T)]`` per block, read by Flax itself."""
    _, state = MODEL.apply(VARS, x, capture_intermediates=lambda mdl, name: name == "__call__")
    inter = state["intermediates"]
    return [
        np.asarray(inter[f"block{i}"]["attn"]["probs"]["__call__"][0], np.float64) for i in range(MODEL.depth)
    ]


def _residual_np(a):
    t = a.shape[-1]
    out = np.zeros_like(a)
    for b in range(a.shape[0]):
        m = a[b] + np.eye(t)
        for i in range(t):
            out[b, i] = m[i] / m[i].sum()
    return out


def _matmul_loop(p, q):
    b, n, _ = p.shape
    out = np.zeros_like(p)
    for e in range(b):
        for i in range(n):
            for j in range(n):
                out[e, i, j] = sum(p[e, i, k] * q[e, k, j] for k in range(n))
    return out


def _max_flow_np(cap, s, t):
    """Edmonds-Karp on a dense float capacity matrix."""
    n = cap.shape[0]
    flow = np.zeros_like(cap)
    total = 0.0
    while True:
        parent = [-1] * n
        parent[s] = s
        queue = collections.deque([s])
        while queue and parent[t] == -1:
            u = queue.popleft()
            for v in range(n):
                if parent[v] == -1 and cap[u, v] - flow[u, v] > 1e-15:
                    parent[v] = u
                    queue.append(v)
        if parent[t] == -1:
            return total
        v, bottleneck = t, np.inf
        while v != s:
            u = parent[v]
            bottleneck = min(bottleneck, cap[u, v] - flow[u, v])
            v = u
        v = t
        while v != s:
            u = parent[v]
            flow[u, v] += bottleneck
            flow[v, u] -= bottleneck
            v = u
        total += bottleneck


def test_finds_one_softmax_per_block():
    units = att._attention_units(f, X)
    assert [u.scope for u in units] == ["ViT/block0/attn/probs", "ViT/block1/attn/probs"]
    assert all(u.output.aval.shape == (3, 2, 17, 17) for u in units)


def test_raw_attention_is_last_layer_cls_row():
    a = _attentions(X)[-1].mean(1)  # (B, T, T)
    ref = a[:, 0, 1:].reshape(3, 4, 4)
    np.testing.assert_allclose(att.raw_attention(f, tokens=TOKENS)(X), ref, rtol=1e-5, atol=1e-7)


def test_rollout_matches_numpy_loops():
    mats = [_residual_np(a.mean(1)) for a in _attentions(X)]
    r = mats[0]
    for m in mats[1:]:
        r = _matmul_loop(m, r)
    ref = r[:, 0, 1:].reshape(3, 4, 4)
    np.testing.assert_allclose(att.attention_rollout(f, tokens=TOKENS)(X), ref, rtol=1e-5, atol=1e-7)
    # max head fusion, no residual
    raw = [a.max(1) for a in _attentions(X)]
    ref2 = _matmul_loop(raw[1], raw[0])[:, 0, 1:].reshape(3, 4, 4)
    out = att.attention_rollout(f, tokens=TOKENS, head_fusion="max", residual=False)(X)
    np.testing.assert_allclose(out, ref2, rtol=1e-5, atol=1e-7)


def test_flow_matches_edmonds_karp():
    mats = [_residual_np(a.mean(1)) for a in _attentions(X[:2])]
    n_layers, t = len(mats), mats[0].shape[-1]
    ours = np.asarray(att.attention_flow(f, tokens=TOKENS)(X[:2]))
    for b in range(2):
        n = (n_layers + 1) * t
        cap = np.zeros((n, n))
        for layer in range(n_layers):
            for i in range(t):
                for j in range(t):
                    cap[(layer + 1) * t + i, layer * t + j] = mats[layer][b, i, j]
        flows = np.array([_max_flow_np(cap, n_layers * t + 0, j) for j in range(t)])
        ref = (flows / flows.sum())[1:].reshape(4, 4)
        np.testing.assert_allclose(ours[b], ref, atol=1e-6)


def test_flow_is_bounded_by_rollout_row_mass():
    """Each token's flow is at most the total outgoing capacity: the flows sum to 1 over tokens."""
    with jax.enable_x64(True):
        x = X.astype(jnp.float64)
        v = jax.tree.map(lambda a: a.astype(jnp.float64), VARS)
        r = att.attention_flow(lambda z: MODEL.apply(v, z), tokens=Tokens(grid=(4, 4)))(x)
        assert r.dtype == jnp.float64
        assert bool(jnp.all(r >= 0)) and bool(jnp.all(r.sum((1, 2)) <= 1 + 1e-9))


def test_gradient_rollout_matches_probe_gradients_and_loops():
    a = _attentions(X)
    grads = []
    for i in range(MODEL.depth):
        p = jflax.probe(MODEL, VARS, f"block{i}/attn/probs")
        zeros = jnp.zeros(a[i].shape, jnp.float32)
        g = jax.grad(lambda d, p=p: jnp.take_along_axis(p.run(X, d)[0], TARGET[:, None], 1).sum())(zeros)
        grads.append(np.asarray(g, np.float64))
    t = a[0].shape[-1]
    r = np.broadcast_to(np.eye(t), (3, t, t)).copy()
    for ai, gi in zip(a, grads, strict=True):
        cam = np.maximum(gi * ai, 0).mean(1)
        r = r + _matmul_loop(cam, r)
    ref = r[:, 0, 1:].reshape(3, 4, 4)
    out = att.gradient_rollout(f, tokens=TOKENS)(X, TARGET)
    assert (
        float(
            np.abs(ref - np.broadcast_to(np.eye(t), ref.shape[:1] + (t, t))[:, 0, 1:].reshape(3, 4, 4)).max()
        )
        > 0
    )
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-7)
    other = att.gradient_rollout(f, tokens=TOKENS)(X, jnp.array([1, 1, 1]))
    assert not np.allclose(out, other), "gradient rollout must depend on the target"


def test_no_softmax_raises():
    cnn = lambda x: x.reshape(x.shape[0], -1)[:, :5] * 2.0  # noqa: E731
    for m in METHODS:
        with pytest.raises(ValueError, match="no attention softmax found"):
            m.build(cnn)(X)


def test_bad_arguments():
    with pytest.raises(ValueError, match="head_fusion"):
        att.attention_rollout(f, head_fusion="median")
    with pytest.raises(ValueError, match="query"):
        att.raw_attention(f, query=-1)
    with pytest.raises(TypeError, match="tokens must be a jaxsal.Tokens"):
        att.raw_attention(f, tokens=(4, 4))
    with pytest.raises(ValueError, match=r"T = 17 tokens.*\(3, 3\)"):
        att.attention_rollout(f, tokens=Tokens(grid=(3, 3)))(X)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_query_past_the_last_token_raises(method):
    # T = 1 CLS + 16 patches: query 16 is the last token, 17 is past it
    assert method.build(f, tokens=TOKENS, query=16)(X, TARGET).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="query=17 but the attention has only T = 17 tokens"):
        method.build(f, tokens=TOKENS, query=17)(X, TARGET)

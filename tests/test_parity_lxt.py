"""Parity of ``jaxsal.lrp(f, "attn_lrp")`` with LXT 2.1 (AttnLRP's reference code) in float64.

The PyTorch twin of ``tests/test_attn_lrp.py``'s ``TinyTransformer`` is written with
LXT's own rule functions (``lxt.explicit.functional``: ``linear_epsilon``,
``layer_norm``, ``rms_norm_identity``, ``softmax``, ``matmul``, ``add2``, ``mean``, and
``lxt.explicit.rules.identity`` on the GELU), on the same weights. LXT's model-patching
entry points need ``transformers``; its functional rules need only ``torch``. The
query's ``1/sqrt(d_head)`` is folded into the query projection on both sides (jaxsal's
canonization; in LXT a bare ``q * c`` would scale the relevance). LXT stabilises with
``z + ε``, jaxsal with ``z + ε sign(z)``: with ε = 1e-10 the two agree far below 1e-6.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
lf = pytest.importorskip("lxt.explicit.functional")
lr = pytest.importorskip("lxt.explicit.rules")

from test_attn_lrp import DEPTH, HEADS, B, _np, _setup  # noqa: E402

import jaxsal  # noqa: E402

pytestmark = pytest.mark.bench

EPS = 1e-10


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _dense(p, x, scale=1.0):
    k, b = p["kernel"], p["bias"]
    return lf.linear_epsilon(x, _t(k.reshape(k.shape[0], -1).T * scale), _t(b.reshape(-1) * scale), EPS)


def _norm(p, x, rms):
    if rms:
        return lf.rms_norm_identity(x, _t(p["scale"]), 1e-6)
    return lf.layer_norm_grad_fn.apply(x, _t(p["scale"]), _t(p["bias"]), 1e-6, EPS)


def _mha(p, h, heads):
    b, t, _ = h.shape
    dh = p["query"]["kernel"].shape[-1]

    def split(z):
        return z.reshape(b, t, heads, dh).permute(0, 2, 1, 3)

    q = split(_dense(p["query"], h, 1.0 / math.sqrt(dh)))
    k, v = split(_dense(p["key"], h)), split(_dense(p["value"], h))
    a = lf.softmax(lf.matmul(q, k.transpose(-1, -2), False, EPS), -1)
    o = lf.matmul(a, v, False, EPS).permute(0, 2, 1, 3).reshape(b, t, heads * dh)
    wo = p["out"]["kernel"]
    return lf.linear_epsilon(o, _t(wo.reshape(-1, wo.shape[-1]).T), _t(p["out"]["bias"]), EPS)


def lxt_twin(params, x, *, depth, heads, pool="cls", rms=False):
    """The transformer's scores, every operation an LXT rule."""
    h = lf.add2(_dense(params["embed"], x), _t(params["pos"]), False, EPS)
    for i in range(depth):
        p = params[f"block{i}"]
        h = lf.add2(h, _mha(p["attn"], _norm(p["ln1"], h, rms), heads), False, EPS)
        u = _dense(p["fc1"], _norm(p["ln2"], h, rms))
        h = lf.add2(h, _dense(p["fc2"], lr.identity(_gelu_tanh, u)), False, EPS)
    h = _norm(params["ln"], h, rms)
    pooled = h[:, 0] if pool == "cls" else lf.mean(h, 1, False, EPS)
    return _dense(params["head"], pooled)


@pytest.mark.parametrize(
    "kw",
    [dict(pool="cls"), dict(pool="mean"), dict(pool="cls", rms=True)],
    ids=["cls-layernorm", "mean-layernorm", "cls-rmsnorm"],
)
def test_attn_lrp_matches_lxt_float64(kw):
    with jax.enable_x64(True):
        _, params, f, x = _setup(**kw)
        target = np.array([1, 3])
        got = np.asarray(jaxsal.lrp(f, "attn_lrp", epsilon=EPS, stabilizer=EPS)(x, jnp.asarray(target)))
        scores_jax = np.asarray(f(x))
    p = _np(params)
    xt = _t(x).requires_grad_(True)
    scores = lxt_twin(p, xt, depth=DEPTH, heads=HEADS, **kw)
    np.testing.assert_allclose(scores.detach().numpy(), scores_jax, rtol=1e-6)  # RMSNorm: LXT casts to f32
    r_out = torch.zeros_like(scores)
    r_out[torch.arange(B), torch.as_tensor(target)] = scores[
        torch.arange(B), torch.as_tensor(target)
    ].detach()
    scores.backward(r_out)
    want = xt.grad.numpy()
    gap = np.abs(got - want).max() / np.abs(want).max()
    assert gap < 1e-6, gap
    assert np.abs(want).max() > 1e-3


def test_lxt_twin_is_not_a_gradient():
    """The twin's backward is LXT's relevance, not S_c times gradient x input: parity above can fail."""
    with jax.enable_x64(True):
        _, params, f, x = _setup()
        s_c = np.asarray(f(x))[np.arange(B), [1, 3]]
        grad_x = np.asarray(jaxsal.grad_x_input(f)(x, jnp.array([1, 3]))) * s_c[:, None, None]
    xt = _t(x).requires_grad_(True)
    scores = lxt_twin(_np(params), xt, depth=DEPTH, heads=HEADS)
    r_out = torch.zeros_like(scores)
    r_out[torch.arange(B), torch.tensor([1, 3])] = scores[torch.arange(B), torch.tensor([1, 3])].detach()
    scores.backward(r_out)
    assert np.abs(xt.grad.numpy() - grad_x).max() > 1e-2 * np.abs(grad_x).max()

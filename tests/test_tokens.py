"""Token layers: ``Tokens`` and ``with_tokens`` / ``probe(..., tokens=)`` give the CAM family a ViT's patch grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal import flax as jflax
from jaxsal._src.probe import probe, with_tokens
from jaxsal._src.tokens import Tokens
from jaxsal.models.vit import ViT

# A 16 x 16 input, 4-px patches: a 4 x 4 grid after the CLS token (T = 17).
MODEL = ViT(num_classes=5, patch=4, dim=8, depth=2, heads=2, mlp_dim=16, stem=0)
X = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
VARS = MODEL.init(jax.random.key(0), X)
LAYER = "block1/ln1"
CAMS = [m for m in jaxsal.methods(takes="probe").values() if m.family == "cam"]


def test_to_map_and_back():
    a = jnp.arange(2 * 20 * 3, dtype=jnp.float32).reshape(2, 20, 3)
    tk = Tokens(grid=(2, 8), prefix=2, suffix=2)
    m = tk.to_map(a)
    assert m.shape == (2, 2, 8, 3)
    np.testing.assert_array_equal(m[1, 1, 3], a[1, 2 + 8 + 3])
    back = tk.to_tokens(m, 20)
    np.testing.assert_array_equal(back[:, 2:18], a[:, 2:18])
    np.testing.assert_array_equal(back[:, :2], 0)
    np.testing.assert_array_equal(back[:, 18:], 0)
    assert Tokens().grid_for(17) == (4, 4)  # square grid inferred


def test_errors_name_t_and_spec():
    a = jnp.zeros((2, 17, 8))
    with pytest.raises(ValueError, match=r"T = 17.*grid \(3, 5\) has 3 \* 5 = 15 patches"):
        Tokens(grid=(3, 5)).to_map(a)
    with pytest.raises(ValueError, match=r"T = 17.*prefix.*leaving no patches"):
        Tokens(grid=(4, 4), prefix=17).to_map(a)
    with pytest.raises(ValueError, match=r"T = 17 tokens, 15 after 2 prefix.*not a square"):
        Tokens(prefix=2).to_map(a)
    with pytest.raises(ValueError, match=r"token activations \(B, T, D\)"):
        Tokens(grid=(4, 4)).to_map(jnp.zeros((2, 4, 4, 8)))
    with pytest.raises(ValueError, match="grid must be"):
        Tokens(grid=(0, 4))
    with pytest.raises(ValueError, match="prefix"):
        Tokens(prefix=-1)


def test_probe_on_token_layer_refuses_mismatched_spec():
    p = with_tokens(jflax.probe(MODEL, VARS, LAYER), Tokens(grid=(3, 3)))
    with pytest.raises(ValueError, match=r"layer 'block1/ln1' has T = 17 tokens.*\(3, 3\)"):
        jaxsal.grad_cam(p)(X)
    with pytest.raises(TypeError, match="tokens must be a jaxsal.Tokens"):
        with_tokens(jflax.probe(MODEL, VARS, LAYER), (4, 4))


def test_grad_cam_on_tokens_equals_hand_written_reshape():
    """with_tokens == a reshape written by hand (features_fn / head_fn split at block1/ln1)."""
    tk = Tokens(grid=(4, 4))
    ours = jaxsal.grad_cam(with_tokens(jflax.probe(MODEL, VARS, LAYER), tk))(X)
    # the reference: the gradient with respect to the patch tokens, by jax.grad on the probe's delta
    p = jflax.probe(MODEL, VARS, LAYER)
    _, a = p.run(X, None)
    scores = p.scores_fn(X)
    t = scores.argmax(-1)
    g = jax.grad(lambda d: jnp.take_along_axis(p.run(X, d)[0], t[:, None], 1).sum())(jnp.zeros_like(a))
    am, gm = a[:, 1:].reshape(2, 4, 4, 8), g[:, 1:].reshape(2, 4, 4, 8)
    ref = jax.nn.relu((gm.mean((1, 2), keepdims=True) * am).sum(-1))
    assert float(jnp.abs(ref).max()) > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    # the plain-function probe with tokens= gives the same
    pf = probe(lambda x: p.run(x, None)[1], lambda a_: p.run(X, a_ - a)[0], name="split", tokens=tk)
    np.testing.assert_allclose(jaxsal.grad_cam(pf)(X), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", CAMS, ids=[m.name for m in CAMS])
def test_whole_cam_family_runs_on_vit(method):
    p = with_tokens(jflax.probe(MODEL, VARS, LAYER), Tokens(grid=(4, 4)))
    hyper = {"batch_size": 4} if method.name == "score_cam" else {}
    if (
        method.name == "guided_grad_cam"
    ):  # a ViT has no ReLU: guided backprop is the plain gradient, and says so
        with pytest.warns(UserWarning, match="no ReLU"):
            r = method.build(p, **hyper)(X)
    else:
        r = method.build(p, **hyper)(X)
    assert r.shape == (X.shape if method.output == "input" else (2, 4, 4)) and r.dtype == X.dtype
    assert bool(jnp.all(jnp.isfinite(r)))


def test_flax_probe_tokens_argument_equals_with_tokens():
    tk = Tokens(grid=(4, 4))
    a = jaxsal.grad_cam(jflax.probe(MODEL, VARS, LAYER, tokens=tk))(X)
    b = jaxsal.grad_cam(with_tokens(jflax.probe(MODEL, VARS, LAYER), tk))(X)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="grid"):
        jaxsal.grad_cam(jflax.probe(MODEL, VARS, LAYER, tokens=Tokens(grid=(3, 3))))(X)

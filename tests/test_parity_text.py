"""Parity of ``integrated_gradients(at_layer(probe on "embed"))`` with Captum's ``LayerIntegratedGradients``.

A PyTorch twin of :func:`jaxsal.models.text_tiny` with identical weights; float64, the
same Gauss-Legendre nodes, the PAD token as the baseline (Captum: baseline ids,
mapped through the embedding; jaxsal: a one-hot PAD input, mapped through the layer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import jaxsal  # noqa: E402
from jaxsal.models.text import TEXT_PAD, TEXT_VOCAB, text_task, text_tiny  # noqa: E402

pytestmark = pytest.mark.bench


class _LN(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(np.asarray(p["scale"])))
        self.bias = torch.nn.Parameter(torch.tensor(np.asarray(p["bias"])))

    def forward(self, x):
        xc = x - x.mean(-1, keepdim=True)
        return xc * torch.rsqrt((xc * xc).mean(-1, keepdim=True) + 1e-6) * self.scale + self.bias


def _linear(p):
    k = np.asarray(p["kernel"])
    lin = torch.nn.Linear(k.shape[0], k.shape[1])
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(k.T))
        lin.bias.copy_(torch.tensor(np.asarray(p["bias"])))
    return lin


class TorchText(torch.nn.Module):
    """The text transformer written in PyTorch, reading the Flax parameters."""

    def __init__(self, params, heads: int = 2):
        super().__init__()
        emb = np.asarray(params["embed"]["embedding"])
        self.embed = torch.nn.Embedding(*emb.shape)
        with torch.no_grad():
            self.embed.weight.copy_(torch.tensor(emb))
        self.cls = torch.nn.Parameter(torch.tensor(np.asarray(params["cls"])))
        self.pos = torch.nn.Parameter(torch.tensor(np.asarray(params["pos"])))
        self.heads = heads
        self.blocks = torch.nn.ModuleList()
        i = 0
        while f"block{i}" in params:
            b = params[f"block{i}"]
            self.blocks.append(
                torch.nn.ModuleDict(
                    dict(
                        ln1=_LN(b["ln1"]),
                        qkv=_linear(b["attn"]["qkv"]),
                        out=_linear(b["attn"]["out"]),
                        ln2=_LN(b["ln2"]),
                        fc1=_linear(b["fc1"]),
                        fc2=_linear(b["fc2"]),
                    )
                )
            )
            i += 1
        self.norm = _LN(params["norm"])
        self.head = _linear(params["head"])

    def forward(self, ids):
        x = self.embed(ids)
        b, t, d = x.shape
        x = torch.cat([self.cls.expand(b, 1, d), x], 1) + self.pos[:, : t + 1]
        h, hd = self.heads, d // self.heads
        for blk in self.blocks:
            qkv = blk["qkv"](blk["ln1"](x)).reshape(b, t + 1, 3, h, hd)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / hd**0.5, -1)
            x = x + blk["out"](torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t + 1, d))
            x = x + blk["fc2"](torch.nn.functional.gelu(blk["fc1"](blk["ln2"](x))))
        return self.head(self.norm(x)[:, 0])


def test_layer_integrated_gradients_matches_captum_float64():
    model, v = text_tiny()
    ids = np.asarray(text_task(7, 4).tokens)
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v)
        x = jax.nn.one_hot(ids, TEXT_VOCAB, dtype=jnp.float64)
        base = jax.nn.one_hot(np.full_like(ids, TEXT_PAD), TEXT_VOCAB, dtype=jnp.float64)
        scores = model.apply(v64, x)
        target = np.asarray(scores.argmax(-1))
        p = jaxsal.flax.probe(model, v64, "embed")
        ours = jaxsal.integrated_gradients(jaxsal.at_layer(p), steps=16, baseline=base)(
            x, jnp.asarray(target)
        )
        ours = np.asarray(ours)
    twin = TorchText(v["params"]).double()
    tid = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        np.testing.assert_allclose(twin(tid).numpy(), np.asarray(scores), atol=1e-10)
    lig = captum_attr.LayerIntegratedGradients(twin, twin.embed)
    ref = lig.attribute(
        tid,
        baselines=torch.full_like(tid, TEXT_PAD),
        target=torch.tensor(target),
        n_steps=16,
        method="gausslegendre",
    )
    ref = ref.detach().numpy()
    assert ours.shape == ref.shape == (4, ids.shape[1], v["params"]["embed"]["embedding"].shape[1])
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < 1e-6, err

"""The committed transformers: sha256-checked npz weights, the text task, embeddings attribution."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal.models import _npz
from jaxsal.models._torch_pickle import ChecksumError
from jaxsal.models.text import (
    TEXT_A,
    TEXT_B,
    TEXT_LENGTH,
    TEXT_PAD,
    TEXT_TINY_SHA256,
    TEXT_VOCAB,
    text_task,
    text_tiny,
)


def test_npz_round_trip_and_checksum(tmp_path):
    params = {"a": {"kernel": np.arange(6.0).reshape(2, 3)}, "b": np.ones(3)}
    digest = _npz.save_params(str(tmp_path / "w.npz"), params)
    back = _npz.load_params("w.npz", digest, directory=str(tmp_path))
    np.testing.assert_array_equal(back["a"]["kernel"], params["a"]["kernel"])
    with pytest.raises(ChecksumError, match="sha256"):
        _npz.load_params("w.npz", "0" * 64, directory=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing"):
        _npz.load_params("nope.npz", digest, directory=str(tmp_path))


def test_corrupted_weights_refused(tmp_path):
    shutil.copy(os.path.join(_npz.WEIGHTS_DIR, "text_tiny.npz"), tmp_path / "text_tiny.npz")
    with open(tmp_path / "text_tiny.npz", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumError):
        _npz.load_params("text_tiny.npz", TEXT_TINY_SHA256, directory=str(tmp_path))


def test_text_task_labels_by_brute_force():
    d = text_task(3, 300)
    ids, labels = np.asarray(d.tokens), np.asarray(d.labels)
    for seq, y in zip(ids, labels, strict=True):
        pos_a = [i for i, t in enumerate(seq) if t == TEXT_A]
        pos_b = [i for i, t in enumerate(seq) if t == TEXT_B]
        assert y == int(any(i < j for i in pos_a for j in pos_b))
    assert 0.4 < labels.mean() < 0.6
    assert not np.any(ids == TEXT_PAD)
    np.testing.assert_array_equal(d.decisive, (ids == TEXT_A) | (ids == TEXT_B))
    with pytest.raises(ValueError, match="n must be"):
        text_task(0, 0)


def test_text_tiny_accuracy_and_one_hot_input():
    model, v = text_tiny()
    d = text_task(1, 500)  # the held-out key
    logits = model.apply(v, d.tokens)
    assert float((logits.argmax(-1) == d.labels).mean()) >= 0.99
    np.testing.assert_allclose(
        model.apply(v, jax.nn.one_hot(d.tokens[:8], TEXT_VOCAB)), logits[:8], atol=1e-5
    )
    with pytest.raises(ValueError, match="one-hot"):
        model.apply(v, jnp.zeros((2, 12, 3)))


def test_embedding_ig_is_complete_and_finds_decisive_tokens():
    """IG at the embeddings: Σ R = S(x) - S(PAD) (completeness), and the A, B tokens get most of |R|."""
    model, v = text_tiny()
    d = text_task(1, 64)
    keep = np.asarray(d.decisive.sum(1) == 2)
    ids = np.asarray(d.tokens)[keep][:16]
    x = jax.nn.one_hot(ids, TEXT_VOCAB)
    base = jax.nn.one_hot(np.full_like(ids, TEXT_PAD), TEXT_VOCAB)
    p = jaxsal.flax.probe(model, v, "embed")
    t = model.apply(v, x).argmax(-1)
    r = jaxsal.integrated_gradients(jaxsal.at_layer(p), steps=64, baseline=base)(x, t)
    assert r.shape == (ids.shape[0], 12, 32)
    gap = jnp.take_along_axis(model.apply(v, x) - model.apply(v, base), t[:, None], 1)[:, 0]
    np.testing.assert_allclose(r.sum((1, 2)), gap, rtol=2e-2, atol=2e-2)
    per_token = np.abs(np.asarray(r.sum(-1)))
    dec = np.asarray(d.decisive)[keep][:16]
    share = (per_token * dec).sum(1) / per_token.sum(1)
    assert share.mean() > 2 * dec.mean()  # well above a uniform map's share


def test_vit_tiny_loads_and_matches_its_stated_accuracy():
    from jaxsal.datasets import synthetic_shapes
    from jaxsal.models.vit import VIT_TINY_ACCURACY, vit_tiny

    model, v = vit_tiny()
    d = synthetic_shapes(1, 2000)  # the held-out images, in the training script's batches of 500
    predict = jax.jit(lambda x: model.apply(v, x).argmax(-1))
    pred = jnp.concatenate([predict(d.images[i : i + 500]) for i in range(0, 2000, 500)])
    acc = float((pred == d.labels).mean())
    # the script's own number; 10 of 2000 images of slack for another CPU's float rounding
    assert abs(acc - VIT_TINY_ACCURACY) <= 0.005, acc
    assert VIT_TINY_ACCURACY >= 0.95
    assert sum(a.size for a in jax.tree_util.tree_leaves(v)) == 73124


def test_text_model_refuses_out_of_range_ids_and_too_long_sequences():
    model, v = text_tiny()
    ids = text_task(0, 2).tokens
    assert model.apply(v, ids).shape == (2, 2)
    for bad in (TEXT_VOCAB, -1):
        with pytest.raises(ValueError, match=f"0 <= id < vocab = {TEXT_VOCAB}"):
            model.apply(v, ids.at[0, 3].set(bad))
    with pytest.raises(ValueError, match=f"L <= length = {TEXT_LENGTH}"):
        model.apply(v, jnp.ones((2, TEXT_LENGTH + 1), jnp.int32))
    with pytest.raises(ValueError, match=r"\(B, L\) int ids"):
        model.apply(v, jnp.ones((2, TEXT_LENGTH), jnp.float32).astype(bool))
    # traced ids cannot be checked, and are not refused
    assert jax.jit(lambda t: model.apply(v, t))(ids).shape == (2, 2)

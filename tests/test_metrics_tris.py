"""XAI-TRIS-style generator: reproducible, masks where the signal is, suppressors, weak baselines."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal.metrics import relevance_mass_accuracy
from jaxsal.metrics.tris import SCENARIOS, sobel_edges, tris

KEY = jax.random.key(0)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_seeded_and_masks_match_the_signal(scenario):
    a = tris(KEY, 64, size=16, scenario=scenario)
    b = tris(KEY, 64, size=16, scenario=scenario)
    c = tris(jax.random.key(1), 64, size=16, scenario=scenario)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (64, 16, 16, 1) and a.images.dtype == jnp.float32
    assert a.masks.shape == (64, 16, 16) and a.masks.dtype == jnp.bool_
    np.testing.assert_array_equal(a.masks, a.signals != 0)  # the signal is exactly on the mask
    assert set(np.unique(np.abs(np.asarray(a.signals)))) == {0.0, 1.0}
    px = 2 * 2  # 16 // 8 = 2-pixel blocks, 4 blocks per tetromino
    per = np.asarray(a.masks).reshape(64, -1).sum(1)
    assert (per == (8 * px if scenario == "xor" else 4 * px)).all()
    snr = 0.5
    sig, bg = np.asarray(a.signals), np.asarray(a.backgrounds)
    expected = bg * (1 + snr * sig) if scenario == "multiplicative" else snr * sig + bg
    np.testing.assert_allclose(a.images[..., 0], expected, rtol=1e-6, atol=1e-6)
    labels = np.asarray(a.labels)
    assert set(np.unique(labels)) == {0, 1}
    if scenario == "xor":  # class 1 iff the two patterns have the same sign
        s = sig.reshape(64, -1)
        m = np.asarray(a.masks).reshape(64, -1)
        same = [len(np.unique(s[i][m[i]])) == 1 for i in range(64)]
        np.testing.assert_array_equal(labels == 1, same)
    else:  # the pattern's sign is the class
        assert ((sig.sum((1, 2)) > 0) == (labels == 1)).all()


def test_translations_rotations_move_the_mask():
    d = tris(KEY, 32, size=16, scenario="translations_rotations")
    assert len({np.asarray(m).tobytes() for m in d.masks}) > 8
    fixed = tris(KEY, 32, size=16, scenario="linear")
    assert len({np.asarray(m).tobytes() for m in fixed.masks}) == 1


def test_correlated_background_makes_suppressors():
    """The correlated background carries information about the noise on the mask from
    pixels outside it, so the least-squares classifier puts weight there (suppressors);
    on white noise it does not."""
    n, size = 3000, 16
    share = {}
    for bg in ("white", "correlated"):
        d = tris(KEY, n, size=size, background=bg)
        mask = np.asarray(d.masks[0]).ravel()
        noise = np.asarray(d.backgrounds).reshape(n, -1)
        # neighbours just outside the mask correlate with the noise on it only when correlated
        inside = noise[:, mask].mean(1)
        ring = np.asarray(jnp.roll(d.masks[0], 2, axis=1) & ~d.masks[0]).ravel()
        r = np.corrcoef(inside, noise[:, ring].mean(1))[0, 1]
        assert (r > 0.5) if bg == "correlated" else (abs(r) < 0.1), (bg, r)
        x = np.asarray(d.images).reshape(n, -1)
        y = 2.0 * np.asarray(d.labels) - 1
        w, *_ = np.linalg.lstsq(np.c_[x, np.ones(n)], y, rcond=None)
        w = np.abs(w[:-1])
        share[bg] = w[~mask].sum() / w.sum()
    assert share["correlated"] > 0.8 and share["correlated"] > share["white"] + 0.25, share


def test_input_and_edges_score_like_a_random_map():
    """Must-show of issue 14: on the correlated set, the input itself and a Sobel edge map
    localise the signal hardly better than a random map, while the true mask scores 1."""
    d = tris(KEY, 400, size=32, background="correlated")
    random_map = jax.random.uniform(jax.random.key(1), d.masks.shape)
    rand = float(relevance_mass_accuracy(random_map, d.masks).mean)
    inp = float(relevance_mass_accuracy(d.images, d.masks).mean)
    edges = float(relevance_mass_accuracy(sobel_edges(d.images), d.masks).mean)
    truth = float(relevance_mass_accuracy(d.masks.astype(jnp.float32), d.masks).mean)
    assert rand == pytest.approx(float(d.masks.mean()), abs=0.01)
    assert abs(inp - rand) < 0.03 and abs(edges - rand) < 0.03, (inp, edges, rand)
    assert truth == pytest.approx(1.0)


def test_sobel_against_a_naive_loop():
    x = np.random.default_rng(0).normal(size=(1, 5, 6, 1)).astype(np.float32)
    p = np.pad(x[0, ..., 0], 1, mode="edge")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    ref = np.zeros((5, 6), np.float32)
    for i in range(5):
        for j in range(6):
            win = p[i : i + 3, j : j + 3]
            ref[i, j] = np.hypot((win * kx).sum(), (win * kx.T).sum())
    np.testing.assert_allclose(sobel_edges(jnp.asarray(x))[0], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(n=0), "n"),
        (dict(size=20), "size"),
        (dict(scenario="rigid"), "scenario"),
        (dict(background="pink"), "background"),
        (dict(snr=0.0), "snr"),
        (dict(smoothing=-1.0), "smoothing"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = dict(n=4) | kwargs
    with pytest.raises(ValueError, match=name):
        tris(KEY, **args)

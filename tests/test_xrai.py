"""XRAI: a closed-form case, PAIR parity (segments, ranking, the whole map), jit, bad input.

Contract checks (jit, vmap, dtypes, keys) run through the registry in test_contract.py.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src.xrai import felzenszwalb_masks, rank_regions

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def _fixed(base: np.ndarray, f) -> jaxsal.Attribution:
    """A base attribution that returns ``base`` whatever the input (for exact cases)."""
    return jaxsal.attribution(lambda x, t=None, *, key=None: jnp.asarray(base, x.dtype), scores_fn=f)


def test_closed_form_overlapping_regions():
    """Regions on a 4x6 map: L (columns 0-2), M (columns 1-4), R (columns 3-5).
    M has the highest density; after it, L adds column 0 and R column 5 (4 pixels each)."""
    attr = np.zeros((4, 6))
    attr[:, 0], attr[:, 1:5], attr[:, 5] = 1.0, 3.0, -1.0
    cols = lambda a, b: np.broadcast_to((np.arange(6) >= a) & (np.arange(6) <= b), (4, 6))  # noqa: E731
    masks = np.stack([cols(0, 2), cols(1, 4), cols(3, 5)])
    out = rank_regions(attr, masks, min_pixel_diff=1)
    np.testing.assert_array_equal(out, attr)  # M (gain 3), then L's column (1), then R's (-1)
    # L and R now add fewer than 5 new pixels: dropped; the two uncovered columns get
    # the mean attribution over them, (1 - 1) / 2
    out = rank_regions(attr, masks, min_pixel_diff=5)
    want = attr.copy()
    want[:, 0] = want[:, 5] = 0.0
    np.testing.assert_array_equal(out, want)
    # the same once the covered area (M: 16/24) exceeds area_threshold
    np.testing.assert_array_equal(rank_regions(attr, masks, min_pixel_diff=1, area_threshold=0.5), want)


def test_segments_equal_pairs():
    pytest.importorskip("saliency")
    from benchmarks.pair_parity import pair_segments

    img = np.random.default_rng(0).normal(size=(20, 24, 3))
    np.testing.assert_array_equal(felzenszwalb_masks(img), pair_segments(img))


@pytest.mark.parametrize("min_pixel_diff", [1, 50])
def test_ranking_equals_pairs(min_pixel_diff):
    pytest.importorskip("saliency")
    import saliency.core as sc

    rng = np.random.default_rng(1)
    masks = felzenszwalb_masks(rng.normal(size=(20, 24, 3)), resize=None, dilation_radius=2)
    attr = rng.normal(size=(20, 24))
    ref, _ = sc.XRAI._xrai(attr, list(masks), min_pixel_diff=min_pixel_diff)
    np.testing.assert_array_equal(rank_regions(attr, masks, min_pixel_diff=min_pixel_diff), ref)


def test_whole_map_equals_pair_given_base_and_segments(cnn):
    """jaxsal.xrai under jit, given an IG base and label segments, equals PAIR's GetMask
    with the same base attribution and the same masks."""
    pytest.importorskip("saliency")
    from benchmarks.pair_parity import pair_xrai

    ig = jaxsal.integrated_gradients(cnn.f, steps=8)
    labels = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 2, 0), 2, 1)  # 2x2 blocks of 8x8
    target = jnp.array([0, 3, 1])
    ours = jax.jit(lambda x, t: jaxsal.xrai(ig, segments=labels, min_pixel_diff=1)(x, t))(cnn.x, target)
    assert ours.shape == cnn.x.shape and ours.dtype == cnn.x.dtype
    np.testing.assert_array_equal(ours[..., 0], ours[..., 2])  # one map, repeated over channels
    base = np.asarray(ig(cnn.x, target), np.float64)
    masks = [[labels == v for v in range(16)]] * 3
    import saliency.core as sc

    ref = np.stack(
        [
            sc.XRAI()._xrai(base[e].max(-1), masks[e], min_pixel_diff=1)[0]
            for e in range(3)  # PAIR's GetMask fixes min_pixel_diff at 50: call its ranking
        ]
    )
    np.testing.assert_allclose(ours[..., 0], ref, rtol=1e-6)
    # and GetMask itself at PAIR's min_pixel_diff = 50, with masks covering >= 50 pixels
    halves = np.zeros((8, 8), int)
    halves[:, 4:] = 1
    big = np.stack([np.tile(halves, (2, 2))] * 3)  # 16x16 images, four 8x8 blocks as two labels
    x16 = jnp.tile(cnn.x, (1, 2, 2, 1))
    base16 = base.repeat(2, 1).repeat(2, 2)
    f16 = lambda z: z.reshape(z.shape[0], -1)[:, :5]  # noqa: E731  (only the target is read off it)
    got = jaxsal.xrai(_fixed(base16, f16), segments=big)(x16, target)
    ref = pair_xrai(np.asarray(x16), base16, [[b == 0, b == 1] for b in big])
    np.testing.assert_allclose(got[..., 0], ref, rtol=1e-6)


def test_traced_segments_and_vmap(cnn):
    labels = jnp.asarray(np.repeat(np.arange(4), 16).reshape(8, 8))
    attr = jaxsal.xrai(jaxsal.vanilla_grad(cnn.f), min_pixel_diff=1)
    eager = jaxsal.xrai(jaxsal.vanilla_grad(cnn.f), segments=labels, min_pixel_diff=1)(cnn.x, 0)
    per_example = jnp.broadcast_to(labels, (3, 8, 8))
    jitted = jax.jit(lambda x, s: jaxsal.xrai(jaxsal.vanilla_grad(cnn.f), segments=s, min_pixel_diff=1)(x, 0))
    np.testing.assert_array_equal(jitted(cnn.x, per_example), eager)
    assert attr(cnn.x, 0).shape == cnn.x.shape  # default segments, on the host


def test_default_base_is_the_mean_of_black_and_white_ig(cnn):
    labels = np.repeat(np.arange(4), 16).reshape(8, 8)
    x, target = cnn.x, jnp.array([1, 2, 0])
    lo = jnp.min(x, axis=(1, 2, 3), keepdims=True)
    hi = jnp.max(x, axis=(1, 2, 3), keepdims=True)
    ig = lambda b: jaxsal.integrated_gradients(cnn.f, baseline=b, steps=6, method="riemann_trapezoid")  # noqa: E731
    base = jax.jit(lambda z: (ig(lo)(z, target) + ig(hi)(z, target)) / 2)(x)
    want = jaxsal.xrai(_fixed(base, cnn.f), segments=labels, min_pixel_diff=1)(x, target)
    got = jax.jit(lambda z: jaxsal.xrai(cnn.f, steps=6, segments=labels, min_pixel_diff=1)(z, target))(x)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(min_pixel_diff=0), "min_pixel_diff"),
        (dict(area_threshold=1.5), "area_threshold"),
        (dict(steps=1), "steps"),
        (dict(segment_resize=(224,)), "segment_resize"),
        (dict(dilation_radius=-1), "dilation_radius"),
    ],
)
def test_bad_hyper_parameters(kwargs, match, cnn):
    with pytest.raises(ValueError, match=match):
        jaxsal.xrai(cnn.f, **kwargs)


def test_bad_segments_and_bases(cnn):
    with pytest.raises(ValueError, match="segments"):
        jaxsal.xrai(cnn.f, segments=np.zeros((5, 5), int))(cnn.x)
    with pytest.raises(ValueError, match="segments"):
        jaxsal.xrai(cnn.f, segments=np.zeros((8, 8)))(cnn.x)  # float labels
    with pytest.raises(ValueError, match="default IG base"):
        jaxsal.xrai(jaxsal.vanilla_grad(cnn.f), steps=10)
    with pytest.raises(ValueError, match="upsample"):
        jaxsal.xrai(_fixed(np.zeros((3, 4, 4)), cnn.f), segments=np.zeros((8, 8), int))(cnn.x)
    flat = lambda z: z.reshape(z.shape[0], -1)[:, :5]  # noqa: E731
    with pytest.raises(ValueError, match="images"):
        jaxsal.xrai(_fixed(np.zeros((3, 8)), flat))(jnp.ones((3, 8)), 0)

"""jaxsal.segments: scikit-image's superpixels, renumbered; the grid; under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    img = np.zeros((2, 24, 24, 3))
    img[:, :, 12:] = [1.0, 0.2, 0.1]  # two colour halves, plus a little noise
    img[1, 12:] = [0.1, 0.9, 0.3]
    return img + 0.02 * rng.normal(size=img.shape)


@pytest.mark.parametrize(
    "method,options", [("slic", {"n_segments": 8}), ("felzenszwalb", {"scale": 50}), ("quickshift", {})]
)
def test_same_partition_as_scikit_image(images, method, options):
    import skimage.segmentation as seg

    ids = jaxsal.segments(images, method, **options)
    assert ids.shape == (2, 24, 24) and ids.dtype == np.int32
    for i, img in enumerate(images):
        scaled = (img - img.min()) / (img.max() - img.min())
        kw = {} if method == "quickshift" else {"channel_axis": -1}
        ref = getattr(seg, method)(scaled, **options, **kw)
        assert set(np.unique(ids[i])) == set(range(len(np.unique(ref))))  # 0 .. k-1, no gaps
        # the same partition: a one-to-one map between the two labellings
        pairs = set(zip(ids[i].ravel().tolist(), ref.ravel().tolist(), strict=True))
        assert len(pairs) == len(np.unique(ref))
    assert len(np.unique(ids[0])) >= 2  # the two halves are never one segment


def test_grid():
    ids = jaxsal.segments(np.zeros((7, 10, 3)), "grid", cells=(2, 3))
    assert ids.shape == (7, 10)
    np.testing.assert_array_equal(np.unique(ids), np.arange(6))
    assert (ids[:4, :4] == 0).all() and (ids[4:, 8:] == 5).all()  # patches of ceil(7/2) x ceil(10/3)
    assert jaxsal.segments(np.zeros((2, 3, 3, 1)), "grid").max() == 8  # more cells than pixels


def test_under_jit_and_vmap(images):
    x = jnp.asarray(images, jnp.float32)
    host = jaxsal.segments(np.asarray(x), "slic", n_segments=8)
    seg = jax.jit(lambda z: jaxsal.segments(z, "slic", n_segments=8, max_segments=32))
    np.testing.assert_array_equal(seg(x), host)
    np.testing.assert_array_equal(jax.vmap(seg)(jnp.stack([x, x])), np.stack([host, host]))
    with pytest.raises(ValueError, match="max_segments"):
        jax.jit(lambda z: jaxsal.segments(z, "slic"))(x)
    with pytest.raises(Exception, match="max_segments"):
        jax.block_until_ready(jax.jit(lambda z: jaxsal.segments(z, "slic", n_segments=8, max_segments=1))(x))


def test_bad_input(images):
    with pytest.raises(ValueError, match="method"):
        jaxsal.segments(images, "watershed")
    with pytest.raises(ValueError, match="image"):
        jaxsal.segments(np.zeros(5), "grid")
    with pytest.raises(ValueError, match="cells"):
        jaxsal.segments(images, "grid", cells=0)
    with pytest.raises(ValueError, match="max_segments"):
        jaxsal.segments(images, "slic", max_segments=0)

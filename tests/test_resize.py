"""upsample: half-pixel bilinear (PyTorch align_corners=False), checked against NumPy loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsal._src.resize import upsample


def np_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PyTorch's bilinear, align_corners=False, antialias=False, written as loops."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        u = max((i + 0.5) * h / out_h - 0.5, 0.0)
        i0 = int(u)
        i1 = i0 + 1 if i0 < h - 1 else i0
        di = u - i0
        for j in range(out_w):
            v = max((j + 0.5) * w / out_w - 0.5, 0.0)
            j0 = int(v)
            j1 = j0 + 1 if j0 < w - 1 else j0
            dj = v - j0
            out[i, j] = (
                (1 - di) * (1 - dj) * img[i0, j0]
                + (1 - di) * dj * img[i0, j1]
                + di * (1 - dj) * img[i1, j0]
                + di * dj * img[i1, j1]
            )
    return out


def np_nearest_exact(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = img.shape
    rows = [min(int((i + 0.5) * h / out_h), h - 1) for i in range(out_h)]
    cols = [min(int((j + 0.5) * w / out_w), w - 1) for j in range(out_w)]
    return img[np.ix_(rows, cols)]


def test_known_values():
    """PyTorch: F.interpolate([[1, 2], [3, 4]], size=4, mode='bilinear', align_corners=False)."""
    expected = np.array(
        [[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]]
    )
    got = upsample(jnp.array([[[1.0, 2.0], [3.0, 4.0]]]), (4, 4))
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


@pytest.mark.parametrize("size", [(7, 9), (3, 4), (12, 5), (2, 2), (1, 6)])
def test_bilinear_matches_loops(size):
    maps = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 4)))
    got = np.asarray(upsample(jnp.asarray(maps), size))
    assert got.shape == (2, *size)
    for b in range(2):
        np.testing.assert_allclose(got[b], np_bilinear(maps[b], *size), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(7, 9), (2, 2), (6, 3)])
def test_nearest_matches_loops(size):
    maps = np.asarray(jax.random.normal(jax.random.key(1), (2, 3, 4)))
    got = np.asarray(upsample(jnp.asarray(maps), size, "nearest"))
    for b in range(2):
        np.testing.assert_array_equal(got[b], np_nearest_exact(maps[b], *size))


def test_channels_jit_grad_dtype():
    maps = jax.random.normal(jax.random.key(2), (2, 3, 4, 5))
    got = upsample(maps, (6, 8))
    assert got.shape == (2, 6, 8, 5)
    np.testing.assert_allclose(got[..., 3], upsample(maps[..., 3], (6, 8)), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(upsample, static_argnums=(1,))(maps, (6, 8)), got, rtol=1e-6)
    # linear in the maps, so the gradient of a sum is the column sum of the interpolation matrix
    g = jax.grad(lambda m: upsample(m, (6, 8)).sum())(maps[..., 0])
    np.testing.assert_allclose(g.sum(), 2 * 6 * 8, rtol=1e-5)
    assert upsample(maps.astype(jnp.bfloat16), (6, 8)).dtype == jnp.bfloat16


def test_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        upsample(jnp.ones((1, 2, 2)), (4, 4), "bicubic")
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        upsample(jnp.ones((2, 2)), (4, 4))
    with pytest.raises(TypeError, match="pair of ints"):
        upsample(jnp.ones((1, 2, 2)), 4)
    with pytest.raises(ValueError, match="positive"):
        upsample(jnp.ones((1, 2, 2)), (0, 4))
    with pytest.raises(TypeError, match="floating"):
        upsample(jnp.ones((1, 2, 2), jnp.int32), (4, 4))

"""Reference tests for jaxsal.metrics similarity measures (Spearman, SSIM, HOG)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from jaxsal.metrics import hog_similarity, normalize_abs, pearson, rankdata, reduce_channels, spearman, ssim


def test_rankdata_matches_scipy_average_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=(3, 40)).astype(np.float32)
    np.testing.assert_allclose(rankdata(a), scipy.stats.rankdata(a, method="average", axis=-1))


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(4, 6, 7)).astype(np.float32)  # many ties
    b = (a + rng.integers(0, 3, size=a.shape)).astype(np.float32)
    got = np.asarray(spearman(a, b))
    want = [scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_spearman_closed_form_and_jit():
    a = jnp.arange(10.0)[None]
    assert float(spearman(a, a)[0]) == pytest.approx(1.0)
    assert float(spearman(a, -(a**3))[0]) == pytest.approx(-1.0)  # monotone decreasing
    assert float(jax.jit(spearman)(a, jnp.exp(a))[0]) == pytest.approx(1.0)
    assert np.isnan(spearman(a, jnp.ones_like(a))[0])  # constant map: undefined, as scipy


def test_pearson_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 3, 20)).astype(np.float32)
    want = [np.corrcoef(a[i], b[i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(pearson(a, b), want, rtol=1e-5)


def test_ssim_matches_skimage():
    rng = np.random.default_rng(3)
    a = rng.random((2, 20, 17))
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1)
    got = np.asarray(ssim(a.astype(np.float32), b.astype(np.float32), data_range=1.0))
    want = [structural_similarity(a[i], b[i], data_range=1.0) for i in range(2)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_ssim_known_values():
    a = jnp.full((1, 9, 9), 0.2)
    b = jnp.full((1, 9, 9), 0.4)
    c1 = (0.01 * 1.0) ** 2
    # constant images: the structure term is C2/C2 = 1, the luminance term is closed form
    want = (2 * 0.2 * 0.4 + c1) / (0.2**2 + 0.4**2 + c1)
    assert float(ssim(a, b, data_range=1.0)[0]) == pytest.approx(want, rel=1e-5)
    x = jax.random.uniform(jax.random.key(0), (2, 12, 12))
    np.testing.assert_allclose(ssim(x, x), 1.0, rtol=1e-5)


def test_hog_similarity_is_pearson_of_skimage_hog():
    rng = np.random.default_rng(4)
    a, b = rng.random((2, 2, 32, 32))
    got = hog_similarity(a, b)
    fa = hog(a[0], orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
    fb = hog(b[0], orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
    assert got[0] == pytest.approx(np.corrcoef(fa, fb)[0, 1], rel=1e-5)
    np.testing.assert_allclose(hog_similarity(a, a), 1.0, rtol=1e-6)


def test_reduce_and_normalize():
    m = jnp.array([[[[1.0, -3.0]]]])  # (1, 1, 1, 2)
    assert float(reduce_channels(m, "sum")[0, 0, 0]) == -2.0
    assert float(reduce_channels(m, "abs")[0, 0, 0]) == 4.0
    n = normalize_abs(jnp.array([[[-2.0, 1.0]], [[0.0, 0.0]]]))
    np.testing.assert_allclose(n, [[[1.0, 0.5]], [[0.0, 0.0]]])


def test_errors_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        spearman(jnp.ones((2, 4, 4)), jnp.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="same shape"):
        ssim(jnp.ones((1, 8, 8)), jnp.ones((2, 8, 8)))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        reduce_channels(jnp.ones((4, 4)))

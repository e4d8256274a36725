"""Similarity of two attribution maps: Spearman rank correlation, SSIM, HOG similarity.

These are the three measures Adebayo et al. (2018), "Sanity Checks for Saliency
Maps", NeurIPS (https://arxiv.org/abs/1810.03292), use to compare a method's map on
the trained model with its map on a randomised model (Sec. 3, Fig. 2).

All functions compare batches: ``a`` and ``b`` are ``(B, H, W)`` pixel maps (reduce
channels first with :func:`jaxsal.metrics.reduce_channels`) and the result has shape
``(B,)``. :func:`spearman` and :func:`ssim` are pure JAX (jittable, vmappable);
:func:`hog_similarity` calls scikit-image on the host.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.numerics import safe_divide
from jaxsal.metrics._common import as_array, check_same_shape

Array = jax.Array


def rankdata(a: Any) -> Array:
    """Average ranks (1-based) along the last axis; ties share the mean of their ranks.

    ``jax.scipy.stats.rankdata(a, method="average", axis=-1)``, which equals SciPy's.
    """
    a = jnp.asarray(a)
    if a.ndim == 0:
        raise ValueError("rankdata needs at least one axis; got a scalar.")
    return jax.scipy.stats.rankdata(a, method="average", axis=-1)


def _pearson_rows(u: Array, v: Array) -> Array:
    u = u - u.mean(-1, keepdims=True)
    v = v - v.mean(-1, keepdims=True)
    num = (u * v).sum(-1)
    den = jnp.sqrt((u * u).sum(-1) * (v * v).sum(-1))
    # A constant row has no defined correlation: NaN, as scipy.stats.pearsonr/spearmanr.
    return safe_divide(num, den, jnp.nan)


def pearson(a: Any, b: Any) -> Array:
    """Pearson correlation per example of two batches of maps, shape ``(B,)``.

    Maps are flattened per example. A constant map gives ``NaN``.
    """
    a, b = as_array(a, "a"), as_array(b, "b")
    check_same_shape(a, b, "a", "b")
    if a.ndim < 2:
        raise ValueError(f"a and b must be batches of maps, shape (B, ...); got {tuple(a.shape)}.")
    a = a.reshape(a.shape[0], -1).astype(jnp.promote_types(a.dtype, jnp.float32))
    b = b.reshape(b.shape[0], -1).astype(a.dtype)
    return _pearson_rows(a, b)


def spearman(a: Any, b: Any) -> Array:
    """Spearman rank correlation per example, shape ``(B,)`` (Spearman, 1904).

    .. math:: \\rho(a, b) = \\mathrm{corr}(\\mathrm{rank}(a), \\mathrm{rank}(b))

    the Pearson correlation of the average ranks (:func:`rankdata`) of the flattened
    maps. Ties get average ranks, so this equals ``scipy.stats.spearmanr`` on each
    example. A constant map has no ranking information and gives ``NaN``.
    Adebayo et al. (2018) compare both the absolute maps and the signed maps this way.
    """
    a, b = as_array(a, "a"), as_array(b, "b")
    check_same_shape(a, b, "a", "b")
    if a.ndim < 2:
        raise ValueError(f"a and b must be batches of maps, shape (B, ...); got {tuple(a.shape)}.")
    ra = rankdata(a.reshape(a.shape[0], -1))
    rb = rankdata(b.reshape(b.shape[0], -1))
    return _pearson_rows(ra, rb)


def ssim(
    a: Any,
    b: Any,
    *,
    data_range: float | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Array:
    """Mean structural similarity per example, shape ``(B,)`` (Wang et al., 2004).

    "Image quality assessment: from error visibility to structural similarity", IEEE
    TIP 13(4). For every ``win_size x win_size`` window (uniform weights) with means
    ``mu``, sample variances ``s^2`` and sample covariance ``s_ab``,

    .. math:: \\mathrm{SSIM} = \\frac{(2\\mu_a\\mu_b + C_1)(2 s_{ab} + C_2)}
              {(\\mu_a^2 + \\mu_b^2 + C_1)(s_a^2 + s_b^2 + C_2)},
              \\quad C_i = (k_i L)^2,

    averaged over all windows that lie fully inside the map. ``L`` is ``data_range``;
    ``None`` uses ``max - min`` of the two maps together, per example. These are the
    defaults of ``skimage.metrics.structural_similarity`` (uniform window,
    ``use_sample_covariance=True``), which this matches. ``win_size`` is capped at the
    largest odd size that fits the map.
    """
    a, b = as_array(a, "a"), as_array(b, "b")
    check_same_shape(a, b, "a", "b")
    if a.ndim != 3:
        raise ValueError(
            f"ssim compares (B, H, W) maps; got shape {tuple(a.shape)}. Reduce channels first "
            f"with `jaxsal.metrics.reduce_channels`."
        )
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd int >= 3; got {win_size}.")
    h, w = a.shape[1:]
    win = min(win_size, h - (1 - h % 2), w - (1 - w % 2))
    if win < 3:
        raise ValueError(f"ssim needs maps of at least 3x3 pixels; got {h}x{w}.")
    dtype = jnp.promote_types(a.dtype, jnp.float32)
    a, b = a.astype(dtype), b.astype(dtype)
    if data_range is None:
        lo = jnp.minimum(a.min((1, 2)), b.min((1, 2)))
        hi = jnp.maximum(a.max((1, 2)), b.max((1, 2)))
        rng = jnp.where(hi > lo, hi - lo, 1.0)
    else:
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0; got {data_range}.")
        rng = jnp.full((a.shape[0],), data_range, dtype)
    kernel = jnp.ones((1, 1, win, win), dtype) / (win * win)

    def box(z):  # mean over every fully-inside window: (B, H-win+1, W-win+1)
        return jax.lax.conv_general_dilated(z[:, None], kernel, (1, 1), "VALID")[:, 0]

    n = win * win
    cov = n / (n - 1)
    ua, ub = box(a), box(b)
    va = cov * (box(a * a) - ua * ua)
    vb = cov * (box(b * b) - ub * ub)
    vab = cov * (box(a * b) - ua * ub)
    c1 = ((k1 * rng) ** 2)[:, None, None]
    c2 = ((k2 * rng) ** 2)[:, None, None]
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua**2 + ub**2 + c1) * (va + vb + c2))
    return s.mean((1, 2))


def hog_features(maps: Any, *, orientations: int = 9, pixels_per_cell: int | None = None) -> np.ndarray:
    """Histogram-of-oriented-gradients features (Dalal & Triggs, 2005) of each map, ``(B, D)``.

    Uses ``skimage.feature.hog`` with ``orientations`` bins, square cells of
    ``pixels_per_cell`` (default: ``min(8, min(H, W) // 4)``, so small maps still get
    4x4 cells), 2x2-cell blocks and L2-Hys block normalisation. Runs on the host.
    """
    from skimage.feature import hog

    maps = np.asarray(as_array(maps, "maps"), dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"hog_features takes (B, H, W) maps; got shape {maps.shape}.")
    h, w = maps.shape[1:]
    ppc = pixels_per_cell or max(1, min(8, min(h, w) // 4))
    if min(h, w) < 2 * ppc:
        raise ValueError(f"maps of {h}x{w} pixels are too small for HOG cells of {ppc} pixels.")
    return np.stack(
        [
            hog(
                m,
                orientations=orientations,
                pixels_per_cell=(ppc, ppc),
                cells_per_block=(2, 2),
                feature_vector=True,
            )
            for m in maps
        ]
    )


def hog_similarity(a: Any, b: Any, **hog_kwargs: Any) -> np.ndarray:
    """Pearson correlation of the HOG features of two batches of maps, shape ``(B,)``.

    Adebayo et al. (2018) report this as "HOG similarity" next to SSIM and rank
    correlation. Features from :func:`hog_features`; a map without any gradient (all
    HOG features equal) gives ``NaN``. Runs on the host (scikit-image), not jittable.
    """
    a, b = as_array(a, "a"), as_array(b, "b")
    check_same_shape(a, b, "a", "b")
    fa, fb = hog_features(a, **hog_kwargs), hog_features(b, **hog_kwargs)
    return np.asarray(_pearson_rows(jnp.asarray(fa), jnp.asarray(fb)))


def normalize_abs(maps: Any) -> Array:
    """``|m| / max |m|`` per example, in ``[0, 1]`` (an all-zero map stays zero).

    The normalisation Adebayo et al. (2018) apply before SSIM and HOG comparisons.
    """
    maps = jnp.abs(as_array(maps, "maps"))
    axes = tuple(range(1, maps.ndim))
    mx = maps.max(axes, keepdims=True)
    return maps / jnp.where(mx > 0, mx, 1.0)


class MapSimilarity(NamedTuple):
    """The similarity measures of Adebayo et al. (2018), per example (``(B,)`` each).

    Attributes:
      spearman_abs: Spearman rank correlation of the absolute maps.
      spearman: Spearman rank correlation of the signed maps.
      ssim: SSIM of the absolute maps, each normalised to ``[0, 1]`` by its maximum
        (``data_range=1``).
      hog: Pearson correlation of the HOG features of the same normalised absolute
        maps (``NaN`` when not computed).
    """

    spearman_abs: Array
    spearman: Array
    ssim: Array
    hog: Array


def compare_maps(a: Any, b: Any, *, hog: bool = True) -> MapSimilarity:
    """All of Adebayo et al.'s (2018) similarity measures between two batches of maps.

    ``a`` and ``b`` are ``(B, H, W)`` or input-shaped ``(B, H, W, C)`` maps. Channel
    reduction: the signed map is the sum over channels, the absolute map the sum of
    absolute values over channels (:func:`jaxsal.metrics.reduce_channels`). SSIM and
    HOG compare the absolute maps after :func:`normalize_abs`. ``hog=False`` skips the
    host-side HOG computation (the field is then ``NaN``), keeping the rest jittable.
    """
    from jaxsal.metrics._common import reduce_channels

    a, b = as_array(a, "a"), as_array(b, "b")
    check_same_shape(a, b, "a", "b")
    sa, sb = reduce_channels(a, "sum", "a"), reduce_channels(b, "sum", "b")
    aa, ab = reduce_channels(a, "abs", "a"), reduce_channels(b, "abs", "b")
    na, nb = normalize_abs(aa), normalize_abs(ab)
    hog_sim = jnp.asarray(hog_similarity(na, nb)) if hog else jnp.full((a.shape[0],), jnp.nan)
    return MapSimilarity(spearman(aa, ab), spearman(sa, sb), ssim(na, nb, data_range=1.0), hog_sim)

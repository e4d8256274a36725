"""Reliability of the metrics themselves (Tomsett et al., 2020).

Tomsett, Harborne, Chakraborty, Gurram & Preece (2020), "Sanity Checks for Saliency
Metrics", AAAI, https://arxiv.org/abs/1912.01451. A saliency metric is a measuring
instrument; psychometrics asks of an instrument that it be *reliable*:

* :func:`krippendorff_alpha` (Krippendorff, 2011, "Computing Krippendorff's
  Alpha-Reliability", https://repository.upenn.edu/asc_papers/43): agreement of raters
  on units, with missing values, for nominal, ordinal, interval and ratio data.
* :func:`cronbach_alpha` (Cronbach, 1951, "Coefficient alpha and the internal structure
  of tests", Psychometrika 16): internal consistency of items measuring one construct.
* :func:`metric_reliability`: the three reliabilities of Tomsett et al. from a table of
  metric scores ``(methods, images, metrics)``.

These are statistics of small host-side tables: NumPy in float64, not jitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.stats import rankdata

Level = Literal["nominal", "ordinal", "interval", "ratio"]
_LEVELS = ("nominal", "ordinal", "interval", "ratio")


def _float_table(a: Any, name: str, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a numeric array (NaN for missing); got {type(a).__name__}."
        ) from None
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array; got shape {a.shape}.")
    if np.isinf(a).any():
        raise ValueError(f"{name} contains infinite values; use NaN for missing values.")
    return a


def _delta2(values: np.ndarray, n_v: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's squared difference ``delta^2_{ck}`` between the sorted values."""
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(np.float64)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        s = c + k
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(s == 0, 0.0, (c - k) / np.where(s == 0, 1.0, s))
        return d**2
    # ordinal: (sum_{g=c}^{k} n_g - (n_c + n_k) / 2)^2, in the rank order of the values
    cum = np.concatenate([[0.0], np.cumsum(n_v)])
    i, j = np.arange(len(values))[:, None], np.arange(len(values))[None, :]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    between = cum[hi + 1] - cum[lo]
    return (between - (n_v[i] + n_v[j]) / 2) ** 2


def krippendorff_alpha(data: Any, level: Level = "nominal") -> float:
    """Krippendorff's alpha of a reliability data matrix (Krippendorff, 2011).

    .. math:: \\alpha = 1 - \\frac{D_o}{D_e}
              = 1 - (n - 1) \\frac{\\sum_{c,k} o_{ck}\\, \\delta^2_{ck}}
                                {\\sum_{c,k} n_c n_k\\, \\delta^2_{ck}}

    with the coincidence matrix
    :math:`o_{ck} = \\sum_u \\frac{\\#\\{(i, j): i \\ne j, v_{iu} = c, v_{ju} = k\\}}{m_u - 1}`
    over the units ``u`` with ``m_u >= 2`` values (units with fewer are not pairable and
    are dropped), :math:`n_c = \\sum_k o_{ck}` and :math:`n = \\sum_c n_c`. The squared
    difference :math:`\\delta^2_{ck}` is ``[c != k]`` (nominal),
    :math:`(\\sum_{g=c}^{k} n_g - (n_c + n_k)/2)^2` (ordinal), :math:`(c - k)^2`
    (interval) or :math:`((c - k)/(c + k))^2` (ratio). 1 is perfect agreement, 0 is
    agreement at chance level.

    Args:
      data: ``(raters, units)`` values; ``NaN`` marks a missing value.
      level: the level of measurement: ``"nominal"``, ``"ordinal"``, ``"interval"`` or
        ``"ratio"``.

    Returns:
      Alpha as a Python float.
    """
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {_LEVELS}; got {level!r}.")
    data = _float_table(data, "data", 2)
    present = ~np.isnan(data)
    m_u = present.sum(0)
    pairable = m_u >= 2
    data, present, m_u = data[:, pairable], present[:, pairable], m_u[pairable]
    if data.shape[1] == 0:
        raise ValueError(
            "data has no pairable unit (no column with two or more non-missing values); "
            "data must be (raters, units), transpose it if it is (units, raters)."
        )
    values = np.unique(data[present])
    if values.size < 2:
        raise ValueError(
            f"data holds a single value ({values[0]!r}) across all pairable units: the expected "
            "disagreement is 0 and alpha is undefined."
        )
    # counts[u, v]: how many raters gave unit u the value v.
    index = np.searchsorted(values, np.where(present, data, values[0]))
    counts = np.zeros((data.shape[1], values.size))
    for r in range(data.shape[0]):
        np.add.at(counts, (np.flatnonzero(present[r]), index[r, present[r]]), 1.0)
    # o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1)
    w = counts / (m_u - 1.0)[:, None]
    o = w.T @ counts - np.diag(w.sum(0))
    n_v = o.sum(1)
    n = n_v.sum()
    d2 = _delta2(values, n_v, level)
    observed = (o * d2).sum()
    expected = (np.outer(n_v, n_v) * d2).sum()
    return float(1.0 - (n - 1.0) * observed / expected)


def cronbach_alpha(items: Any) -> float:
    """Cronbach's alpha (Cronbach, 1951).

    .. math:: \\alpha = \\frac{k}{k - 1}\\left(1 - \\frac{\\sum_{i=1}^{k} \\sigma^2_i}
              {\\sigma^2_X}\\right)

    with ``k`` items, :math:`\\sigma^2_i` the variance of item ``i`` over the
    observations and :math:`\\sigma^2_X` the variance of the observations' totals
    :math:`X = \\sum_i x_i` (both with ``ddof=1``; the ratio does not depend on it).

    Args:
      items: ``(observations, items)`` scores, no missing values (drop incomplete rows
        first).

    Returns:
      Alpha as a Python float (1 for perfectly consistent items; can be negative).
    """
    items = _float_table(items, "items", 2)
    n, k = items.shape
    if k < 2 or n < 2:
        raise ValueError(
            f"items must be (observations, items) with at least 2 of each; got shape {items.shape}."
        )
    bad = np.flatnonzero(np.isnan(items).any(1))
    if bad.size:
        raise ValueError(
            f"items has missing values (NaN) in observation rows {bad.tolist()[:10]}; "
            "drop incomplete rows (listwise deletion) first."
        )
    total_var = items.sum(1).var(ddof=1)
    if total_var == 0:
        raise ValueError("items' totals are constant: the total variance is 0 and alpha is undefined.")
    return float(k / (k - 1) * (1.0 - items.var(0, ddof=1).sum() / total_var))


class MetricReliability(NamedTuple):
    """The reliabilities of Tomsett et al. (2020), one entry per metric.

    Attributes:
      metrics: the metric names, in the table's order.
      inter_rater: ``(M,)`` Krippendorff's alpha of the methods' rankings, with the
        images as raters and the methods as units: does the metric rank the methods
        the same way on every image?
      inter_method: ``(M,)`` the mean over method pairs of the Spearman correlation of
        the two methods' scores across images: do images that score high for one
        method score high for the others?
      inter_method_matrix: ``(M, K, K)`` the pairwise Spearman correlations.
      internal_consistency: Cronbach's alpha per group of metric variants, the
        observations being the ``(method, image)`` cells.
    """

    metrics: tuple[str, ...]
    inter_rater: np.ndarray
    inter_method: np.ndarray
    inter_method_matrix: np.ndarray
    internal_consistency: dict[str, float]


def _names(given: Sequence[str] | None, n: int, prefix: str, name: str) -> tuple[str, ...]:
    if given is None:
        return tuple(f"{prefix}{i}" for i in range(n))
    given = tuple(str(g) for g in given)
    if len(given) != n:
        raise ValueError(
            f"{name} must have {n} entries (one per row of that axis of scores); got {len(given)}."
        )
    return given


def _spearman_matrix(s: np.ndarray) -> np.ndarray:
    """``(K, N)`` scores -> ``(K, K)`` Spearman correlations over the ``N`` images."""
    r = rankdata(s, axis=1)
    r = r - r.mean(1, keepdims=True)
    norm = np.sqrt((r * r).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r @ r.T) / np.outer(norm, norm)


def metric_reliability(
    scores: Any,
    *,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    variants: Mapping[str, Sequence[str]] | None = None,
    level: Level = "ordinal",
) -> MetricReliability:
    """Inter-rater, inter-method and internal-consistency reliability (Tomsett et al., 2020).

    * **Inter-rater reliability**: for each metric, each image ranks the methods by
      their scores (average ranks for ties); Krippendorff's alpha of these rankings with
      the images as raters and the methods as units (``level="ordinal"``, as the data
      are ranks). Reversing a metric's direction (lower is better) does not change it.
    * **Inter-method reliability**: for each metric, the Spearman correlation across
      images between every pair of methods' scores, and their mean over the
      ``K (K - 1) / 2`` pairs. A method with the same score on every image has no
      ranking: its entries are NaN and are left out of the mean.
    * **Internal consistency**: Cronbach's alpha over the metrics of each group in
      ``variants`` (e.g. deletion with a zero, a mean and a blurred baseline), with the
      ``K * N`` ``(method, image)`` cells as observations. Variants whose scales differ
      should be standardised first; alpha compares variances.

    Args:
      scores: ``(methods, images, metrics)`` table of scores, no missing cells (a NaN
        cell raises ``ValueError`` naming it).
      methods: names of the methods (default ``method0, method1, ...``).
      metrics: names of the metrics (default ``metric0, metric1, ...``).
      variants: group name -> the names (from ``metrics``) of the variants of one
        metric. Default: one group ``"all"`` of every metric when there are at least
        two.
      level: Krippendorff level used for the rankings (default ``"ordinal"``).

    Returns:
      :class:`MetricReliability`.
    """
    scores = _float_table(scores, "scores", 3)
    k, n, m = scores.shape
    if k < 2 or n < 2:
        raise ValueError(
            f"scores must be (methods, images, metrics) with at least 2 methods and 2 images; got shape "
            f"{scores.shape}. Add an axis with scores[..., None] for a single metric."
        )
    methods = _names(methods, k, "method", "methods")
    metrics = _names(metrics, m, "metric", "metrics")
    missing = np.argwhere(np.isnan(scores))
    if missing.size:
        cells = ", ".join(f"({methods[a]!r}, image {b}, {metrics[c]!r})" for a, b, c in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ValueError(
            f"scores has {len(missing)} missing cell(s) (method, image, metric): {cells}{more}. "
            "Every method needs a score on every image for every metric."
        )
    if variants is None:
        variants = {"all": metrics} if m >= 2 else {}
    inter_rater = np.empty(m)
    inter_method = np.empty(m)
    matrix = np.empty((m, k, k))
    upper = np.triu_indices(k, 1)
    for j in range(m):
        s = scores[:, :, j]
        ranks = rankdata(s, axis=0)  # per image, rank the methods
        try:
            inter_rater[j] = krippendorff_alpha(ranks.T, level)
        except ValueError:  # every method tied on every image
            inter_rater[j] = np.nan
        matrix[j] = _spearman_matrix(s)
        pairs = matrix[j][upper]
        pairs = pairs[~np.isnan(pairs)]
        inter_method[j] = pairs.mean() if pairs.size else np.nan
    consistency = {}
    for group, names in variants.items():
        unknown = [v for v in names if v not in metrics]
        if unknown:
            raise ValueError(
                f"variants[{group!r}] names unknown metrics {unknown}; the metrics are {list(metrics)}."
            )
        if len(names) < 2:
            raise ValueError(f"variants[{group!r}] needs at least 2 metrics; got {list(names)}.")
        cols = [metrics.index(v) for v in names]
        consistency[group] = cronbach_alpha(scores[:, :, cols].reshape(k * n, len(cols)))
    return MetricReliability(metrics, inter_rater, inter_method, matrix, consistency)

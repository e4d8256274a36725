"""Krippendorff's alpha, Cronbach's alpha and Tomsett et al.'s metric reliability."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from jaxsal.metrics.reliability import cronbach_alpha, krippendorff_alpha, metric_reliability

nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", Sec. C: 4 observers x
# 12 units with missing values. Published: nominal 0.743, ordinal 0.815, interval 0.849,
# ratio 0.797 (unit 12 has one value and is not pairable).
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
)


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_2011_worked_example(level, published):
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)


# Hand-computed: raters A = [1, 2, 3], B = [1, 3, 3] on 3 units (each m_u = 2).
# Coincidences: unit 1 (1, 1) adds o_11 += 2; unit 2 (2, 3) adds o_23 = o_32 = 1; unit 3
# (3, 3) adds o_33 += 2. So n_1 = 2, n_2 = 1, n_3 = 3, n = 6, and
# alpha = 1 - (n - 1) sum_ck o_ck d_ck / sum_ck n_c n_k d_ck.
# nominal:  observed = o_23 + o_32 = 2; expected = 2 (n1 n2 + n1 n3 + n2 n3) = 2 (2 + 6 + 3) = 22
#           alpha = 1 - 5 * 2 / 22 = 6 / 11
# interval: d = (c - k)^2; observed = 2 * 1 = 2; expected = 2 (2*1 + 6*4 + 3*1) = 58
#           alpha = 1 - 5 * 2 / 58 = 24 / 29
# ordinal:  d_12 = ((n1 + n2) - (n1 + n2)/2)^2 = 1.5^2 = 2.25, d_23 = ((n2 + n3)/2)^2 = 4,
#           d_13 = (n1 + n2 + n3 - (n1 + n3)/2)^2 = 3.5^2 = 12.25;
#           observed = 2 * 4 = 8; expected = 2 (2 * 2.25 + 6 * 12.25 + 3 * 4) = 180
#           alpha = 1 - 5 * 8 / 180 = 7 / 9
HAND = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 3.0]])


@pytest.mark.parametrize(
    ("level", "expected"), [("nominal", 6 / 11), ("interval", 24 / 29), ("ordinal", 7 / 9)]
)
def test_krippendorff_hand_example(level, expected):
    assert krippendorff_alpha(HAND, level) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_matches_reference_package(level, seed):
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 6, size=(5, 30)).astype(float)
    data[rng.random(data.shape) < 0.2] = nan
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert abs(krippendorff_alpha(data, level) - ref) < 1e-9
    if level == "interval":  # continuous values
        cont = rng.normal(size=(4, 25))
        cont[rng.random(cont.shape) < 0.1] = nan
        ref = krippendorff.alpha(reliability_data=cont, level_of_measurement=level)
        assert abs(krippendorff_alpha(cont, level) - ref) < 1e-9


def test_krippendorff_perfect_agreement_and_errors():
    assert krippendorff_alpha([[1, 2, 3, nan], [1, 2, 3, 4]], "ordinal") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(HAND, "cardinal")
    with pytest.raises(ValueError, match="single value"):
        krippendorff_alpha([[1, 1], [1, 1]])
    with pytest.raises(ValueError, match="pairable"):
        krippendorff_alpha([[1, nan], [nan, 2]])
    with pytest.raises(ValueError, match="2-d"):
        krippendorff_alpha([1, 2, 3])


# Hand-computed: 4 observations x 3 items.
# item variances (ddof=1): [1,2,3,4] -> 5/3, [2,2,4,4] -> 4/3, [2,3,3,4] -> 2/3; sum 11/3.
# totals [5, 7, 10, 12], mean 8.5, squares 12.25 + 2.25 + 2.25 + 12.25 = 29 -> 29/3.
# alpha = 3/2 * (1 - (11/3) / (29/3)) = 3/2 * 18/29 = 27/29.
CRONBACH_HAND = np.array([[1, 2, 2], [2, 2, 3], [3, 4, 3], [4, 4, 4]], float)


def test_cronbach_hand_example():
    assert cronbach_alpha(CRONBACH_HAND) == pytest.approx(27 / 29, abs=1e-12)


def test_cronbach_standardised_equals_spearman_brown():
    # For z-scored items alpha = k r / (1 + (k - 1) r), r the mean inter-item correlation.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 1)) + rng.normal(size=(50, 4))
    z = (x - x.mean(0)) / x.std(0, ddof=1)
    k = z.shape[1]
    r = np.corrcoef(z.T)[np.triu_indices(k, 1)].mean()
    assert abs(cronbach_alpha(z) - k * r / (1 + (k - 1) * r)) < 1e-9


def test_cronbach_matches_pingouin():
    pingouin = pytest.importorskip("pingouin")
    import pandas as pd

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 1)) + rng.normal(size=(40, 5))
    ref = pingouin.cronbach_alpha(pd.DataFrame(x))[0]
    assert abs(cronbach_alpha(x) - ref) < 1e-9


def test_cronbach_errors():
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        cronbach_alpha([[1, 2], [nan, 3], [2, 2]])
    with pytest.raises(ValueError, match="at least 2"):
        cronbach_alpha([[1], [2]])


def _table(seed=0, k=4, n=6, m=3):
    rng = np.random.default_rng(seed)
    quality = np.arange(k, dtype=float)[:, None, None]
    return quality + 0.8 * rng.normal(size=(k, n, m))


def test_metric_reliability_against_direct_computation():
    scores = _table()
    names = ("deletion_zero", "deletion_blur", "insertion")
    r = metric_reliability(scores, metrics=names, variants={"deletion": names[:2]})
    k, n, m = scores.shape
    for j in range(m):
        ranks = np.stack([rankdata(scores[:, i, j]) for i in range(n)])  # images x methods
        assert r.inter_rater[j] == pytest.approx(krippendorff_alpha(ranks, "ordinal"), abs=1e-12)
        rho = spearmanr(scores[:, :, j].T).statistic  # methods are the variables
        np.testing.assert_allclose(r.inter_method_matrix[j], rho, atol=1e-12)
        assert r.inter_method[j] == pytest.approx(rho[np.triu_indices(k, 1)].mean(), abs=1e-12)
    # a constant method: its pairs are NaN and left out of the mean
    const = scores.copy()
    const[0, :, 0] = 1.0
    rc = metric_reliability(const)
    assert np.isnan(rc.inter_method_matrix[0][0, 1:]).all()
    rho = spearmanr(const[1:, :, 0].T).statistic
    assert rc.inter_method[0] == pytest.approx(rho[np.triu_indices(k - 1, 1)].mean(), abs=1e-12)
    flat = scores[:, :, :2].reshape(k * n, 2)
    assert r.internal_consistency["deletion"] == pytest.approx(cronbach_alpha(flat), abs=1e-12)
    assert r.metrics == names


def test_metric_reliability_perfect_rankings():
    # Every image ranks the methods the same way: inter-rater alpha is 1. Variants x and 2x:
    # variances v and 4v, total 9v, alpha = 2 (1 - 5/9) = 8/9.
    base = np.arange(3.0)[:, None] + np.linspace(0, 0.5, 5)[None, :]
    scores = np.stack([base, 2 * base], -1)
    r = metric_reliability(scores)
    np.testing.assert_allclose(r.inter_rater, 1.0)
    assert r.internal_consistency["all"] == pytest.approx(8 / 9, abs=1e-12)


def test_metric_reliability_names_missing_cells():
    scores = _table()
    scores[1, 2, 0] = nan
    scores[3, 5, 2] = nan
    with pytest.raises(ValueError) as e:
        metric_reliability(scores, methods=["a", "b", "c", "d"], metrics=["x", "y", "z"])
    msg = str(e.value)
    assert "2 missing" in msg and "('b', image 2, 'x')" in msg and "('d', image 5, 'z')" in msg


def test_metric_reliability_bad_input():
    with pytest.raises(ValueError, match="3-d"):
        metric_reliability(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="unknown metrics"):
        metric_reliability(_table(), variants={"g": ["metric0", "nope"]})
    with pytest.raises(ValueError, match="methods must have 4"):
        metric_reliability(_table(), methods=["a"])

"""Reference tests for deletion / insertion / ROAD (jaxsal.metrics.faithfulness)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from jaxsal.metrics import deletion, insertion, make_baseline, noisy_linear_imputation, road


def f_sum(x):
    """Two logits: (sum of pixels, 0)."""
    s = x.reshape(x.shape[0], -1).sum(1)
    return jnp.stack([s, jnp.zeros_like(s)], 1)


X = jnp.array([[[[4.0], [3.0]], [[2.0], [1.0]]]])  # (1, 2, 2, 1)


def test_deletion_auc_by_hand():
    # remove 4, then 3, 2, 1: sums 10, 6, 3, 1, 0 at fractions 0, .25, .5, .75, 1
    c = deletion(f_sum, X, X, 0, steps=4, baseline="zero", score="logit")
    np.testing.assert_allclose(c.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.scores[:, 0], [10, 6, 3, 1, 0])
    # trapezoid: .25 * (8 + 4.5 + 2 + .5) = 3.75
    assert float(c.auc[0]) == pytest.approx(3.75)


def test_insertion_auc_by_hand_and_probability_score():
    c = insertion(f_sum, X, X, 0, steps=4, baseline="zero", score="logit")
    np.testing.assert_allclose(c.scores[:, 0], [0, 4, 7, 9, 10])
    assert float(c.auc[0]) == pytest.approx(0.25 * (2 + 5.5 + 8 + 9.5))
    p = deletion(f_sum, X, X, 0, steps=4, baseline="zero")
    np.testing.assert_allclose(p.scores[:, 0], jax.nn.sigmoid(jnp.array([10.0, 6, 3, 1, 0])), rtol=1e-6)


def test_deletion_ranks_by_channel_sum_and_target_none():
    x = jnp.ones((1, 2, 2, 3))
    attr = jnp.zeros((1, 2, 2, 3)).at[0, 1, 1].set(1.0)  # the (1, 1) pixel first
    c = deletion(
        lambda z: f_sum(z * jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)), x, attr, steps=4, score="logit"
    )
    assert float(c.scores[1, 0]) == pytest.approx(30 - 3 * 4)  # target None -> class 0 (larger logit)


def test_deletion_accepts_attribution_function_and_jits():
    def attr(x, target=None, *, key=None):
        return x

    c1 = deletion(f_sum, X, attr, 0, steps=4, score="logit")
    c2 = jax.jit(lambda x: deletion(f_sum, x, x, 0, steps=4, score="logit"))(X)
    np.testing.assert_allclose(c1.auc, c2.auc)


def test_baselines():
    x = jax.random.uniform(jax.random.key(0), (2, 12, 12, 3))
    np.testing.assert_allclose(make_baseline(x, "mean")[:, 3, 4], x.mean((1, 2)), rtol=1e-6)
    blur = make_baseline(x, "blur", blur_sigma=2.0)
    assert blur.shape == x.shape and float(blur.std()) < float(x.std())
    np.testing.assert_allclose(make_baseline(jnp.full((1, 8, 8, 1), 0.3), "blur"), 0.3, rtol=1e-5)


def _scipy_linear_imputation(img, removed):
    """Independent reference: assemble the ROAD system entry by entry and solve it directly."""
    h, w = removed.shape
    weights = {
        (1, 1): 1 / 12,
        (0, 1): 1 / 6,
        (-1, 1): 1 / 12,
        (1, -1): 1 / 12,
        (0, -1): 1 / 6,
        (-1, -1): 1 / 12,
        (1, 0): 1 / 6,
        (-1, 0): 1 / 6,
    }
    unknown = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    var = {p: n for n, p in enumerate(unknown)}
    a = lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros(len(unknown))
    for (i, j), n in var.items():
        for (di, dj), wt in weights.items():
            q = (i + di, j + dj)
            if not (0 <= q[0] < h and 0 <= q[1] < w):
                continue
            a[n, n] += wt
            if q in var:
                a[n, var[q]] -= wt
            else:
                rhs[n] += wt * img[q]
    sol = spsolve(a.tocsc(), rhs)
    out = img.copy()
    for (i, j), n in var.items():
        out[i, j] = sol[n]
    return out


def test_noisy_linear_imputation_matches_direct_sparse_solve():
    rng = np.random.default_rng(0)
    x = rng.random((2, 9, 11, 2)).astype(np.float32)
    removed = rng.random((2, 9, 11)) < 0.6
    got = noisy_linear_imputation(x, removed, key=jax.random.key(0), noise=0.0)
    for b in range(2):
        for c in range(2):
            want = _scipy_linear_imputation(x[b, :, :, c].astype(np.float64), removed[b])
            np.testing.assert_allclose(got[b, :, :, c], want, atol=2e-4)
    noisy = noisy_linear_imputation(x, removed, key=jax.random.key(1), noise=0.01)
    d = np.asarray(noisy - got)
    assert np.all(d[~removed] == 0) and 0.005 < d[removed].std() < 0.02


def test_road_same_key_same_result_and_orders():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    attr = x[..., 0]
    k = jax.random.key(3)
    r1 = road(f_sum, x, attr, 0, key=k, fractions=(0.25, 0.5), score="logit")
    r2 = road(f_sum, x, attr, 0, key=k, fractions=(0.25, 0.5), score="logit")
    r3 = road(f_sum, x, attr, 0, key=jax.random.key(4), fractions=(0.25, 0.5), score="logit")
    np.testing.assert_array_equal(r1.scores, r2.scores)
    assert not np.array_equal(r1.scores, r3.scores)
    lerf = road(f_sum, x, attr, 0, key=k, fractions=(0.25, 0.5), order="lerf", score="logit")
    # removing the brightest pixels lowers the sum more than removing the darkest ones
    assert np.all(np.asarray(r1.scores) < np.asarray(lerf.scores))
    np.testing.assert_allclose(r1.fractions, [0.25, 0.5])


def test_errors():
    with pytest.raises(ValueError, match="shape of x"):
        deletion(f_sum, X, jnp.ones((1, 3, 3)), 0)
    with pytest.raises(ValueError, match="baseline"):
        deletion(f_sum, X, X, 0, baseline="gray")
    with pytest.raises(ValueError, match=r"fractions .* \(0, 1\)"):
        road(f_sum, X, X, 0, key=jax.random.key(0), fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="key"):
        road(f_sum, X, X, 0, key=None)
    with pytest.raises(ValueError, match="out of range"):
        deletion(f_sum, X, X, 5)
    with pytest.raises(ValueError, match="whole image"):
        noisy_linear_imputation(X, jnp.ones((1, 2, 2), bool), key=jax.random.key(0))

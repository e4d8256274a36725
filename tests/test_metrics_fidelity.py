"""Infidelity, sensitivity-n, faithfulness correlation, random logit, sMPRT and eMPRT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import entropy

from jaxsal.metrics.fidelity import (
    draw_subsets,
    efficient_mprt,
    faithfulness_correlation,
    histogram_entropy,
    infidelity,
    random_logit,
    sensitivity_n,
    smooth_mprt,
)
from jaxsal.metrics.randomization import model_parameter_randomization, randomize_layers
from jaxsal.metrics.similarity import normalize_abs, ssim
from jaxsal.models import ShapesCNN

B, H, W, C, K = 3, 6, 6, 2, 4
WEIGHTS = jax.random.normal(jax.random.key(7), (H * W * C, K))
X = jax.random.uniform(jax.random.key(8), (B, H, W, C))
TARGET = jnp.array([0, 2, 3])


def linear(x):
    return x.reshape(x.shape[0], -1) @ WEIGHTS


def grad_attr(x, target=None, *, key=None):
    """Exact gradient of the linear model, (B, H, W, C)."""
    return jnp.broadcast_to(WEIGHTS[:, target].T.reshape(-1, H, W, C), x.shape)


def gxi(x, target=None, *, key=None):
    return grad_attr(x, target) * x


def test_linear_model_exact_attribution_is_perfectly_faithful():
    # For f linear and a zero baseline, removing S drops the logit by sum_S sum_c w x:
    # gradient x input summed over S. Correlation 1 at every subset size.
    key = jax.random.key(0)
    fc = faithfulness_correlation(linear, X, gxi(X, TARGET), TARGET, key=key, runs=20, subset_size=5)
    np.testing.assert_allclose(fc.correlation, 1.0, atol=1e-5)
    np.testing.assert_allclose(fc.attribution_sums, fc.score_drops, rtol=1e-4, atol=1e-5)
    sn = sensitivity_n(linear, X, gxi, TARGET, ns=[1, 20], key=key, samples=15)
    np.testing.assert_allclose(sn.correlation, 1.0, atol=1e-5)
    assert sn.correlation.shape == (2, B) and sn.mean.shape == (2,)
    # the gradient satisfies I . grad = f(x) - f(x - I) for every I: infidelity 0
    for pert in ("gaussian", "square"):
        inf = infidelity(
            linear, X, grad_attr(X, TARGET), TARGET, key=key, samples=6, perturbation=pert, patch_size=2
        )
        np.testing.assert_allclose(inf.infidelity, 0.0, atol=1e-8)
        np.testing.assert_allclose(inf.dots, inf.drops, rtol=1e-4, atol=1e-5)


def test_faithfulness_correlation_fixed_subsets_naive_reference():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(B, H, W))
    subsets = np.stack([rng.choice(H * W, 7, replace=False) for _ in range(9)])  # shared (R, n)
    xs = np.asarray(X, np.float64)
    f = lambda z: np.tanh(z.reshape(z.shape[0], -1) @ np.asarray(WEIGHTS, np.float64))  # noqa: E731
    with jax.enable_x64(True):
        fj = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ jnp.asarray(WEIGHTS, jnp.float64))  # noqa: E731
        got = faithfulness_correlation(
            fj, jnp.asarray(xs), jnp.asarray(maps), TARGET, subsets=jnp.asarray(subsets)
        )
        for b in range(B):
            sums, drops = [], []
            for s in subsets:
                xp = xs[b : b + 1].reshape(H * W, C).copy()
                xp[s] = 0.0
                drops.append(f(xs[b : b + 1])[0, TARGET[b]] - f(xp.reshape(1, H, W, C))[0, TARGET[b]])
                sums.append(maps[b].ravel()[s].sum())
            np.testing.assert_allclose(got.correlation[b], np.corrcoef(sums, drops)[0, 1], rtol=1e-10)


MAP = jax.random.normal(jax.random.key(9), (B, H, W))


def test_draw_subsets_deterministic_without_replacement():
    s = draw_subsets(jax.random.key(1), 2, 5, 10, 36)
    assert s.shape == (2, 5, 10)
    assert all(len(set(np.asarray(row).tolist())) == 10 for row in s.reshape(-1, 10))
    np.testing.assert_array_equal(s, draw_subsets(jax.random.key(1), 2, 5, 10, 36))
    assert not np.array_equal(s, draw_subsets(jax.random.key(2), 2, 5, 10, 36))
    a = faithfulness_correlation(linear, X, MAP, key=jax.random.key(3), runs=6, subset_size=4)
    assert np.all(np.isfinite(np.asarray(a.correlation)))
    b = faithfulness_correlation(linear, X, MAP, subsets=a.subsets)
    np.testing.assert_array_equal(a.correlation, b.correlation)
    jitted = jax.jit(lambda x, s: faithfulness_correlation(linear, x, MAP, subsets=s).correlation)
    np.testing.assert_allclose(jitted(X, a.subsets), a.correlation, rtol=1e-5, atol=1e-6)


def test_infidelity_normalize_and_jit():
    key = jax.random.key(4)
    m = 3.0 * grad_attr(X, TARGET)  # right direction, wrong scale
    plain = infidelity(linear, X, m, TARGET, key=key)
    scaled = infidelity(linear, X, m, TARGET, key=key, normalize=True)
    assert np.all(np.asarray(plain.infidelity) > 1e-3)
    np.testing.assert_allclose(scaled.beta, 1 / 3, rtol=1e-4)
    np.testing.assert_allclose(scaled.infidelity, 0.0, atol=1e-8)
    jitted = jax.jit(lambda x, a: infidelity(linear, x, a, TARGET, key=key).infidelity)(X, m)
    np.testing.assert_allclose(jitted, plain.infidelity, rtol=1e-5)


def test_fidelity_bad_input():
    with pytest.raises(ValueError, match="key"):
        faithfulness_correlation(linear, X, jnp.ones((B, H, W)))
    with pytest.raises(ValueError, match="0 <= i < H \\* W = 36"):
        faithfulness_correlation(linear, X, jnp.ones((B, H, W)), subsets=jnp.array([[0, 36]]))
    with pytest.raises(ValueError, match="subset size"):
        faithfulness_correlation(linear, X, jnp.ones((B, H, W)), key=jax.random.key(0), subset_size=37)
    with pytest.raises(ValueError, match="ns must be"):
        sensitivity_n(linear, X, jnp.ones((B, H, W)), ns=[0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="perturbation"):
        infidelity(linear, X, jnp.ones((B, H, W)), key=jax.random.key(0), perturbation="salt")
    with pytest.raises(ValueError, match="patch_size"):
        infidelity(linear, X, jnp.ones((B, H, W)), key=jax.random.key(0), perturbation="square", patch_size=7)
    with pytest.raises(ValueError, match="patch_size must be an int"):
        infidelity(
            linear, X, jnp.ones((B, H, W)), key=jax.random.key(0), perturbation="square", patch_size=2.5
        )
    with pytest.raises(ValueError, match="ns must be a sequence of int"):
        sensitivity_n(linear, X, jnp.ones((B, H, W)), ns=[2.5], key=jax.random.key(0))
    with pytest.raises(ValueError, match="runs must be >= 1"):
        draw_subsets(jax.random.key(0), B, 0, 4, H * W)
    with pytest.raises(ValueError, match="subset size must be an int"):
        draw_subsets(jax.random.key(0), B, 3, 2.5, H * W)


def test_random_logit_checks_target_range_without_scores_fn():
    # a plain function states no scores_fn: num_classes is the only bound on the target,
    # and the model's own indexing (WEIGHTS[:, target]) would clamp an out-of-range class
    with pytest.raises(ValueError, match="out of range for 4 classes"):
        random_logit(grad_attr, X, jnp.array([0, 1, K]), key=jax.random.key(0), num_classes=K)
    with pytest.raises(ValueError, match="out of range for 3 classes"):
        random_logit(grad_attr, X, 3, key=jax.random.key(0), num_classes=3)
    r = random_logit(grad_attr, X, TARGET, key=jax.random.key(0), num_classes=K)
    assert np.all((np.asarray(r.other) >= 0) & (np.asarray(r.other) < K))


def test_random_logit_against_direct_ssim():
    import jaxsal

    attr = jaxsal.vanilla_grad(linear)
    r = random_logit(attr, X, TARGET, key=jax.random.key(5))
    assert np.all(np.asarray(r.other) != np.asarray(TARGET))
    assert np.all((np.asarray(r.other) >= 0) & (np.asarray(r.other) < K))
    a, o = grad_attr(X, TARGET), grad_attr(X, r.other)
    ref = ssim(normalize_abs(jnp.abs(a).sum(-1)), normalize_abs(jnp.abs(o).sum(-1)))
    np.testing.assert_allclose(r.similarity, ref, rtol=1e-5)
    same = random_logit(
        attr, X, TARGET, key=jax.random.key(5), similarity=lambda p, q: (p - q).std((1, 2, 3))
    )
    np.testing.assert_array_equal(same.other, r.other)


def test_histogram_entropy_matches_numpy():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(3, 8, 8)) ** 2
    with jax.enable_x64(True):
        got = histogram_entropy(jnp.asarray(maps), 10)
        ref = [entropy(np.histogram(m.ravel(), bins=10)[0]) for m in maps]
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert float(histogram_entropy(jnp.ones((1, 4, 4)), 10)[0]) == 0.0


MODEL = ShapesCNN(num_classes=4, features=(4, 8))


def _grad(variables):
    def attr(x, target=None, *, key=None):
        def obj(z):
            return jnp.take_along_axis(MODEL.apply(variables, z), target[:, None], 1).sum()

        return jax.grad(obj)(x)

    return attr


@pytest.mark.slow
@pytest.mark.heavy
def test_efficient_and_smooth_mprt_on_small_cnn():
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    variables = MODEL.init(jax.random.key(1), x[:1])
    y = jnp.array([0, 1])
    key = jax.random.key(2)
    e = efficient_mprt(_grad, variables, x, y, key=key, module=MODEL, n_bins=20)
    # by hand: randomise every layer as model_parameter_randomization's last cascading step
    full = randomize_layers(
        variables, ["conv0", "conv1", "head"], key=jax.random.fold_in(key, 0), module=MODEL, x=x
    )
    h0 = histogram_entropy(jnp.abs(_grad(variables)(x, y)), 20)
    h1 = histogram_entropy(jnp.abs(_grad(full)(x, y)), 20)
    np.testing.assert_allclose(e.complexity_original, h0, rtol=1e-5)
    np.testing.assert_allclose(e.complexity_randomized, h1, rtol=1e-4)
    np.testing.assert_allclose(e.score, (h1 - h0) / h0, rtol=1e-3)
    with pytest.raises(ValueError, match="steps"):
        efficient_mprt(_grad, variables, x, y, key=key, module=MODEL, steps=[1])
    s = smooth_mprt(
        _grad, variables, x, y, key=key, module=MODEL, samples=3, noise_level=0.1, hog=False, steps=[3]
    )
    plain = model_parameter_randomization(_grad, variables, x, y, key=key, module=MODEL, hog=False, steps=[3])
    assert s.spearman.shape == (1, 2) and s.layers == plain.layers
    assert not np.allclose(s.original, plain.original)  # the maps were smoothed

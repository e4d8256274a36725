"""Guided Integrated Gradients: a naive NumPy reference, PAIR parity, limits and bad input.

Contract checks (jit, vmap, dtypes, keys) run through the registry in test_contract.py.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol

import jaxsal

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def _jit(attr, x, target):
    """``attr(x, target)`` under ``jax.jit`` (one compile instead of op-by-op dispatch)."""
    return jax.jit(lambda z: attr(z, target))(x)


def _mlp(dtype=jnp.float32, d=12, c=4):
    """A smooth two-layer tanh model on x (B, d): gradients are continuous in x."""
    k1, k2 = jax.random.split(jax.random.key(5))
    w1 = jax.random.normal(k1, (d, 16), jnp.float32).astype(dtype) / np.sqrt(d)
    w2 = jax.random.normal(k2, (16, c), jnp.float32).astype(dtype)
    return lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2


def naive_guided_ig(grad_fn, x, baseline, steps, fraction, max_dist):
    """Guided IG for one example, read off the paper's Algorithm 1 with PAIR's constants,
    as a plain NumPy loop (no vectorised tricks, float64)."""
    x = np.asarray(x, np.float64).ravel()
    base = np.asarray(baseline, np.float64).ravel()
    point = base.copy()
    attr = np.zeros_like(x)
    total = np.abs(x - base).sum()
    if total == 0:
        return attr
    for s in range(1, steps + 1):
        g = np.asarray(grad_fn(point), np.float64).ravel()
        lo, hi = max(s / steps - max_dist, 0.0), min(s / steps + max_dist, 1.0)
        low_pt = base + (x - base) * lo
        high_pt = x if hi == 1.0 else base + (x - base) * hi
        goal = total * (1 - s / steps)
        while True:
            before = point.copy()
            for i in range(x.size):  # features behind the band catch up
                if x[i] != base[i] and (point[i] - base[i]) / (x[i] - base[i]) < lo:
                    point[i] = low_pt[i]
            now = np.abs(point - x).sum()
            if abs(now - goal) <= max(1e-9 * max(abs(now), abs(goal)), 1e-9):
                attr += (point - before) * g
                break
            free = [i for i in range(x.size) if point[i] != high_pt[i]]
            mags = sorted([abs(g[i]) for i in free] + [np.inf] * (x.size - len(free)))
            cut = mags[int(np.floor((x.size - 1) * fraction))]
            chosen = [i for i in free if abs(g[i]) <= cut]
            room = sum(abs(point[i] - high_pt[i]) for i in chosen)
            ratio = (now - goal) / room if room > 0 else np.inf
            for i in chosen:
                point[i] = high_pt[i] if ratio > 1 else point[i] + (high_pt[i] - point[i]) * ratio
            attr += (point - before) * g
            if ratio <= 1:
                break
    return attr.reshape(np.shape(baseline))


@pytest.mark.parametrize("fraction,max_dist", [(0.25, 1.0), (0.1, 0.05)])
def test_matches_a_naive_reference(fraction, max_dist):
    with jax.enable_x64(True):
        f = _mlp(jnp.float64)
        x = jax.random.normal(jax.random.key(2), (2, 12), jnp.float64)
        base = jnp.full((2, 12), -0.3, jnp.float64)
        target = np.array([1, 3])
        ours = _jit(
            jaxsal.guided_ig(f, baseline=base, steps=7, fraction=fraction, max_dist=max_dist), x, target
        )
        for e in range(2):
            grad = jax.grad(lambda z, e=e: f(z[None])[0, target[e]])
            ref = naive_guided_ig(grad, x[e], base[e], 7, fraction, max_dist)
            np.testing.assert_allclose(ours[e], ref, rtol=1e-10, atol=1e-12)


def test_matches_pair_in_float64(cnn):
    pytest.importorskip("saliency")
    from benchmarks.pair_parity import pair_guided_ig

    with jax.enable_x64(True):
        variables = jax.tree.map(lambda a: a.astype(jnp.float64), cnn.variables)
        f = lambda z: cnn.module.apply(variables, z)  # noqa: E731
        x = cnn.x[:2].astype(jnp.float64)
        target = np.array([0, 3])
        hyper = dict(steps=6, fraction=0.25, max_dist=0.2)
        ours = _jit(jaxsal.guided_ig(f, **hyper), x, target)
        ref = pair_guided_ig(f, np.asarray(x), target, **hyper)
        np.testing.assert_allclose(np.asarray(ours) / np.abs(ref).max(), ref / np.abs(ref).max(), atol=1e-12)


def test_max_dist_zero_is_left_riemann_ig_and_one_is_not():
    """With no deviation allowed the path is the straight line, and every step's
    gradient is taken at its start: IG with the left Riemann rule. The unbounded
    adaptive path differs from it."""
    f = _mlp()
    x = jax.random.normal(jax.random.key(3), (3, 12))
    ig = _jit(jaxsal.integrated_gradients(f, steps=10, method="riemann_left"), x, 2)
    np.testing.assert_allclose(
        _jit(jaxsal.guided_ig(f, steps=10, max_dist=0.0), x, 2), ig, rtol=1e-4, atol=1e-6
    )
    gig = _jit(jaxsal.guided_ig(f, steps=10, max_dist=1.0), x, 2)
    assert not np.allclose(gig, ig, atol=1e-3), "an adaptive path must differ from the straight line"
    assert float(jnp.max(jnp.abs(jaxsal.guided_ig(f, steps=10, baseline=x)(x, 2)))) == 0.0


def test_completeness_with_fine_steps():
    """The path ends at x, so sum R -> f(x) - f(baseline) as the steps get finer."""
    with jax.enable_x64(True):
        f = _mlp(jnp.float64)
        x = jax.random.normal(jax.random.key(4), (2, 12), jnp.float64)
        gaps = []
        for steps in (8, 256):
            r = _jit(jaxsal.guided_ig(f, steps=steps, max_dist=0.5), x, 1)
            gaps.append(np.asarray(jaxsal.completeness_gap(f, r, x, 1).relative_gap))
        assert gaps[1].max() < 2e-2
        assert np.all(gaps[1] < gaps[0])


def test_batch_size_does_not_change_the_result(cnn):
    full = _jit(jaxsal.guided_ig(cnn.f, steps=5), cnn.x, jnp.array([0, 3, 1]))
    part = _jit(jaxsal.guided_ig(cnn.f, steps=5, batch_size=2), cnn.x, jnp.array([0, 3, 1]))
    np.testing.assert_allclose(part, full, **tol(full.dtype))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(fraction=-0.1), "fraction"),
        (dict(fraction=1.5), "fraction"),
        (dict(fraction=float("nan")), "fraction"),
        (dict(max_dist=1.01), "max_dist"),
        (dict(max_dist=-0.5), "max_dist"),
        (dict(steps=0), "steps"),
    ],
)
def test_bad_hyper_parameters(kwargs, match, cnn):
    with pytest.raises(ValueError, match=match):
        jaxsal.guided_ig(cnn.f, **kwargs)


def test_bad_types(cnn):
    with pytest.raises(TypeError, match="steps"):
        jaxsal.guided_ig(cnn.f, steps=2.5)
    with pytest.raises(TypeError, match="fraction"):
        jaxsal.guided_ig(cnn.f, fraction="0.25")
    with pytest.raises(ValueError, match="baseline"):
        jaxsal.guided_ig(cnn.f, baseline=jnp.zeros((5, 5)))(cnn.x)


def test_kth_smallest_is_the_sorted_entry():
    from jaxsal._src.pair_paths import kth_smallest

    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=200)).astype(np.float32)
    a[rng.random(200) < 0.3] = np.inf  # saturated features
    a[:20] = 0.0  # ties
    a[20:30] = a[30]
    for k in (0, 19, 25, 50, 120, 199):
        assert float(kth_smallest(jnp.asarray(a), k)) == float(np.sort(a)[k])


def test_bad_unroll(cnn):
    with pytest.raises(ValueError, match="unroll"):
        jaxsal.guided_ig(cnn.f, unroll=0)

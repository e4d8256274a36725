"""Blur IG: its Gaussian blur against scipy, PAIR parity, batching, completeness, bad input.

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
from scipy import ndimage

import jaxsal
from jaxsal._src.pair_paths import gaussian_blur, gaussian_kernel1d

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def _jit(attr, x, target):
    """``attr(x, target)`` under ``jax.jit`` (one compile instead of op-by-op dispatch)."""
    return jax.jit(lambda z: attr(z, target))(x)


@pytest.mark.parametrize("shape", [(7, 5, 3), (9, 4, 1), (3, 11, 2)])
@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.3, 1.0, 2.7, 50.0])
def test_blur_equals_scipy_gaussian_filter(shape, sigma):
    with jax.enable_x64(True):
        img = np.random.default_rng(0).normal(size=(2,) + shape)
        ours = np.asarray(gaussian_blur(jnp.asarray(img), sigma))
        for b in range(2):
            ref = ndimage.gaussian_filter(img[b], sigma=[sigma, sigma, 0], mode="constant")
            np.testing.assert_allclose(ours[b], ref, rtol=1e-13, atol=1e-14)


def test_kernel_is_scipys():
    for sigma in (0.2, 1.0, 3.3):
        k = gaussian_kernel1d(sigma)
        impulse = np.zeros(2 * len(k) + 1)
        impulse[len(k)] = 1.0
        ref = ndimage.gaussian_filter1d(impulse, sigma, mode="constant")
        r = len(k) // 2
        np.testing.assert_allclose(k, ref[len(k) - r : len(k) + r + 1], rtol=1e-14)
        assert np.count_nonzero(ref) == len(k)  # the same truncation (truncate=4.0)


def test_matches_pair_in_float64(cnn):
    pytest.importorskip("saliency")
    from benchmarks.pair_parity import pair_blur_ig

    with jax.enable_x64(True):
        variables = jax.tree.map(lambda a: a.astype(jnp.float64), cnn.variables)
        f = lambda z: cnn.module.apply(variables, z)  # noqa: E731
        x = cnn.x[:2].astype(jnp.float64)
        target = np.array([2, 4])
        for hyper in (dict(max_sigma=6.0, steps=8), dict(max_sigma=3.0, steps=5, sqrt=True, grad_step=0.2)):
            ours = _jit(jaxsal.blur_ig(f, **hyper), x, target)
            ref = pair_blur_ig(f, np.asarray(x), target, **hyper)
            np.testing.assert_allclose(
                np.asarray(ours) / np.abs(ref).max(), ref / np.abs(ref).max(), atol=1e-12
            )


def test_batch_size_does_not_change_the_result(cnn):
    target = jnp.array([0, 3, 1])
    full = _jit(jaxsal.blur_ig(cnn.f, max_sigma=4.0, steps=5), cnn.x, target)
    for bs in (2, 7):  # examples split, one step per call; two steps per call plus a remainder
        part = _jit(jaxsal.blur_ig(cnn.f, max_sigma=4.0, steps=5, batch_size=bs), cnn.x, target)
        np.testing.assert_allclose(part, full, **tol(full.dtype))


def test_completeness_along_the_blur_path():
    """sum R -> S(x) - S(blur(x, max_sigma)) as the steps get finer (smooth model).

    Not to 0: scipy's kernel radius int(4 sigma + 0.5) jumps at sigma = 1/8, 3/8, ...,
    and those jumps of the path are invisible to the finite difference."""
    with jax.enable_x64(True):
        w = jax.random.normal(jax.random.key(0), (6 * 6 * 2, 3), jnp.float64) / 6
        f = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ w)  # noqa: E731
        x = jax.random.normal(jax.random.key(1), (2, 6, 6, 2), jnp.float64)
        blurred = gaussian_blur(x, 2.0)
        want = f(x)[:, 1] - f(blurred)[:, 1]
        errs = []
        for steps in (4, 64):
            r = _jit(jaxsal.blur_ig(f, max_sigma=2.0, steps=steps, grad_step=1e-4), x, 1)
            errs.append(np.abs(np.asarray(r.sum(axis=(1, 2, 3)) - want) / np.abs(want)))
        assert errs[1].max() < 5e-2
        assert np.all(errs[1] < errs[0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(max_sigma=0.0), "max_sigma"),
        (dict(max_sigma=-1.0), "max_sigma"),
        (dict(max_sigma=float("inf")), "max_sigma"),
        (dict(steps=0), "steps"),
        (dict(grad_step=0.0), "grad_step"),
    ],
)
def test_bad_hyper_parameters(kwargs, match, cnn):
    with pytest.raises(ValueError, match=match):
        jaxsal.blur_ig(cnn.f, **kwargs)


def test_bad_input():
    f = lambda z: z[:, :3]  # noqa: E731
    with pytest.raises(ValueError, match="axes 1 and 2"):
        jaxsal.blur_ig(f, steps=2)(jnp.ones((2, 8)))
    with pytest.raises(TypeError, match="sqrt"):
        jaxsal.blur_ig(f, sqrt="yes")

"""DeepLIFT / DeepLIFT-SHAP parity with Captum 0.9 on the small CNN, float64 (needs the ``bench`` extra).

The small CNN (ParityCNN: conv, ReLU, conv, ReLU, max-pool, conv, ReLU, avg-pool, dense)
has a ReLU module feeding a MaxPool module directly. For such a pair Captum's hooks give
wrong multipliers when the baseline is not zero (captum#1104); with ``x * 1`` between
them (:func:`benchmarks.propagation.separate_pools`, the same function) Captum applies its
documented rules, and that is the reference. A hand-written layer-by-layer reference in
torch (:func:`benchmarks.propagation.torch_deeplift`) is compared as well. The
EfficientNet-Lite0 rows are in ``benchmarks/results/propagation.md``.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("captum")

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import torch  # noqa: E402

import jaxsal  # noqa: E402
from benchmarks import cases  # noqa: E402
from benchmarks import propagation as P  # noqa: E402
from benchmarks import propagation_models as pm  # noqa: E402

pytestmark = [pytest.mark.bench, pytest.mark.filterwarnings("ignore:Setting backward hooks")]

TOL64 = 1e-6
K = 3


@pytest.fixture(scope="module")
def run():
    """float64 case, its SHAP baselines, and jaxsal's DeepLIFT / DeepLIFT-SHAP (one jit)."""
    with jax.enable_x64(True):
        case = cases.as_float64(pm.small_cnn_case(batch=2, size=8))
        bl = P.shap_baselines(case, K)

        def both(v, x, t):
            f = lambda z: case.module.apply(v, z)  # noqa: E731
            return (
                jaxsal.deeplift(f)(x, t),
                jaxsal.deeplift_shap(f, jnp.asarray(bl))(x, t),
                f(x),
                f(jnp.asarray(bl)),
            )

        x, t = jnp.asarray(case.x), jnp.asarray(case.target, jnp.int32)
        dl, shp, fx, fb = (np.asarray(a) for a in jax.jit(both)(case.variables, x, t))
        f0 = np.asarray(jax.jit(case.f)(jnp.zeros_like(x)))
    rows = np.arange(len(case.x))
    return dict(
        case=case,
        bl=bl,
        blt=cases.to_nchw(bl),
        dl=dl,
        shp=shp,
        delta=fx[rows, case.target] - f0[rows, case.target],
        delta_shap=fx[rows, case.target] - fb[:, case.target].mean(0),
    )


def _sum(r):
    return r.reshape(len(r), -1).sum(1)


def test_deeplift_matches_captum_with_hooks_separated(run):
    case = run["case"]
    xt, tt = case.x_torch, torch.from_numpy(case.target)
    ref, delta = P.captum_deeplift(P.separate_pools(case.torch_model), xt, torch.zeros_like(xt), tt)
    assert run["dl"].dtype == np.float64
    assert P.compare(run["dl"], cases.to_nhwc(ref))[0] < TOL64
    assert float(delta.abs().max()) < 1e-10


def test_deeplift_shap_matches_captum_with_hooks_separated(run):
    case = run["case"]
    xt, tt = case.x_torch, torch.from_numpy(case.target)
    ref, delta = P.captum_deeplift(P.separate_pools(case.torch_model), xt, run["blt"], tt, shap=True)
    assert P.compare(run["shp"], cases.to_nhwc(ref))[0] < TOL64
    assert float(delta.abs().max()) < 1e-10


def test_captum_breaks_on_relu_before_maxpool_and_jaxsal_does_not(run):
    """captum#1104: as shipped, Captum's DeepLift/DeepLiftShap miss summation-to-delta on this
    model (its own delta shows it); jaxsal's sums hold."""
    case = run["case"]
    xt, tt = case.x_torch, torch.from_numpy(case.target)
    for shap, ours, want, x0 in (
        (False, run["dl"], run["delta"], torch.zeros_like(xt)),
        (True, run["shp"], run["delta_shap"], run["blt"]),
    ):
        ref, delta = P.captum_deeplift(case.torch_model, xt, x0, tt, shap=shap)
        scale = np.abs(want).max()
        assert float(delta.abs().max()) > 1e-3 * scale
        assert P.compare(ours, cases.to_nhwc(ref))[0] > 1e-3
        np.testing.assert_allclose(_sum(ours), want, rtol=1e-10, atol=1e-12 * scale)


def test_matches_hand_written_reference(run):
    case = run["case"]
    xt, tt = case.x_torch, torch.from_numpy(case.target)
    ref = P.torch_deeplift(case.torch_model, xt, torch.zeros_like(xt), tt)
    assert P.compare(run["dl"], cases.to_nhwc(ref))[0] < TOL64
    refs = P.torch_deeplift_shap(case.torch_model, xt, run["blt"], tt)
    assert P.compare(run["shp"], cases.to_nhwc(refs))[0] < TOL64


def test_summation_to_delta(run):
    np.testing.assert_allclose(_sum(run["dl"]), run["delta"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(_sum(run["shp"]), run["delta_shap"], rtol=1e-10, atol=1e-13)


def test_hand_written_rescale_is_the_multiplier():
    """The reference's Rescale backward: (y - y0) / (x - x0), and the derivative where x == x0."""
    x = torch.tensor([[-1.0, 2.0, 0.5, 3.0]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, -2.0, 0.5, 1.0]], dtype=torch.float64)
    xs = torch.cat([x, x0]).requires_grad_(True)
    y = P._Rescale.apply(xs, torch.relu)
    (g,) = torch.autograd.grad(y, xs, torch.ones_like(y))
    np.testing.assert_allclose(g[0].numpy(), [0.5, 0.5, 1.0, 1.0])

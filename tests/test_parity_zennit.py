"""LRP parity with Zennit 0.5.1 on the same weights, float64 (needs the ``bench`` extra and Zennit).

Zennit declares a torchvision dependency that has no CPU build matching our torch, so it
is installed without dependencies (``.venv/bin/pip install --no-deps zennit==0.5.1``) and
imported through :mod:`benchmarks.zennit_shim`. Every composite, on the small CNN (conv,
ReLU, max-pool, average pool, dense) and on a ResNet with BatchNorm and two
BasicBlocks (one with a downsample), must agree to ``max|diff| / max|ref| < 1e-6``.
The full tables (VGG-16, float32) are in ``benchmarks/results/propagation.md``.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # `benchmarks/` lives beside `jaxsal/`
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import torch  # noqa: E402

from benchmarks import cases, zennit_shim  # noqa: E402
from benchmarks import propagation as P  # noqa: E402
from benchmarks import propagation_models as pm  # noqa: E402

pytestmark = [
    pytest.mark.bench,
    pytest.mark.filterwarnings("ignore::UserWarning:zennit"),
]

TOL64 = 1e-6


@pytest.fixture(scope="module")
def zennit():
    if importlib.util.find_spec("zennit") is None:
        pytest.fail(f"zennit is not installed (CI installs it): {zennit_shim.INSTALL}", pytrace=False)
    return zennit_shim.import_zennit()


@pytest.fixture(scope="module")
def small():
    return lambda: pm.small_cnn_case(batch=2, size=8)


@pytest.fixture(scope="module")
def resnet():
    return lambda: pm.resnet_case(batch=2, size=8, width=4)


@pytest.fixture(scope="module")
def relevances(zennit, small, resnet):
    """``{model: {composite: (jaxsal, zennit)}}`` in float64; jaxsal's six composites in one jit."""
    out = {}
    with jax.enable_x64(True):
        for model, make in (("small", small), ("resnet", resnet)):
            case = cases.as_float64(make())
            ours = P.jaxsal_lrp_all(case)
            out[model] = {
                name: (ours[name], P.zennit_lrp(case, name, exact_bn=model == "resnet", **P._box(case, name)))
                for name in P.COMPOSITES
            }
    return out


@pytest.mark.parametrize("model", ["small", "resnet"])
@pytest.mark.parametrize("composite", P.COMPOSITES)
def test_lrp_matches_zennit_float64(relevances, model, composite):
    a, ref = relevances[model][composite]
    assert a.dtype == np.float64
    rel, _, m = P.compare(a, ref)
    assert m > 0
    assert rel < TOL64, f"{model} {composite}: max|diff|/max|ref| = {rel:.2e}"


def test_relevance_is_the_score_weighted_one_hot(zennit, small, relevances):
    """Zennit with the one-hot ``attr_output`` times the score equals jaxsal (LRP is linear in it)."""
    a = relevances["small"]["epsilon_plus"][0]
    with jax.enable_x64(True):
        case = cases.as_float64(small())
        comp = P.zennit_composite("epsilon_plus", canonizers=P.canonizers_for(case))
        x = case.x_torch.clone().requires_grad_(True)
        with comp.context(case.torch_model) as m:
            out = m(x)
            one_hot = torch.nn.functional.one_hot(torch.from_numpy(case.target), out.shape[1]).to(out)
            (rel,) = torch.autograd.grad(out, x, one_hot)
        score = out.detach().numpy()[np.arange(2), case.target]
    ref = cases.to_nhwc(rel) * score[:, None, None, None]
    assert P.compare(a, ref)[0] < TOL64


def test_zennit_merged_batchnorm_is_not_the_identity(zennit, resnet):
    """Why the ResNet rows use :func:`exact_merged_batchnorm`: Zennit 0.5.1's merged BatchNorm
    still divides by sqrt(1 + eps), so its canonized model is not the model (zennit#240)."""
    with jax.enable_x64(True):
        case = cases.as_float64(resnet())
    comp = P.zennit_composite("epsilon", canonizers=P.canonizers_for(case))
    x = case.x_torch
    with torch.no_grad():
        want = case.torch_model(x)
        with comp.context(case.torch_model) as m:
            shipped = m(x)
            with P.exact_merged_batchnorm(m):
                exact = m(x)
        after = case.torch_model(x)
    gap = lambda o: float((o - want).abs().max() / want.abs().max())  # noqa: E731
    assert gap(shipped) > 1e-7
    assert gap(exact) < 1e-13
    assert gap(after) == 0.0  # the model is restored


def test_resnet_canonizer_recognises_the_shim_blocks(zennit, resnet):
    case = resnet()
    blocks = [m for m in case.torch_model.modules() if isinstance(m, zennit.torchvision.ResNetBasicBlock)]
    assert len(blocks) == 2
    comp = P.zennit_composite("epsilon", canonizers=P.canonizers_for(case))
    with comp.context(case.torch_model):
        assert all(hasattr(b, "canonizer_sum") for b in blocks)
    assert not any(hasattr(b, "canonizer_sum") for b in blocks)


# ----------------------------------------------------------------------------- the shim


def test_shim_stands_in_when_torchvision_is_missing(zennit):
    if zennit_shim.real_torchvision_available():
        pytest.fail("a real torchvision is installed here; this test expects the CPU-only setup")
    assert zennit_shim.is_shimmed()
    import torchvision.models.resnet as tvr

    assert tvr.BasicBlock is zennit_shim.BasicBlock and tvr.Bottleneck is zennit_shim.Bottleneck
    assert zennit.torchvision.ResNetBasicBlock is zennit_shim.BasicBlock


def test_shim_blocks_compute_torchvisions_forward():
    torch.manual_seed(0)
    down = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2, bias=False), torch.nn.BatchNorm2d(8))
    for block, planes_out in (
        (zennit_shim.BasicBlock(4, 8, stride=2, downsample=down).eval(), 8),
        (zennit_shim.Bottleneck(4, 2, stride=2, downsample=down).eval(), 8),
    ):
        x = torch.randn(2, 4, 6, 6)
        with torch.no_grad():
            y = block(x)
            h = x
            convs = [m for n, m in block.named_children() if n.startswith("conv")]
            bns = [m for n, m in block.named_children() if n.startswith("bn")]
            for i, (c, b) in enumerate(zip(convs, bns, strict=True)):
                h = b(c(h))
                if i < len(convs) - 1:
                    h = torch.relu(h)
            want = torch.relu(h + down(x))
        assert y.shape == (2, planes_out, 3, 3)
        torch.testing.assert_close(y, want)
        assert block.stride == 2 and block.downsample is down


def test_shim_refuses_when_a_real_torchvision_is_importable(tmp_path, monkeypatch):
    """With a (fake) real torchvision on the path, the shim registers nothing and uses its classes."""
    pkg = tmp_path / "torchvision" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "torchvision" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "resnet.py").write_text("class BasicBlock:\n    pass\n\n\nclass Bottleneck:\n    pass\n")
    names = ("torchvision", "torchvision.models", "torchvision.models.resnet")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert zennit_shim.real_torchvision_available()
        assert zennit_shim.install() is False
        assert not zennit_shim.is_shimmed()
        basic, bottleneck = zennit_shim.block_classes()
        assert basic.__module__ == "torchvision.models.resnet" and basic is not zennit_shim.BasicBlock
        assert bottleneck is not zennit_shim.Bottleneck
    finally:  # drop the fake package, put back whatever was there (the shim)
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def test_import_zennit_names_the_install_line_when_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "zennit" else real(n, *a))
    with pytest.raises(ImportError, match="--no-deps zennit==0.5.1"):
        zennit_shim.import_zennit()

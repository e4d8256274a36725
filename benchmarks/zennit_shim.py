"""Import Zennit 0.5.1 without torchvision.

Zennit 0.5.1 imports ``torchvision`` when it is imported: ``zennit/torchvision.py`` runs
``from torchvision.models.resnet import Bottleneck, BasicBlock`` so that its
``ResNetCanonizer`` can recognise torchvision's residual blocks by type. Nothing else
of torchvision is used. No CPU build of torchvision matches our CPU ``torch==2.13.0``
(PyPI's wheels pull a CUDA torch of several GB and do not load against the CPU one),
and Zennit's own metadata requires ``torchvision``, so it is installed without its
dependencies::

    .venv/bin/pip install --no-deps zennit==0.5.1   # its other needs: click, numpy, Pillow, torch

:func:`import_zennit` then imports Zennit. If a real torchvision is importable it is
used as it is (nothing is faked). Otherwise, before Zennit is imported, three minimal
modules are registered in ``sys.modules``: ``torchvision``, ``torchvision.models`` and
``torchvision.models.resnet``. The last holds :class:`BasicBlock` and
:class:`Bottleneck`, written here after torchvision's classes (He et al. 2016, "Deep
Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385): the same
constructor arguments, the same attribute names (``conv1``, ``bn1``, ``relu``,
``conv2``, ``bn2``, [``conv3``, ``bn3``], ``downsample``, ``stride``), the same
registration order (which Zennit's ``SequentialMergeBatchNorm`` relies on to pair each
convolution with its BatchNorm) and the same ``forward`` with ``out += identity``, which
Zennit's ResNet canonizer replaces by a ``Sum`` module. Models built from these classes
(:mod:`benchmarks.propagation_models`) are therefore canonized exactly as a torchvision
ResNet would be.

The fake modules are marked with ``__jaxsal_shim__ = True``; :func:`is_shimmed` tells
whether the running ``torchvision`` is the shim.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch
from torch import nn

INSTALL = ".venv/bin/pip install --no-deps zennit==0.5.1"


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        cin, cout, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock``: conv3x3-bn-relu-conv3x3-bn, ``out += identity``, relu."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer=None,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's ResNet ``Bottleneck`` (v1.5: the stride on the 3x3 convolution), ``expansion = 4``."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer=None,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def real_torchvision_available() -> bool:
    """Whether a real (not shimmed) torchvision can be imported."""
    mod = sys.modules.get("torchvision")
    if mod is not None:
        return not getattr(mod, "__jaxsal_shim__", False)
    try:
        return importlib.util.find_spec("torchvision") is not None
    except (ImportError, ValueError):
        return False


def is_shimmed() -> bool:
    """Whether ``torchvision`` in ``sys.modules`` is this module's stand-in."""
    return bool(getattr(sys.modules.get("torchvision"), "__jaxsal_shim__", False))


def install() -> bool:
    """Register the stand-in ``torchvision`` modules, unless a real torchvision is importable.

    Returns ``True`` when the shim is (now) in place, ``False`` when a real torchvision
    is used instead.
    """
    if is_shimmed():
        return True
    if real_torchvision_available():
        return False
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    for m in (tv, models, resnet):
        m.__jaxsal_shim__ = True
        m.__doc__ = "jaxsal benchmarks: stand-in for torchvision (see benchmarks/zennit_shim.py)."
    resnet.BasicBlock, resnet.Bottleneck = BasicBlock, Bottleneck
    tv.models, models.resnet = models, resnet
    tv.__path__, models.__path__ = [], []  # packages, so `import torchvision.models.resnet` resolves
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet})
    return True


def block_classes() -> tuple[type, type]:
    """``(BasicBlock, Bottleneck)`` that Zennit's ResNet canonizer recognises: the real ones
    when torchvision is installed, this module's otherwise."""
    if real_torchvision_available():
        from torchvision.models.resnet import BasicBlock as B
        from torchvision.models.resnet import Bottleneck as N

        return B, N
    return BasicBlock, Bottleneck


def import_zennit():
    """The ``zennit`` module (0.5.1), imported through the shim when torchvision is missing.

    Raises ``ImportError`` with the install line when Zennit is not installed.
    """
    if importlib.util.find_spec("zennit") is None:
        raise ImportError(
            f"zennit is not installed; install it without its torchvision dependency: {INSTALL}"
        )
    install()
    zennit = importlib.import_module("zennit")
    importlib.import_module("zennit.torchvision")
    return zennit

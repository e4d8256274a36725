"""A small CNN for the synthetic shapes set: conv-ReLU blocks, global average pooling, a dense head.

Trained on :func:`jaxsal.datasets.synthetic_shapes` (or scikit-learn's digits) with
:func:`jaxsal.models.train_classifier` in seconds on a laptop CPU. It ends in global
average pooling and a dense head, so Grad-CAM on its last convolution is the classic
CAM (Zhou et al., 2016).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxsal.datasets import SHAPES

Array = jax.Array


class ShapesCNN(nn.Module):
    """Conv(3x3)-ReLU blocks with 2x2 max pooling between them, global average pooling
    and a dense head. Inputs are shifted by ``-center`` first (images in ``[0, 1]``).
    Layers are named ``conv0, conv1, ...`` and ``head`` (the order
    :func:`jaxsal.metrics.layer_names` reports). With the defaults it reaches about
    95% test accuracy on :func:`jaxsal.datasets.synthetic_shapes` (32 px) after 800 Adam steps."""

    num_classes: int = len(SHAPES)
    features: Sequence[int] = (16, 32, 64, 64)
    center: float = 0.5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x - self.center
        for i, feat in enumerate(self.features):
            x = nn.relu(nn.Conv(feat, (3, 3), name=f"conv{i}")(x))
            if i < len(self.features) - 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(self.num_classes, name="head")(x.mean((1, 2)))

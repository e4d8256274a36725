"""Flax models of the benchmarks that jaxsal itself does not ship.

:class:`ParityCNN` is the twin of :class:`benchmarks.torch_models.ParityCNN`: same layers,
same order, NHWC. EfficientNet-Lite0 and VGG-16 come from :mod:`jaxsal.models`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ParityCNN(nn.Module):
    """conv(8)-relu-conv(16)-relu-maxpool-conv(32)-relu-avgpool-flatten-fc(32)-relu-fc(C).

    Input NHWC ``(B, S, S, 3)``. ``"conv3"`` is the Grad-CAM layer (its output, before the ReLU).
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), padding=1, name="conv1")(x))
        x = nn.relu(nn.Conv(16, (3, 3), padding=1, name="conv2")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(32, (3, 3), padding=1, name="conv3")(x))
        with jax.numpy_dtype_promotion("standard"):  # flax divides by an int64 window size
            x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)  # NHWC order
        x = nn.relu(nn.Dense(32, name="fc1")(x))
        return nn.Dense(self.num_classes, name="fc2")(x)


def small_cnn(size: int = 32, num_classes: int = 10, seed: int = 0):
    """``(module, variables)`` with random weights (Flax's default init, seeded)."""
    module = ParityCNN(num_classes)
    variables = module.init(jax.random.key(seed), jnp.zeros((1, size, size, 3), jnp.float32))
    return module, variables

"""Layer methods of the registry: input methods at a probed layer, through :func:`jaxsal.at_layer`.

Each is one line on top of an input method, registered so that the common suite, the
CLI and the benchmarks see it (Captum's ``LayerGradientXActivation`` and
``LayerIntegratedGradients``).
"""

from __future__ import annotations

import jax

from jaxsal._src import contract
from jaxsal._src.at_layer import at_layer
from jaxsal._src.gradients import grad_x_input
from jaxsal._src.path import integrated_gradients
from jaxsal._src.probe import Probe
from jaxsal._src.registry import Method, register

Array = jax.Array


def layer_grad_x_activation(probe: Probe) -> contract.Attribution:
    r"""Gradient × Activation at a layer (Shrikumar et al. 2016, at a hidden layer;
    Captum's ``LayerGradientXActivation``).

    .. math:: R^c = A \odot \partial S_c / \partial A

    ``jaxsal.grad_x_input(jaxsal.at_layer(probe))``: shaped like the layer's output.
    """
    return grad_x_input(at_layer(probe))


def layer_integrated_gradients(
    probe: Probe,
    *,
    baseline: Array | float | None = None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Integrated Gradients at a layer (Sundararajan et al. 2017; Captum's
    ``LayerIntegratedGradients``).

    .. math::

       R^c = (A(x) - A(x')) \odot \int_0^1
             \frac{\partial S_c(x; A \leftarrow A(x') + \alpha (A(x) - A(x')))}{\partial A}\, d\alpha

    ``jaxsal.integrated_gradients(jaxsal.at_layer(probe), ...)``: ``baseline`` is an
    input ``x'`` (zeros by default), mapped through the layer; the other arguments are
    :func:`jaxsal.integrated_gradients`'. Completeness holds in layer space:
    :math:`\sum R^c = S_c(x) - S_c(x; A \leftarrow A(x'))`.
    """
    return integrated_gradients(
        at_layer(probe), baseline=baseline, steps=steps, method=method, batch_size=batch_size
    )


register(
    Method(
        "layer_grad_x_activation",
        layer_grad_x_activation,
        "probe",
        "layer",
        "Gradient×Activation (layer)",
        "Shrikumar et al. 2016",
        output="activation",
        signed=True,
        captum="LayerGradientXActivation",
    )
)
register(
    Method(
        "layer_integrated_gradients",
        layer_integrated_gradients,
        "probe",
        "layer",
        "Integrated Gradients (layer)",
        "Sundararajan et al. 2017",
        output="activation",
        signed=True,
        captum="LayerIntegratedGradients(method='gausslegendre')",
    )
)

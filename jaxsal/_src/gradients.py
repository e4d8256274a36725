"""Gradient methods: one forward and one backward pass each.

Vanilla Gradient (Simonyan et al. 2013), Gradient x Input (Shrikumar et al. 2016),
DeconvNet (Zeiler & Fergus 2014) and Guided Backprop (Springenberg et al. 2015).
All four share :func:`jaxsal._src.contract.input_gradient`; DeconvNet and Guided
Backprop only swap the ReLU backward rule (:mod:`jaxsal._src.relu_rules`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from jaxsal._src import contract
from jaxsal._src.at_layer import AtLayer
from jaxsal._src.registry import Method, register
from jaxsal._src.relu_rules import Rule, with_fast_max_pool, with_relu_rule

Array = jax.Array


def _gradient_method(
    f: Callable | AtLayer, name: str, *, times_input: bool = False, rule: Rule | None = None
) -> contract.Attribution:
    if isinstance(f, AtLayer):
        return f.lift(
            functools.partial(_gradient_method, name=name, times_input=times_input, rule=rule), name=name
        )
    contract.check_callable(f)
    model = with_fast_max_pool(f) if rule is None else with_relu_rule(f, rule)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        _, grad = contract.input_gradient(model, x, target)
        return grad * x if times_input else grad

    return contract.Attribution(attr, f, name=name)


def vanilla_grad(f: Callable) -> contract.Attribution:
    r"""Vanilla Gradient (Simonyan, Vedaldi & Zisserman 2013, "Deep Inside Convolutional
    Networks", https://arxiv.org/abs/1312.6034).

    .. math:: R^c(x) = \partial S_c / \partial x \,|_{x}

    the gradient of the raw class score ``S_c = f(x)[:, c]`` (``c = target``) with
    respect to the input, signed, shaped like ``x`` (only class ``c``'s score is
    differentiated: every other class's output gradient is zero). It is the plain
    ``jax.vjp`` gradient: ReLUs pass the gradient where their input is positive.
    Take ``abs`` (or ``jaxsal.viz``) for the usual absolute saliency map; Captum's
    ``Saliency`` does that by default (``abs=True``).

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, ...)``.

    Example::

      attr = jaxsal.vanilla_grad(lambda x: model.apply(variables, x))
      saliency = attr(images)            # explains each image's top class
    """
    return _gradient_method(f, "vanilla_grad")


def grad_x_input(f: Callable) -> contract.Attribution:
    r"""Gradient x Input (Shrikumar et al. 2016, https://arxiv.org/abs/1605.01713).

    .. math:: R^c_i(x) = x_i \cdot \partial S_c / \partial x_i

    For a linear model ``S_c = x \cdot w_c`` this is each feature's exact
    contribution ``x_i w_{ic}`` (Integrated Gradients with a zero baseline gives the
    same). Same as Captum's ``InputXGradient``.
    """
    return _gradient_method(f, "grad_x_input", times_input=True)


def deconvnet(f: Callable) -> contract.Attribution:
    r"""DeconvNet (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
    Networks", https://arxiv.org/abs/1311.2901), as a gradient with a modified ReLU.

    Backward through every ReLU: :math:`R_n = R_{n+1} \, 1(R_{n+1} > 0)`,
    i.e. only positive gradient passes, whatever the forward activation was. All
    other layers use their ordinary derivative. Works on unmodified models: the
    ReLUs are found in the traced jaxpr (see :func:`jaxsal.with_relu_rule`). Same
    as Captum's ``Deconvolution`` on models whose ReLUs Captum can hook.
    """
    return _gradient_method(f, "deconvnet", rule="deconvnet")


def guided_backprop(f: Callable) -> contract.Attribution:
    r"""Guided Backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller 2015,
    "Striving for Simplicity", https://arxiv.org/abs/1412.6806).

    Backward through every ReLU: :math:`R_n = R_{n+1} \, 1(X_n > 0) \, 1(R_{n+1} > 0)`,
    the vanilla mask and the DeconvNet mask together (for ReLU6 the forward mask is
    ``0 < X_n < 6``). Works on unmodified models (see :func:`jaxsal.with_relu_rule`).
    Same as Captum's ``GuidedBackprop``. Caveat: Adebayo et al. (2018, "Sanity Checks
    for Saliency Maps", https://arxiv.org/abs/1810.03292) found its maps barely change
    when the model's weights are randomised.
    """
    return _gradient_method(f, "guided_backprop", rule="guided")


_FAMILY = "gradient"
register(
    Method(
        "vanilla_grad",
        vanilla_grad,
        "f",
        _FAMILY,
        "Vanilla Gradient",
        "Simonyan et al. 2013",
        captum="Saliency(abs=False)",
    )
)
register(
    Method(
        "grad_x_input",
        grad_x_input,
        "f",
        _FAMILY,
        "Gradient×Input",
        "Shrikumar et al. 2016",
        signed=True,
        captum="InputXGradient",
    )
)
register(
    Method("deconvnet", deconvnet, "f", _FAMILY, "DeconvNet", "Zeiler & Fergus 2014", captum="Deconvolution")
)
register(
    Method(
        "guided_backprop",
        guided_backprop,
        "f",
        _FAMILY,
        "Guided Backprop",
        "Springenberg et al. 2015",
        captum="GuidedBackprop",
    )
)

"""Find the linear layers of an unmodified model: the matcher propagation rules use.

A *linear unit* is a ``dot_general`` (dense layers, ``x @ w``, ``einsum``) or a
``conv_general_dilated`` (any stride, padding, dilation or feature groups) one of
whose operands is a *weight*: it does not depend on the interpreted function's
arguments. Weights must therefore be closed over (``lambda x: model.apply(variables,
x)``, an NNX module's state); that holds too when ``variables`` are arguments of an
outer ``jax.jit``. A weight passed as an argument of the interpreted function itself
counts as input.
When the product's only use is an ``add`` of another weight-like value (the bias,
after Flax's reshape), the ``add`` is part of the unit.

``unit.inputs`` are ``(lhs, rhs)`` or ``(lhs, rhs, bias)``, in that order, and
``unit.info`` is a :class:`LinearInfo`. ``unit.index`` counts linear units in
data-flow order from the input (``unit.first``), and ``unit.scope`` is the name
scope they were traced in: for a Flax linen model, ``"Net/conv1"`` is the module
class and the module path.

A product of two input-dependent values (attention's ``q @ k``) is not a layer and
is not matched; nor is a product of two constants.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax.numpy as jnp

from jaxsal._src import interpreter as interp

_KINDS = interp.LINEAR_PRIMITIVES


@dataclasses.dataclass(frozen=True)
class LinearInfo:
    """What a linear unit computes.

    Attributes:
      kind: ``"conv"`` or ``"dense"``.
      primitive: ``"conv_general_dilated"`` or ``"dot_general"``.
      params: the primitive's parameters (``dimension_numbers``, strides, padding...).
      weight: position of the weight in ``unit.inputs`` (0 or 1); the data is the other.
      bias: position of the bias in ``unit.inputs`` (2), or None when there is none.
    """

    kind: Literal["conv", "dense"]
    primitive: str
    params: dict[str, Any]
    weight: int
    bias: int | None = None

    @property
    def data(self) -> int:
        return 1 - self.weight


def _find_linear(view: interp.View):
    jaxpr = view.jaxpr
    for i, eqn in enumerate(jaxpr.eqns):
        name = eqn.primitive.name
        if name not in _KINDS or not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
            continue
        lhs, rhs = eqn.invars[:2]
        dep = (view.from_input(lhs), view.from_input(rhs))
        if dep not in ((True, False), (False, True)):
            continue
        weight = 0 if dep == (False, True) else 1
        out = eqn.outvars[0]
        eqns, inputs, bias = (i,), (lhs, rhs), None
        j = view.sole_use(out, interp.ADD)
        if j is not None:
            add = jaxpr.eqns[j]
            other = [a for a in add.invars if a is not out]
            if (
                len(other) == 1
                and not view.from_input(other[0])
                and add.outvars[0].aval.shape == out.aval.shape
                and not interp.is_literal(other[0])
            ):
                eqns, inputs, bias, out = (i, j), (lhs, rhs, other[0]), 2, add.outvars[0]
        info = LinearInfo(_KINDS[name], name, dict(eqn.params), weight, bias)
        yield interp.Unit("linear", eqns, inputs, out, info)


#: Matcher of linear layers (``dot_general`` / ``conv_general_dilated`` with a weight, plus bias).
LINEAR = interp.Matcher("linear", _find_linear, "dot_general / conv_general_dilated with a weight operand")

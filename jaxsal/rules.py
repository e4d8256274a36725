"""LRP rules and composites, as values (see :func:`jaxsal.lrp`).

A composite maps each linear layer, described by a :class:`Layer` (kind, index in
data-flow order, whether it is the first, Flax module path), to a rule, or to
``None`` for that layer's plain gradient::

    from jaxsal import rules

    def mine(layer: rules.Layer):
        if layer.first:
            return rules.ZBox(low=-1.0, high=1.0)
        return rules.ZPlus() if layer.kind == "conv" else rules.Epsilon(0.25)

    attr = jaxsal.lrp(f, mine)

:func:`composite` builds Zennit's named composites the same way.
"""

from jaxsal._src.propagation import COMPOSITES
from jaxsal._src.propagation import build_composite as composite
from jaxsal._src.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Layer,
    LinearOp,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
    stabilize,
)

__all__ = [
    "COMPOSITES",
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Layer",
    "LinearOp",
    "Norm",
    "Pass",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "composite",
    "stabilize",
]

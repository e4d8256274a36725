r"""LRP rules as values (Bach et al. 2015; Montavon et al. 2017, 2019), as in Zennit.

A rule says how the relevance ``R_out`` at the output of one linear layer
``z = x W + b`` is passed to its input. Every rule here is Zennit's (``zennit.rules``,
release 0.5.1) written in JAX: the same modified parameters, the same stabiliser and
the same sums, so that results compare one-to-one. With :math:`x^+ = \max(x, 0)`,
:math:`x^- = \min(x, 0)`, :math:`J_W^\top` the transposed linear map with weight ``W``
(``jax.vjp`` of the layer) and :math:`s(z) = z + \epsilon\,\mathrm{sign}_0(z)` the
stabiliser (``sign_0(0) = +1``):

==================  ============================================================================
:class:`Epsilon`    :math:`R_{in} = x \odot J_W^\top\!\big(R_{out} / s(xW + b)\big)`
:class:`ZPlus`      :math:`z = x^+W^+ + x^-W^- + b^+`;
                    :math:`R_{in} = x^+ \odot J_{W^+}^\top(R/s(z)) + x^- \odot J_{W^-}^\top(R/s(z))`
:class:`AlphaBeta`  :math:`\alpha\,` (the z⁺ term) :math:`-\ \beta\,` (the same with ``W⁺``/``W⁻``
                    swapped and ``b⁻``), each normalised by its own ``z``; ``α − β = 1``
:class:`Gamma`      Zennit's generalised γ rule: the z⁺-like term with weights
                    :math:`W + \gamma W^+` where the layer's output is positive, and its mirror
                    with :math:`W + \gamma W^-` where it is negative
:class:`ZBox`       :math:`z = xW - \ell W^+ - hW^- + (b - b^+ - b^-)`;
                    :math:`R_{in} = x \odot J_W^\top(\cdot) - \ell \odot J_{W^+}^\top(\cdot)
                    - h \odot J_{W^-}^\top(\cdot)`, with ``(·) = R/s(z)``
:class:`Flat`       every weight 1, bias 0, input 1: :math:`R_{in} = J_1^\top(R/s(z))`
:class:`WSquare`    :math:`z = 1\,W^{2} + b^{2}`: :math:`R_{in} = J_{W^2}^\top(R/s(z))`
:class:`Norm`       the ε rule without parameters, for sums and average pooling
:class:`Pass`       :math:`R_{in} = R_{out}` (activations)
==================  ============================================================================

A composite (:func:`jaxsal.lrp`) picks a rule per linear layer from a :class:`Layer`
description; ``None`` means the plain gradient for that layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Layer:
    """What a composite sees of one linear layer.

    Attributes:
      kind: ``"conv"`` (``conv_general_dilated``) or ``"dense"`` (``dot_general``).
      index: position among the linear layers in data-flow order from the input.
      first: whether it is the first linear layer (``index == 0``).
      scope: the name scope it was traced in: the Flax linen module path
        (``"Net/conv1"``) where known, else ``""``.
      merged: whether an elementwise affine after it (an inference-mode BatchNorm) was
        merged into its weight and bias, as Zennit's ``MergeBatchNorm`` canonizer does.
    """

    kind: Literal["conv", "dense"]
    index: int
    first: bool
    scope: str = ""
    merged: bool = False


@dataclasses.dataclass(frozen=True)
class LinearOp:
    """One linear layer as a rule sees it: ``z = op(x, w) + b``.

    ``op(x, w)`` is the layer's primitive (``conv_general_dilated``/``dot_general``,
    with its own strides, padding, groups) applied to data ``x`` and weight ``w``;
    ``b`` is the bias broadcastable to ``z`` (``None``: no bias). After canonization
    ``w``/``b`` are the merged parameters.
    """

    op: Callable[[Array, Array], Array]
    w: Array
    b: Array | None

    def z(self, x: Array, w: Array, b: Array | None) -> Array:
        out = self.op(x, w)
        return out if b is None else out + b.astype(out.dtype)

    def pull(self, x: Array, w: Array, cot: Array) -> Array:
        """:math:`J_w^\\top` cot, the transposed linear map (independent of ``x``)."""
        _, back = jax.vjp(lambda x_: self.op(x_, w), x)
        return back(cot)[0]


def stabilize(z: Array, epsilon: float) -> Array:
    """``z + epsilon * sign0(z)`` with ``sign0(0) = +1`` (Zennit's ``stabilize``)."""
    sign = jnp.where(z >= 0, jnp.ones((), z.dtype), -jnp.ones((), z.dtype))
    sign = jnp.where(jnp.isnan(z), z, sign)
    return z + sign * jnp.asarray(epsilon, z.dtype)


def _pos(a: Array | None) -> Array | None:
    return None if a is None else jnp.maximum(a, jnp.zeros((), a.dtype))


def _neg(a: Array | None) -> Array | None:
    return None if a is None else jnp.minimum(a, jnp.zeros((), a.dtype))


def _check_number(value: Any, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}.")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}.")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0; got {v}.")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0; got {v}.")
    return v


def _checked(rule: Any, name: str, **kw: bool) -> None:
    """Replace the frozen field ``name`` of ``rule`` by its checked float value."""
    object.__setattr__(rule, name, _check_number(getattr(rule, name), name, **kw))


class Rule:
    """Base of the LRP rules. ``linear(layer, x, g)`` returns the relevance at ``x``."""

    def linear(self, layer: LinearOp, x: Array, g: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"


@dataclasses.dataclass(frozen=True, repr=False)
class Epsilon(Rule):
    """LRP-ε (Bach et al. 2015). ``epsilon`` → 0 is LRP-0."""

    epsilon: float = 1e-6

    def __post_init__(self):
        _checked(self, "epsilon", positive=True)

    def linear(self, layer, x, g):
        s = g / stabilize(layer.z(x, layer.w, layer.b), self.epsilon)
        return x * layer.pull(x, layer.w, s)


@dataclasses.dataclass(frozen=True, repr=False)
class ZPlus(Rule):
    """LRP-z⁺ (Montavon et al. 2017), Zennit's version that also takes negative inputs (α1β0)."""

    stabilizer: float = 1e-6

    def __post_init__(self):
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        xp, xn, wp, wn = _pos(x), _neg(x), _pos(layer.w), _neg(layer.w)
        z = layer.z(xp, wp, _pos(layer.b)) + layer.z(xn, wn, None)
        s = g / stabilize(z, self.stabilizer)
        return xp * layer.pull(x, wp, s) + xn * layer.pull(x, wn, s)


@dataclasses.dataclass(frozen=True, repr=False)
class AlphaBeta(Rule):
    """LRP-αβ (Bach et al. 2015), ``alpha - beta == 1``, both ``>= 0``."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self):
        a = _check_number(self.alpha, "alpha", nonneg=True)
        b = _check_number(self.beta, "beta", nonneg=True)
        if abs((a - b) - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha - beta == 1 (relevance is conserved); got {a} - {b}.")
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "beta", b)
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        xp, xn, wp, wn = _pos(x), _neg(x), _pos(layer.w), _neg(layer.w)
        zp = layer.z(xp, wp, _pos(layer.b)) + layer.z(xn, wn, None)
        zn = layer.z(xp, wn, _neg(layer.b)) + layer.z(xn, wp, None)
        sp = g / stabilize(zp, self.stabilizer)
        sn = g / stabilize(zn, self.stabilizer)
        pos = xp * layer.pull(x, wp, sp) + xn * layer.pull(x, wn, sp)
        neg = xp * layer.pull(x, wn, sn) + xn * layer.pull(x, wp, sn)
        return self.alpha * pos - self.beta * neg


@dataclasses.dataclass(frozen=True, repr=False)
class Gamma(Rule):
    """LRP-γ (Montavon et al. 2019), in Zennit's generalised form for signed inputs.

    Where the layer's output ``z = xW + b`` is positive, relevance follows
    ``x⁺(W + γW⁺) + x⁻(W + γW⁻) + (b + γb⁺)``; where it is negative, the mirror
    ``x⁺(W + γW⁻) + x⁻(W + γW⁺) + (b + γb⁻)``.
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def __post_init__(self):
        _checked(self, "gamma", nonneg=True)
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        gm = self.gamma
        w, b = layer.w, layer.b
        xp, xn = _pos(x), _neg(x)
        w_up, w_dn = w + gm * _pos(w), w + gm * _neg(w)
        b_up = None if b is None else b + gm * _pos(b)
        b_dn = None if b is None else b + gm * _neg(b)
        z = layer.z(x, w, b)
        zero = jnp.zeros((), z.dtype)
        up = layer.z(xp, w_up, b_up) + layer.z(xn, w_dn, None)
        dn = layer.z(xp, w_dn, b_dn) + layer.z(xn, w_up, None)
        s_up = jnp.where(z > zero, g, zero) / stabilize(up, self.stabilizer)
        s_dn = jnp.where(z < zero, g, zero) / stabilize(dn, self.stabilizer)
        return (
            xp * layer.pull(x, w_up, s_up)
            + xn * layer.pull(x, w_dn, s_up)
            + xp * layer.pull(x, w_dn, s_dn)
            + xn * layer.pull(x, w_up, s_dn)
        )


@dataclasses.dataclass(frozen=True, repr=False)
class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for inputs bounded in ``[low, high]``.

    ``low``/``high`` are scalars or arrays broadcastable to one example (e.g. per
    channel ``(1, 1, 3)`` for NHWC images), in the units of the layer's input.
    """

    low: Any
    high: Any
    stabilizer: float = 1e-6

    def __post_init__(self):
        lo, hi = _bound(self.low, "low"), _bound(self.high, "high")
        try:
            ok = bool(np.all(np.asarray(lo) < np.asarray(hi)))
        except ValueError:
            raise ValueError(
                f"low {np.shape(lo)} and high {np.shape(hi)} do not broadcast together."
            ) from None
        if not ok:
            raise ValueError("ZBox needs low < high everywhere (the input's bounds); got low >= high.")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        try:
            lo = jnp.broadcast_to(jnp.asarray(self.low, x.dtype), x.shape)
            hi = jnp.broadcast_to(jnp.asarray(self.high, x.dtype), x.shape)
        except ValueError:
            raise ValueError(
                f"ZBox low/high of shapes {np.shape(self.low)}/{np.shape(self.high)} do not broadcast to "
                f"the first layer's input {x.shape}; pass scalars or arrays shaped like one example."
            ) from None
        w, b = layer.w, layer.b
        wp, wn = _pos(w), _neg(w)
        z = layer.z(x, w, b) - layer.z(lo, wp, _pos(b)) - layer.z(hi, wn, _neg(b))
        s = g / stabilize(z, self.stabilizer)
        return x * layer.pull(x, w, s) - lo * layer.pull(x, wp, s) - hi * layer.pull(x, wn, s)


def _bound(v: Any, name: str) -> np.ndarray | float:
    if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
        return _check_number(v, name)
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or a numeric array; got {type(v).__name__}.") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite.")
    return a


@dataclasses.dataclass(frozen=True, repr=False)
class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): relevance spread uniformly over the receptive field."""

    stabilizer: float = 1e-6

    def __post_init__(self):
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        ones_x, ones_w = jnp.ones_like(x), jnp.ones_like(layer.w)
        s = g / stabilize(layer.z(ones_x, ones_w, None), self.stabilizer)
        return layer.pull(x, ones_w, s)


@dataclasses.dataclass(frozen=True, repr=False)
class WSquare(Rule):
    """LRP-w² (Montavon et al. 2017): relevance by squared weights (Zennit squares the bias too)."""

    stabilizer: float = 1e-6

    def __post_init__(self):
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        w2 = layer.w * layer.w
        b2 = None if layer.b is None else layer.b * layer.b
        s = g / stabilize(layer.z(jnp.ones_like(x), w2, b2), self.stabilizer)
        return layer.pull(x, w2, s)


@dataclasses.dataclass(frozen=True, repr=False)
class Norm(Rule):
    """Zennit's ``Norm``: the ε rule with a fixed stabiliser, for sums and average pooling.

    On a unit ``z = u(a_1, ..., a_k)`` that is linear in its inputs (``a + b``, a sum,
    a mean, an average pool): :math:`R_i = a_i \\odot J_i^\\top(R / s(z))`. On a linear
    layer it is :class:`Epsilon` with ``epsilon = stabilizer``.
    """

    stabilizer: float = 1e-6

    def __post_init__(self):
        _checked(self, "stabilizer", positive=True)

    def linear(self, layer, x, g):
        return Epsilon(self.stabilizer).linear(layer, x, g)

    def parameter_free(self, forward: Callable, inputs: tuple, g: Array) -> tuple:
        z, back = jax.vjp(forward, *inputs)
        grads = back(g / stabilize(z, self.stabilizer))
        return tuple(a * c for a, c in zip(inputs, grads, strict=True))


@dataclasses.dataclass(frozen=True, repr=False)
class Pass(Rule):
    """Relevance passes an elementwise unit unchanged (Zennit's ``Pass``, for activations)."""

    def linear(self, layer, x, g):
        raise ValueError(
            "the Pass rule is for elementwise units (activations); a linear layer changes the shape of "
            "the relevance. Use Epsilon, ZPlus, ... or None (the gradient) for linear layers."
        )


#: The rules by name (for messages).
RULES = {c.__name__: c for c in (Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, Flat, WSquare, Norm, Pass)}

r"""Input invariance (Kindermans et al., 2019).

Kindermans, Hooker, Adebayo, Alber, Schütt, Dähne, Erhan & Kim (2019), "The
(Un)reliability of Saliency Methods", in *Explainable AI: Interpreting, Explaining and
Visualizing Deep Learning*, https://arxiv.org/abs/1711.00867.

A constant shift :math:`m` of the input, absorbed by the first layer's bias, gives a
second network that computes exactly the same function of the shifted data:

.. math:: f_s(z) = f(z - m), \qquad f_s(x + m) = f(x), \qquad
          \nabla f_s(x + m) = \nabla f(x).

A method is *input invariant* when its map of :math:`f_s` at :math:`x + m` equals its
map of :math:`f` at :math:`x`. The gradient, SmoothGrad (with the same noise), Guided
Backprop, DeconvNet and Grad-CAM are; Gradient×Input, Integrated Gradients and DeepLIFT
with a zero reference, and LRP are not; IG with a reference shifted with the input is.

**How the shifted network is built** (``absorb``):

* ``"first_layer"`` (default, for a model ``f``): Kindermans et al.'s construction.
  The rule interpreter (:func:`jaxsal.interpret`) finds the first linear layers of
  ``f`` (a ``conv_general_dilated``/``dot_general`` with a weight, reading the input
  with no linear layer before it) and subtracts from their output the constant
  :math:`c = L(m)`, the layer's response to the shift (bias excluded), so the new
  bias is :math:`b - Wm`. Propagation methods see this bias (LRP merges it into the
  layer), exactly as in the paper's network. ``f_s(x + m) == f(x)`` is checked.
* ``"input"``: the plain composition ``z -> f(z - m)``. Gradient-based methods cannot
  tell the two apart, but propagation rules see a subtraction in front of the first
  layer and explain the *original* layer input, so LRP would pass trivially.

A :class:`jaxsal.Probe` (the CAM family) is shifted by composition: its layer's
activations are the same either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src import interpreter as interp
from jaxsal._src.linear import LINEAR
from jaxsal._src.probe import Probe
from jaxsal._src.registry import Method

Array = jax.Array
Absorb = Literal["first_layer", "input"]

#: Default tolerance on the relative L2 difference, per dtype.
TOLERANCE = {jnp.dtype(jnp.float32): 1e-3, jnp.dtype(jnp.float64): 1e-8, jnp.dtype(jnp.bfloat16): 5e-2}


class Invariance(NamedTuple):
    """Result of :func:`input_invariance`.

    Attributes:
      difference: ``(B,)`` relative L2 difference of the two maps per example,
        :math:`\\lVert A_s - A \\rVert_2 / \\lVert A \\rVert_2` (0 when both are zero;
        ``inf`` when only ``A`` is zero).
      passed: ``(B,)`` bool, ``difference <= tolerance``.
      tolerance: the tolerance used.
      maps: the map of ``f`` at ``x``.
      shifted_maps: the map of the shifted model at ``x + shift``.
    """

    difference: Array
    passed: Array
    tolerance: float
    maps: Array
    shifted_maps: Array


# ----------------------------------------------------------------------------- the shifted model


def _first_linear(view: interp.View):
    """Linear units whose data operand is computed from the input without another linear layer."""

    def upstream_linear(atom, depth=64) -> bool:
        got = view.producer(atom)
        if got is None or depth == 0:
            return False
        _, eqn = got
        if eqn.primitive.name in interp.LINEAR_PRIMITIVES:
            return True
        return any(
            upstream_linear(a, depth - 1)
            for a in eqn.invars
            if not interp.is_literal(a) and view.from_input(a)
        )

    for unit in LINEAR(view):
        data = unit.inputs[unit.info.data]
        if not upstream_linear(data):
            yield unit


FIRST_LINEAR = interp.Matcher("first_linear", _first_linear, "linear layers reading the input directly")


def shifted_model(f: Callable, shift: Any, x: Any, *, absorb: Absorb = "first_layer") -> Callable:
    """The network ``f_s`` with ``f_s(z) = f(z - shift)`` (Kindermans et al., 2019).

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``, weights closed over.
      shift: the constant input shift :math:`m`, a scalar or an array broadcasting to one example of ``x``.
      x: an example batch: ``absorb="first_layer"`` computes the new biases at its shape
        (the returned model accepts batches of this shape only).
      absorb: ``"first_layer"`` folds the shift into the first linear layers' biases;
        ``"input"`` composes ``z -> f(z - shift)`` (see the module docstring).

    Returns:
      ``f_s``, a function ``z -> scores``.

    Raises:
      ValueError: ``absorb="first_layer"`` and no first linear layer is found, or the
        folded model does not reproduce ``f(z - shift)`` (the part of ``f`` before its
        first linear layer is not affine, e.g. it clips the input).
    """
    contract.check_callable(f)
    x = contract.check_input(x)
    m = _check_shift(shift, x)
    if absorb == "input":
        return lambda z: f(z - m)
    if absorb != "first_layer":
        raise ValueError(f"absorb must be 'first_layer' or 'input'; got {absorb!r}.")

    recorded: dict[int, Array] = {}

    def record(unit, forward, *inputs):
        out = forward(*inputs)
        recorded.setdefault(unit.index, out)
        return out

    tap = interp.interpret(f, [(FIRST_LINEAR, record)])
    one = (1,) + tuple(x.shape[1:])  # the offsets broadcast over any batch (IG's path points)
    with jax.ensure_compile_time_eval():
        tap(jnp.broadcast_to(m, one).astype(x.dtype))
        at_shift = dict(recorded)
        recorded.clear()
        tap(jnp.zeros(one, x.dtype))
        at_zero = dict(recorded)
    if not at_shift:
        raise ValueError(
            "absorb='first_layer' found no linear layer (conv_general_dilated / dot_general with a "
            "weight closed over by f) reading the input; close over the weights "
            "(f = lambda x: model.apply(variables, x)) or pass absorb='input'."
        )
    offsets = {i: jax.lax.stop_gradient(at_shift[i] - at_zero[i]) for i in at_shift}

    def fold(unit, forward, *inputs):
        out = forward(*inputs)
        return out - offsets[unit.index].astype(out.dtype)

    f_s = interp.interpret(f, [(FIRST_LINEAR, fold)])
    with jax.ensure_compile_time_eval():
        a, b = f_s(x + m), f(x)
    scale = float(jnp.max(jnp.abs(b))) + 1e-30
    gap = float(jnp.max(jnp.abs(a - b))) / scale
    if not gap <= 1e3 * float(jnp.finfo(x.dtype).eps) ** 0.5:
        raise ValueError(
            f"folding the shift into the first layer's bias does not reproduce f(z - shift) (relative "
            f"gap {gap:.3g}): the part of f before its first linear layer is not affine in the input. "
            f"Pass absorb='input'."
        )
    return f_s


def _shift_probe(p: Probe, m: Array) -> Probe:
    """The probe of the shifted model: ``run(z, d) = p.run(z - m, d)`` (the same activations)."""
    return dataclasses.replace(
        p, scores_fn=lambda z: p.scores_fn(z - m), run=lambda z, delta: p.run(z - m, delta)
    )


# ----------------------------------------------------------------------------- the test


def _check_shift(shift: Any, x: Array) -> Array:
    if isinstance(shift, (list, tuple)):
        shift = np.asarray(shift)
    m = jnp.asarray(shift)
    if not (jnp.issubdtype(m.dtype, jnp.floating) or jnp.issubdtype(m.dtype, jnp.integer)):
        raise TypeError(f"shift must be a number or a numeric array; got dtype {m.dtype}.")
    if m.ndim == x.ndim and m.shape[0] == 1:  # already given the batch axis of one example
        m = m[0]
    try:
        ok = jnp.broadcast_shapes(m.shape, x.shape[1:]) == tuple(x.shape[1:])
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"shift of shape {m.shape} does not broadcast to one example of x {x.shape[1:]}; pass a "
            f"scalar, a per-channel shift (C,) or one example's shape. The shift is a property of the "
            f"data set, the same for every example (Kindermans et al. 2019)."
        )
    if not np.all(np.isfinite(np.asarray(m))):
        raise ValueError("shift must be finite.")
    return m.reshape((1,) * (x.ndim - m.ndim) + m.shape).astype(x.dtype)  # rank of x: no rank promotion


def _factory(method: Any, name: str) -> Callable:
    if isinstance(method, Method):
        return method.build
    if isinstance(method, str):
        raise TypeError(
            f"{name} must be a method factory (e.g. jaxsal.vanilla_grad) or a registered Method "
            f"(jaxsal.get_method({method!r})); got the string {method!r}."
        )
    if not callable(method):
        raise TypeError(f"{name} must be a method factory model -> attribution; got {type(method).__name__}.")
    return method


def _shift_hyper(hyper: Mapping[str, Any], names: Sequence[str], m: Array) -> dict:
    out = dict(hyper)
    for k in names:
        v = out.get(k)
        out[k] = m if v is None else jnp.asarray(v) + m
    return out


def _relative_l2(a: Array, b: Array) -> Array:
    dtype = jnp.float64 if a.dtype == jnp.float64 else jnp.float32  # no implicit promotion
    a64 = a.reshape(a.shape[0], -1).astype(dtype)
    b64 = b.reshape(b.shape[0], -1).astype(dtype)
    num = jnp.linalg.norm(b64 - a64, axis=1)
    den = jnp.linalg.norm(a64, axis=1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.where(num > 0, jnp.inf, 0.0))


def input_invariance(
    method: Callable | Method,
    f: Callable | Probe,
    x: Any,
    shift: Any,
    *,
    target: contract.Target = None,
    key: Array | None = None,
    hyper: Mapping[str, Any] | None = None,
    shift_hyper: Sequence[str] = (),
    absorb: Absorb = "first_layer",
    tolerance: float | None = None,
) -> Invariance:
    r"""The input invariance test of Kindermans et al. (2019, Sec. 3).

    Builds the shifted model :math:`f_s(z) = f(z - m)` (:func:`shifted_model`) and
    compares :math:`A_s = \mathrm{method}(f_s)(x + m)` with
    :math:`A = \mathrm{method}(f)(x)` per example by the relative L2 difference
    :math:`\lVert A_s - A \rVert_2 / \lVert A \rVert_2`; ``passed`` when it is at most
    ``tolerance``. Both maps explain the same class (``target=None``: the top class of
    ``f(x)``, which is also that of :math:`f_s(x + m)`) and get the same ``key``, so a
    stochastic method such as SmoothGrad draws the same noise for both.

    Args:
      method: a factory ``model -> attribution`` (``jaxsal.vanilla_grad``,
        ``lambda g: jaxsal.integrated_gradients(g, steps=16)``) or a registered
        :class:`jaxsal.Method`; it is called as ``method(model, **hyper)``.
      f: model ``x (B, ...) -> raw scores (B, C)``, or a :class:`jaxsal.Probe` for the
        layer methods (Grad-CAM).
      x: inputs ``(B, ...)``, floating.
      shift: the constant shift :math:`m`, a scalar or an array broadcasting to one
        example of ``x``, the same for every example (Kindermans et al. shift MNIST from ``[0, 1]`` to ``[-1, 0]``, i.e. ``m = -1``).
      target: what is explained (see :mod:`jaxsal._src.contract`); resolved once on ``f(x)``.
      key: PRNG key for stochastic methods (the same for both maps).
      hyper: hyper-parameters passed to ``method`` for both models.
      shift_hyper: names of hyper-parameters in the input's units that move with the
        input (a reference point): ``("baseline",)`` gives Integrated Gradients the
        baseline ``baseline + m`` on the shifted model (``None`` counts as zeros), the
        paper's invariant variant.
      absorb: how a model ``f`` is shifted: ``"first_layer"`` (bias absorption, the
        paper's network) or ``"input"`` (composition); see the module docstring.
        Ignored for a probe.
      tolerance: largest relative difference that passes; default 1e-3 in float32
        (1e-8 in float64), about a thousand rounding errors of a gradient.

    Returns:
      :class:`Invariance` with ``difference``, ``passed``, ``tolerance`` and both maps.

    Example::

      r = jaxsal.metrics.input_invariance(jaxsal.integrated_gradients, f, x, -1.0,
                                          shift_hyper=("baseline",))
      assert r.passed.all()
    """
    build = _factory(method, "method")
    hyper = dict(hyper or {})
    names = (shift_hyper,) if isinstance(shift_hyper, str) else tuple(shift_hyper)
    x = contract.check_input(x)
    contract.nonfinite_rows(x)
    m = _check_shift(shift, x)
    if isinstance(f, Probe):
        model, model_s, scores_fn = f, _shift_probe(f, m), f.scores_fn
    else:
        contract.check_callable(f)
        model, model_s, scores_fn = f, shifted_model(f, m, x, absorb=absorb), f
    tol = TOLERANCE.get(jnp.dtype(x.dtype), 1e-3) if tolerance is None else float(tolerance)
    if not tol >= 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance!r}.")
    tgt = contract.resolve_target_at(scores_fn, x, target, who="input_invariance")
    attr = build(model, **hyper)
    attr_s = build(model_s, **_shift_hyper(hyper, names, m))
    a = attr(x, tgt, key=key)
    b = attr_s(x + m, tgt, key=key)
    diff = _relative_l2(a, b)
    return Invariance(diff, diff <= tol, tol, a, b)

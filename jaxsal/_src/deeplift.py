r"""DeepLIFT (Shrikumar, Greenside & Kundaje 2017) and DeepLIFT-SHAP on unmodified models.

DeepLIFT explains the difference from a reference, :math:`f(x) - f(x_0)`, by
*multipliers* :math:`m = \Delta y / \Delta x` propagated by the chain rule. This is
the Rescale rule, as Captum's ``DeepLift``:

* every elementwise nonlinearity gets :math:`m = (y - y_0) / (x - x_0)` where
  :math:`|x - x_0| \ge 10^{-10}`, and its own derivative elsewhere. Found in the jaxpr,
  whatever the spelling: the ReLU family (:data:`jaxsal.matchers.RELU`), the
  ``jax.nn`` activations traced as named calls (``silu``, ``elu``, ``gelu``...), and
  the one-operand primitives ``tanh``, ``logistic``, ``exp``, ``log``, ``log1p``,
  ``expm1``, ``erf``, ``sin``, ``cos``, ``sqrt``, ``rsqrt``, ``integer_pow``, ``abs``;
* max-pooling gets Captum's rule: per window, :math:`\max(y, y_0) - y_0` is routed to
  the maximum of ``x`` and :math:`y - \max(y, y_0)` to the maximum of :math:`x_0`, each
  divided by the input's difference there (its own gradient where that is below
  :math:`10^{-10}`: Captum takes the *first example's* gradient there, a bug for
  batches of more than one);
* everything else (linear layers, sums, reshapes, pads, BatchNorm in inference)
  keeps its derivative, which for linear operations is the linear rule.

The attribution is :math:`(x - x_0) \odot m`. When every nonlinearity of ``f`` is
elementwise or a max-pool, **summation-to-delta** holds: :math:`\sum_i R_i = f_c(x) -
f_c(x_0)`, up to float rounding. A product of two ``x``-dependent values (gating,
attention) keeps its derivative, and summation-to-delta then holds only approximately.

Like Captum, the model is evaluated once on ``[x; x_0]`` stacked along the batch axis,
so each rule sees an example and its reference side by side: the model must treat
examples independently, and every nonlinearity must see the batch as its leading axis
(a ``lax.map`` over examples inside ``f`` breaks this and raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src import interpreter as interp
from jaxsal._src.propagation import ACTIVATIONS
from jaxsal._src.registry import Method, register
from jaxsal._src.relu import RELU

Array = jax.Array

#: Below this input difference a unit keeps its gradient (Captum's ``eps``).
EPS = 1e-10
#: One-operand elementwise primitives that get the Rescale rule.
UNARY = frozenset("tanh logistic exp log log1p expm1 erf sin cos sqrt rsqrt integer_pow abs".split())


def _find_unary(view: interp.View):
    for i, eqn in enumerate(view.jaxpr.eqns):
        if eqn.primitive.name not in UNARY or len(eqn.invars) != 1:
            continue
        (a,), (out,) = eqn.invars, eqn.outvars
        if interp.is_literal(a) or not view.from_input(a) or a.aval.shape != out.aval.shape:
            continue
        if jnp.issubdtype(out.aval.dtype, jnp.floating):
            yield interp.Unit("nonlinear", (i,), (a,), out, eqn.primitive.name)


def _find_max_pools(view: interp.View):
    for i, eqn in enumerate(view.jaxpr.eqns):
        if eqn.primitive.name != interp.REDUCE_WINDOW_MAX or len(eqn.invars) != 1:
            continue
        (a,) = eqn.invars
        if not interp.is_literal(a) and view.from_input(a) and jnp.issubdtype(a.aval.dtype, jnp.floating):
            yield interp.Unit("max_pool", (i,), (a,), eqn.outvars[0])


UNARY_NONLINEAR = interp.Matcher("nonlinear", _find_unary, "one-operand elementwise nonlinearities")
ANY_MAX_POOL = interp.Matcher("max_pool", _find_max_pools, "reduce_window max (any window)")


def _halves(unit: interp.Unit, a: Array) -> tuple[Array, Array]:
    if a.ndim == 0 or a.shape[0] % 2:
        raise ValueError(
            f"deeplift: a {unit.kind!r} unit{' in ' + unit.scope if unit.scope else ''} sees a value of "
            f"shape {a.shape}, whose leading axis is not the batch of [x; baseline]. DeepLIFT evaluates f "
            f"on inputs and baselines stacked along the batch axis; f must keep the batch as the leading "
            f"axis of its activations (no lax.map over examples inside f)."
        )
    n = a.shape[0] // 2
    return a[:n], a[n:]


def _twice(a: Array) -> Array:
    return jnp.concatenate([a, a], axis=0)


def _over_delta(num: Array, dx: Array, plain: Array) -> Array:
    """``num / dx`` where the input moved (``|dx| >= EPS``), the unit's own gradient ``plain`` elsewhere."""
    small = jnp.abs(dx) < EPS
    safe = jnp.where(small, jnp.ones_like(dx), dx)  # no inf/NaN in the branch not taken (nor its grads)
    return jnp.where(small, plain, num / safe)


def _rescale(unit, inputs, y, g):
    (x,) = inputs
    x1, x0 = _halves(unit, x)
    y1, y0 = _halves(unit, y)
    _, pull = jax.vjp(unit.apply, x)
    return (_over_delta(g * _twice(y1 - y0), _twice(x1 - x0), pull(g)[0]),)


def _max_pool(unit, inputs, y, g):
    (x,) = inputs
    x1, x0 = _halves(unit, x)
    y1, y0 = _halves(unit, y)
    top = jnp.maximum(y1, y0)
    dout = jnp.concatenate([top - y0, y1 - top], axis=0)
    _, pull = jax.vjp(unit.apply, x)
    routed_x, routed_ref = _halves(unit, pull(g * dout)[0])
    return (_over_delta(_twice(routed_x + routed_ref), _twice(x1 - x0), pull(g)[0]),)


def _pairs() -> list:
    rescale = interp.backward_rule(_rescale)
    return [
        (ACTIVATIONS, rescale),
        (RELU, rescale),
        (UNARY_NONLINEAR, rescale),
        (ANY_MAX_POOL, interp.backward_rule(_max_pool)),
    ]


def _multipliers(model: Callable, x: Array, x0: Array, target) -> tuple[Array, Array]:
    """``(scores of x and x0 (2B, C), multipliers at x (B, ...))`` for the target."""
    b = x.shape[0]
    stacked = jnp.concatenate([x, x0], axis=0)
    scores, pullback = jax.vjp(model, stacked)
    contract.check_scores(scores, 2 * b)
    tgt = contract.resolve_target(scores[:b], target)
    if not callable(tgt):
        tgt = jnp.concatenate([jnp.broadcast_to(jnp.asarray(tgt), (b,))] * 2)
    cot = contract.target_cotangent(scores, tgt)
    (m,) = pullback(cot)
    return scores, m[:b]


def deeplift(f: Callable, baseline: Any = None) -> contract.Attribution:
    r"""DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017, "Learning
    Important Features Through Propagating Activation Differences",
    https://arxiv.org/abs/1704.02685), on an unmodified model, as Captum's ``DeepLift``.

    .. math:: R_i = (x_i - x_{0,i})\, m_i, \qquad \sum_i R_i = S_c(x) - S_c(x_0)

    with the multipliers :math:`m` of the Rescale rule at every elementwise
    nonlinearity and Captum's rule at max-pools (see :mod:`jaxsal._src.deeplift`);
    the sum holds to float rounding when those are the only nonlinearities.

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``; examples must be independent.
      baseline: the reference :math:`x_0`: ``None`` (zeros), a scalar, one example,
        or an array shaped like ``x``.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, ...)``. ``target=None`` explains the
      top class of ``f(x)``.

    Example::

      attr = jaxsal.deeplift(lambda x: model.apply(variables, x))
      r = attr(images)      # r.sum(axis=(1, 2, 3)) == f(x)[c] - f(0)[c]
    """
    contract.check_callable(f)
    model = interp.interpret(f, _pairs())

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        contract.check_model(f, x)  # shape errors name x's batch, not the stacked [x; x0]
        x0 = contract.check_baseline(baseline, x)
        _, m = _multipliers(model, x, x0, target)
        return (x - x0) * m

    return contract.Attribution(attr, f, name="deeplift", hyper={"baseline": baseline})


def deeplift_shap(f: Callable, baselines: Any) -> contract.Attribution:
    r"""DeepLIFT-SHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
    Predictions", https://arxiv.org/abs/1705.07874): DeepLIFT averaged over a set of
    baselines, as Captum's ``DeepLiftShap``.

    .. math:: R_i = \frac1K \sum_k (x_i - b_{k,i})\, m_i(x, b_k), \qquad
              \sum_i R_i = S_c(x) - \frac1K \sum_k S_c(b_k)

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``.
      baselines: ``(K, ...)``, ``K >= 1`` reference examples, each shaped like one
        example or broadcastable to it (``(K,)``: K constant images), e.g. a
        background sample of the data. The registry's entry uses the constant images
        ``-1, 0, 1`` (black, grey and white for inputs scaled to ``[-1, 1]``).

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, ...)``; the model runs on ``2 K B``
      rows in one call.
    """
    contract.check_callable(f)
    bl = jnp.asarray(baselines)
    if bl.ndim < 1 or bl.shape[0] < 1:
        raise ValueError(
            f"baselines must be a non-empty array (K, ...) of reference examples; got shape {bl.shape}."
        )
    model = interp.interpret(f, _pairs())

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        contract.check_model(f, x)
        b, k = x.shape[0], bl.shape[0]
        consts = bl.reshape((k,) + (1,) * (x.ndim - 1)) if bl.ndim == 1 else bl  # (K,): K constant images
        try:
            base = jnp.broadcast_to(consts.astype(x.dtype), (k,) + x.shape[1:])
        except ValueError:
            raise ValueError(
                f"baselines must be shaped (K, {', '.join(map(str, x.shape[1:]))}) like K examples of x "
                f"(or (K,) constants); got {bl.shape}."
            ) from None
        xs = jnp.repeat(x, k, axis=0)  # example-major: (x_0 b_0, x_0 b_1, ..., x_1 b_0, ...)
        x0s = jnp.tile(base, (b,) + (1,) * (x.ndim - 1))
        tgt = contract.resolve_target(jax.lax.stop_gradient(f(x)), target) if not callable(target) else target
        if not callable(tgt):
            tgt = jnp.repeat(jnp.broadcast_to(jnp.asarray(tgt), (b,)), k)
        _, m = _multipliers(model, xs, x0s, tgt)
        r = (xs - x0s) * m
        return r.reshape((b, k) + x.shape[1:]).mean(axis=1)

    return contract.Attribution(attr, f, name="deeplift_shap", hyper={"baselines": baselines})


def _registered_deeplift_shap(f: Callable, baselines: Any = (-1.0, 0.0, 1.0)) -> contract.Attribution:
    """The registry's DeepLIFT-SHAP: :func:`deeplift_shap` with the constant images -1, 0 and 1 as baselines."""
    return deeplift_shap(f, baselines)


register(
    Method(
        "deeplift",
        deeplift,
        "f",
        "propagation",
        "DeepLIFT",
        "Shrikumar et al. 2017",
        signed=True,
        captum="DeepLift",
    )
)
register(
    Method(
        "deeplift_shap",
        _registered_deeplift_shap,
        "f",
        "propagation",
        "DeepLIFT-SHAP",
        "Lundberg & Lee 2017",
        signed=True,
    )
)

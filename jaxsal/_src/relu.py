"""Swap the backward rule of every ReLU in an unmodified model.

DeconvNet and Guided Backprop differ from the plain gradient only in how the
gradient passes a ReLU. PyTorch libraries do this with module hooks, which miss
functional ReLUs. jaxsal instead traces ``f`` to a jaxpr and re-evaluates it
(:mod:`jaxsal._src.interpreter`), replacing each ReLU by a ``jax.custom_vjp``
function with the requested backward rule. The forward pass is unchanged, value
for value.

What counts as a ReLU (:data:`RELU`, floating inputs of any width: float16,
bfloat16, float32, float64):

* ``jax.nn.relu`` / ``flax.linen.relu`` / ``flax.nnx.relu`` (one ``custom_jvp`` function);
* ``jnp.maximum(x, 0.)`` and ``jnp.maximum(0., x)``;
* ``jax.nn.relu6`` and ``jnp.minimum(jnp.maximum(x, 0.), c)`` / ``jnp.clip(x, 0., c)``
  for a constant ``c > 0`` (a *clipped* ReLU, forward mask ``0 < x < c``).

**Numerical clamps are not activations.** A ``max(v, 0)`` is left alone when either

1. ``v`` is a *variance*: ``v = a - b`` where ``a`` and ``b`` are both *statistics*,
   values computed only from reductions (``reduce_sum``, ``psum``, ...) and
   constants by elementwise arithmetic. This is Flax's fast variance
   ``max(0, E[x²] − E[x]²)`` in ``LayerNorm``, ``GroupNorm`` and training-mode
   ``BatchNorm``; or
2. every use of the clamped value, after reshapes, broadcasts, dtype conversions
   and adding a constant (the ``epsilon``), is a ``sqrt``, ``rsqrt`` or ``log``: the
   clamp guards that function's domain.

An activation is applied to per-element data, so neither test fires on it (a
ReLU applied to the difference of two pooled means would be taken for a clamp).

Rules, with ``g`` the incoming gradient and ``x`` the ReLU's input:

==========  ========================
vanilla     ``g * 1(x > 0)``  (``1(0 < x < c)`` when clipped)
deconvnet   ``g * 1(g > 0)``
guided      ``g * 1(x > 0) * 1(g > 0)``  (forward mask as for vanilla)
==========  ========================

A rule may also be a callable, a backward rule for one ReLU unit:
``rule(unit, (x,), y, g) -> (dx,)``, where ``unit.info.hi`` is the clip bound
(``inf`` for a plain ReLU); see :func:`jaxsal._src.interpreter.backward_rule`.

Everything else keeps its own derivative, including ``custom_jvp``/``custom_vjp``
functions with no ReLU inside. A ``custom_jvp`` or ``custom_vjp`` function that
*contains* a ReLU is re-evaluated from its primal definition (its custom
derivative is dropped, since the rule replaces it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from jaxsal._src import interpreter as interp
from jaxsal._src.max_pool import FAST_MAX_POOL, MAX_POOL

ReluRuleName = Literal["vanilla", "deconvnet", "guided"]
#: A ReLU rule: one of :data:`RULES`, or a backward rule ``(unit, (x,), y, g) -> (dx,)``.
Rule = ReluRuleName | Callable
RULES: tuple[str, ...] = ("vanilla", "deconvnet", "guided")


# ----------------------------------------------------------------------------- the rule


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _relu_unit(rule: str, hi: float, x: jax.Array) -> jax.Array:
    y = jnp.maximum(x, jnp.zeros((), x.dtype))
    if math.isfinite(hi):
        y = jnp.minimum(y, jnp.asarray(hi, x.dtype))
    return y


def _relu_unit_fwd(rule, hi, x):
    return _relu_unit(rule, hi, x), x


def _relu_unit_bwd(rule, hi, x, g):
    forward = x > 0
    if math.isfinite(hi):
        forward = forward & (x < hi)
    if rule == "vanilla":
        keep = forward
    elif rule == "deconvnet":
        keep = g > 0
    else:  # guided
        keep = forward & (g > 0)
    return (jnp.where(keep, g, jnp.zeros_like(g)),)


_relu_unit.defvjp(_relu_unit_fwd, _relu_unit_bwd)


def relu_with_rule(x: jax.Array, rule: ReluRuleName = "vanilla", hi: float = math.inf) -> jax.Array:
    """``clip(x, 0, hi)`` whose backward pass follows ``rule`` (see module docstring)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}.")
    return _relu_unit(rule, float(hi), x)


# ----------------------------------------------------------------------------- the matcher


@dataclasses.dataclass(frozen=True)
class ReluInfo:
    """A ReLU unit: ``clip(x, 0, hi)``, ``hi = inf`` for a plain ReLU."""

    hi: float = math.inf


def _statistic(view: interp.View, atom, depth: int = 12) -> bool:
    """Computed only from reductions and constants by elementwise ops."""
    if view.value(atom) is not None or not view.from_input(atom):
        return True
    got = view.producer(atom)
    if got is None or depth == 0:
        return False
    _, eqn = got
    name = eqn.primitive.name
    if name in interp.REDUCTIONS:
        return True
    return name in interp.ELEMENTWISE and all(_statistic(view, a, depth - 1) for a in eqn.invars)


def _is_variance(view: interp.View, x) -> bool:
    got = view.producer(x)
    if got is None or got[1].primitive.name != interp.SUB:
        return False
    a, b = got[1].invars
    return view.from_input(a) and view.from_input(b) and _statistic(view, a) and _statistic(view, b)


def _guards_domain(view: interp.View, var, depth: int = 8) -> bool:
    if view.is_output(var) or not view.uses(var) or depth == 0:
        return False
    for j in view.uses(var):
        eqn = view.jaxpr.eqns[j]
        name = eqn.primitive.name
        if name in interp.DOMAIN_GUARDED:
            continue
        through = name in interp.PASS_THROUGH and len(eqn.invars) == 1
        if name == interp.ADD:
            other = [a for a in eqn.invars if a is not var]
            through = len(other) == 1 and not view.from_input(other[0])
        if not (through and _guards_domain(view, eqn.outvars[0], depth - 1)):
            return False
    return True


def is_numerical_clamp(view: interp.View, x, out) -> bool:
    """Whether ``max(x, 0)`` with result ``out`` is a clamp, not an activation (see module docstring)."""
    return _is_variance(view, x) or _guards_domain(view, out)


def _find_relus(view: interp.View):
    jaxpr, value = view.jaxpr, view.value
    taken: set[int] = set()

    def floating(atom):
        return jnp.issubdtype(atom.aval.dtype, jnp.floating)

    def split(eqn):
        """(variable operand, constant) of a binary max/min with one constant operand."""
        a, b = eqn.invars
        va, vb = value(a), value(b)
        if vb is not None and va is None:
            return a, vb
        if va is not None and vb is None:
            return b, va
        return None, None

    def unit(eqns, x, hi, out):
        if is_numerical_clamp(view, x, out):
            return None
        taken.update(eqns)
        return interp.Unit("relu", tuple(eqns), (x,), out, ReluInfo(hi))

    for i, eqn in enumerate(jaxpr.eqns):
        name = eqn.primitive.name
        if i in taken or name not in (interp.MAX, interp.MIN, interp.CLAMP) or not floating(eqn.outvars[0]):
            continue
        found = None
        if name == interp.MAX:
            x, c = split(eqn)
            if x is None or c != 0.0:
                continue
            j = view.sole_use(eqn.outvars[0], interp.MIN)
            if j is not None and j not in taken:
                _, c2 = split(jaxpr.eqns[j])
                if c2 is not None and c2 > 0:
                    found = unit((i, j), x, c2, jaxpr.eqns[j].outvars[0])
            if found is None:
                found = unit((i,), x, math.inf, eqn.outvars[0])
        elif name == interp.MIN:
            x, c = split(eqn)
            if x is None or not c > 0:
                continue
            j = view.sole_use(eqn.outvars[0], interp.MAX)
            if j is None or split(jaxpr.eqns[j])[1] != 0.0:
                continue
            found = unit((i, j), x, c, jaxpr.eqns[j].outvars[0])
        else:  # clamp(lo, x, hi)
            lo, x, hi = eqn.invars
            vlo, vhi = value(lo), value(hi)
            if vlo == 0.0 and value(x) is None and vhi is not None and vhi > 0:
                found = unit((i,), x, vhi, eqn.outvars[0])
        if found is not None:
            yield found


#: Matcher of (clipped) ReLU activations, numerical clamps excluded.
RELU = interp.Matcher(
    "relu",
    _find_relus,
    "jax.nn.relu / flax relu, jnp.maximum(x, 0.), jax.nn.relu6, jnp.clip(x, 0., c)",
)


def relu_rule(rule: Rule) -> interp.RuleFn:
    """The interpreter rule for a ReLU rule name or backward callable."""
    if isinstance(rule, str):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES} or a callable; got {rule!r}.")
        return lambda unit, forward, x: _relu_unit(rule, float(unit.info.hi), x)
    if callable(rule):
        return interp.backward_rule(rule)
    raise ValueError(f"rule must be one of {RULES} or a callable; got {rule!r}.")


@functools.lru_cache(maxsize=1024)
def _count(jaxpr, in_values: tuple) -> int:
    facts = tuple((v, True) for v in in_values)
    return interp._plan(jaxpr, (), facts, [(RELU, None)], [0]).count


def count_relus(jaxpr, in_values: tuple = ()) -> int:
    """Number of (clipped) ReLUs in ``jaxpr`` and its sub-jaxprs (static count).

    ``in_values`` gives the known scalar constants bound to ``jaxpr.invars`` (None
    where unknown), so that ``jnp.clip(x, 0., 6.)``, whose bounds enter a ``jit``
    body as arguments, is recognised.
    """
    return _count(jaxpr, tuple(in_values))


def with_relu_rule(f: Callable, rule: Rule, *, warn_if_missing: bool = True) -> Callable:
    """Return ``f`` with every ReLU's backward pass replaced by ``rule``.

    The returned function has the same forward values as ``f`` for every input; only
    its derivative changes. ``rule="vanilla"`` gives the convention ``g * 1(x > 0)``
    for every ReLU spelling (note that ``jnp.maximum(x, 0.)`` on its own has
    derivative 0.5 at ``x == 0``). Non-overlapping max-pools also get their fast
    derivative (:mod:`jaxsal._src.max_pool`).

    Args:
      f: any function of arrays (a model ``x -> scores``); it is traced once per
        input shape, at trace time of the caller.
      rule: ``"vanilla"``, ``"deconvnet"`` (Zeiler & Fergus 2014), ``"guided"``
        (Springenberg et al. 2015), or a backward rule
        ``rule(unit, (x,), y, g) -> (dx,)`` for one ReLU.
      warn_if_missing: warn when ``f`` contains no ReLU, since the result would then
        silently equal the plain gradient.
    """
    r = relu_rule(rule)
    if not callable(f):
        raise TypeError(f"f must be callable; got {type(f).__name__}.")
    label = rule if isinstance(rule, str) else getattr(rule, "__name__", "custom")
    pairs = [(RELU, r), (MAX_POOL, FAST_MAX_POOL)]

    def warn_if_no_relu(units):
        if not any(u.kind == "relu" for u in units):
            warnings.warn(
                f"jaxsal: no ReLU found in the model, so the {label!r} rule changes nothing and the "
                f"result equals the plain gradient. Recognised: {RELU.describe} (numerical clamps "
                f"such as LayerNorm's max(0, variance) are not ReLUs).",
                UserWarning,
                stacklevel=4,
            )

    return interp.interpret(f, pairs, on_units=warn_if_no_relu if warn_if_missing else None)

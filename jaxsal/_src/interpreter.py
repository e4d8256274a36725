"""Re-evaluate a traced function with some of its equations overridden.

jaxsal's propagation methods (DeconvNet, Guided Backprop, and the LRP / DeepLIFT
rules to come) work on *unmodified* models: the function is traced to a jaxpr, and
the jaxpr is evaluated again, equation by equation, except where a **rule** takes
over. This follows Zennit's three orthogonal axes:

* **where** a rule applies: a :class:`Matcher` finds *units* in a jaxpr. A unit is
  one or more equations that act together (``max`` + ``min`` for a clipped ReLU;
  ``conv_general_dilated`` + its bias ``add``), with the atoms it reads and the one
  variable it defines (:class:`Unit`).
* **the rule**: a callable ``rule(unit, forward, *inputs) -> output`` that computes
  the unit's output. ``forward(*inputs)`` evaluates the unit's own equations, so a
  rule that only changes the derivative wraps it (:func:`backward_rule` builds
  such a rule from ``bwd(unit, inputs, output, g) -> input cotangents``).
* **what is computed** is up to the caller: the interpreted function has the same
  forward values as the original, and ``jax.grad``/``jax.vjp`` of it give the
  modified backward pass.

:func:`interpret` pairs matchers with rules (earlier pairs win where units
overlap); :func:`find_units` lists what a matcher finds, with each unit's index in
data-flow order over the whole program (sub-jaxprs included) and the name scope it
was traced in (Flax linen module paths appear there).

Units are found inside ``jit``, ``custom_jvp``/``custom_vjp``, ``jax.checkpoint``,
``lax.scan``, ``lax.cond`` and ``lax.while_loop`` bodies. A call that holds a unit is
evaluated inline (``jit``, custom derivatives: the custom derivative is dropped,
since the rule replaces it), re-wrapped (``checkpoint``, keeping ``prevent_cse``
and ``policy``), or re-bound with rewritten bodies (``scan``, ``cond``, ``while``).
Calls with no unit inside are bound unchanged, with all their parameters.

JAX internals
=============
This module is the only place in jaxsal that touches JAX's internal jaxpr
structure; a JAX upgrade should be this file's work. It relies on
``jax.extend.core`` (``ClosedJaxpr``, ``Jaxpr``, ``Literal``, ``DropVar``,
``Primitive.bind``, ``Primitive.multiple_results``), which JAX documents as an
unstable extension API, and on the names and parameter layouts below, which are
not public at all. Tested on JAX 0.10.2 only. JAX 0.11 needs Python >= 3.12, so it
cannot be installed next to this project's Python 3.11; the 0.11 notes below say
what the code tolerates (lookups by several names, generic fall-backs), not a
tested guarantee.

=========================  ==========================================  ===============================
internal                   used for                                    versions
=========================  ==========================================  ===============================
``jit`` / ``pjit``         inline call, body ``params["jaxpr"]``       ``jit`` since 0.7 (``pjit``
                                                                       before); both accepted
``closed_call``,           inline call, body ``call_jaxpr``            unchanged
``core_call``
``custom_jvp_call``        inline the primal ``call_jaxpr``            as in 0.10
``custom_vjp_call``,       inline the primal ``call_jaxpr``, or        one ``custom_vjp_call`` with
``custom_vjp_call_jaxpr``  ``fun_jaxpr`` (the older key)               ``call_jaxpr`` since jax#28589
``remat2`` (``remat``,     re-wrap in ``jax.checkpoint``; keys         ``remat2`` in 0.10. 0.11 adds
``checkpoint``)            ``jaxpr`` (open), ``prevent_cse``,          a ``jax_remat3`` flag: a new
                           ``policy``; missing keys get the            name with closed bodies is
                           ``jax.checkpoint`` defaults                 re-bound (next row); one with
                                                                       an open body warns and keeps
                                                                       its own derivative
``scan``, ``while``,       re-bind with every ``ClosedJaxpr`` param    any primitive; scan operands
``cond``, others           rewritten; ``cond``'s operands start at     are taken 1:1 with the body's
                           1 (``OPERAND_OFFSET``), only for constant   arguments (0.11 replaces
                           tracking                                    ``num_consts``/``num_carry``
                                                                       by a FlatTree; not read here)
``Primitive.               ``(subfuns, params)`` or ``params``         both shapes accepted
get_bind_params``
``eqn.ctx.manager``        context entered around each ``bind``        ``getattr``, optional
``eqn.source_info.         ``Unit.scope`` (Flax module path)           ``getattr``, optional
name_stack``
``UnspecifiedValue``       default ``jit`` sharding (by type name)     also ``None``
``reduce_window``,         never searched (``COMBINER_BODIES``,        names as in 0.10
``reduce``, ``scatter*``,  ``COMBINER_KEYS``): their bodies are
``select_and_scatter*``    scalar combiners, not data flow
first-order primitives     what matchers look for: ``max``, ``min``,   the ``jax.lax`` names, stable
                           ``clamp``, ``add``, ``sub``, reductions,    since 0.4; constants below
                           ``sqrt``/``rsqrt``/``log``,
                           ``reduce_window_max`` (keys
                           ``POOL_KEYS``), ``dot_general``,
                           ``conv_general_dilated``
=========================  ==========================================  ===============================

**Inlined ``jit`` parameters.** An inlined ``jit`` keeps only its body. Of its other
parameters, ``name``, ``keep_unused``, ``inline`` and ``ctx_mesh`` carry no meaning
once the body is part of the caller. ``in_shardings``, ``out_shardings``,
``in_layouts``, ``out_layouts``, ``donated_invars`` and ``compiler_options_kvs`` are
dropped too; when one of them is not its default (a sharding, a layout, a donated
argument, a compiler option) a :class:`UserWarning` says so, once per parameter
and process. Wrap the attribution in your own ``jax.jit`` with the shardings you
need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

# ----------------------------------------------------------------------------- the table

#: Call primitives whose one body is evaluated inline.
INLINE_CALLS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
)
#: Parameter keys that hold an inline call's body, in lookup order.
BODY_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
#: ``jax.checkpoint`` primitives and the parameters re-passed to ``jax.checkpoint``.
REMAT_CALLS = frozenset({"remat", "remat2", "checkpoint"})
REMAT_KEYS = ("prevent_cse", "policy")
#: Primitives whose sub-jaxprs are scalar *combiners* (a reduction's or a scatter's
#: ``add``/``max``), not part of the data flow: never searched for units.
COMBINER_BODIES = frozenset(
    {
        "reduce_window",
        "reduce",
        "scatter",
        "scatter-add",
        "scatter_add",
        "scatter-mul",
        "scatter_mul",
        "scatter-min",
        "scatter_min",
        "scatter-max",
        "scatter_max",
        "select_and_scatter",
        "select_and_scatter_add",
        "select_and_gather_add",
    }
)
#: Parameter keys that hold a combiner body, whatever the primitive.
COMBINER_KEYS = frozenset({"update_jaxpr", "computation", "select_jaxpr", "scatter_jaxpr"})
#: Primitives whose operands, from this position on, are their bodies' arguments 1:1.
OPERAND_OFFSET = {"cond": 1, "scan": 0}
#: ``jit`` parameters an inlined call drops, with their default (trivial) test.
_JIT_DROPPED = {
    "in_shardings": lambda v: all(_unspecified(s) for s in v),
    "out_shardings": lambda v: all(_unspecified(s) for s in v),
    "in_layouts": lambda v: all(s is None for s in v),
    "out_layouts": lambda v: all(s is None for s in v),
    "donated_invars": lambda v: not any(v),
    "compiler_options_kvs": lambda v: not v,
}
#: ``jit`` parameters with no meaning once the body is inlined (kept nowhere, never warned).
JIT_IGNORED = ("name", "keep_unused", "inline", "ctx_mesh")
#: One-operand primitives that only forward a value (scalar constants pass through them).
#: ``pvary``/``pcast`` mark a value as varying over ``shard_map`` axes (inside
#: ``shard_map``, ``jax.nn.relu`` is ``max(x, pvary(0.0))``).
PASS_THROUGH = frozenset(
    {
        "broadcast_in_dim",
        "convert_element_type",
        "reshape",
        "squeeze",
        "expand_dims",
        "copy",
        "copy_p",
        "pvary",
        "pcast",
    }
)

# First-order primitives the matchers read (relu.py, max_pool.py, linear.py). These are
# the ``jax.lax`` operations as they appear in jaxprs; kept here so that a renaming is
# found in one place.
#: ``max(x, 0)``, ``min(., c)``, ``clamp(lo, x, hi)``: ReLU spellings.
MAX, MIN, CLAMP = "max", "min", "clamp"
#: Reductions, and elementwise ops, from which a *statistic* (a mean, a variance) is built.
REDUCTIONS = frozenset(
    {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "psum", "pmax", "pmin", "cumsum"}
)
ELEMENTWISE = (
    frozenset("add sub mul div neg square integer_pow pow abs real imag sqrt select_n max min".split())
    | PASS_THROUGH
)
#: Functions whose domain a numerical clamp guards.
DOMAIN_GUARDED = frozenset({"sqrt", "rsqrt", "log"})
ADD, SUB = "add", "sub"
#: Max-pooling, with the parameter keys read: window, strides, padding, dilations.
REDUCE_WINDOW_MAX = "reduce_window_max"
POOL_KEYS = ("window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")
#: Linear operations and the kind of layer each is.
LINEAR_PRIMITIVES = {"conv_general_dilated": "conv", "dot_general": "dense"}

_WARNED: set[str] = set()


def _unspecified(s: Any) -> bool:
    """A ``jit`` sharding left to the compiler (``UnspecifiedValue`` in 0.10, or None)."""
    return s is None or type(s).__name__ == "UnspecifiedValue"


def _warn_dropped_jit_params(params: dict) -> None:
    for key, trivial in _JIT_DROPPED.items():
        if key not in params or key in _WARNED:
            continue
        try:
            ok = trivial(params[key])
        except TypeError:  # an unexpected layout of the value: say so rather than guess
            ok = False
        if not ok:
            _WARNED.add(key)
            warnings.warn(
                f"jaxsal: a jax.jit inside the model has a non-default {key!r}; the rule interpreter "
                f"evaluates that jit's body inline and drops it (the values are unchanged). Apply the "
                f"sharding/donation on your own jax.jit around the attribution instead.",
                UserWarning,
                stacklevel=4,
            )


def is_literal(atom: Any) -> bool:
    return isinstance(atom, jcore.Literal)


def sub_jaxprs(params: dict) -> list[tuple[str, int, Any]]:
    """``(key, position, open Jaxpr)`` for every sub-jaxpr held in an equation's params."""
    out = []
    for k, v in params.items():
        if k in COMBINER_KEYS:
            continue
        items = v if isinstance(v, (tuple, list)) else (v,)
        for pos, item in enumerate(items):
            if isinstance(item, jcore.ClosedJaxpr):
                out.append((k, pos, item.jaxpr))
            elif isinstance(item, jcore.Jaxpr):
                out.append((k, pos, item))
    return out


def bind(eqn, invals: Sequence, params: dict | None = None) -> list:
    """``eqn.primitive.bind`` as ``jax.core.eval_jaxpr`` does it, in the equation's context."""
    params = dict(eqn.params) if params is None else params
    get = getattr(eqn.primitive, "get_bind_params", None)
    subfuns: list = []
    if get is not None:
        got = get(params)
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict):
            subfuns, params = list(got[0]), got[1]
        else:
            params = got
    if len(invals) > 1 and not subfuns and not sub_jaxprs(params):
        invals = _same_varying_axes(invals)
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None) or contextlib.nullcontext()
    with ctx:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _same_varying_axes(invals: Sequence) -> list:
    """Operands of one elementwise-style primitive made to vary over the same manual axes.

    Inside ``shard_map(check_vma=True)`` JAX inserts ``pvary`` where a constant meets a
    sharded value when it traces user code. An equation replayed with other operands
    (a rule's inputs, a literal of a matched unit whose ``pvary`` was looked through)
    must get the same treatment, or the primitive refuses operands whose varying axes
    differ. Outside ``shard_map`` nothing varies and ``invals`` is returned as it is.
    """
    from jaxsal._src.contract import _varying_axes

    axes = [_varying_axes(v) for v in invals]
    want = set().union(*axes)
    if not want:
        return list(invals)
    return [
        v if a == want else jax.lax.pcast(v, tuple(sorted(want - a)), to="varying")
        for v, a in zip(invals, axes, strict=True)
    ]


def scope(eqn) -> str:
    """The name scope an equation was traced in (``"Net/conv1"`` for a linen module), or ``""``."""
    return str(getattr(getattr(eqn, "source_info", None), "name_stack", "") or "")


def scalar_value(v: Any) -> float | None:
    """The value of a constant that is the same number everywhere, else None.

    Any numeric dtype counts, including the ``ml_dtypes`` ones (bfloat16, float8),
    whose NumPy kind is ``'V'``.
    """
    try:
        a = np.asarray(v)
    except Exception:  # tracers and other non-concrete values
        return None
    if a.size == 0 or not (jnp.issubdtype(a.dtype, jnp.number) or a.dtype == np.bool_):
        return None
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        return None
    first = a.reshape(-1)[0]
    if a.size > 1 and not np.all(a == first):
        return None
    return float(first)


# ----------------------------------------------------------------------------- units, matchers, rules


@dataclasses.dataclass(frozen=True, eq=False)
class Unit:
    """A group of equations of one jaxpr that a rule replaces as a whole.

    Attributes:
      kind: the matcher's name (``"relu"``, ``"max_pool"``, ``"linear"``).
      eqns: indices of the unit's equations in their jaxpr, in order.
      inputs: the atoms (variables or literals) the unit reads, in the order the rule
        receives their values.
      output: the one variable the unit defines (its other equations' results must be
        used only inside the unit).
      info: the matcher's description of the unit (e.g. :class:`jaxsal.matchers.LinearInfo`).
      index: position among the units of this matcher in data-flow order over the
        whole program, sub-jaxprs included (``0``: closest to the input); set by
        :func:`find_units` / :func:`interpret`.
      scope: the name scope of the unit's first equation (``"Net/conv1"``).
      statics, jaxpr: set by the interpreter: the unit's operands of known constant
        value, and the jaxpr it lives in (for :meth:`apply`).
    """

    kind: str
    eqns: tuple[int, ...]
    inputs: tuple[Any, ...]
    output: Any
    info: Any = None
    index: int = -1
    scope: str = ""
    statics: tuple[tuple[Any, float], ...] = dataclasses.field(default=(), repr=False)
    jaxpr: Any = dataclasses.field(default=None, repr=False)

    @property
    def first(self) -> bool:
        return self.index == 0

    def apply(self, *inputs):
        """The unit's own equations evaluated on ``inputs`` (e.g. modified weights)."""
        return _forward(self.jaxpr, self, *inputs)


class View:
    """What a matcher sees of one jaxpr.

    ``value(atom)``: the atom's value when it is a known constant that is the same
    scalar everywhere (literals, uniform consts, and values forwarded by reshapes,
    broadcasts and dtype conversions, also across call boundaries), else None.
    ``from_input(atom)``: whether it depends on the interpreted function's
    arguments (False for weights closed over as constants).
    ``producer(var)``: ``(index, eqn)`` of the equation defining ``var`` or None.
    ``uses(var)``: indices of the equations reading ``var``.
    ``is_output(var)``: whether ``var`` is one of the jaxpr's results.
    """

    def __init__(self, jaxpr, consts: Sequence = (), in_facts: Sequence = ()):
        self.jaxpr = jaxpr
        self._value: dict = {}
        self._dep: dict = {}
        self._producer: dict = {}
        self._uses: dict = {}
        for var, val in zip(jaxpr.constvars, consts, strict=False):
            s = scalar_value(val)
            if s is not None:
                self._value[var] = s
        for var in jaxpr.constvars:
            self._dep[var] = False
        facts = list(in_facts) + [(None, True)] * (len(jaxpr.invars) - len(in_facts))
        for var, (s, dep) in zip(jaxpr.invars, facts, strict=False):
            if s is not None:
                self._value[var] = s
            self._dep[var] = dep
        for i, eqn in enumerate(jaxpr.eqns):
            for a in eqn.invars:
                if not is_literal(a):
                    self._uses.setdefault(a, []).append(i)
            for v in eqn.outvars:
                self._producer[v] = (i, eqn)
            dep = any(self.from_input(a) for a in eqn.invars)
            for v in eqn.outvars:
                self._dep[v] = dep
            if eqn.primitive.name in PASS_THROUGH and len(eqn.invars) == 1:
                s = self.value(eqn.invars[0])
                if s is not None:
                    self._value[eqn.outvars[0]] = s
        self._outvars = {a for a in jaxpr.outvars if not is_literal(a)}

    def value(self, atom) -> float | None:
        if is_literal(atom):
            return scalar_value(atom.val)
        return self._value.get(atom)

    def from_input(self, atom) -> bool:
        return False if is_literal(atom) else self._dep.get(atom, True)

    def producer(self, var):
        return None if is_literal(var) else self._producer.get(var)

    def uses(self, var) -> list[int]:
        return self._uses.get(var, [])

    def is_output(self, var) -> bool:
        return var in self._outvars

    def sole_use(self, var, name: str | None = None) -> int | None:
        """The index of the only equation reading ``var`` (of primitive ``name``), else None."""
        if self.is_output(var):
            return None
        idx = self.uses(var)
        if len(idx) == 1 and (name is None or self.jaxpr.eqns[idx[0]].primitive.name == name):
            return idx[0]
        return None

    def sub_facts(self, eqn) -> tuple:
        """``(value, from_input)`` for each argument of ``eqn``'s sub-jaxprs (1:1 operands only)."""
        name = eqn.primitive.name
        if name in INLINE_CALLS or name in REMAT_CALLS or name in OPERAND_OFFSET:
            start = OPERAND_OFFSET.get(name, 0)
            return tuple((self.value(a), self.from_input(a)) for a in eqn.invars[start:])
        return ()


@dataclasses.dataclass(frozen=True)
class Matcher:
    """Where a rule applies: ``find(view) -> units`` over one jaxpr (see :class:`View`).

    ``find`` sees one jaxpr at a time; the interpreter visits sub-jaxprs itself.
    ``describe`` names what is matched, for messages.
    """

    name: str
    find: Callable[[View], Iterable[Unit]]
    describe: str = ""

    def __call__(self, view: View) -> list[Unit]:
        return list(self.find(view))


#: ``rule(unit, forward, *inputs) -> output``; ``forward(*inputs)`` evaluates the unit as traced.
RuleFn = Callable[..., Any]


def backward_rule(bwd: Callable) -> RuleFn:
    """A rule that keeps a unit's forward values and replaces its derivative.

    ``bwd(unit, inputs, output, g)`` gets the unit, the tuple of its input values, its
    output and the cotangent ``g`` of the output, and returns one cotangent per input
    (``None`` for zeros). ``unit.apply(*inputs)`` evaluates the unit on other inputs
    (Zennit's parameter modifiers: LRP's z⁺ rule calls it with the positive weights). Higher derivatives differentiate ``bwd`` itself; forward-mode
    (``jax.jvp``) is not available through it, as for any ``jax.custom_vjp``.
    """

    def rule(unit: Unit, forward: Callable, *inputs):
        @jax.custom_vjp
        def f(*xs):
            return forward(*xs)

        def fwd(*xs):
            y = forward(*xs)
            return y, (xs, y)

        def back(res, g):
            xs, y = res
            got = tuple(bwd(unit, xs, y, g))
            if len(got) != len(xs):
                raise ValueError(
                    f"the backward rule for a {unit.kind!r} unit returned {len(got)} cotangents for "
                    f"{len(xs)} inputs."
                )
            return tuple(jnp.zeros_like(x) if c is None else c for x, c in zip(xs, got, strict=True))

        f.defvjp(fwd, back)
        return f(*inputs)

    rule.bwd = bwd  # type: ignore[attr-defined]
    return rule


# ----------------------------------------------------------------------------- plans


class _Node:
    """The units of one jaxpr (for every matcher/rule pair), and its sub-jaxprs' nodes."""

    def __init__(self, jaxpr, units: dict, skip: set, children: dict):
        self.jaxpr = jaxpr
        self.units = units  # eqn index (the unit's last) -> (unit, rule)
        self.skip = skip  # eqn indices absorbed into units
        self.children = children  # (eqn index, key, position) -> _Node
        self.count = len(units) + sum(c.count for c in children.values())
        self.calls = {k[0] for k in children}  # equations whose sub-jaxprs hold units


def _check_unit(view: View, unit: Unit) -> tuple:
    """Checks that ``unit`` is self-contained; returns its constant operands ``(atom, value)``."""
    eqns = view.jaxpr.eqns
    defined = {v for i in unit.eqns for v in eqns[i].outvars}
    inner = defined - {unit.output}
    if unit.output not in defined:
        raise ValueError(f"matcher {unit.kind!r}: the unit's output is not defined by its equations.")
    for v in inner:
        if view.is_output(v) or any(u not in unit.eqns for u in view.uses(v)):
            raise ValueError(
                f"matcher {unit.kind!r}: an intermediate result of a unit is used outside it; a unit "
                f"must define one visible variable."
            )
    known = set(unit.inputs) | inner
    statics = []
    for i in unit.eqns:
        for a in eqns[i].invars:
            if is_literal(a) or a in known:
                continue
            if view.value(a) is None:
                raise ValueError(
                    f"matcher {unit.kind!r}: equation {i} reads a variable that is neither an input of "
                    f"the unit nor a known constant."
                )
            statics.append((a, view.value(a)))
            known.add(a)
    return tuple(statics)


def _plan(jaxpr, consts, in_facts, pairs, counters) -> _Node:
    view = View(jaxpr, consts, in_facts)
    units: dict = {}
    skip: set = set()
    claimed: set = set()
    found = []
    for k, (matcher, rule) in enumerate(pairs):
        for unit in matcher(view):
            if claimed & set(unit.eqns):
                continue
            unit = dataclasses.replace(unit, statics=_check_unit(view, unit), jaxpr=jaxpr)
            claimed |= set(unit.eqns)
            found.append((unit.eqns[0], k, unit, rule))
    children: dict = {}
    found.sort(key=lambda t: t[0])
    # global data-flow order: units of this jaxpr and those of sub-jaxprs, by equation
    sub_at: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        if i in claimed or eqn.primitive.name in COMBINER_BODIES:
            continue
        subs = sub_jaxprs(eqn.params)
        if subs:
            sub_at[i] = (eqn, subs)
    order = sorted(
        [(u[0], 0, u) for u in found] + [(i, 1, s) for i, s in sub_at.items()], key=lambda t: t[:2]
    )
    for i, what, item in order:
        if what == 0:
            _, k, unit, rule = item
            unit = dataclasses.replace(unit, index=counters[k], scope=scope(jaxpr.eqns[unit.eqns[0]]))
            counters[k] += 1
            units[max(unit.eqns)] = (unit, rule)
            skip |= set(unit.eqns) - {max(unit.eqns)}
        else:
            eqn, subs = item
            facts = view.sub_facts(eqn)
            for key, pos, sub in subs:
                consts_ = ()
                v = eqn.params[key]
                closed = v[pos] if isinstance(v, (tuple, list)) else v
                if isinstance(closed, jcore.ClosedJaxpr):
                    consts_ = closed.consts
                child = _plan(sub, consts_, facts, pairs, counters)
                if child.count:
                    children[(i, key, pos)] = child
    return _Node(jaxpr, units, skip, children)


def plan(closed, pairs: Sequence[tuple[Matcher, RuleFn | None]]) -> _Node:
    """The units of ``closed`` (a ``ClosedJaxpr``) and its sub-jaxprs, for each pair."""
    return _plan(closed.jaxpr, closed.consts, (), list(pairs), [0] * len(pairs))


def _walk(node: _Node):
    yield from (u for u, _ in node.units.values())
    for child in node.children.values():
        yield from _walk(child)


def find_units(f: Callable, *args, matcher: Matcher) -> list[Unit]:
    """The units ``matcher`` finds in ``f(*args)``, in data-flow order (``unit.index``).

    ``f`` is traced with ``args`` (arrays or ``jax.ShapeDtypeStruct``); nothing runs.
    """
    closed, _, _ = trace(f, args)
    return sorted(_walk(plan(closed, [(matcher, None)])), key=lambda u: u.index)


# ----------------------------------------------------------------------------- evaluation


def _forward(jaxpr, unit: Unit, *invals):
    env = dict(zip(unit.inputs, invals, strict=True))
    for a, val in unit.statics:
        env[a] = jnp.full(a.aval.shape, val, a.aval.dtype)
    for i in unit.eqns:
        eqn = jaxpr.eqns[i]
        outs = bind(eqn, [a.val if is_literal(a) else env[a] for a in eqn.invars])
        env.update(zip(eqn.outvars, outs, strict=True))
    return env[unit.output]


def _rewrite_closed(closed, node: _Node):
    """A ClosedJaxpr with the same signature, evaluated through ``node``."""
    avals = [v.aval for v in closed.jaxpr.invars]
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False)) for a in avals]
    return jax.make_jaxpr(lambda *a: evaluate(node, closed.consts, *a))(*specs)


def _eval_higher_order(eqn, i, invals, node: _Node):
    name = eqn.primitive.name
    params = dict(eqn.params)
    if name in INLINE_CALLS:
        if name in ("jit", "pjit"):
            _warn_dropped_jit_params(params)
        key = next((k for k in BODY_KEYS if (i, k, 0) in node.children), None)
        if key is None:
            return bind(eqn, invals)
        body = params[key]
        child = node.children[(i, key, 0)]
        consts = body.consts if isinstance(body, jcore.ClosedJaxpr) else ()
        return evaluate(child, consts, *invals)
    if name in REMAT_CALLS:
        key = next((k for k in BODY_KEYS if (i, k, 0) in node.children), None)
        if key is None:
            return bind(eqn, invals)
        child = node.children[(i, key, 0)]
        consts = params[key].consts if isinstance(params[key], jcore.ClosedJaxpr) else ()
        kw = {k: params[k] for k in REMAT_KEYS if k in params}
        return list(jax.checkpoint(lambda *a: tuple(evaluate(child, consts, *a)), **kw)(*invals))
    # scan, cond, while and others: the same primitive with rewritten closed bodies.
    for k, v in params.items():
        if isinstance(v, jcore.ClosedJaxpr):
            if (i, k, 0) in node.children:
                params[k] = _rewrite_closed(v, node.children[(i, k, 0)])
        elif isinstance(v, (tuple, list)) and v and all(isinstance(b, jcore.ClosedJaxpr) for b in v):
            params[k] = type(v)(
                _rewrite_closed(b, node.children[(i, k, p)]) if (i, k, p) in node.children else b
                for p, b in enumerate(v)
            )
        elif isinstance(v, jcore.Jaxpr) and (i, k, 0) in node.children:
            warnings.warn(
                f"jaxsal: units inside a `{name}` primitive cannot be rewritten; they keep their "
                f"own derivative.",
                stacklevel=4,
            )
            return bind(eqn, invals)
    return bind(eqn, invals, params)


def evaluate(node: _Node, consts: Sequence, *args) -> list:
    """Evaluate ``node.jaxpr`` like ``jax.core.eval_jaxpr``, with its units' rules applied."""
    jaxpr = node.jaxpr
    env: dict = {}

    def read(a):
        return a.val if is_literal(a) else env[a]

    def write(v, val):
        if not isinstance(v, jcore.DropVar):
            env[v] = val

    for v, val in zip(jaxpr.constvars, consts, strict=True):
        write(v, val)
    for v, val in zip(jaxpr.invars, args, strict=True):
        write(v, val)
    for i, eqn in enumerate(jaxpr.eqns):
        if i in node.skip:
            continue
        if i in node.units:
            unit, rule = node.units[i]
            forward = unit.apply
            invals = [read(a) for a in unit.inputs]
            out = forward(*invals) if rule is None else rule(unit, forward, *invals)
            want = unit.output.aval
            if jnp.shape(out) != want.shape or jnp.result_type(out) != want.dtype:
                raise ValueError(
                    f"the rule for a {unit.kind!r} unit returned {jnp.result_type(out)}{list(jnp.shape(out))}; "
                    f"the unit computes {want.dtype}{list(want.shape)}."
                )
            write(unit.output, out)
            continue
        invals = [read(a) for a in eqn.invars]
        if i in node.calls:
            outs = _eval_higher_order(eqn, i, invals, node)
        else:
            outs = bind(eqn, invals)
        for v, val in zip(eqn.outvars, outs, strict=True):
            write(v, val)
    return [read(a) for a in jaxpr.outvars]


def trace(f: Callable, args: tuple):
    """``(closed_jaxpr, flat_args, out_treedef)`` of ``f(*args)``."""
    flat, tree = jax.tree_util.tree_flatten(args)
    closed, out_shape = jax.make_jaxpr(
        lambda *a: f(*jax.tree_util.tree_unflatten(tree, a)), return_shape=True
    )(*flat)
    return closed, flat, jax.tree_util.tree_structure(out_shape)


def interpret(
    f: Callable,
    pairs: Sequence[tuple[Matcher, RuleFn]],
    *,
    on_units: Callable[[list[Unit]], None] | None = None,
    speed: bool | None = None,
) -> Callable:
    """``f`` re-evaluated with each ``(matcher, rule)`` pair applied to the units it finds.

    Where units of two pairs overlap, the earlier pair wins. A function with no unit
    at all is simply called. ``on_units(units)``, if given, is called at every trace
    with the units found (all pairs, sub-jaxprs included), e.g. to warn when a kind
    the caller relies on is missing.

    ``speed``: whether to append the convolution speed rewrites chosen by
    ``jaxsal.config.rewrites`` (:mod:`jaxsal._src.rewrites`; read at trace time) after
    ``pairs``. ``None`` (default) appends them when one of the rules is a *speed rule*
    (has a true ``speed`` attribute, as the max-pool rule ``FAST_MAX_POOL``), which is
    how every gradient method reaches the interpreter; the propagation rules (LRP,
    DeepLIFT), which replace linear layers themselves, do not get them.

    Example::

      from jaxsal._src.relu import RELU   # the ReLU matcher

      def leaky(unit, inputs, y, g):      # a backward rule for one ReLU unit
          (x,) = inputs
          return (jnp.where(x > 0, g, 0.01 * g),)

      f2 = interpret(f, [(RELU, backward_rule(leaky))])
      jax.grad(lambda x: f2(x).sum())(x)
    """
    pairs = list(pairs)
    for m, r in pairs:
        if not isinstance(m, Matcher):
            raise TypeError(f"a matcher must be a jaxsal Matcher; got {type(m).__name__}.")
        if not callable(r):
            raise TypeError(f"a rule must be callable rule(unit, forward, *inputs); got {type(r).__name__}.")

    if speed is None:
        speed = any(getattr(r, "speed", False) for _, r in pairs)

    @functools.wraps(f)
    def wrapped(*args):
        closed, flat, out_tree = trace(f, args)
        use = pairs
        if speed:
            from jaxsal._src import rewrites  # imports this module

            use = pairs + rewrites.pairs()
        node = plan(closed, use)
        if on_units is not None:
            on_units(list(_walk(node)))
        if not node.count:
            return f(*args)
        return jax.tree_util.tree_unflatten(out_tree, evaluate(node, closed.consts, *flat))

    return wrapped

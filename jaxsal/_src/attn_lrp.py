r"""AttnLRP (Achtibat et al. 2024) on unmodified models, through the rule interpreter.

Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin & Samek (2024), "AttnLRP:
Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML 2024,
https://arxiv.org/abs/2402.05602; reference implementation LXT 2.1
(``lxt.explicit.functional``). ``jaxsal.lrp(f, composite="attn_lrp")`` traces ``f``
and gives *every* equation that an input-dependent value flows through one of the
rules below; the cotangent that flows backward is the relevance itself. A primitive
with no rule is refused with a :class:`ValueError` that names it (no silent gradient).

* **linear layers** (``dot_general`` / convolution with a weight, with its bias and a
  following scale merged in, as in :mod:`jaxsal._src.propagation`, so a ``q / sqrt(d)``
  after the query projection is part of it): ε rule,
  :math:`R_{in} = x \odot J_W^\top(R / s(xW + b))`.
* **LayerNorm / RMSNorm / L2 normalisation**, in any spelling (a product or quotient of a
  value and a *statistic* of the same input, with the scale and bias after it): the ε
  rule on the whole normalisation with the statistic held constant (LXT's
  ``layer_norm``; the identity rule on ``1/std``, Prop. 3.4):
  :math:`R_{in} = x \odot \tilde J^\top(R / s(y))`; for RMSNorm without bias this is
  :math:`R_{in} = R` (LXT's ``rms_norm_identity``).
* **softmax** (``exp(z - max z) / sum``): Prop. 3.1, the Taylor decomposition at ``z``
  with the bias absorbed, :math:`R_{in} = z \odot (R - s \odot \sum R)`; ``-inf``
  scores (masks) count as 0, as in LXT.
* **products of two input-dependent values**: ``dot_general`` (``q·kᵀ``, ``A·v``): the
  uniform rule (Prop. 3.3), the ε rule of the bilinear map halved,
  :math:`R_A = A \odot J_A^\top(R / s(2AB))` and likewise ``B``; elementwise ``mul``
  (gating): :math:`R_A = R_B = R / 2` (Prop. 3.2).
* **elementwise nonlinearities** (GELU, SiLU, tanh, exp, ReLU, ...): the identity rule
  (Eq. 9), :math:`R_{in} = R_{out}`. A maximal elementwise expression of one value
  (``x · Φ(x)``, the tanh GELU) is one unit; named ``jax.nn`` activation calls too.
* **sums of two branches** (residual ``x + f(x)``, ``a - b``) and **sum / mean pooling**
  (``reduce_sum``, ``reduce_window_sum``): the ε rule (Eq. 8).
* **affine maps with constants**: ``x * c``, ``x / c``, ``-x`` pass relevance; ``x + c``
  (positional embeddings) is the ε rule, so the constant absorbs its share; on the
  function's own input (``x - 0.5``, preprocessing) relevance passes.
* **moves** (reshapes, transposes, slices, pads, concatenation, gathers, ``select_n``,
  casts, max / max-pooling, ``stop_gradient``): their gradient, which moves relevance
  (winner takes all for maxima).
* anything else that an input-dependent value flows through (``cumsum``, ``sort``, a
  quotient of two branches, ...): :class:`ValueError` naming the primitive.

:math:`s(z) = z + \epsilon\,\mathrm{sign}_0(z)` is jaxsal's stabiliser (LXT adds
:math:`+\epsilon`; the two agree as :math:`\epsilon \to 0`). **Conservation**: every
rule above conserves relevance up to its stabiliser, except where a constant is
added (biases of linear layers and LayerNorm, additive embeddings, the softmax's
implicit bias :math:`\sum_i z_i (\ldots)`), which absorbs its share. With zero biases,
zero additive constants and ε → 0, :math:`\sum_i R_i = S_c(x)` up to the softmax
term; see ``tests/test_attn_lrp.py`` for the measured bounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from jaxsal._src import interpreter as interp
from jaxsal._src import rules as R

Array = jax.Array

# ----------------------------------------------------------------------------- vocabularies

#: Primitives whose gradient moves relevance unchanged (or routes it to a winner).
MOVES = interp.PASS_THROUGH | frozenset(
    {
        "transpose",
        "slice",
        "dynamic_slice",
        "dynamic_update_slice",
        "concatenate",
        "pad",
        "rev",
        "gather",
        "select_n",
        "reduce_max",
        "reduce_min",
        "reduce_window_max",
        "reduce_window_min",
        "argmax",
        "argmin",
        "stop_gradient",
        "reduce_precision",
        "squeeze",
        "expand_dims",
        "sharding_constraint",
        "optimization_barrier",
    }
)
#: Elementwise primitives that may belong to an expression of one value.
_ELEMENTWISE = frozenset(
    (
        "exp exp2 log log1p expm1 tanh logistic erf erfc erf_inv sin cos tan asin acos atan sinh cosh "
        "asinh acosh atanh sqrt rsqrt cbrt integer_pow square pow abs sign floor ceil round max min "
        "clamp select_n add sub mul div neg convert_element_type copy copy_p reduce_precision"
    ).split()
)
#: Affine elementwise operations (with an ``x``-independent second operand).
_AFFINE = frozenset(
    {"add", "sub", "mul", "div", "neg", "convert_element_type", "copy", "copy_p", "reduce_precision"}
)
#: What a normalisation (LayerNorm, RMSNorm, L2 normalisation) may be built from.
_NORM_VOCAB = (
    interp.ELEMENTWISE
    | interp.PASS_THROUGH
    | frozenset(
        {"rsqrt", "sqrt", "reduce_sum", "stop_gradient", "integer_pow", "square", "pow", "neg", "max"}
    )
)
#: What a softmax may be built from.
_SOFTMAX_VOCAB = interp.PASS_THROUGH | frozenset(
    {"div", "exp", "sub", "reduce_sum", "reduce_max", "max", "stop_gradient", "squeeze", "expand_dims"}
)
_POOLS = frozenset({"reduce_sum", "reduce_window_sum"})


def _floating(atom) -> bool:
    return jnp.issubdtype(atom.aval.dtype, jnp.floating)


@dataclasses.dataclass(frozen=True)
class NormInfo:
    """A normalisation unit: ``hold`` is the statistic factor (``1/std``, times the scale) held constant."""

    hold: Any


# ----------------------------------------------------------------------------- unit helpers


def _external(view: interp.View, eqns: set, first) -> tuple | None:
    """``(first, *other non-literal atoms read by eqns but defined outside)``; None if another is x-dependent."""
    jaxpr = view.jaxpr
    defined = {v for i in eqns for v in jaxpr.eqns[i].outvars}
    out, seen = [first], {first}
    for i in sorted(eqns):
        for a in jaxpr.eqns[i].invars:
            if interp.is_literal(a) or a in defined or a in seen:
                continue
            if view.from_input(a):
                return None
            seen.add(a)
            out.append(a)
    return tuple(out)


def _self_contained(view: interp.View, eqns: set, output) -> bool:
    """Whether every result of ``eqns`` but ``output`` is used only inside ``eqns``."""
    for i in eqns:
        for v in view.jaxpr.eqns[i].outvars:
            if v is output or isinstance(v, jcore.DropVar):
                continue
            if view.is_output(v) or any(u not in eqns for u in view.uses(v)):
                return False
    return True


def _closure(view: interp.View, out, stop, vocab, claimed, limit: int = 24) -> set | None:
    """The equations between ``stop`` and ``out`` (all in ``vocab``, none claimed), or None."""
    eqns: set = set()
    stack, seen = [out], set()
    while stack:
        a = stack.pop()
        if a is stop or interp.is_literal(a) or a in seen or not view.from_input(a):
            continue
        seen.add(a)
        p = view.producer(a)
        if p is None:
            return None  # reaches another input of the jaxpr
        i, e = p
        if i in claimed or e.primitive.name not in vocab:
            return None
        eqns.add(i)
        if len(eqns) > limit:
            return None
        stack.extend(e.invars)
    return eqns


def _through(view: interp.View, atom, names) -> Any:
    """Walk back from ``atom`` through one-operand primitives in ``names``."""
    while True:
        p = view.producer(atom)
        if p is None or p[1].primitive.name not in names or len(p[1].invars) != 1:
            return atom
        atom = p[1].invars[0]


# ----------------------------------------------------------------------------- softmax


def _find_softmax(view: interp.View, claimed: set):
    jaxpr = view.jaxpr
    for j, eqn in enumerate(jaxpr.eqns):
        if j in claimed or eqn.primitive.name != "div" or len(eqn.invars) != 2:
            continue
        e, d = eqn.invars
        out = eqn.outvars[0]
        if interp.is_literal(e) or interp.is_literal(d) or not _floating(out):
            continue
        pe = view.producer(e)
        if pe is None or pe[1].primitive.name != "exp" or e.aval.shape != out.aval.shape:
            continue
        s = _through(view, d, interp.PASS_THROUGH | {"expand_dims"})
        ps = view.producer(s)
        if ps is None or ps[1].primitive.name != "reduce_sum" or ps[1].invars[0] is not e:
            continue
        axes = tuple(ps[1].params["axes"])
        u = pe[1].invars[0]
        candidates = [u]
        pu = view.producer(u)
        if pu is not None and pu[1].primitive.name == "sub" and view.from_input(pu[1].invars[0]):
            candidates.insert(0, pu[1].invars[0])  # exp(z - max z): the input is z
        for z in candidates:
            if z.aval.shape != out.aval.shape:
                continue
            eqns = _closure(view, out, z, _SOFTMAX_VOCAB, claimed)
            if not eqns or not _self_contained(view, eqns, out):
                continue
            inputs = _external(view, eqns, z)
            if inputs is None:
                continue
            yield interp.Unit("softmax", tuple(sorted(eqns)), inputs, out, axes)
            break


# ----------------------------------------------------------------------------- normalisation


def _dominators(view: interp.View, atoms, claimed: set, inside: set, limit: int = 48) -> list:
    """``(x, eqns)`` for each value every input-dependent path into ``atoms`` passes, nearest first.

    The walk goes on past a dominator only while that value is used nowhere else (the
    centring ``x - mean(x)`` of a LayerNorm spelled that way), so the farthest one is
    the normalisation's input.
    """
    front = {a for a in atoms if not interp.is_literal(a) and view.from_input(a)}
    eqns: set = set()
    found: list = []
    while front:
        if len(front) == 1:
            (v,) = front
            found.append((v, set(eqns)))
            if view.is_output(v) or any(u not in eqns | inside for u in view.uses(v)):
                break
        best = max(front, key=lambda v: (view.producer(v) or (-1, None))[0])
        p = view.producer(best)
        if p is None:
            break
        i, e = p
        if i in claimed or e.primitive.name not in _NORM_VOCAB:
            break
        eqns.add(i)
        if len(eqns) > limit:
            break
        front.discard(best)
        front |= {a for a in e.invars if not interp.is_literal(a) and view.from_input(a)}
    return found


def _direct(view: interp.View, v, x, eqns: set, memo: dict) -> bool:
    """Whether some path from ``x`` to ``v`` inside ``eqns`` avoids every reduction."""
    if v is x:
        return True
    if v in memo:
        return memo[v]
    memo[v] = False
    p = view.producer(v)
    ok = False
    if p is not None and p[0] in eqns and p[1].primitive.name != "reduce_sum":
        ok = any(
            _direct(view, a, x, eqns, memo)
            for a in p[1].invars
            if not interp.is_literal(a) and view.from_input(a)
        )
    memo[v] = ok
    return ok


def _find_norms(view: interp.View, claimed: set):
    jaxpr = view.jaxpr
    for m, eqn in enumerate(jaxpr.eqns):
        name = eqn.primitive.name
        if m in claimed or name not in ("mul", "div") or len(eqn.invars) != 2:
            continue
        a0, a1 = eqn.invars
        out = eqn.outvars[0]
        if any(interp.is_literal(a) or not view.from_input(a) for a in (a0, a1)) or not _floating(out):
            continue
        for a, f in [(a0, a1), (a1, a0)] if name == "mul" else [(a0, a1)]:
            if a.aval.shape != out.aval.shape:
                continue
            for x, eqns in reversed(_dominators(view, (a, f), claimed, {m})):
                if x.aval.shape != out.aval.shape:
                    continue
                if not any(jaxpr.eqns[i].primitive.name == "reduce_sum" for i in eqns):
                    continue
                if not _direct(view, f, x, eqns, {}) and _direct(view, a, x, eqns, {}):
                    break  # f is a statistic of x, a an elementwise expression of it
            else:
                continue
            eqns = eqns | {m}
            y = out
            while True:  # the scale and bias after the normalisation
                j = view.sole_use(y)
                if j is None or j in claimed:
                    break
                e = jaxpr.eqns[j]
                if e.primitive.name not in ("add", "sub", "mul", "div") or len(e.invars) != 2:
                    break
                other = e.invars[1] if e.invars[0] is y else e.invars[0]
                if view.from_input(other) or e.outvars[0].aval.shape != y.aval.shape:
                    break
                if e.primitive.name == "div" and e.invars[0] is not y:
                    break
                eqns.add(j)
                y = e.outvars[0]
            if not _self_contained(view, eqns, y):
                continue
            inputs = _external(view, eqns, x)
            if inputs is None:
                continue
            yield interp.Unit("norm", tuple(sorted(eqns)), inputs, y, NormInfo(f))
            break


# ----------------------------------------------------------------------------- everything else


def _kind_of(view: interp.View, eqn) -> str | None:
    """The rule kind of one equation outside the multi-equation units (None: its gradient)."""
    name = eqn.primitive.name
    deps = [a for a in eqn.invars if not interp.is_literal(a) and view.from_input(a) and _floating(a)]
    if name in ("dot_general", "conv_general_dilated") and len(deps) == 2:
        return "bilinear"
    if name == "mul" and len(deps) == 2:
        return "product"
    if name in ("add", "sub") and len(deps) == 2:
        return "sum"
    if name in _POOLS:
        return "pool"
    if name in ("max", "min") and len(deps) == 2:
        return None  # the larger of two branches: its gradient routes relevance to the winner
    if name in MOVES:
        return None
    if name in _ELEMENTWISE and len(deps) == 1 and deps[0].aval.shape == eqn.outvars[0].aval.shape:
        if name in ("add", "sub"):
            return "affine"
        if name in _AFFINE and not (name == "div" and eqn.invars[0] is not deps[0]):
            return "scale"
        return "elementwise"
    return "unsupported"


def _expression_kind(view: interp.View, eqns: list) -> str | None:
    kinds = {_kind_of(view, view.jaxpr.eqns[i]) for i in eqns}
    deps = [
        sum(1 for a in view.jaxpr.eqns[i].invars if not interp.is_literal(a) and view.from_input(a))
        for i in eqns
    ]
    if "elementwise" in kinds or any(d > 1 for d in deps) or kinds - {"affine", "scale"}:
        return "elementwise"
    if "affine" in kinds:
        return "affine"
    names = {view.jaxpr.eqns[i].primitive.name for i in eqns}
    if names <= {"convert_element_type", "copy", "copy_p", "reduce_precision"}:
        return None  # only casts: the gradient is exact
    return "scale"


def _named_activation(view: interp.View, i: int, eqn) -> interp.Unit | None:
    from jaxsal._src.propagation import ACTIVATION_CALLS

    if eqn.primitive.name not in interp.INLINE_CALLS or eqn.params.get("name") not in ACTIVATION_CALLS:
        return None
    if len(eqn.invars) != 1 or len(eqn.outvars) != 1:
        return None
    (a,), (out,) = eqn.invars, eqn.outvars
    if interp.is_literal(a) or not view.from_input(a) or a.aval.shape != out.aval.shape or not _floating(out):
        return None
    return interp.Unit("elementwise", (i,), (a,), out, eqn.params["name"])


def _single(view: interp.View, i: int, kind: str) -> interp.Unit | None:
    eqn = view.jaxpr.eqns[i]
    out = eqn.outvars[0]
    deps = [a for a in eqn.invars if not interp.is_literal(a) and view.from_input(a)]
    if kind in ("bilinear", "product", "sum"):
        inputs = tuple(a for a in eqn.invars if not interp.is_literal(a))
        if len(set(map(id, inputs))) != len(inputs):  # x * x: one value
            return interp.Unit("elementwise", (i,), (inputs[0],), out)
        return interp.Unit(kind, (i,), inputs, out)
    inputs = _external(view, {i}, deps[0])
    return interp.Unit(kind, (i,), inputs, out)


def _find_all(view: interp.View):
    from jaxsal._src.propagation import _find_layers

    jaxpr = view.jaxpr
    claimed: set = set()
    units: list = []

    def take(unit):
        units.append(unit)
        claimed.update(unit.eqns)

    for unit in _find_layers(view):
        if not claimed & set(unit.eqns):
            take(unit)
    for finder in (_find_softmax, _find_norms):
        for unit in finder(view, claimed):
            if not claimed & set(unit.eqns):
                take(unit)

    root: dict = {}
    groups: dict = {}
    singles: list = []
    unsupported: list = []
    for i, eqn in enumerate(jaxpr.eqns):
        if i in claimed:
            continue
        if not any(not interp.is_literal(a) and view.from_input(a) for a in eqn.invars):
            continue
        named = _named_activation(view, i, eqn)
        if named is not None:
            take(named)
            continue
        if interp.sub_jaxprs(eqn.params) and eqn.primitive.name not in interp.COMBINER_BODIES:
            continue  # a call, scan, cond, loop: the interpreter visits its body
        if len(eqn.outvars) != 1 or not _floating(eqn.outvars[0]):
            continue  # comparisons, indices: no relevance flows
        kind = _kind_of(view, eqn)
        out = eqn.outvars[0]
        if eqn.primitive.name in _ELEMENTWISE and eqn.primitive.name != "select_n":
            deps = [a for a in eqn.invars if not interp.is_literal(a) and view.from_input(a)]
            roots = {id(root.get(a, a)): root.get(a, a) for a in deps}
            if len(roots) == 1 and all(a.aval.shape == out.aval.shape for a in deps):
                (r,) = roots.values()
                root[out] = r
                groups.setdefault(id(r), (r, []))[1].append(i)
                continue
        if kind == "unsupported":
            unsupported.append(eqn)
        elif kind is not None:
            singles.append((i, kind))

    if unsupported:
        names = sorted({e.primitive.name for e in unsupported})
        where = sorted({interp.scope(e) for e in unsupported} - {""})
        raise ValueError(
            f"AttnLRP has no rule for the primitive(s) {', '.join(repr(n) for n in names)}"
            + (f" (in {', '.join(where)})" if where else "")
            + "; their relevance would silently become a gradient. AttnLRP covers linear layers, "
            "LayerNorm/RMSNorm, softmax, products of two values, sums, pooling, elementwise functions "
            "and moves (see jaxsal._src.attn_lrp). Rewrite that part of the model, or use "
            "jaxsal.lrp(f, 'epsilon') or a gradient method, which keep the primitive's derivative."
        )
    for i, kind in singles:
        take(_single(view, i, kind))
    for r, eqns in groups.values():
        kind = _expression_kind(view, eqns)
        if kind is None:
            continue
        if kind == "affine" and view.producer(r) is None and r in jaxpr.invars:
            kind = "scale"  # x - mean, x / std on the input itself: preprocessing, relevance passes
        eqset = set(eqns)
        outs = [
            v
            for i in eqns
            for v in jaxpr.eqns[i].outvars
            if view.is_output(v) or any(u not in eqset for u in view.uses(v))
        ]
        if len(outs) == 1:
            inputs = _external(view, eqset, r)
            if inputs is not None:
                take(interp.Unit(kind, tuple(sorted(eqns)), inputs, outs[0]))
                continue
        for i in eqns:  # an expression with several results: one unit per equation
            k = _kind_of(view, jaxpr.eqns[i])
            if k is not None:
                take(_single(view, i, k))
    return units


#: Every AttnLRP unit of a jaxpr (one matcher; ``unit.kind`` says which rule applies).
ATTN_LRP = interp.Matcher(
    "attn_lrp", _find_all, "AttnLRP: every equation an input-dependent value flows through"
)


# ----------------------------------------------------------------------------- rules


def _sum_to(r: Array, shape: tuple) -> Array:
    if r.shape == tuple(shape):
        return r
    lead = r.ndim - len(shape)
    r = r.sum(axis=tuple(range(lead))) if lead else r
    axes = tuple(d for d, s in enumerate(shape) if s == 1 and r.shape[d] != 1)
    return r.sum(axis=axes, keepdims=True) if axes else r


def _none_after(first: Array, n: int) -> tuple:
    return (first, *([None] * (n - 1)))


def _identity(unit, xs, y, g):
    return _none_after(g.astype(xs[0].dtype), len(xs))


def _softmax_rule(unit, xs, y, g):
    z = xs[0]
    zero = jnp.zeros((), z.dtype)
    z = jnp.where(jnp.isneginf(z), zero, z)
    r = z * (g - y * jnp.sum(g, axis=unit.info, keepdims=True))
    return _none_after(r.astype(xs[0].dtype), len(xs))


def _product_rule(unit, xs, y, g):
    half = g / jnp.asarray(2, g.dtype)
    return tuple(_sum_to(half, jnp.shape(x)).astype(x.dtype) for x in xs)


def _held_forward(unit: interp.Unit, inputs: tuple, hold) -> Array:
    """The unit's equations on ``inputs``, with the value ``hold`` passed through ``stop_gradient``."""
    env = dict(zip(unit.inputs, inputs, strict=True))
    for a, val in unit.statics:
        env[a] = jnp.full(a.aval.shape, val, a.aval.dtype)
    for i in unit.eqns:
        eqn = unit.jaxpr.eqns[i]
        outs = interp.bind(eqn, [a.val if interp.is_literal(a) else env[a] for a in eqn.invars])
        if eqn.outvars[0] is hold:
            outs = [lax.stop_gradient(o) for o in outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return env[unit.output]


def _rules(epsilon: float, stabilizer: float) -> dict[str, Callable]:
    from jaxsal._src.propagation import _layer_rule

    norm = R.Norm(stabilizer)

    def epsilon_first(forward):
        def bwd(unit, xs, y, g):
            _, back = jax.vjp(lambda x: forward(unit, (x, *xs[1:])), xs[0])
            (c,) = back(g / R.stabilize(y, stabilizer))
            return _none_after((xs[0] * c).astype(xs[0].dtype), len(xs))

        return bwd

    def parameter_free(unit, xs, y, g):
        return tuple(
            r.astype(x.dtype) for r, x in zip(norm.parameter_free(unit.apply, tuple(xs), g), xs, strict=True)
        )

    def bilinear(unit, xs, y, g):
        a, b = xs
        s = g / R.stabilize(jnp.asarray(2, y.dtype) * y, stabilizer)
        _, back = jax.vjp(unit.apply, a, b)
        ga, gb = back(s)
        return ((a * ga).astype(a.dtype), (b * gb).astype(b.dtype))

    table = {
        "elementwise": _identity,
        "scale": _identity,
        "softmax": _softmax_rule,
        "product": _product_rule,
        "affine": epsilon_first(lambda u, xs: u.apply(*xs)),
        "norm": epsilon_first(lambda u, xs: _held_forward(u, xs, u.info.hold)),
        "sum": parameter_free,
        "pool": parameter_free,
        "bilinear": bilinear,
    }
    rules = {k: interp.backward_rule(v) for k, v in table.items()}
    rules["linear"] = _layer_rule(R.Epsilon(epsilon))
    return rules


def interpret_attn_lrp(f: Callable, *, epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Callable:
    """``f`` re-evaluated with the AttnLRP rules: the vjp of its result is the relevance.

    Args:
      f: model ``x -> scores``, weights closed over.
      epsilon: the ε of the ε rule on linear layers. ``> 0``.
      stabilizer: the ε of every other rule's denominator (norms, sums, pooling,
        products, added constants). ``> 0``.

    Returns:
      ``f`` with the same values; ``jax.vjp`` of it with the output relevance as
      cotangent gives the input relevance. Tracing it raises :class:`ValueError` naming
      any primitive AttnLRP has no rule for.
    """
    from jaxsal._src.propagation import _warn_if_no_linear

    R._check_number(epsilon, "epsilon", positive=True)
    R._check_number(stabilizer, "stabilizer", positive=True)
    rules = _rules(float(epsilon), float(stabilizer))

    def rule(unit, forward, *inputs):
        return rules[unit.kind](unit, forward, *inputs)

    return interp.interpret(f, [(ATTN_LRP, rule)], on_units=_warn_if_no_linear)


def find_attn_lrp_units(f: Callable, *args) -> list[interp.Unit]:
    """The AttnLRP units of ``f(*args)`` in data-flow order (what gets which rule; nothing runs)."""
    return interp.find_units(f, *args, matcher=ATTN_LRP)

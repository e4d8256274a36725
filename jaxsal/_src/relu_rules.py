"""Swap the backward rule of every ReLU in an unmodified model.

DeconvNet and Guided Backprop differ from the plain gradient only in how the
gradient passes a ReLU (seed 7.2.1-7.2.2). PyTorch libraries do this with module
hooks, which miss functional ReLUs. jaxsal instead traces ``f`` to a jaxpr and
re-evaluates it, replacing each ReLU by a ``jax.custom_vjp`` function with the
requested backward rule. The forward pass is unchanged, value for value.

What counts as a ReLU (floating inputs only):

* ``jax.nn.relu`` / ``flax.linen.relu`` / ``flax.nnx.relu`` (one ``custom_jvp`` function);
* ``jnp.maximum(x, 0.)`` and ``jnp.maximum(0., x)``;
* ``jax.nn.relu6`` and ``jnp.minimum(jnp.maximum(x, 0.), c)`` / ``jnp.clip(x, 0., c)``
  for a constant ``c > 0`` (a *clipped* ReLU, forward mask ``0 < x < c``).

Rules, with ``g`` the incoming gradient and ``x`` the ReLU's input:

==========  ========================
vanilla     ``g * 1(x > 0)``  (``1(0 < x < c)`` when clipped)
deconvnet   ``g * 1(g > 0)``
guided      ``g * 1(x > 0) * 1(g > 0)``  (forward mask as for vanilla)
==========  ========================

Everything else keeps its own derivative, including ``custom_jvp``/``custom_vjp``
functions with no ReLU inside. ReLUs are found inside ``jit``, ``lax.scan``,
``lax.cond``, ``lax.while_loop`` and ``jax.checkpoint`` bodies too. A ``custom_jvp``
or ``custom_vjp`` function that *contains* a ReLU is re-evaluated from its primal
definition (its custom derivative is dropped, since the rule replaces it).

The same re-evaluation also replaces the derivative of *non-overlapping max-pooling*
(``lax.reduce_window`` max with window == stride, no padding or dilation: ``nn.max_pool(x,
(2, 2), (2, 2))``) by an equivalent one built from elementwise ops. XLA differentiates
max-pooling through ``select_and_scatter``, which on CPU cost about as much as all of a
small CNN's convolutions' backward passes together (measured: 9 of 19 ms).
The replacement routes each window's gradient to its *first* maximum in row-major
window order, exactly as ``select_and_scatter`` does, so the gradients are unchanged;
:func:`with_fast_max_pool` applies only this part (used by every gradient method).

The interpreter uses only the public ``jax.extend.core`` types and the
primitives' own ``bind``; it is written to tolerate the jaxpr differences between
JAX releases (``pjit`` vs ``jit``, ``get_bind_params`` returning params or
``(subfuns, params)``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

Rule = Literal["vanilla", "deconvnet", "guided"]
RULES: tuple[str, ...] = ("vanilla", "deconvnet", "guided")

# Primitives whose single sub-jaxpr is evaluated inline.
_INLINE = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
}
_REMAT = {"remat", "remat2", "checkpoint"}
# Primitives that only forward a value (used to track scalar constants).
_PASS_THROUGH = {
    "broadcast_in_dim",
    "convert_element_type",
    "reshape",
    "squeeze",
    "expand_dims",
    "copy",
    "copy_p",
}


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


def relu_with_rule(x: jax.Array, rule: Rule = "vanilla", hi: float = math.inf) -> jax.Array:
    """``clip(x, 0, hi)`` whose backward pass follows ``rule`` (see module docstring)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}.")
    return _relu_unit(rule, float(hi), x)


# ----------------------------------------------------------------------------- max-pooling


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Non-overlapping max-pooling (window == stride, VALID), as ``lax.reduce_window``."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")


@_max_pool.defjvp
def _max_pool_jvp(window, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _max_pool(x, window)
    out_shape = y.shape
    # crop to whole windows, then split each dim d into (n_d, w_d): no data movement
    crop = tuple(slice(0, n * w) for n, w in zip(out_shape, window, strict=True))
    split = tuple(v for n, w in zip(out_shape, window, strict=True) for v in (n, w))
    xw = x[crop].reshape(split)
    yb = y.reshape(tuple(v for n in out_shape for v in (n, 1)))
    # position of each element in its window, row-major over the window dims
    pos = jnp.zeros((1,) * len(split), jnp.int32)
    stride = 1
    for d in reversed(range(len(window))):
        shape = [1] * len(split)
        shape[2 * d + 1] = window[d]
        pos = pos + stride * jnp.arange(window[d], dtype=jnp.int32).reshape(shape)
        stride *= window[d]
    win_axes = tuple(range(1, len(split), 2))
    first = jnp.min(jnp.where(xw == yb, pos, stride), axis=win_axes, keepdims=True)
    mask = pos == first  # the first maximum of each window
    tw = t[crop].reshape(split)
    return y, jnp.sum(jnp.where(mask, tw, jnp.zeros_like(tw)), axis=win_axes)


def _pool_window(eqn) -> tuple[int, ...] | None:
    """The window of a non-overlapping VALID max-pool equation, else None."""
    if eqn.primitive.name != "reduce_window_max":
        return None
    p = eqn.params
    window, strides = tuple(p.get("window_dimensions", ())), tuple(p.get("window_strides", ()))
    ones = (1,) * len(window)
    if (
        not window
        or window != strides
        or any(tuple(pad) != (0, 0) for pad in p.get("padding", ()))
        or tuple(p.get("base_dilation", ones)) != ones
        or tuple(p.get("window_dilation", ones)) != ones
        or window == ones
        or not jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)
    ):
        return None
    return window


# ----------------------------------------------------------------------------- jaxpr analysis


def _sub_jaxprs(params: dict) -> list:
    """Sub-jaxprs (open ``Jaxpr`` objects) held in an equation's params."""
    out = []
    for v in params.values():
        items = v if isinstance(v, (tuple, list)) else (v,)
        for item in items:
            if isinstance(item, jcore.ClosedJaxpr):
                out.append(item.jaxpr)
            elif isinstance(item, jcore.Jaxpr):
                out.append(item)
    return out


def _scalar_value(v: Any) -> float | None:
    """The value of a constant that is the same scalar everywhere, else None."""
    try:
        a = np.asarray(v)
    except Exception:  # tracers and other non-concrete values
        return None
    if a.size == 0 or a.dtype.kind not in "fiub":
        return None
    first = a.reshape(-1)[0]
    if a.size > 1 and not np.all(a == first):
        return None
    return float(first)


class _Plan:
    """Which equations of one jaxpr form (clipped) ReLUs.

    ``units[i] = (x_atom, hi, out_var)``: equation ``i`` starts a unit whose result is
    written to ``out_var``; ``skip`` holds indices of equations absorbed into a unit.
    """

    def __init__(self, jaxpr, consts=(), in_values=()):
        self.units: dict[int, tuple[Any, float, Any]] = {}
        self.skip: set[int] = set()
        self.pools: dict[int, tuple[int, ...]] = {}  # eqn index -> window of a fast max-pool
        const = {}  # var -> scalar value, for vars known to be uniform constants
        for var, val in zip(jaxpr.constvars, consts, strict=False):
            s = _scalar_value(val)
            if s is not None:
                const[var] = s
        for var, s in zip(jaxpr.invars, in_values, strict=False):
            if s is not None:
                const[var] = s

        def value(atom):
            if isinstance(atom, jcore.Literal):
                return _scalar_value(atom.val)
            return const.get(atom)

        self.value = value

        uses: dict[Any, list[int]] = {}
        for i, eqn in enumerate(jaxpr.eqns):
            for a in eqn.invars:
                if not isinstance(a, jcore.Literal):
                    uses.setdefault(a, []).append(i)
        outvars = {a for a in jaxpr.outvars if not isinstance(a, jcore.Literal)}

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

        def sole_consumer(var, name):
            if var in outvars:
                return None
            idx = uses.get(var, [])
            if len(idx) == 1 and jaxpr.eqns[idx[0]].primitive.name == name:
                return idx[0]
            return None

        for i, eqn in enumerate(jaxpr.eqns):
            name = eqn.primitive.name
            if i in self.skip:
                continue
            window = _pool_window(eqn)
            if window is not None:
                self.pools[i] = window
                continue
            if name in _PASS_THROUGH and len(eqn.invars) == 1:
                s = value(eqn.invars[0])
                if s is not None:
                    const[eqn.outvars[0]] = s
                continue
            if name == "max" and floating(eqn.outvars[0]):
                x, c = split(eqn)
                if x is None or c != 0.0:
                    continue
                hi, out = math.inf, eqn.outvars[0]
                j = sole_consumer(out, "min")
                if j is not None:
                    _, c2 = split(jaxpr.eqns[j])
                    if c2 is not None and c2 > 0:
                        hi, out = c2, jaxpr.eqns[j].outvars[0]
                        self.skip.add(j)
                self.units[i] = (x, hi, out)
            elif name == "min" and floating(eqn.outvars[0]):
                x, c = split(eqn)
                if x is None or not c > 0:
                    continue
                j = sole_consumer(eqn.outvars[0], "max")
                if j is None:
                    continue
                _, c2 = split(jaxpr.eqns[j])
                if c2 == 0.0:
                    self.units[i] = (x, c, jaxpr.eqns[j].outvars[0])
                    self.skip.add(j)
            elif name == "clamp" and floating(eqn.outvars[0]):
                lo, x, hi = eqn.invars
                vlo, vhi = value(lo), value(hi)
                if vlo == 0.0 and value(x) is None and vhi is not None and vhi > 0:
                    self.units[i] = (x, vhi, eqn.outvars[0])

    def __bool__(self):
        return bool(self.units)


def _sub_in_values(eqn, plan) -> tuple:
    """Known scalar constants flowing into an equation's sub-jaxprs (1:1 operands only)."""
    name = eqn.primitive.name
    if name in _INLINE or name in _REMAT:
        return tuple(plan.value(a) for a in eqn.invars)
    if name == "cond":
        return tuple(plan.value(a) for a in eqn.invars[1:])
    return ()


@functools.lru_cache(maxsize=1024)
def count_relus(jaxpr, in_values: tuple = ()) -> int:
    """Number of (clipped) ReLUs in ``jaxpr`` and its sub-jaxprs (static count).

    ``in_values`` gives the known scalar constants bound to ``jaxpr.invars`` (None
    where unknown), so that ``jnp.clip(x, 0., 6.)``, whose bounds enter a ``jit``
    body as arguments, is recognised.
    """
    plan = _Plan(jaxpr, (), in_values)
    n = len(plan.units)
    for eqn in jaxpr.eqns:
        inner = _sub_in_values(eqn, plan)
        for sub in _sub_jaxprs(eqn.params):
            n += count_relus(sub, inner)
    return n


@functools.lru_cache(maxsize=1024)
def count_max_pools(jaxpr) -> int:
    """Number of non-overlapping max-pools in ``jaxpr`` and its sub-jaxprs."""
    n = sum(_pool_window(eqn) is not None for eqn in jaxpr.eqns)
    for eqn in jaxpr.eqns:
        for sub in _sub_jaxprs(eqn.params):
            n += count_max_pools(sub)
    return n


# ----------------------------------------------------------------------------- evaluation


def _bind(eqn, invals, params):
    get = getattr(eqn.primitive, "get_bind_params", None)
    subfuns: list = []
    if get is not None:
        got = get(params)
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict):
            subfuns, params = list(got[0]), got[1]
        else:
            params = got
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None) or contextlib.nullcontext()
    with ctx:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _rewrites(sub, inner, rule) -> bool:
    return bool((rule is not None and count_relus(sub, inner)) or count_max_pools(sub))


def _rewrite_closed(closed, rule):
    """A ClosedJaxpr with the same signature whose ReLUs follow ``rule``."""
    avals = [v.aval for v in closed.jaxpr.invars]
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False)) for a in avals]
    fn = functools.partial(eval_with_rule, closed.jaxpr, closed.consts, rule=rule)
    return jax.make_jaxpr(lambda *args: fn(*args))(*specs)


def _eval_higher_order(eqn, invals, rule, in_values):
    name = eqn.primitive.name
    params = dict(eqn.params)
    if name in _INLINE:
        body = params.get("call_jaxpr", params.get("jaxpr", params.get("fun_jaxpr")))
        if isinstance(body, jcore.ClosedJaxpr):
            return eval_with_rule(body.jaxpr, body.consts, *invals, rule=rule, in_values=in_values)
        return eval_with_rule(body, (), *invals, rule=rule, in_values=in_values)
    if name in _REMAT:
        body = params["jaxpr"]
        fn = functools.partial(eval_with_rule, body, (), rule=rule, in_values=in_values)
        return list(
            jax.checkpoint(
                lambda *a: tuple(fn(*a)),
                prevent_cse=params.get("prevent_cse", True),
                policy=params.get("policy"),
            )(*invals)
        )
    # scan, cond, while and others: same primitive, rewritten sub-jaxprs.
    for k, v in params.items():
        if isinstance(v, jcore.ClosedJaxpr):
            params[k] = _rewrite_closed(v, rule)
        elif isinstance(v, (tuple, list)) and v and all(isinstance(b, jcore.ClosedJaxpr) for b in v):
            params[k] = type(v)(_rewrite_closed(b, rule) for b in v)
        elif isinstance(v, jcore.Jaxpr):
            warnings.warn(
                f"jaxsal: ReLUs inside a `{name}` primitive cannot be rewritten; they keep their "
                f"plain gradient.",
                stacklevel=3,
            )
            return _bind(eqn, invals, eqn.params)
    return _bind(eqn, invals, params)


def eval_with_rule(jaxpr, consts, *args, rule: Rule | None, in_values: tuple = ()) -> list:
    """Evaluate ``jaxpr`` like ``jax.core.eval_jaxpr``, with ReLU backward rules swapped
    (``rule=None``: ReLUs keep their own derivative) and max-pools made fast."""
    env: dict = {}

    def read(a):
        return a.val if isinstance(a, jcore.Literal) else env[a]

    def write(v, val):
        if not isinstance(v, jcore.DropVar):
            env[v] = val

    for v, val in zip(jaxpr.constvars, consts, strict=True):
        write(v, val)
    for v, val in zip(jaxpr.invars, args, strict=True):
        write(v, val)
    plan = _Plan(jaxpr, consts, in_values)
    for i, eqn in enumerate(jaxpr.eqns):
        if rule is not None and i in plan.skip:
            continue
        if rule is not None and i in plan.units:
            x, hi, out = plan.units[i]
            write(out, relu_with_rule(read(x), rule, hi))
            continue
        if i in plan.pools:
            write(eqn.outvars[0], _max_pool(read(eqn.invars[0]), plan.pools[i]))
            continue
        invals = [read(a) for a in eqn.invars]
        inner = _sub_in_values(eqn, plan)
        if any(_rewrites(sub, inner, rule) for sub in _sub_jaxprs(eqn.params)):
            outs = _eval_higher_order(eqn, invals, rule, inner)
        else:
            outs = _bind(eqn, invals, eqn.params)
        for v, val in zip(eqn.outvars, outs, strict=True):
            write(v, val)
    return [read(a) for a in jaxpr.outvars]


def with_relu_rule(f: Callable, rule: Rule, *, warn_if_missing: bool = True) -> Callable:
    """Return ``f`` with every ReLU's backward pass replaced by ``rule``.

    The returned function has the same forward values as ``f`` for every input; only
    its derivative changes. ``rule="vanilla"`` gives the seed's 7.2.1 convention
    ``g * 1(x > 0)`` for every ReLU spelling (note that ``jnp.maximum(x, 0.)`` on its
    own has derivative 0.5 at ``x == 0``).

    Args:
      f: any function of arrays (a model ``x -> scores``); it is traced once per
        input shape, at trace time of the caller.
      rule: ``"vanilla"``, ``"deconvnet"`` (Zeiler & Fergus 2014) or ``"guided"``
        (Springenberg et al. 2015).
      warn_if_missing: warn when ``f`` contains no ReLU, since the result would then
        silently equal the plain gradient.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}.")
    if not callable(f):
        raise TypeError(f"f must be callable; got {type(f).__name__}.")

    @functools.wraps(f)
    def wrapped(*args):
        closed, flat, out_tree = _trace(f, args)
        if warn_if_missing and count_relus(closed.jaxpr) == 0:
            warnings.warn(
                f"jaxsal: no ReLU found in the model, so the {rule!r} rule changes nothing and the "
                f"result equals the plain gradient. Recognised: jax.nn.relu / flax relu, "
                f"jnp.maximum(x, 0.), jax.nn.relu6, jnp.clip(x, 0., c).",
                UserWarning,
                stacklevel=2,
            )
        outs = eval_with_rule(closed.jaxpr, closed.consts, *flat, rule=rule)
        return jax.tree_util.tree_unflatten(out_tree, outs)

    return wrapped


def _trace(f: Callable, args: tuple):
    """``(closed_jaxpr, flat_args, out_treedef)`` of ``f(*args)``."""
    flat, tree = jax.tree_util.tree_flatten(args)
    closed, out_shape = jax.make_jaxpr(
        lambda *a: f(*jax.tree_util.tree_unflatten(tree, a)), return_shape=True
    )(*flat)
    return closed, flat, jax.tree_util.tree_structure(out_shape)


def with_fast_max_pool(f: Callable) -> Callable:
    """``f`` with the derivative of its non-overlapping max-pools computed elementwise.

    Values and derivatives are those of ``f`` (each window's gradient goes to its first
    maximum, as in XLA's ``select_and_scatter``); only the speed changes. A function
    with no such max-pool is simply called (it is traced once more, at trace time).
    """

    @functools.wraps(f)
    def wrapped(*args):
        closed, flat, out_tree = _trace(f, args)
        if not count_max_pools(closed.jaxpr):
            return f(*args)
        return jax.tree_util.tree_unflatten(
            out_tree, eval_with_rule(closed.jaxpr, closed.consts, *flat, rule=None)
        )

    return wrapped

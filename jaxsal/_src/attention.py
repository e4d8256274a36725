r"""Attention maps of a transformer, read from its jaxpr: raw attention, rollout, flow, gradient-weighted rollout.

The attention probabilities are found in the *unmodified* model ``f`` by the softmax
matcher :data:`SOFTMAX` (``jax.nn.softmax`` and the ``exp(z - max) / Σ exp`` it
traces to), keeping the softmaxes whose output is square over its last two axes,
``(B, H, T, T)`` (or ``(B, T, T)``, one head): query ``i`` attends to key ``j`` with
:math:`A_l[h, i, j]`, ``l = 1 .. L`` in data-flow order. They are read, and their
gradients taken, through the interpreter (:func:`jaxsal.interpret`), which adds a
zero perturbation to each one: no hooks, no model changes. A softmax inside a
``lax.scan`` or ``while_loop`` body (e.g. ``nn.scan`` over layers) cannot be read this
way; unroll the layers.

Notation: :math:`\bar A_l = \mathrm{fuse}_h A_l` (mean over heads by default),
:math:`\hat A_l = \mathrm{rownorm}(\bar A_l + I)` with the residual connection
(Abnar & Zuidema 2020 add the identity and renormalise; ``residual=False`` skips it).
Every map is the row of the explained *query* token (``query=0``, the CLS token)
restricted to the patch tokens named by ``tokens`` (:class:`jaxsal.Tokens`), reshaped
to the patch grid: ``(B, h, w)``, in ``x``'s dtype.

* :func:`raw_attention`: :math:`\bar A_L[q, \cdot]`, the last layer's attention;
* :func:`attention_rollout`: :math:`(\hat A_L \hat A_{L-1} \cdots \hat A_1)[q, \cdot]`
  (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928);
* :func:`attention_flow`: the maximum flow from the query token at the top to each
  input token, in the graph whose layer-``l`` edges ``j -> i`` have capacity
  :math:`\hat A_l[i, j]` (same paper), normalised to sum to 1 over the input tokens;
* :func:`gradient_rollout`: :math:`R = \prod_l (I + \mathbb{E}_h[(\nabla A_l \odot A_l)^+])`
  accumulated as :math:`R \leftarrow R + \bar A_l R` from :math:`R = I` (Chefer, Gur &
  Wolf 2021, "Generic Attention-model Explainability", https://arxiv.org/abs/2103.15679),
  :math:`\nabla A_l = \partial y^c / \partial A_l`. Class-specific; the others are not
  (``target`` is accepted and ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src import interpreter as interp
from jaxsal._src.registry import Method, register
from jaxsal._src.tokens import Tokens

Array = jax.Array

_HEAD_FUSIONS = ("mean", "max", "min")
#: What may lie between ``reduce_max(z)`` and the ``sub`` of a stable softmax.
_MAX_CHAIN = interp.PASS_THROUGH | {"stop_gradient", "max"}


# ----------------------------------------------------------------------------- the softmax matcher


def _max_chain(view: interp.View, atom, z) -> list[int] | None:
    """Equations of ``m = stop_gradient(broadcast(max(-inf, reduce_max(z))))``, if ``atom`` is that ``m``."""
    eqns: list[int] = []
    for _ in range(8):
        prod = view.producer(atom)
        if prod is None:
            return None
        i, eqn = prod
        eqns.append(i)
        name = eqn.primitive.name
        if name == "reduce_max":
            return eqns if eqn.invars[0] is z else None
        if name == "max":  # max(-inf, m): guards the all -inf row
            others = [a for a in eqn.invars if view.value(a) is None]
            if len(others) != 1:
                return None
            atom = others[0]
        elif name in _MAX_CHAIN and len(eqn.invars) == 1:
            atom = eqn.invars[0]
        else:
            return None
    return None


def _find_softmax(view: interp.View):
    eqns = view.jaxpr.eqns
    for i, eqn in enumerate(eqns):
        if eqn.primitive.name != "exp":
            continue
        e = eqn.outvars[0]
        uses = view.uses(e)
        if len(uses) != 2 or view.is_output(e):
            continue
        s_idx = next((u for u in uses if eqns[u].primitive.name == "reduce_sum"), None)
        d_idx = next((u for u in uses if eqns[u].primitive.name == "div"), None)
        pre: list[int] = []
        if s_idx is None:
            # bfloat16/float16: jnp.sum accumulates in float32, convert -> reduce_sum
            c = next((u for u in uses if eqns[u].primitive.name == "convert_element_type"), None)
            cu = None if c is None else view.sole_use(eqns[c].outvars[0])
            if cu is not None and eqns[cu].primitive.name == "reduce_sum":
                s_idx, pre = cu, [c]
        if s_idx is None or d_idx is None or eqns[d_idx].invars[0] is not e:
            continue
        axes = tuple(eqns[s_idx].params.get("axes", ()))
        # the denominator: reduce_sum(e), possibly broadcast / reshaped
        den, chain = eqns[d_idx].invars[1], [s_idx]
        ok = False
        for _ in range(4):
            prod = view.producer(den)
            if prod is None:
                break
            j, deq = prod
            if j == s_idx:
                ok = True
                break
            if deq.primitive.name not in interp.PASS_THROUGH or len(deq.invars) != 1:
                break
            chain.append(j)
            den = deq.invars[0]
        if not ok or any(view.sole_use(eqns[k].outvars[0]) is None for k in chain):
            continue
        members = [i, d_idx, *pre, *chain]
        (z,) = eqn.invars
        prod = view.producer(z)
        inp = z
        if prod is not None and prod[1].primitive.name == "sub":
            k, sub = prod
            zz, m = sub.invars
            mx = _max_chain(view, m, zz)
            if mx is not None and view.sole_use(z) == i:
                members += [k, *mx]
                inp = zz
        yield interp.Unit("softmax", tuple(sorted(set(members))), (inp,), eqns[d_idx].outvars[0], axes)


#: Softmaxes in a traced model (``jax.nn.softmax``, and ``exp(z - max z) / Σ exp``);
#: ``Unit.info`` is the tuple of reduced axes.
SOFTMAX = interp.Matcher("softmax", _find_softmax, "softmax (exp(z - max z) / sum exp)")


# ----------------------------------------------------------------------------- reading attention


def _attention_units(f: Callable, x: Array) -> list[interp.Unit]:
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    units = interp.find_units(f, spec, matcher=SOFTMAX)
    att = []
    for u in units:
        shape = tuple(u.output.aval.shape)
        if (
            len(shape) in (3, 4)
            and shape[0] == x.shape[0]
            and shape[-1] == shape[-2]
            and u.info == (len(shape) - 1,)
        ):
            att.append(u)
    if not att:
        found = ", ".join(f"{tuple(u.output.aval.shape)}" for u in units) or "none"
        raise ValueError(
            f"no attention softmax found in f: attention methods need softmax outputs of shape "
            f"(B, heads, T, T) over the last axis (jax.nn.softmax(logits, axis=-1)); softmaxes found: "
            f"{found}. Is f a transformer? Use a CAM or gradient method otherwise."
        )
    t = att[0].output.aval.shape[-1]
    bad = [tuple(u.output.aval.shape) for u in att if u.output.aval.shape[-1] != t]
    if bad:
        raise ValueError(
            f"attention softmaxes have different token counts: {t} and {bad}; one sequence is needed."
        )
    return att


def _read(f: Callable, x: Array, units: list[interp.Unit], deltas: dict | None):
    """``(scores, [A_1 .. A_L] as (B, H, T, T))`` with ``deltas[k]`` added to the k-th attention."""
    wanted = {u.index: k for k, u in enumerate(units)}
    captured: dict[int, Array] = {}

    def rule(unit, forward, *inputs):
        out = forward(*inputs)
        k = wanted.get(unit.index)
        if k is None:
            return out
        captured[k] = out
        return out if deltas is None else out + deltas[k]

    scores = interp.interpret(f, [(SOFTMAX, rule)])(x)
    if len(captured) != len(units):
        raise ValueError(
            f"only {len(captured)} of {len(units)} attention softmaxes could be read (a softmax inside a "
            f"lax.scan or while_loop body?); unroll the layers."
        )
    maps = [captured[k] for k in range(len(units))]
    return scores, [m if m.ndim == 4 else m[:, None] for m in maps]


def _fuse(a: Array, head_fusion: str) -> Array:
    return {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion](a, axis=1)


def _residual(a: Array, residual: bool) -> Array:
    if not residual:
        return a
    a = a + jnp.eye(a.shape[-1], dtype=a.dtype)[None]
    return a / a.sum(-1, keepdims=True)


def rollout_matrix(attentions, *, residual: bool = True) -> Array:
    r"""Abnar & Zuidema's rollout :math:`\hat A_L \cdots \hat A_1` of head-fused attentions ``[(B, T, T)]``."""
    r = None
    for a in attentions:
        a = _residual(a, residual)
        r = a if r is None else a @ r
    return r


def _to_grid(row: Array, tokens: Tokens, dtype) -> Array:
    sl, (h, w) = tokens.patch_index(row.shape[-1], "the attention")
    return row[:, sl].reshape(row.shape[0], h, w).astype(dtype)


def _check(f, tokens, query, head_fusion) -> Tokens:
    contract.check_callable(f, "f")
    if tokens is None:
        tokens = Tokens()
    if not isinstance(tokens, Tokens):
        raise TypeError(
            f"tokens must be a jaxsal.Tokens, e.g. Tokens(grid=(h, w), prefix=1); got {tokens!r}."
        )
    if isinstance(query, bool) or not isinstance(query, int) or query < 0:
        raise ValueError(f"query must be the index of the explained token, an int >= 0; got {query!r}.")
    if head_fusion not in _HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {_HEAD_FUSIONS}; got {head_fusion!r}.")
    return tokens


def _check_query(query: int, t: int) -> None:
    if query >= t:
        raise ValueError(f"query={query} but the attention has only T = {t} tokens.")


def _query_row(r: Array, query: int) -> Array:
    _check_query(query, r.shape[-1])
    return r[:, query]


def _forward_method(f, tokens, query, head_fusion, residual, name, query_row) -> contract.Attribution:
    """A class-agnostic attention method: ``query_row(fused, dtype) -> (B, T)`` from the head-fused maps.

    ``fused`` is ``[fuse_h A_1 .. fuse_h A_L]``, each ``(B, T, T)``; ``dtype`` is ``x``'s.
    """
    tokens = _check(f, tokens, query, head_fusion)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        units = _attention_units(f, x)
        scores, maps = _read(f, x, units, None)
        contract.check_scores(scores, x.shape[0])
        contract.resolve_target(scores, target)  # validated, not used: the map is class-agnostic
        fused = [_fuse(a, head_fusion) for a in maps]
        return _to_grid(query_row(fused, x.dtype), tokens, x.dtype)

    hyper = dict(tokens=tokens, query=query, head_fusion=head_fusion, residual=residual)
    return contract.Attribution(attr, f, output="layer", name=name, hyper=hyper)


def raw_attention(
    f: Callable, *, tokens: Tokens | None = None, query: int = 0, head_fusion: str = "mean"
) -> contract.Attribution:
    r"""The last attention layer's attention from the query token to the patches, :math:`\bar A_L[q, \mathrm{patches}]`.

    A baseline: one layer, no residual, not class-specific (``target`` is ignored).

    Args:
      f: the transformer, ``x (B, ...) -> (B, C)`` raw scores, with ``jax.nn.softmax``
        attention (found in its jaxpr).
      tokens: the token layout (:class:`jaxsal.Tokens`); default ``Tokens()``: one CLS
        token, then a square grid of patches.
      query: the explained token (0: the CLS token).
      head_fusion: how heads are combined: ``"mean"``, ``"max"`` or ``"min"``.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, h, w)``.

    Raises:
      ValueError (when called): no attention softmax in ``f``; ``tokens`` does not fit ``T``.
    """
    return _forward_method(
        f, tokens, query, head_fusion, False, "raw_attention", lambda fused, _: _query_row(fused[-1], query)
    )


def attention_rollout(
    f: Callable,
    *,
    tokens: Tokens | None = None,
    query: int = 0,
    head_fusion: str = "mean",
    residual: bool = True,
) -> contract.Attribution:
    r"""Attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928).

    .. math:: \tilde R = \hat A_L \hat A_{L-1} \cdots \hat A_1, \qquad
       \hat A_l = \mathrm{rownorm}\big(\mathrm{fuse}_h A_l + I\big)

    and the map is :math:`\tilde R[q, \mathrm{patches}]` on the patch grid. Not
    class-specific (``target`` is ignored).

    Args:
      f: the transformer, ``x (B, ...) -> (B, C)`` raw scores, with ``jax.nn.softmax``
        attention (found in its jaxpr).
      tokens: the token layout (:class:`jaxsal.Tokens`); default ``Tokens()``.
      query: the explained token (0: the CLS token).
      head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads.
      residual: add the identity for the residual connection and renormalise rows (the
        paper); ``False`` multiplies the raw fused attentions.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, h, w)``.
    """
    return _forward_method(
        f,
        tokens,
        query,
        head_fusion,
        residual,
        "attention_rollout",
        lambda fused, _: _query_row(rollout_matrix(fused, residual=residual), query),
    )


# ----------------------------------------------------------------------------- flow

_FLOW_SCALE = 2**30


def _flow_one(mats: np.ndarray, query: int) -> np.ndarray:
    """Max flow from ``query`` at the top to each input token; ``mats``: ``(L, T, T)`` capacities ``[l, i, j]``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    n_layers, t, _ = mats.shape
    n = (n_layers + 1) * t
    # node (l, i) = l * t + i; layer l + 1 token i -> layer l token j with capacity A_l[i, j]
    rows, cols, caps = [], [], []
    for layer in range(n_layers):
        cap = np.rint(mats[layer] * _FLOW_SCALE).astype(np.int64)
        ii, jj = np.nonzero(cap)
        rows.append((layer + 1) * t + ii)
        cols.append(layer * t + jj)
        caps.append(cap[ii, jj])
    graph = csr_matrix(
        (np.concatenate(caps).astype(np.int32), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    source = n_layers * t + query
    out = np.array([maximum_flow(graph, source, j).flow_value for j in range(t)], np.float64)
    total = out.sum()
    return out / total if total > 0 else out


def _flow_host(mats: np.ndarray, query: int, dtype) -> np.ndarray:
    """Flows for ``mats`` of shape ``(..., L, T, T)`` (any leading axes): ``(..., T)``."""
    mats = np.asarray(mats, np.float64)
    lead, (n_layers, t, _) = mats.shape[:-3], mats.shape[-3:]
    flat = mats.reshape((-1, n_layers, t, t))
    out = np.stack([_flow_one(m, query) for m in flat]) if flat.shape[0] else np.zeros((0, t))
    return out.reshape(lead + (t,)).astype(dtype)


def attention_flow(
    f: Callable,
    *,
    tokens: Tokens | None = None,
    query: int = 0,
    head_fusion: str = "mean",
    residual: bool = True,
) -> contract.Attribution:
    r"""Attention flow (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928).

    The attention graph has a node per token and layer boundary, ``(l, i)`` for
    ``l = 0 .. L``, and an edge ``(l, j) -> (l + 1, i)`` of capacity :math:`\hat A_l[i, j]`
    (:math:`\hat A_l = \mathrm{rownorm}(\mathrm{fuse}_h A_l + I)`). The map at input
    token ``j`` is the maximum flow from ``(L, q)`` to ``(0, j)``, normalised to sum to 1
    over all input tokens (as the authors' code does), restricted to the patches.

    The flows are computed on the host with SciPy's ``maximum_flow`` (Dinic), one per
    input token, through :func:`jax.pure_callback`: the method jits and vmaps, but has
    no gradient, and costs ``T`` max-flow problems per example. SciPy needs integer
    capacities: they are rounded to multiples of ``2**-30``, so flows are exact up to
    about ``T * 2**-30`` (~1e-7).

    Args:
      f: the transformer, ``x (B, ...) -> (B, C)`` raw scores, with ``jax.nn.softmax``
        attention (found in its jaxpr).
      tokens: the token layout (:class:`jaxsal.Tokens`); default ``Tokens()``.
      query: the explained token (0: the CLS token).
      head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads.
      residual: add the identity and renormalise rows (the paper).

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, h, w)``. Not class-specific.
    """
    try:
        import scipy.sparse.csgraph  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "attention_flow needs SciPy (scipy.sparse.csgraph.maximum_flow): pip install scipy"
        ) from None

    def flow_row(fused, dtype):
        t = fused[0].shape[-1]
        _check_query(query, t)
        mats = jnp.stack([_residual(a, residual) for a in fused], axis=1)  # (B, L, T, T)
        mats = jax.lax.stop_gradient(mats)
        host = jnp.float64 if dtype == jnp.float64 else jnp.float32
        out = jax.ShapeDtypeStruct((mats.shape[0], t), host)
        return jax.pure_callback(lambda m: _flow_host(m, query, host), out, mats, vmap_method="expand_dims")

    return _forward_method(f, tokens, query, head_fusion, residual, "attention_flow", flow_row)


# ----------------------------------------------------------------------------- gradient-weighted rollout


def gradient_rollout(f: Callable, *, tokens: Tokens | None = None, query: int = 0) -> contract.Attribution:
    r"""Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, https://arxiv.org/abs/2103.15679).

    "Generic Attention-model Explainability", self-attention case: from :math:`R = I`,
    for each layer ``l = 1 .. L`` in order,

    .. math:: \bar A_l = \mathbb{E}_h\big[(\nabla A_l \odot A_l)^+\big], \qquad
       R \leftarrow R + \bar A_l R

    with :math:`\nabla A_l = \partial y^c / \partial A_l` the gradient of the explained
    score (raw score of ``target``) with respect to layer ``l``'s attention
    probabilities. The map is :math:`R[q, \mathrm{patches}]`. One forward and one
    backward pass.

    Args:
      f: the transformer, ``x (B, ...) -> (B, C)`` raw scores, with ``jax.nn.softmax``
        attention (found in its jaxpr).
      tokens: the token layout (:class:`jaxsal.Tokens`); default ``Tokens()``.
      query: the explained token (0: the CLS token).

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, h, w)``, class-specific.
    """
    tokens = _check(f, tokens, query, "mean")

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        units = _attention_units(f, x)
        zeros = contract.varying_like([jnp.zeros(u.output.aval.shape, u.output.aval.dtype) for u in units], x)
        scores, pullback, maps = jax.vjp(lambda d: _read(f, x, units, d), zeros, has_aux=True)
        contract.check_scores(scores, x.shape[0])
        (grads,) = pullback(contract.target_cotangent(scores, target))
        grads = [g if g.ndim == 4 else g[:, None] for g in grads]
        t = maps[0].shape[-1]
        r = jnp.broadcast_to(jnp.eye(t, dtype=maps[0].dtype), (x.shape[0], t, t))
        for a, g in zip(maps, grads, strict=True):
            cam = jax.nn.relu(g * a).mean(axis=1)
            r = r + cam @ r
        return _to_grid(_query_row(r, query), tokens, x.dtype)

    return contract.Attribution(
        attr, f, output="layer", name="gradient_rollout", hyper=dict(tokens=tokens, query=query)
    )


def _register(name: str, factory: Any, title: str, paper: str) -> None:
    register(Method(name, factory, "f", "attention", title, paper, output="layer"))


_register("raw_attention", raw_attention, "Raw attention", "Vaswani et al. 2017")
_register("attention_rollout", attention_rollout, "Attention rollout", "Abnar & Zuidema 2020")
_register("attention_flow", attention_flow, "Attention flow", "Abnar & Zuidema 2020")
_register("gradient_rollout", gradient_rollout, "Gradient-weighted rollout", "Chefer et al. 2021")

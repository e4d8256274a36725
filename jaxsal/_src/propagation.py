r"""Layer-wise relevance propagation on unmodified models: what is found where.

:func:`jaxsal.lrp` traces ``f`` to a jaxpr and re-evaluates it with the open rule
interpreter (:mod:`jaxsal._src.interpreter`). Every unit below gets a backward rule;
everything else keeps its own derivative. With the output relevance
:math:`R_{out} = S_c(x)\,e_c` (the target's score in the target's slot), the
gradient of the re-evaluated function with respect to ``x`` is the LRP relevance.

What each part of a jaxpr becomes (Zennit's layer map and canonizers, found without
module types):

==============================  =================================================================
**linear layers**               ``conv_general_dilated`` (any stride, padding, dilation, feature
                                groups) and ``dot_general`` with one operand that does not depend
                                on ``x`` (the weight; see :data:`jaxsal.matchers.LINEAR`), with
                                their bias ``add``: the composite's rule for the layer.
**canonization**                a chain of elementwise ``add``/``sub``/``mul``/``div`` by
                                ``x``-independent values right after a linear layer, whose
                                multiplicative part varies only along the layer's output features
                                (an inference-mode BatchNorm, a scale), is merged into that
                                layer's weight and bias before its rule applies, as Zennit's
                                ``MergeBatchNorm``: :math:`W' = aW`, :math:`b' = ab + c`.
**activations**                 the ReLU family (:data:`jaxsal.matchers.RELU`: ``jax.nn.relu``,
                                ``jnp.maximum(x, 0)``, ReLU6, clips) and the ``jax.nn``
                                activations traced as named calls (``silu``, ``elu``,
                                ``leaky_relu``, ``softplus``, ``relu6``, ...): ``Pass``.
**sums**                        an ``add`` of two ``x``-dependent values of the same shape that are
                                not one elementwise expression of a common value (residual
                                ``x + block(x)``): ``Norm``, as Zennit's ResNet canonizer.
**sum and average pooling**     ``reduce_sum`` / ``reduce_window_sum`` (``jnp.mean``, ``jnp.sum``,
                                ``nn.avg_pool``), with a following multiplication or division by
                                a constant scalar: ``Norm``. A reduction that is a *statistic*
                                (its result is combined again with the value it reduced:
                                LayerNorm's mean and variance, softmax's sum) keeps its gradient.
**max-pooling**                 its gradient: winner takes all, as Zennit.
**everything else**             its gradient: reshapes, transposes, slices, pads, concatenation
                                (which move relevance unchanged), LayerNorm, products of two
                                ``x``-dependent values (attention, gating), elementwise affine
                                maps not merged into a layer, and elementwise functions other than
                                the activations above (a bare ``jnp.tanh``, ``jax.nn.sigmoid``,
                                an inlined GELU), which Zennit would pass.
==============================  =================================================================

Weights must be closed over (``lambda x: model.apply(variables, x)``); a weight passed
as an argument of ``f`` itself counts as input, and the layer is not found.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src import interpreter as interp
from jaxsal._src import rules as R
from jaxsal._src.linear import LinearInfo, _find_linear
from jaxsal._src.registry import Method, register
from jaxsal._src.relu import RELU

Array = jax.Array

# ----------------------------------------------------------------------------- matchers

_AFFINE = frozenset({"add", "sub", "mul", "div"})
#: ``jax.nn`` activations that JAX traces as a named ``jit`` call.
ACTIVATION_CALLS = frozenset(
    "relu relu6 silu swish gelu elu celu selu leaky_relu softplus sigmoid log_sigmoid hard_tanh "
    "hard_sigmoid hard_silu hard_swish mish squareplus sparse_plus sparse_sigmoid".split()
)
#: Structure-only primitives that a *local expression* test looks through.
_STRUCTURAL = interp.PASS_THROUGH | frozenset(
    {"slice", "pad", "transpose", "dynamic_slice", "rev", "squeeze", "expand_dims", "reduce_precision"}
)
_LOCAL = (
    interp.ELEMENTWISE
    | _STRUCTURAL
    | frozenset(
        {"exp", "log", "tanh", "logistic", "erf", "sin", "cos", "log1p", "expm1", "rsqrt", "sign", "clamp"}
    )
)


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """A linear unit after canonization: the :class:`LinearInfo` and the merged affine chain.

    ``chain`` lists ``(primitive, side, input_position, literal)``: ``side`` is the
    position of the running value in the equation (``0``: ``z op k``), ``k`` is
    ``unit.inputs[input_position]`` or the ``literal``. ``features`` are the output
    dimensions the weight's output features occupy.
    """

    linear: LinearInfo
    chain: tuple = ()
    features: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        return self.linear.kind


def _feature_dims(unit: interp.Unit) -> tuple[int, ...] | None:
    """The output dimensions that index the weight's output features, or None if unknown."""
    info: LinearInfo = unit.info
    out_ndim = len(unit.output.aval.shape)
    if info.primitive == "conv_general_dilated":
        if info.weight != 1 or info.params.get("batch_group_count", 1) != 1:
            return None
        return (info.params["dimension_numbers"].out_spec[1],)
    (lc, rc), (lb, rb) = info.params["dimension_numbers"]
    if lb or rb:
        return None
    nl, nr = (len(unit.inputs[k].aval.shape) for k in (0, 1))
    n_lfree, n_rfree = nl - len(lc), nr - len(rc)
    if n_lfree + n_rfree != out_ndim:
        return None
    return tuple(range(n_lfree, out_ndim)) if info.weight == 1 else tuple(range(n_lfree))


def _per_feature(shape: tuple, out_shape: tuple, features: tuple[int, ...]) -> bool:
    if len(shape) > len(out_shape):
        return False
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    return all(s == 1 or d in features for d, s in enumerate(padded))


def _canonical(view: interp.View, unit: interp.Unit) -> interp.Unit:
    """``unit`` (a linear unit) with the elementwise affine chain after it merged in."""
    features = _feature_dims(unit)
    eqns, inputs, chain, out = list(unit.eqns), list(unit.inputs), [], unit.output
    while True:
        j = view.sole_use(out)
        if j is None:
            break
        e = view.jaxpr.eqns[j]
        name = e.primitive.name
        if name not in _AFFINE or len(e.invars) != 2 or e.outvars[0].aval.shape != out.aval.shape:
            break
        if e.invars[0] is out and e.invars[1] is out:
            break
        side = 0 if e.invars[0] is out else 1
        other = e.invars[1 - side]
        if view.from_input(other) or (name == "div" and side == 1):
            break
        oshape = tuple(getattr(other.aval, "shape", ()))
        if name in ("mul", "div") and (
            features is None or not _per_feature(oshape, out.aval.shape, features)
        ):
            break
        if len(oshape) > len(out.aval.shape):
            break
        if interp.is_literal(other):
            chain.append((name, side, None, other.val))
        else:
            inputs.append(other)
            chain.append((name, side, len(inputs) - 1, None))
        eqns.append(j)
        out = e.outvars[0]
    info = LayerInfo(unit.info, tuple(chain), features)
    return interp.Unit("linear", tuple(eqns), tuple(inputs), out, info)


def _find_layers(view: interp.View):
    for unit in _find_linear(view):
        yield _canonical(view, unit)


#: Linear layers with the elementwise affine after them (an inference BatchNorm) merged in.
LAYERS = interp.Matcher("linear", _find_layers, "linear layers, with a following BatchNorm merged")


def _find_activation_calls(view: interp.View):
    for i, eqn in enumerate(view.jaxpr.eqns):
        if eqn.primitive.name not in interp.INLINE_CALLS or eqn.params.get("name") not in ACTIVATION_CALLS:
            continue
        if len(eqn.invars) != 1 or len(eqn.outvars) != 1:
            continue
        (a,), (out,) = eqn.invars, eqn.outvars
        if interp.is_literal(a) or not view.from_input(a) or a.aval.shape != out.aval.shape:
            continue
        if jnp.issubdtype(out.aval.dtype, jnp.floating):
            yield interp.Unit("activation", (i,), (a,), out, eqn.params["name"])


#: ``jax.nn`` activations traced as named calls (``silu``, ``elu``, ``softplus``, ...).
ACTIVATIONS = interp.Matcher("activation", _find_activation_calls, "jax.nn activations (named calls)")


class _Walker:
    """Backward walks over one jaxpr (memoised per view)."""

    def __init__(self, view: interp.View):
        self.view = view

    def frontier(self, atom, budget: int = 48) -> set | None:
        """The values ``atom`` is an elementwise/structural expression of (None: too far to tell)."""
        seen, stack, front = set(), [atom], set()
        while stack:
            a = stack.pop()
            if interp.is_literal(a) or a in seen or not self.view.from_input(a):
                continue
            seen.add(a)
            p = self.view.producer(a)
            if p is None or p[1].primitive.name not in _LOCAL:
                front.add(a)
                continue
            budget -= 1
            if budget < 0:
                return None
            stack.extend(p[1].invars)
        return front

    def reaches(self, atom, target, budget: int = 64) -> bool:
        """Whether ``atom`` is computed from ``target`` (within ``budget`` equations)."""
        seen, stack = set(), [atom]
        while stack and budget > 0:
            a = stack.pop()
            if a is target:
                return True
            if interp.is_literal(a) or a in seen or not self.view.from_input(a):
                continue
            seen.add(a)
            p = self.view.producer(a)
            if p is not None:
                budget -= 1
                stack.extend(p[1].invars)
        return False

    def statistic(self, i: int, depth: int = 6) -> bool:
        """Whether reduction ``i``'s result is combined again with the value it reduced."""
        jaxpr = self.view.jaxpr
        src = jaxpr.eqns[i].invars[0]
        frontier = [jaxpr.eqns[i].outvars[0]]
        for _ in range(depth):
            nxt = []
            for v in frontier:
                for j in self.view.uses(v):
                    e = jaxpr.eqns[j]
                    for o in e.invars:
                        if o is not v and not interp.is_literal(o) and self.view.from_input(o):
                            if self.reaches(o, src):
                                return True
                    if e.primitive.name in _LOCAL or e.primitive.name in interp.REDUCTIONS:
                        nxt.extend(e.outvars)
            frontier = nxt
        return False


def _find_sums(view: interp.View):
    walker = _Walker(view)
    for i, eqn in enumerate(view.jaxpr.eqns):
        if eqn.primitive.name != interp.ADD or len(eqn.invars) != 2:
            continue
        a, b = eqn.invars
        out = eqn.outvars[0]
        if interp.is_literal(a) or interp.is_literal(b) or a is b:
            continue
        if not (view.from_input(a) and view.from_input(b)):
            continue
        if not jnp.issubdtype(out.aval.dtype, jnp.floating):
            continue
        if a.aval.shape != out.aval.shape or b.aval.shape != out.aval.shape:
            continue
        fa, fb = walker.frontier(a), walker.frontier(b)
        if fa is not None and fb is not None and fa & fb:
            continue  # one elementwise expression (x + 0.04 x³ in a GELU), not two branches
        yield interp.Unit("sum", (i,), (a, b), out)


#: Additions of two branches (residual connections): Zennit's ``Sum`` + ``Norm``.
SUMS = interp.Matcher("sum", _find_sums, "additions of two x-dependent branches")

_POOLS = frozenset({"reduce_sum", "reduce_window_sum"})


def _find_pools(view: interp.View):
    walker = _Walker(view)
    jaxpr = view.jaxpr
    for i, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name not in _POOLS or len(eqn.invars) != 1:
            continue
        (a,) = eqn.invars
        out = eqn.outvars[0]
        if interp.is_literal(a) or not view.from_input(a) or not jnp.issubdtype(out.aval.dtype, jnp.floating):
            continue
        if walker.statistic(i):
            continue
        eqns = (i,)
        j = view.sole_use(out)
        if j is not None:
            e = jaxpr.eqns[j]
            if e.primitive.name in ("mul", "div") and e.outvars[0].aval.shape == out.aval.shape:
                other = e.invars[1] if e.invars[0] is out else e.invars[0]
                if (e.primitive.name == "mul" or e.invars[0] is out) and view.value(other) is not None:
                    eqns, out = (i, j), e.outvars[0]
        yield interp.Unit("pool", eqns, (a,), out)


#: Sum and average pooling (``jnp.mean``/``jnp.sum``, ``nn.avg_pool``) that are not statistics.
POOLS = interp.Matcher("pool", _find_pools, "sum / average pooling")


# ----------------------------------------------------------------------------- rules on units


def _pass(unit, inputs, y, g):
    return (g,)


def _norm(stabilizer: float):
    rule = R.Norm(stabilizer)

    def bwd(unit, inputs, y, g):
        return rule.parameter_free(unit.apply, tuple(inputs), g)

    return interp.backward_rule(bwd)


def _merge(info: LayerInfo, xs: tuple, w: Array, b: Array | None, out_shape: tuple) -> tuple:
    """The weight and bias of the layer with its affine chain merged in (``W' = aW``, ``b' = ab + c``)."""
    dtype = w.dtype
    a = jnp.ones((), dtype)
    c = jnp.zeros((), dtype)
    for name, side, pos, lit in info.chain:
        k = xs[pos] if pos is not None else jnp.asarray(lit, dtype)
        k = k.astype(dtype)
        if name == "add":
            c = c + k
        elif name == "sub":
            a, c = (a, c - k) if side == 0 else (-a, k - c)
        elif name == "mul":
            a, c = a * k, c * k
        else:  # div, running value on the left
            a, c = a / k, c / k
    bias = c if b is None else a * b.astype(dtype) + c
    bias = jnp.broadcast_to(bias, jnp.broadcast_shapes(jnp.shape(bias), out_shape))
    feats = info.features
    a_full = jnp.broadcast_to(a, out_shape)
    a_vec = a_full[tuple(slice(None) if d in feats else 0 for d in range(len(out_shape)))]
    lin = info.linear
    if lin.primitive == "conv_general_dilated":
        shape = [1] * w.ndim
        shape[lin.params["dimension_numbers"].rhs_spec[0]] = w.shape[
            lin.params["dimension_numbers"].rhs_spec[0]
        ]
        return w * a_vec.reshape(shape), bias
    (lc, rc), _ = lin.params["dimension_numbers"]
    contracted = set(rc if lin.weight == 1 else lc)
    shape = [1 if d in contracted else s for d, s in enumerate(w.shape)]
    return w * a_vec.reshape(shape), bias


def _layer_rule(rule: R.Rule) -> interp.RuleFn:
    def bwd(unit, xs, y, g):
        info: LayerInfo = unit.info
        lin = info.linear
        x, w = xs[lin.data], xs[lin.weight]
        b = xs[lin.bias] if lin.bias is not None else None
        eqn = unit.jaxpr.eqns[unit.eqns[0]]

        def op(xv, wv):
            args = [None, None]
            args[lin.data], args[lin.weight] = xv, wv
            return interp.bind(eqn, args)[0]

        if info.chain:
            w, b = _merge(info, xs, w, b, y.shape)
        relevance = rule.linear(R.LinearOp(op, w, b), x, g)
        cots: list = [None] * len(xs)
        cots[lin.data] = relevance.astype(x.dtype)
        return cots

    return interp.backward_rule(bwd)


def layer_of(unit: interp.Unit) -> R.Layer:
    """The :class:`jaxsal.rules.Layer` description a composite receives for ``unit``."""
    info: LayerInfo = unit.info
    return R.Layer(info.kind, unit.index, unit.first, unit.scope, bool(info.chain))


# ----------------------------------------------------------------------------- composites

#: Composites that are not a layer map but rules for every part of the model (``jaxsal.lrp`` only).
MODEL_COMPOSITES = ("attn_lrp",)

COMPOSITES = (
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
)


def build_composite(
    name: str,
    *,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low: Any = None,
    high: Any = None,
    stabilizer: float = 1e-6,
) -> Callable[[R.Layer], R.Rule | None]:
    """Zennit's composite ``name`` as a function ``Layer -> Rule`` (layer maps and defaults of Zennit 0.5.1).

    ====================================  ========================  ==============  =============
    composite                             first linear layer        convolutions    dense layers
    ====================================  ========================  ==============  =============
    ``epsilon``                           as the others             ε               ε
    ``epsilon_plus``                      as the others             z⁺              ε
    ``epsilon_plus_flat``                 flat                      z⁺              ε
    ``epsilon_gamma_box``                 z^B (if a convolution)    γ               ε
    ``epsilon_alpha2_beta1``              as the others             α2β1            ε
    ``epsilon_alpha2_beta1_flat``         flat                      α2β1            ε
    ====================================  ========================  ==============  =============

    ``epsilon`` is the ε of the ε rule; ``stabilizer`` the ε of every other rule and of
    ``Norm`` (sums, pooling). ``epsilon`` is not one of Zennit's registered names: it is
    its ``LayerMapComposite`` with ε on every linear layer.
    """
    if not isinstance(name, str) or name not in COMPOSITES:
        raise ValueError(
            f"unknown composite {name!r}; choose one of {', '.join(COMPOSITES)}, or pass a callable "
            f"layer -> rule (see jaxsal.rules); jaxsal.lrp also takes {', '.join(MODEL_COMPOSITES)!s} "
            f"(AttnLRP, for transformers)."
        )
    eps = R.Epsilon(epsilon)
    stab = R._check_number(stabilizer, "stabilizer", positive=True)
    first = None
    if name == "epsilon_gamma_box":
        missing = [n for n, v in (("low", low), ("high", high)) if v is None]
        if missing:
            raise ValueError(
                f"composite 'epsilon_gamma_box' needs the input's bounds low= and high= (missing: "
                f"{', '.join(missing)}), e.g. low=-1.0, high=1.0 for inputs scaled to [-1, 1], in the "
                f"units of the first layer's input."
            )
        first = ("conv", R.ZBox(low, high, stab))
        conv: R.Rule = R.Gamma(gamma, stab)
    elif name.endswith("_flat"):
        first = (None, R.Flat(stab))
        conv = R.AlphaBeta(2.0, 1.0, stab) if "alpha2" in name else R.ZPlus(stab)
    elif name == "epsilon":
        conv = eps
    elif name == "epsilon_plus":
        conv = R.ZPlus(stab)
    else:
        conv = R.AlphaBeta(2.0, 1.0, stab)
    if name != "epsilon_gamma_box":
        R._check_number(gamma, "gamma", nonneg=True)

    def choose(layer: R.Layer) -> R.Rule | None:
        if layer.first and first is not None and first[0] in (None, layer.kind):
            return first[1]
        return conv if layer.kind == "conv" else eps

    choose.__name__ = name
    return choose


# ----------------------------------------------------------------------------- lrp


def _warn_if_no_linear(units: list) -> None:
    if not any(u.kind == "linear" for u in units):
        warnings.warn(
            "jaxsal.lrp: no linear layer (conv_general_dilated / dot_general with a weight "
            "closed over by f) was found in the model, so no LRP rule applies and the result is "
            "only a modified gradient. Close over the weights: f = lambda x: model.apply(variables, x).",
            UserWarning,
            stacklevel=4,
        )


def lrp(
    f: Callable,
    composite: str | Callable = "epsilon_plus",
    *,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    low: Any = None,
    high: Any = None,
    stabilizer: float = 1e-6,
) -> contract.Attribution:
    r"""Layer-wise Relevance Propagation (Bach et al. 2015, "On Pixel-Wise Explanations for
    Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation",
    https://doi.org/10.1371/journal.pone.0130140; Montavon et al. 2019, "Layer-Wise Relevance
    Propagation: An Overview", https://doi.org/10.1007/978-3-030-28954-6_10), on an unmodified
    model, with Zennit's rules and composites.

    The relevance at the output is the target's score, :math:`R^{(L)} = S_c(x)\,e_c`, and
    each linear layer passes it down by its composite's rule (:mod:`jaxsal.rules`);
    activations pass it, sums and average pooling split it in proportion to their inputs
    (``Norm``), and inference BatchNorms are merged into the layer before them. Where
    every rule conserves relevance (zero biases, ε → 0), :math:`\sum_i R_i = S_c(x)`.

    It equals Zennit's ``attr_output = S_c(x) e_c`` (LRP is linear in the output
    relevance, so Zennit's one-hot ``attr_output`` gives this divided by the score)
    with the same composite, on the same weights, with Zennit's canonizers
    (``SequentialMergeBatchNorm``, ``ResNetCanonizer``). What each primitive of the
    model becomes is tabulated in :mod:`jaxsal._src.propagation`; the ReLUs may be
    spelled any way, reused, or sit inside ``lax.scan``/``jax.checkpoint``.

    **Deep Taylor decomposition** (Montavon et al. 2017, https://doi.org/10.1016/j.patcog.2016.11.008)
    for ReLU networks is z⁺ on every layer above the input and z^B (bounded inputs) or
    w² (unbounded) at the input: ``lrp(f, lambda layer: ZBox(lo, hi) if layer.first
    else ZPlus())`` (``jaxsal.rules``).

    **AttnLRP** (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance
    Propagation for Transformers", ICML 2024, https://arxiv.org/abs/2402.05602), with
    ``composite="attn_lrp"``: every equation of a transformer gets a rule
    (:mod:`jaxsal._src.attn_lrp`): ε on linear layers; LayerNorm/RMSNorm by the ε rule
    with ``1/std`` held constant; softmax by :math:`R_{in} = z \odot (R - s \odot \sum R)`;
    ``q·kᵀ``, ``A·v`` and gating products by the uniform rule (half the ε relevance of the
    product to each factor); GELU, SiLU and other elementwise functions by the identity
    rule; residual sums and pooling by ε. A primitive with no rule raises
    ``ValueError`` naming it. Biases, additive embeddings and the softmax absorb their
    share, so :math:`\sum_i R_i = S_c(x)` holds only without them.

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``, weights closed over.
      composite: one of :data:`COMPOSITES` (see :func:`jaxsal.rules.composite`), or a callable
        ``layer -> rule`` taking a :class:`jaxsal.rules.Layer` (kind, index, first,
        scope) and returning a :mod:`jaxsal.rules` rule, or ``None`` for that layer's
        plain gradient; or ``"attn_lrp"`` (AttnLRP for transformers, below).
      epsilon: the ε of the ε rule (dense layers). ``> 0``.
      gamma: the γ of the γ rule (``epsilon_gamma_box``). ``>= 0``.
      low: the input's lower bound for z^B (``epsilon_gamma_box`` only), a scalar or
        an array broadcastable to one example, in the units of ``x``.
      high: the input's upper bound for z^B, likewise.
      stabilizer: the ε added to every other rule's denominator. ``> 0``.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, ...)`` relevance shaped like ``x``,
      differentiable with respect to the model's parameters (an LRP term can go in a
      training loss).

    Example::

      attr = jaxsal.lrp(lambda x: model.apply(variables, x), "epsilon_plus")
      relevance = attr(images)                 # sums to each top score
    """
    contract.check_callable(f)
    if isinstance(composite, str) and composite in MODEL_COMPOSITES:
        model = _attn_lrp_model(f, epsilon=epsilon, gamma=gamma, low=low, high=high, stabilizer=stabilizer)
        return _relevance(f, model, composite, epsilon=epsilon, gamma=gamma, stabilizer=stabilizer)
    if callable(composite):
        choose = composite
        name = getattr(composite, "__name__", "custom")
    else:
        choose = build_composite(
            composite, epsilon=epsilon, gamma=gamma, low=low, high=high, stabilizer=stabilizer
        )
        name = composite
    norm = _norm(R._check_number(stabilizer, "stabilizer", positive=True))
    cache: dict = {}

    def layer_rule(unit, forward, *inputs):
        rule = choose(layer_of(unit))
        if rule is None:
            return forward(*inputs)
        if not isinstance(rule, R.Rule):
            raise TypeError(
                f"the composite returned {type(rule).__name__} for layer {layer_of(unit)}; return a rule "
                f"from jaxsal.rules ({', '.join(R.RULES)}) or None for the gradient."
            )
        if rule not in cache:
            cache[rule] = _layer_rule(rule)
        return cache[rule](unit, forward, *inputs)

    pass_rule = interp.backward_rule(_pass)
    pairs = [(LAYERS, layer_rule), (ACTIVATIONS, pass_rule), (RELU, pass_rule), (SUMS, norm), (POOLS, norm)]
    model = interp.interpret(f, pairs, on_units=_warn_if_no_linear)
    return _relevance(f, model, name, epsilon=epsilon, gamma=gamma, stabilizer=stabilizer, low=low, high=high)


def _relevance(f: Callable, model: Callable, name: str, **hyper: Any) -> contract.Attribution:
    """The attribution ``x -> vjp(model)(S_c(x) e_c)`` of an interpreted ``model``."""

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        contract.check_model(f, x)  # a shape error names x's batch before any rule is traced
        scores, pullback = jax.vjp(model, x)
        contract.check_scores(scores, x.shape[0])
        cot = contract.target_cotangent(scores, target) * scores
        (relevance,) = pullback(cot)
        return relevance

    if hyper.get("low") is None and hyper.get("high") is None:
        hyper.pop("low", None)
        hyper.pop("high", None)
    return contract.Attribution(attr, f, name="lrp", hyper=dict(composite=name, **hyper))


def _attn_lrp_model(f: Callable, *, epsilon, gamma, low, high, stabilizer) -> Callable:
    """``f`` interpreted with the AttnLRP rules (:mod:`jaxsal._src.attn_lrp`)."""
    from jaxsal._src.attn_lrp import interpret_attn_lrp

    given = [n for n, v in (("low", low), ("high", high)) if v is not None]
    if given:
        raise ValueError(
            f"{' and '.join(given)} only apply to the composite 'epsilon_gamma_box' (the z^B rule at the "
            f"input); AttnLRP has no bounded-input rule. Drop {', '.join(given)}=."
        )
    R._check_number(gamma, "gamma", nonneg=True)
    return interpret_attn_lrp(f, epsilon=epsilon, stabilizer=stabilizer)


def _lrp_alpha2_beta1(f: Callable, **hyper: Any) -> contract.Attribution:
    """The registry's LRP-α2β1: :func:`lrp` with the ``"epsilon_alpha2_beta1"`` composite
    (α2β1 on convolutions, ε on dense layers), the rule Sixt, Granz & Landgraf (2020,
    "When Explanations Lie", https://arxiv.org/abs/1912.09818) found to ignore the top layers."""
    return lrp(f, "epsilon_alpha2_beta1", **hyper)


def _attn_lrp(f: Callable, **hyper: Any) -> contract.Attribution:
    r"""The registry's AttnLRP: :func:`lrp` with ``composite="attn_lrp"`` (Achtibat et al. 2024,
    "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML 2024).

    ε on linear layers, LayerNorm with ``1/std`` held constant, the softmax's Taylor rule
    :math:`R_{in} = z \odot (R - s \odot \sum R)`, the uniform rule on products of two
    input-dependent values and the identity rule on elementwise nonlinearities; on a CNN
    it is LRP-ε with ReLUs passing relevance."""
    return lrp(f, "attn_lrp", **hyper)


register(Method("lrp", lrp, "f", "propagation", "LRP ε-z⁺", "Bach et al. 2015", signed=True))
register(Method("attn_lrp", _attn_lrp, "f", "propagation", "AttnLRP", "Achtibat et al. 2024", signed=True))
register(
    Method(
        "lrp_alpha2_beta1",
        _lrp_alpha2_beta1,
        "f",
        "propagation",
        "LRP ε-α2β1",
        "Bach et al. 2015",
        signed=True,
    )
)

"""Generic speed rewrites of convolutions, applied when jaxsal differentiates a model.

XLA's CPU backend runs some convolutions, and their derivatives, much more slowly
than the same arithmetic written another way. This module finds
``lax.conv_general_dilated`` equations in a traced model and evaluates them in a
faster form with the same values (to float rounding: the sums are taken in another
order) and the same derivatives of every order:

* :data:`GROUPED` / :func:`shifted_conv`: a grouped convolution whose groups have one
  input channel each (depthwise, ``nn.Conv(C, k, feature_group_count=C)``, any
  channel multiplier) as ``prod(k)`` shifted, strided slices of the padded input,
  each multiplied by one kernel tap and summed.
* :data:`POINTWISE` / :func:`pointwise_conv`: a 1x1 convolution (any stride and
  padding, one group) as a ``dot_general`` over the channel axis.
* :data:`IM2COL` / :func:`im2col_conv`: a k x k convolution (one group) as one
  ``dot_general`` of the ``prod(k)`` shifted slices concatenated along the channels.

Every rewrite handles any ``dimension_numbers`` (layouts), ``window_strides``,
explicit ``padding`` (negative included), ``lhs_dilation`` and ``rhs_dilation``;
``batch_group_count != 1``, non-floating dtypes, and convolutions whose groups the
rewrite does not cover are left alone. The replacements are plain ``jax.lax``
operations with no custom derivative, so ``jax.grad``, ``jax.jvp``, ``jax.hessian``
and ``vmap`` all see an ordinary function. A ``jax.custom_vjp`` with a hand-written
input gradient (the flipped-kernel correlation of
``jaxsal.models.efficientnet``) was measured against the plain form on a
depthwise 3x3 layer's gradient with respect to input and kernel (B=16, 48x48x64,
CPU, load 18): 0.128x vs 0.13x of XLA's grouped convolution, the same; the plain
form keeps forward mode, so it is the one used.

When they apply
===============
:mod:`jaxsal._src.config` holds ``rewrites``: ``"auto"`` (default), ``"all"`` or
``False``. They are applied wherever the rule interpreter evaluates a model *for a
gradient method*: the route of the max-pool rewrite (:mod:`jaxsal._src.max_pool`),
i.e. ``vanilla_grad``, ``grad_x_input``, the path methods, DeconvNet, Guided
Backprop, and the wrappers around them (SmoothGrad). The setting is read when the
attribution is *traced*: a function already compiled by ``jax.jit`` keeps the
choice it was traced with.

* ``"auto"``: on the CPU backend only (``jax.default_backend() == "cpu"``), the
  grouped rewrite and the 1x1 rewrite. GPU and TPU convolutions are left to XLA.
* ``"all"``: the three rewrites, on every backend.
* ``False`` (or ``"off"``): none.

The rule was chosen by ``python -m benchmarks.rewrites --quick`` on a 2-core CPU
shared with other jobs (load 7-13; interleaved runs, medians, compile time apart),
``vanilla_grad`` time with the mode over time with rewrites off:

==========================  ==  ======  ======
model                       B   auto    all
==========================  ==  ======  ======
MobileNet-style, 96x96      1   0.24    0.24
MobileNet-style, 96x96      16  0.25    0.25
small CNN (3x3), 32x32      8   0.87    0.91
==========================  ==  ======  ======

The grouped (depthwise) and 1x1 rewrites make the MobileNet-style model's gradient
about 4x faster (also 4x below the plain ``jax.grad`` of the unmodified model);
on the small CNN, whose convolutions are all 3x3 (auto changes nothing there),
im2col was within the noise of the load, and an earlier measurement found it
1.7-3.3x *slower*, so it stays out of ``"auto"``. On GPU/TPU nothing was measured,
so ``"auto"`` leaves their convolutions to XLA.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import interpreter as interp

CONV = "conv_general_dilated"
#: Modes of ``jaxsal.config.rewrites``.
MODES = ("auto", "all", False)


# ----------------------------------------------------------------------------- conv parameters


class ConvSpec:
    """The parameters of one ``conv_general_dilated`` equation, in a canonical layout.

    Canonical layouts: input ``(N, *spatial, C)``, kernel ``(*spatial, I, O)``,
    output ``(N, *spatial, O)`` (Flax's NHWC / HWIO).
    """

    def __init__(self, params: dict, lhs_shape, rhs_shape, out_shape):
        dn = params["dimension_numbers"]
        self.lhs_spec, self.rhs_spec, self.out_spec = (tuple(s) for s in dn)
        nd = len(self.lhs_spec) - 2
        self.nd = nd
        self.strides = tuple(params["window_strides"])
        self.padding = tuple(tuple(p) for p in params["padding"])
        self.lhs_dilation = tuple(params.get("lhs_dilation") or (1,) * nd)
        self.rhs_dilation = tuple(params.get("rhs_dilation") or (1,) * nd)
        self.groups = int(params.get("feature_group_count", 1))
        self.batch_groups = int(params.get("batch_group_count", 1))
        self.precision = params.get("precision")
        self.preferred = params.get("preferred_element_type")
        self.lhs_perm = (self.lhs_spec[0], *self.lhs_spec[2:], self.lhs_spec[1])
        self.rhs_perm = (*self.rhs_spec[2:], self.rhs_spec[1], self.rhs_spec[0])
        q = (self.out_spec[0], *self.out_spec[2:], self.out_spec[1])
        self.out_perm = tuple(int(i) for i in np.argsort(q))
        self.kernel = tuple(int(rhs_shape[d]) for d in self.rhs_spec[2:])
        self.in_per_group = int(rhs_shape[self.rhs_spec[1]])
        self.out_features = int(rhs_shape[self.rhs_spec[0]])
        self.out_spatial = tuple(int(out_shape[d]) for d in self.out_spec[2:])

    def canon_lhs(self, x):
        return jnp.transpose(x, self.lhs_perm) if self.lhs_perm != tuple(range(x.ndim)) else x

    def canon_rhs(self, w):
        return jnp.transpose(w, self.rhs_perm) if self.rhs_perm != tuple(range(w.ndim)) else w

    def uncanon_out(self, y):
        return jnp.transpose(y, self.out_perm) if self.out_perm != tuple(range(y.ndim)) else y

    def padded(self, x):
        """The canonical input, dilated (``lhs_dilation``) and padded (``padding``)."""
        if all(p == (0, 0) for p in self.padding) and all(d == 1 for d in self.lhs_dilation):
            return x
        cfg = [(0, 0, 0)] + [
            (lo, hi, d - 1) for (lo, hi), d in zip(self.padding, self.lhs_dilation, strict=True)
        ]
        return jax.lax.pad(x, jnp.zeros((), x.dtype), [*cfg, (0, 0, 0)])

    def taps(self, xp):
        """``(offset, slice)`` for every kernel position: the strided window of ``xp`` it reads."""
        out = []
        n, c = xp.shape[0], xp.shape[-1]
        for offset in np.ndindex(*self.kernel):
            start = [0] + [o * d for o, d in zip(offset, self.rhs_dilation, strict=True)] + [0]
            limit = (
                [n]
                + [
                    s0 + (m - 1) * st + 1
                    for s0, m, st in zip(start[1:-1], self.out_spatial, self.strides, strict=True)
                ]
                + [c]
            )
            out.append((offset, jax.lax.slice(xp, start, limit, [1, *self.strides, 1])))
        return out


def _spec(eqn) -> ConvSpec | None:
    """The :class:`ConvSpec` of a floating-point conv equation the rewrites can handle, else None."""
    if eqn.primitive.name != CONV:
        return None
    lhs, rhs = eqn.invars
    out = eqn.outvars[0]
    dtypes = (lhs.aval.dtype, rhs.aval.dtype, out.aval.dtype)
    if not all(jnp.issubdtype(d, jnp.floating) for d in dtypes):
        return None
    try:
        spec = ConvSpec(eqn.params, lhs.aval.shape, rhs.aval.shape, out.aval.shape)
    except (KeyError, TypeError, ValueError):  # an unexpected parameter layout: leave it to XLA
        return None
    if spec.batch_groups != 1 or any(m <= 0 for m in spec.out_spatial):
        return None
    return spec


def _is_grouped(spec: ConvSpec) -> bool:
    return spec.groups > 1 and spec.in_per_group == 1


def _is_pointwise(spec: ConvSpec) -> bool:
    return spec.groups == 1 and all(k == 1 for k in spec.kernel)


def _is_kxk(spec: ConvSpec) -> bool:
    return spec.groups == 1 and not all(k == 1 for k in spec.kernel)


def _finish(spec: ConvSpec, y, dtype):
    return spec.uncanon_out(y).astype(dtype)


# ----------------------------------------------------------------------------- the three forms


def shifted_conv(x, w, spec: ConvSpec):
    """A grouped conv with one input channel per group, as shifted multiply-adds."""
    dtype = spec.preferred or jnp.result_type(x, w)
    xc, wc = spec.canon_lhs(x), spec.canon_rhs(w)  # wc: (*k, 1, O)
    mult = spec.out_features // spec.groups
    out = None
    for offset, tap in spec.taps(spec.padded(xc)):
        if mult > 1:  # output channel g*mult + r reads input channel g
            tap = jnp.repeat(tap, mult, axis=-1)
        term = tap * wc[offset][0].reshape((1,) * (tap.ndim - 1) + (-1,))
        out = term if out is None else out + term
    return _finish(spec, out, dtype)


def pointwise_conv(x, w, spec: ConvSpec):
    """A 1x1 conv, one group, as a ``dot_general`` over the channel axis."""
    dtype = spec.preferred or jnp.result_type(x, w)
    xc, wc = spec.canon_lhs(x), spec.canon_rhs(w)
    ((_, tap),) = spec.taps(spec.padded(xc))
    y = jax.lax.dot_general(
        tap, wc.reshape(wc.shape[-2:]), (((tap.ndim - 1,), (0,)), ((), ())), precision=spec.precision
    )
    return _finish(spec, y, dtype)


def im2col_conv(x, w, spec: ConvSpec):
    """A k x k conv, one group, as one ``dot_general`` of the concatenated shifted slices."""
    dtype = spec.preferred or jnp.result_type(x, w)
    xc, wc = spec.canon_lhs(x), spec.canon_rhs(w)
    cols = jnp.concatenate([tap for _, tap in spec.taps(spec.padded(xc))], axis=-1)
    k = math.prod(spec.kernel)
    y = jax.lax.dot_general(
        cols,
        wc.reshape(k * wc.shape[-2], wc.shape[-1]),
        (((cols.ndim - 1,), (0,)), ((), ())),
        precision=spec.precision,
    )
    return _finish(spec, y, dtype)


# ----------------------------------------------------------------------------- matchers and rules


def _matcher(name: str, test: Callable[[ConvSpec], bool], describe: str) -> interp.Matcher:
    def find(view: interp.View):
        for i, eqn in enumerate(view.jaxpr.eqns):
            spec = _spec(eqn)
            if spec is not None and test(spec):
                yield interp.Unit(name, (i,), tuple(eqn.invars), eqn.outvars[0], spec)

    return interp.Matcher(name, find, describe)


def _rule(form: Callable) -> interp.RuleFn:
    def rule(unit: interp.Unit, forward: Callable, x, w):
        return form(x, w, unit.info)

    rule.__name__ = form.__name__
    return rule


#: Grouped convolutions with one input channel per group (depthwise); ``unit.info`` is the :class:`ConvSpec`.
GROUPED = _matcher(
    "grouped_conv", _is_grouped, "conv_general_dilated, feature_group_count > 1, 1 input channel per group"
)
#: 1x1 convolutions with one group.
POINTWISE = _matcher("pointwise_conv", _is_pointwise, "conv_general_dilated with a 1x1 kernel, one group")
#: k x k convolutions (some kernel dimension > 1) with one group.
IM2COL = _matcher("kxk_conv", _is_kxk, "conv_general_dilated with a k x k kernel, one group")

SHIFTED = _rule(shifted_conv)
AS_DOT = _rule(pointwise_conv)
IM2COL_DOT = _rule(im2col_conv)

#: name -> (matcher, rule), in the order they are tried.
REWRITES = {
    "grouped": (GROUPED, SHIFTED),
    "pointwise": (POINTWISE, AS_DOT),
    "im2col": (IM2COL, IM2COL_DOT),
}
#: The rewrites ``"auto"`` applies on the CPU backend (see the module docstring).
AUTO_CPU = ("grouped", "pointwise")


def selected(mode=None, backend: str | None = None) -> tuple[str, ...]:
    """Names of the rewrites ``mode`` applies on ``backend`` (default: the config, the default backend)."""
    from jaxsal._src import config

    mode = config.get_rewrites() if mode is None else config.check_rewrites(mode)
    if mode is False:
        return ()
    if mode == "all":
        return tuple(REWRITES)
    backend = jax.default_backend() if backend is None else backend
    return AUTO_CPU if backend == "cpu" else ()


def pairs(mode=None, backend: str | None = None) -> list[tuple[interp.Matcher, interp.RuleFn]]:
    """The ``(matcher, rule)`` pairs of the rewrites ``mode`` applies (see :func:`selected`)."""
    return [REWRITES[n] for n in selected(mode, backend)]


def with_rewrites(f: Callable, mode: str | bool | None = None) -> Callable:
    """``f`` with its convolutions evaluated in the faster forms (values unchanged to rounding).

    Args:
      f: any function of arrays.
      mode: ``"auto"``, ``"all"`` or ``False``; ``None`` reads ``jaxsal.config.rewrites``
        at trace time.

    Returns:
      A function with the same signature and values as ``f``.
    """
    if not callable(f):
        raise TypeError(f"f must be callable; got {type(f).__name__}.")
    if mode is not None:
        from jaxsal._src import config

        config.check_rewrites(mode)

    def wrapped(*args):
        ps = pairs(mode)
        return interp.interpret(f, ps, speed=False)(*args) if ps else f(*args)

    return wrapped


def count(f: Callable, *args: Sequence, mode="all") -> dict[str, int]:
    """How many convolutions of ``f(*args)`` each rewrite of ``mode`` would replace."""
    out = {}
    for name in selected(mode):
        out[name] = len(interp.find_units(f, *args, matcher=REWRITES[name][0]))
    return out

"""An elementwise derivative for non-overlapping max-pooling.

XLA differentiates ``lax.reduce_window`` max through ``select_and_scatter``, which
is slow on CPU: on small CNNs it costs about as much as the backward passes of all
the convolutions together. For *non-overlapping* max-pooling (window == stride, no
padding or dilation, as ``nn.max_pool(x, (2, 2), (2, 2))``) the derivative can be
built from elementwise operations on a reshaped view instead. :data:`MAX_POOL`
finds such pools and :data:`FAST_MAX_POOL` is the rule that replaces them; the
replacement routes each window's gradient to its *first* maximum in row-major
window order, exactly as ``select_and_scatter`` does, so values and derivatives
(first and higher order, ties included) are unchanged; only the speed changes.

**Where it is used.** Every gradient method goes through it: ``vanilla_grad``,
``grad_x_input`` and the path methods via :func:`with_fast_max_pool`, DeconvNet and
Guided Backprop via the ReLU rewrite, which applies both. The choice for
``vanilla_grad`` was measured, ``jax.grad`` of the model against the rewritten
gradient under ``jax.jit``, interleaved runs, compile time apart, on CPU with the
benchmarks' small CNN (one 2x2 max-pool): the rewritten gradient was clearly faster
per call, compiled no slower, and gave bit-identical gradients. A model with no such
pool is called directly, so the rewrite costs one extra trace at most. It was not
measured on GPU/TPU, where ``select_and_scatter`` is fast; the rewrite stays exact
there, and costs a reshape and a few elementwise ops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxsal._src import interpreter as interp


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
    if eqn.primitive.name != interp.REDUCE_WINDOW_MAX:
        return None
    k_window, k_strides, k_padding, k_base, k_dilation = interp.POOL_KEYS
    p = eqn.params
    window, strides = tuple(p.get(k_window, ())), tuple(p.get(k_strides, ()))
    ones = (1,) * len(window)
    if (
        not window
        or window != strides
        or any(tuple(pad) != (0, 0) for pad in p.get(k_padding, ()))
        or tuple(p.get(k_base, ones)) != ones
        or tuple(p.get(k_dilation, ones)) != ones
        or window == ones
        or not jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)
    ):
        return None
    return window


def _find_pools(view: interp.View):
    for i, eqn in enumerate(view.jaxpr.eqns):
        window = _pool_window(eqn)
        if window is not None:
            yield interp.Unit("max_pool", (i,), (eqn.invars[0],), eqn.outvars[0], window)


#: Matcher of non-overlapping VALID max-pools (``unit.info`` is the window).
MAX_POOL = interp.Matcher("max_pool", _find_pools, "reduce_window max with window == stride, VALID")


def FAST_MAX_POOL(unit: interp.Unit, forward: Callable, x: jax.Array) -> jax.Array:  # noqa: N802
    """The rule: the same pool, with the elementwise derivative."""
    return _max_pool(x, unit.info)


#: A *speed rule* (values and derivatives unchanged): the interpreter then also applies the
#: convolution speed rewrites of ``jaxsal.config.rewrites`` (:mod:`jaxsal._src.rewrites`).
FAST_MAX_POOL.speed = True  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=1024)
def count_max_pools(jaxpr) -> int:
    """Number of non-overlapping max-pools in ``jaxpr`` and its sub-jaxprs."""
    return interp._plan(jaxpr, (), (), [(MAX_POOL, None)], [0]).count


def with_fast_max_pool(f: Callable) -> Callable:
    """``f`` with the derivative of its non-overlapping max-pools computed elementwise.

    Values and derivatives are those of ``f`` (each window's gradient goes to its first
    maximum, as in XLA's ``select_and_scatter``); only the speed changes. The
    convolution speed rewrites of ``jaxsal.config.rewrites`` are applied with it
    (:mod:`jaxsal._src.rewrites`; values equal to float rounding). A function with
    neither is simply called (it is traced once more, at trace time).
    """
    return interp.interpret(f, [(MAX_POOL, FAST_MAX_POOL)])

"""The one contract every jaxsal method follows, and the checks at its boundary.

Every method is a factory ``method(f, **hyper) -> attr`` and every ``attr`` has the
signature ``attr(x, target=None, *, key=None) -> Array``:

* ``f`` maps a batch ``x`` of shape ``(B, ...)`` to raw scores of shape ``(B, C)``
  (logits, before softmax). Examples must be independent of each other (inference
  mode), because gradients of the summed objective are read off per example.
* ``target`` selects the scalar that is explained, per example:

  - ``None``: each example's top-scoring class, ``argmax_c f(x)_c``, taken at the
    *unperturbed* input (so SmoothGrad noise or IG path points never change it);
  - an ``int``: the same class for every example;
  - an integer array of shape ``(B,)``: one class per example;
  - a callable ``scores (B, C) -> (B,)``: a custom objective (it must act row-wise).

* ``key`` is a JAX PRNG key. Deterministic methods accept and ignore it; stochastic
  ones refuse to run without it.

Out-of-range targets: a concrete target (Python int, NumPy array, committed
``jax.Array``) is checked and raises ``ValueError``. A *traced* target (one passed
as an argument of a ``jax.jit`` function) cannot be checked at trace time; JAX
would silently clamp it, so jaxsal instead makes the selected score, and hence the
whole attribution map of that example, ``NaN``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Target = int | Array | np.ndarray | Callable[[Array], Array] | None


class Attribution(Protocol):
    """What every jaxsal factory returns."""

    def __call__(self, x: Array, target: Target = None, *, key: Array | None = None) -> Array: ...


# ----------------------------------------------------------------------------- marking


def attribution(fn: Callable, *, scores_fn: Callable | None, stochastic: bool = False) -> Callable:
    """Mark ``fn`` as a jaxsal attribution function.

    ``scores_fn`` is the model ``x -> (B, C)`` the method explains. Wrappers such as
    :func:`jaxsal.smoothgrad` use it to resolve ``target=None`` once, on the clean
    input. ``stochastic`` says whether ``fn`` needs a ``key``.
    """
    fn.scores_fn = scores_fn
    fn.stochastic = stochastic
    return fn


def is_stochastic(attr: Callable) -> bool:
    return bool(getattr(attr, "stochastic", False))


# ----------------------------------------------------------------------------- checks


def _is_tracer(v: Any) -> bool:
    return isinstance(v, jax.core.Tracer)


def check_callable(f: Any, name: str = "f") -> None:
    if not callable(f):
        raise TypeError(
            f"{name} must be a callable mapping a batch x of shape (B, ...) to scores "
            f"of shape (B, C); got {type(f).__name__}. For Flax linen pass "
            f"`lambda x: model.apply(variables, x)`."
        )


def check_input(x: Any, name: str = "x") -> Array:
    """Return ``x`` as a floating JAX array of rank >= 1, or raise a clear error."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape (B, ...); got {type(x).__name__}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype to be differentiated; got {x.dtype}. "
            f"Convert it first, e.g. `{name}.astype(jnp.float32)` (and scale uint8 "
            f"pixels the way the model expects)."
        )
    if x.ndim < 1:
        raise ValueError(
            f"{name} must have a leading batch axis, shape (B, ...); got a scalar. "
            f"Use `{name}[None]` for a single example."
        )
    return jnp.asarray(x)


def check_scores(scores: Any, batch: int, name: str = "f") -> None:
    """``f(x)`` must be ``(B, C)`` with the same ``B`` as ``x``."""
    shape = getattr(scores, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != batch:
        hint = ""
        if shape is not None and len(shape) == 1 and shape[0] == batch:
            hint = " For a regression output of shape (B,), return `y[:, None]` (C = 1)."
        raise ValueError(
            f"{name} must map x of shape ({batch}, ...) to scores of shape ({batch}, C); "
            f"got {'a non-array ' + type(scores).__name__ if shape is None else shape}.{hint}"
        )
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"{name} must return floating scores; got dtype {scores.dtype}.")


def check_model(f: Callable, x: Array, name: str = "f") -> int:
    """Check, by abstract evaluation only, that ``f(x)`` is ``(B, C)``; return ``C``."""
    out = jax.eval_shape(f, jax.ShapeDtypeStruct(x.shape, x.dtype))
    check_scores(out, x.shape[0], name)
    return out.shape[1]


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}.")
    return int(value)


def check_optional_batch_size(batch_size: Any, name: str = "batch_size") -> int | None:
    if batch_size is None:
        return None
    return check_positive_int(batch_size, name)


def check_key(key: Any, method: str) -> Array:
    if key is None:
        raise ValueError(
            f"{method} is stochastic and needs an explicit PRNG key: call it as "
            f"`attr(x, target, key=jax.random.key(0))`."
        )
    if not hasattr(key, "dtype"):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed)); got {type(key).__name__}.")
    if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed)); got dtype {key.dtype}.")
    return key


def check_target(target: Any, batch: int, num_classes: int) -> None:
    """Validate a non-callable, non-None target against ``(B, C)`` scores."""
    if isinstance(target, bool):
        raise TypeError(
            "target must be an int class index, an int array of shape (B,), a callable or None; got a bool."
        )
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < num_classes:
            raise ValueError(
                f"target={int(target)} is out of range for {num_classes} classes; use 0 <= target < {num_classes}."
            )
        return
    if not hasattr(target, "shape") or not hasattr(target, "dtype"):
        raise TypeError(
            "target must be an int class index, an int array of shape (B,), a callable "
            f"scores -> (B,), or None; got {type(target).__name__}."
        )
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(
            f"target must hold integer class indices; got dtype {target.dtype}. Use `target.astype(jnp.int32)`."
        )
    if target.shape not in ((), (batch,)):
        raise ValueError(
            f"target must be a scalar or have shape (B,) = ({batch},); got shape {tuple(target.shape)}. "
            f"Pass one class index per example."
        )
    if not _is_tracer(target):
        t = np.asarray(target)
        bad = (t < 0) | (t >= num_classes)
        if bad.any():
            raise ValueError(
                f"target has class indices {np.unique(t[bad]).tolist()[:5]} out of range for "
                f"{num_classes} classes; use 0 <= target < {num_classes}."
            )


# ----------------------------------------------------------------------------- targets


def select(scores: Array, target: Target) -> Array:
    """The explained scalar per example, shape ``(B,)``.

    ``target=None`` selects the top-scoring class (ties: the lowest index). A traced
    out-of-range index gives ``NaN`` rather than a silently clamped class.
    """
    batch, num_classes = scores.shape
    if callable(target):
        out = target(scores)
        if getattr(out, "shape", None) != (batch,):
            raise ValueError(
                f"a callable target must map scores of shape {scores.shape} to shape ({batch},); "
                f"got {getattr(out, 'shape', type(out).__name__)}."
            )
        return out
    if target is None:
        idx = jnp.argmax(jax.lax.stop_gradient(scores), axis=1)
        return jnp.take_along_axis(scores, idx[:, None], axis=1)[:, 0]
    check_target(target, batch, num_classes)
    idx = jnp.broadcast_to(jnp.asarray(target), (batch,))
    valid = (idx >= 0) & (idx < num_classes)
    picked = jnp.take_along_axis(scores, jnp.clip(idx, 0, num_classes - 1)[:, None], axis=1)[:, 0]
    return picked * jnp.where(valid, 1.0, jnp.nan).astype(scores.dtype)


def target_cotangent(scores: Array, target: Target) -> Array:
    """``d sum_b select(scores, target)_b / d scores``: the seed's "set all other classes to zero"."""
    if target is not None and not callable(target):
        check_target(target, *scores.shape)  # before tracing, so errors carry no JAX frames
    _, pullback = jax.vjp(lambda s: select(s, target), scores)
    (cot,) = pullback(jnp.ones(scores.shape[:1], scores.dtype))
    return cot


def resolve_target(scores_fn: Callable | None, x: Array, target: Target) -> Target:
    """Replace ``target=None`` by the argmax class of ``scores_fn(x)``, shape ``(B,)``.

    Other targets are returned unchanged. Used by methods that evaluate the model away
    from ``x`` (path points, noisy copies), so the explained class stays the one the
    model predicts for ``x`` itself.
    """
    if target is not None or scores_fn is None:
        return target
    scores = scores_fn(x)
    check_scores(scores, x.shape[0])
    return jnp.argmax(jax.lax.stop_gradient(scores), axis=1)


def input_gradient(f: Callable, x: Array, target: Target) -> tuple[Array, Array]:
    """One forward and one backward pass: ``(scores, d select(f(x), target) / dx)``."""
    scores, pullback = jax.vjp(f, x)
    check_scores(scores, x.shape[0])
    (grad,) = pullback(target_cotangent(scores, target))
    return scores, grad

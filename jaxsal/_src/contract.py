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

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Target = int | Array | np.ndarray | Callable[[Array], Array] | None


Output = Literal["input", "layer", "activation"]


@dataclasses.dataclass(frozen=True, eq=False)
class Attribution:
    """What every jaxsal factory returns: a callable value that knows what it is.

    Call it as ``attr(x, target=None, *, key=None) -> attributions``. Wrappers
    (:func:`jaxsal.smoothgrad`, ...) and metrics read its fields instead of guessing.

    Attributes:
      fn: the computation, ``fn(x, target, *, key)``.
      scores_fn: the model ``x -> (B, C)`` raw scores that the method explains. A
        wrapper that evaluates ``fn`` away from ``x`` (noisy copies, path points)
        resolves ``target=None`` once, on the clean input, with it.
      stochastic: whether ``fn`` needs a ``key``.
      output: ``"input"`` (shaped like ``x``), ``"layer"`` (a ``(B, h, w)`` map at
        the probed layer's resolution: the CAM family) or ``"activation"`` (shaped
        like the probed layer's activation: input methods at a layer,
        :func:`jaxsal.at_layer`).
      name: the method's name (a registry name, or the wrapper's around its inner
        method, e.g. ``"smoothgrad(vanilla_grad)"``).
      hyper: the hyper-parameters it was built with (read-only).

    Build one for your own function with :func:`jaxsal.attribution`. Instances
    compare and hash by identity, so they can be static arguments of ``jax.jit``.
    """

    fn: Callable[..., Array]
    scores_fn: Callable[[Array], Array] | None
    stochastic: bool = False
    output: Output = "input"
    name: str = "attribution"
    hyper: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn must be callable; got {type(self.fn).__name__}.")
        if self.scores_fn is not None and not callable(self.scores_fn):
            raise TypeError(
                f"scores_fn must be a callable x -> (B, C) or None; got {type(self.scores_fn).__name__}."
            )
        if self.output not in ("input", "layer", "activation"):
            raise ValueError(f"output must be 'input', 'layer' or 'activation'; got {self.output!r}.")
        object.__setattr__(self, "hyper", types.MappingProxyType(dict(self.hyper)))

    def __call__(self, x: Array, target: Target = None, *, key: Array | None = None) -> Array:
        return self.fn(x, target, key=key)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items() if not callable(v))
        return f"Attribution({self.name}{', ' + hyper if hyper else ''})"


def attribution(
    fn: Callable[..., Array],
    *,
    scores_fn: Callable[[Array], Array] | None,
    stochastic: bool = False,
    output: Output = "input",
    name: str | None = None,
    hyper: Mapping[str, Any] | None = None,
) -> Attribution:
    """Make ``fn(x, target=None, *, key=None)`` a jaxsal :class:`Attribution`.

    Use it to hand your own attribution function to a wrapper. ``scores_fn`` is the
    model ``x -> (B, C)`` whose scores ``fn`` explains. With ``scores_fn=None``
    wrappers refuse ``target=None``, since they could not tell which class the model
    predicts on the clean input.

    Args:
      fn: ``fn(x, target, *, key) -> attributions``.
      scores_fn: the explained model, or ``None``.
      stochastic: whether ``fn`` needs a ``key``.
      output: ``"input"``, ``"layer"`` or ``"activation"`` (see :class:`Attribution`).
      name: a name for messages and metadata (default: ``fn.__name__``).
      hyper: the hyper-parameters, for metadata.

    Example::

      def squared(x, target=None, *, key=None):
          return jaxsal.vanilla_grad(f)(x, target) ** 2

      sg = jaxsal.smoothgrad(jaxsal.attribution(squared, scores_fn=f), n=16)
    """
    if isinstance(fn, Attribution):
        fn = fn.fn
    return Attribution(
        fn,
        scores_fn,
        stochastic=bool(stochastic),
        output=output,
        name=name or getattr(fn, "__name__", "attribution"),
        hyper=hyper or {},
    )


def as_attribution(attr: Any, wrapper: str) -> Attribution:
    """``attr`` as an :class:`Attribution`, for the wrapper named ``wrapper``.

    A plain callable is accepted, but it states no score function, so the wrapper
    refuses ``target=None`` for it (:func:`resolve_target_at`) rather than resolving
    the target on the wrong input. It is treated as stochastic: it receives a key.
    """
    if isinstance(attr, Attribution):
        return attr
    if not callable(attr):
        raise TypeError(
            f"{wrapper} wraps an attribution function attr(x, target, *, key); got {type(attr).__name__}. "
            f"Example: jaxsal.{wrapper}(jaxsal.vanilla_grad(f))."
        )
    return Attribution(attr, None, stochastic=True, name=getattr(attr, "__name__", "callable"))


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


def check_baseline(baseline: Any, x: Array, hint: str = "") -> Array:
    """``baseline`` broadcast to ``x`` in ``x``'s dtype (``None``: zeros), or a clear error."""
    if baseline is None:
        return jnp.zeros_like(x)
    b = jnp.asarray(baseline)
    if not jnp.issubdtype(b.dtype, jnp.floating) and not jnp.issubdtype(b.dtype, jnp.integer):
        raise TypeError(f"baseline must be a numeric array; got dtype {b.dtype}.")
    try:
        return jnp.broadcast_to(b.astype(x.dtype), x.shape)
    except ValueError:
        raise ValueError(
            f"baseline of shape {b.shape} does not broadcast to x of shape {x.shape}{hint}; pass a "
            f"scalar, one example {x.shape[1:]}, or an array shaped like x."
        ) from None


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
    target = resolve_target(scores, target)
    idx = jnp.broadcast_to(jnp.asarray(target), (batch,))
    valid = (idx >= 0) & (idx < num_classes)
    picked = jnp.take_along_axis(scores, jnp.clip(idx, 0, num_classes - 1)[:, None], axis=1)[:, 0]
    return picked * jnp.where(valid, 1.0, jnp.nan).astype(scores.dtype)


def target_cotangent(scores: Array, target: Target) -> Array:
    """``d sum_b select(scores, target)_b / d scores``: zero for every class but the target."""
    target = resolve_target(scores, target)  # checked before tracing, so errors carry no JAX frames
    _, pullback = jax.vjp(lambda s: select(s, target), scores)
    (cot,) = pullback(jnp.ones(scores.shape[:1], scores.dtype))
    return cot


def resolve_target(scores: Array, target: Target) -> Target:
    """The one target resolver: ``target`` made explicit against ``scores (B, C)``.

    ``None`` becomes each example's top-scoring class, ``argmax_c scores`` (ties: the
    lowest index), an int array of shape ``(B,)`` with no gradient. A concrete int or
    int array is checked against ``C`` (``ValueError`` when out of range) and returned;
    a callable is returned unchanged.
    """
    if callable(target):
        return target
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(scores), axis=1)
    check_target(target, *scores.shape)
    return target


def resolve_target_at(scores_fn: Callable | None, x: Array, target: Target, *, who: str) -> Target:
    """:func:`resolve_target` with the scores of ``scores_fn(x)``, the clean input.

    Used by everything that evaluates a model away from ``x`` (path points, noisy or
    masked copies, layer perturbations), so that ``target=None`` stays the class the
    model predicts for ``x`` itself. ``who`` names the caller in errors: without a
    score function ``target=None`` cannot be resolved, and guessing it on the wrong
    input would silently change what is explained.
    """
    if target is None:
        if scores_fn is None:
            raise ValueError(
                f"{who} cannot resolve target=None: the attribution it was given is a plain function that "
                f"states no score function, so it cannot tell which class the model predicts on the clean "
                f"input. Pass an explicit target, or wrap the function: "
                f"jaxsal.attribution(fn, scores_fn=f)."
            )
        scores = scores_fn(x)
        check_scores(scores, x.shape[0])
        return resolve_target(scores, target)
    if not callable(target) and scores_fn is not None:
        check_target(target, x.shape[0], check_model(scores_fn, x))  # abstract: no forward pass
    return target


def input_gradient(f: Callable, x: Array, target: Target) -> tuple[Array, Array]:
    """One forward and one backward pass: ``(scores, d select(f(x), target) / dx)``."""
    scores, pullback = jax.vjp(f, x)
    check_scores(scores, x.shape[0])
    (grad,) = pullback(target_cotangent(scores, target))
    return scores, grad


# ----------------------------------------------------------------------------- batching


def in_batches(fn: Callable[[Array, Target], Array], x: Array, target: Target, size: int) -> Array:
    """``fn(x, target)``, computed on at most ``size`` examples at a time.

    The examples are split into consecutive chunks (the last one padded with copies of
    the first example, whose rows are dropped again), evaluated one chunk after the
    other with ``jax.lax.map``, and put back together along axis 0. ``target`` must
    already be resolved: an int array ``(B,)`` is split with ``x``; an int or a
    (row-wise) callable is passed to every chunk. Exact for methods whose examples are
    independent, which the contract requires.
    """
    b = x.shape[0]
    if size >= b:
        return fn(x, target)
    chunks = -(-b // size)
    pad = chunks * size - b

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])])
        return a.reshape((chunks, size) + a.shape[1:])

    per_example = hasattr(target, "shape") and getattr(target, "ndim", 0) == 1
    if per_example:
        out = jax.lax.map(lambda xt: fn(*xt), (split(x), split(jnp.asarray(target))))
    else:
        out = jax.lax.map(lambda xc: fn(xc, target), split(x))
    return out.reshape((chunks * size,) + out.shape[2:])[:b]

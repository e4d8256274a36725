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

Non-finite inputs: an example of ``x`` holding a ``NaN`` or ``inf`` has no meaningful
map, yet gradients through ReLUs can look finite and plausible. Every
:class:`Attribution` call therefore checks ``x``: a concrete ``x`` with a non-finite
value raises ``ValueError`` naming the example; under ``jit`` (a traced ``x``) the
map of every such example is ``NaN``, like a traced out-of-range target (the method
itself sees those values replaced by zeros, so they reach no other example).

Independence: a model that mixes the examples of a batch (BatchNorm in training
mode, ``x - x.mean(0)``) gives maps that depend on the batch-mates, and with ``B = 1``
often identically zero. :func:`check_independent` tests a model for this cheaply.
"""

from __future__ import annotations

import dataclasses
import os
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
        bad = nonfinite_rows(x)
        if bad is not None:  # traced: the method never sees the non-finite values
            x = jnp.where(jnp.isfinite(x), x, jnp.zeros((), x.dtype))
        try:
            axes = explicit_batch_axes(x)
            if axes:  # see explicit_batch_axes: the partitioner places the method's internals
                out = _with_auto_axes(self.fn, axes, x, target, key)
            else:
                out = self.fn(x, target, key=key)
        except Exception as e:  # a note naming the arguments; the error itself is unchanged
            _note_call(e, self.name, x, key)
            raise
        return out if bad is None else nan_rows(out, bad)

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


def per_example(attr: Any, *, axis_name: str | tuple[str, ...] | None = None) -> Attribution:
    """``attr`` run one example at a time, example ``i`` with the key ``fold_in(key, i)``.

    A stochastic method draws its randomness for a whole batch from one key, so its
    map of an example depends on the batch it came in. ``per_example(attr)`` removes
    that: example ``i`` of ``x`` is explained alone, as ``attr(x[i:i+1], target[i:i+1],
    key=jax.random.fold_in(key, i))``, vectorised with ``jax.vmap``. Its result for an
    example is then the same whatever the batch size, and the same whether the batch
    is split over devices or not.

    Inside ``jax.shard_map`` every device sees only its slice of the batch, and the
    local index ``i`` would restart at 0 on every shard (every shard would draw the
    same noise). Pass the mesh axis the batch is split over as ``axis_name``: example
    ``i`` of the shard is then global example ``axis_index(axis_name) * B_local + i``,
    so the sharded call draws exactly the noise of the unsharded ``per_example(attr)``
    (shards must be equal slices in mesh order, as ``in_specs=P(axis_name)`` gives).
    Under ``jax.jit`` with a sharded batch (Auto or Explicit mesh axes) no
    ``axis_name`` is needed: the call sees the whole batch.

    Deterministic methods give the same map with or without this wrapper.
    ``target=None`` is resolved per example on the clean input, as ``attr`` itself
    does. A ``batch_size`` hyper-parameter of ``attr`` then bounds the rows per
    example, not per batch.

    Args:
      attr: any jaxsal :class:`Attribution` (or a function ``attr(x, target, *, key)``).
      axis_name: the ``shard_map`` mesh axis (or tuple of axes) the batch is split
        over, or ``None`` outside ``shard_map``.

    Returns:
      ``attr(x, target=None, *, key=None)`` with the same ``output`` and ``stochastic``
      as ``attr``.

    Example::

      sg = jaxsal.per_example(jaxsal.smoothgrad(jaxsal.vanilla_grad(f), n=16), axis_name="b")
      run = jax.shard_map(lambda x, k: sg(x, key=k), mesh=mesh, in_specs=(P("b"), P()),
                          out_specs=P("b"))
      maps = jax.jit(run)(x, jax.random.key(0))  # == per_example(smoothgrad(...))(x, key=...)
    """
    inner = as_attribution(attr, "per_example")
    if axis_name is not None and not (
        isinstance(axis_name, str)
        or (isinstance(axis_name, tuple) and all(isinstance(a, str) for a in axis_name))
    ):
        raise TypeError(
            f"axis_name must be a mesh axis name (str), a tuple of them, or None; got {axis_name!r}. "
            'Example: per_example(attr, axis_name="data") inside jax.shard_map(..., in_specs=P("data")).'
        )

    def fn(x, target=None, *, key=None):
        x = check_input(x)
        b = x.shape[0]
        if inner.stochastic:
            key = check_key(key, f"per_example({inner.name})")
        offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * b
        index = offset + jnp.arange(b)
        per_row = hasattr(target, "shape") and getattr(target, "ndim", 0) == 1
        if per_row:
            target = jnp.asarray(target)
            if target.shape != (b,):
                raise ValueError(
                    f"target must be a scalar or have shape (B,) = ({b},); got shape {tuple(target.shape)}."
                )

        def one(xi, ti, i):
            ki = None if key is None else jax.random.fold_in(key, i)
            return inner(xi[None], ti[None] if per_row else target, key=ki)[0]

        return jax.vmap(one)(x, target if per_row else jnp.zeros((b,), jnp.int32), index)

    return Attribution(
        fn,
        inner.scores_fn,
        stochastic=inner.stochastic,
        output=inner.output,
        name=f"per_example({inner.name})",
        hyper={"attr": inner, "axis_name": axis_name},
    )


def explicit_batch_axes(x: Any) -> tuple[str, ...]:
    """The Explicit mesh axes (``jax.sharding.AxisType.Explicit``) that ``x`` is sharded over.

    Under an Explicit mesh every array's type carries its sharding, and operations
    whose output sharding JAX cannot infer (reshapes that merge a sample axis into the
    batch axis, gathers of rows, ``jax.lax.map`` over a sharded axis) are errors. A
    method's internal layout is no business of its caller, so :class:`Attribution`
    runs the method with these axes switched to Auto (``jax.sharding.auto_axes``): the
    partitioner places the internals, exactly as for a batch sharded over an Auto
    mesh, and the result comes back sharded along the batch like ``x``. Examples are
    independent (the contract), so the values equal the unsharded call's.
    """
    try:
        sharding = getattr(jax.typeof(x), "sharding", None)
    except TypeError:
        return ()
    mesh, spec = getattr(sharding, "mesh", None), getattr(sharding, "spec", None)
    if mesh is None or spec is None or not getattr(mesh, "axis_names", ()):
        return ()
    used = {
        a for entry in spec if entry is not None for a in (entry if isinstance(entry, tuple) else (entry,))
    }
    explicit = jax.sharding.AxisType.Explicit
    return tuple(
        a for a, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == explicit and a in used
    )


def _with_auto_axes(fn: Callable, axes: tuple[str, ...], x: Array, target: Target, key: Any) -> Array:
    """``fn(x, target, key=key)`` with the Explicit mesh ``axes`` switched to Auto inside."""
    spec = jax.sharding.PartitionSpec(jax.typeof(x).sharding.spec[0])
    array_target = isinstance(target, jax.Array)  # traced or committed: passed in, not closed over
    run = jax.sharding.auto_axes(
        lambda x, t, k: fn(x, t if array_target else target, key=k), axes=axes, out_sharding=spec
    )
    return run(x, target if array_target else None, key)


def _varying_axes(a: Any) -> set:
    """The manual mesh axes ``a`` varies over (its type's "vma"; empty outside ``shard_map``).

    JAX 0.10 keeps them in ``aval.manual_axis_type.varying``; JAX 0.6-0.9 in ``aval.vma``.
    """
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return set(getattr(mat, "varying", ()) or ())
    return set(getattr(aval, "vma", ()) or ())


def varying_like(tree: Any, ref: Any) -> Any:
    """``tree``'s arrays marked as varying over the manual mesh axes ``ref`` varies over.

    Inside ``jax.shard_map(..., check_vma=True)`` a value computed from the sharded
    batch varies over the mesh axes, while a fresh constant (``jnp.zeros(...)``) does
    not; loop carries and differentiated zeros must match the values they meet. Outside
    ``shard_map`` this returns ``tree`` unchanged.
    """
    want = _varying_axes(ref)
    if not want:
        return tree

    def cast(a):
        missing = tuple(sorted(want - _varying_axes(a)))
        return jax.lax.pcast(a, missing, to="varying") if missing else a

    return jax.tree.map(cast, tree)


# ----------------------------------------------------------------------------- non-finite inputs


def nonfinite_rows(x: Any) -> Array | None:
    """``None`` when ``x`` needs no masking; raises for a concrete non-finite ``x``.

    A concrete floating ``x`` (NumPy or a committed ``jax.Array``) with a ``NaN`` or
    ``inf`` raises ``ValueError`` naming the first examples concerned. For a traced
    ``x`` it returns the boolean ``(B,)`` mask of examples with a non-finite value,
    whose maps :func:`nan_rows` sets to ``NaN``. Anything that is not a floating array
    of rank >= 1 is left to :func:`check_input`.
    """
    dtype = getattr(x, "dtype", None)
    shape = getattr(x, "shape", None)
    if dtype is None or shape is None or len(shape) < 1:
        return None
    try:
        if not jnp.issubdtype(dtype, jnp.floating):
            return None
    except TypeError:  # not a NumPy/JAX dtype
        return None
    if _is_tracer(x):
        return ~jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))
    if isinstance(x, jax.Array):
        # eagerly, on x's device, even when a concrete x is closed over inside a jit trace
        with jax.ensure_compile_time_eval():
            finite = np.asarray(jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))))
    else:
        a = np.asarray(x)
        finite = np.isfinite(a).reshape(a.shape[0], -1).all(axis=1) if a.size else np.ones(a.shape[0], bool)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(
            f"x has NaN or inf values in example{'s' if bad.size > 1 else ''} {shown} (of {finite.size}); "
            "an attribution of a non-finite input means nothing. Fix or drop those examples, e.g. "
            "`x[jnp.all(jnp.isfinite(x.reshape(len(x), -1)), axis=1)]`."
        )
    return None


def nan_rows(out: Array, bad: Array) -> Array:
    """``out`` with the examples where ``bad`` (shape ``(B,)``) is true set to ``NaN``."""
    if (
        getattr(out, "ndim", 0) < 1
        or out.shape[0] != bad.shape[0]
        or not jnp.issubdtype(out.dtype, jnp.floating)
    ):
        return out
    return jnp.where(bad.reshape(bad.shape + (1,) * (out.ndim - 1)), jnp.asarray(jnp.nan, out.dtype), out)


def _note_call(e: BaseException, name: str, x: Any, key: Any) -> None:
    """Add a note naming the arguments to an error raised deep inside the model or JAX."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        return  # jaxsal's own message already names the argument
    shape = getattr(x, "shape", None)
    hint = (
        f"jaxsal: the error above was raised inside the model, while computing {name} for x of shape "
        f"{tuple(shape) if shape is not None else type(x).__name__}. x must be a batch (B, ...) the model "
        "accepts: for one example pass x[None]."
    )
    kshape = getattr(key, "shape", None)
    if kshape not in (None, (), (2,)):
        hint += f" key must be one PRNG key (jax.random.key(seed)), not an array of shape {tuple(kshape)}."
    e.add_note(hint)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def check_independent(
    f: Callable[[Array], Array], x: Array, *, atol: float | None = None, rtol: float | None = None
) -> None:
    r"""Check that ``f`` treats the examples of a batch independently; raise if it does not.

    jaxsal reads per-example gradients off the summed objective
    :math:`\sum_b S_{c_b}(x)_b`, which is exact only when example ``b``'s scores depend
    on ``x_b`` alone. Models in training mode (BatchNorm with batch statistics) or
    that normalise across the batch (``x - x.mean(0)``) break this silently: each map
    then depends on its batch-mates, and with ``B = 1`` it can be identically zero.

    The check compares, for every example ``b``, the scores and the input gradient of
    its top class computed three ways: in the batch ``x``; alone, ``x[b:b+1]``; and in
    a batch padded with other examples (``0.5 - x[::-1]``, so that even ``B = 1`` is
    tested; "alone" is ``jax.vmap`` over single-example batches). It costs about three
    forward and backward passes of the batch and one compilation: call it once, on a
    small batch, when you wire up a model.

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``.
      x: a batch of example inputs (floating, finite).
      atol: absolute tolerance of the comparison ``|a - b| <= atol + rtol |b|``;
        default ``rtol * max |b|`` (per compared quantity).
      rtol: relative tolerance; default ``sqrt(eps)`` of ``x``'s dtype.

    Raises:
      ValueError: ``f`` mixes examples; the message names the example and the gap.

    Example::

      jaxsal.check_independent(lambda x: model.apply(variables, x, train=False), x[:4])
    """
    check_callable(f)
    x = check_input(x)
    nonfinite_rows(x)
    b = x.shape[0]
    if b == 0:
        return

    def scores_and_grad(inp: Array, rows: int, cls: Array | None) -> tuple[Array, Array, Array]:
        s, pullback = jax.vjp(f, inp)
        check_scores(s, inp.shape[0])
        c = jnp.argmax(s[:rows], axis=1) if cls is None else cls
        cot = jnp.zeros_like(s).at[jnp.arange(rows), c].set(1)
        (g,) = pullback(cot)
        return s[:rows], g[:rows], c

    @jax.jit
    def three_ways(x):
        s_batch, g_batch, cls = scores_and_grad(x, b, None)
        pad = (jnp.asarray(0.5, x.dtype) - x[::-1]).astype(x.dtype)
        s_pad, g_pad, _ = scores_and_grad(jnp.concatenate([x, pad]), b, cls)

        def alone(xi, ci):  # vmap: each example is its own batch of one
            s, g, _ = scores_and_grad(xi[None], 1, ci[None])
            return s[0], g[0]

        s_alone, g_alone = jax.vmap(alone)(x, cls)
        return s_batch, g_batch, s_pad, g_pad, s_alone, g_alone

    s_batch, g_batch, s_pad, g_pad, s_alone, g_alone = three_ways(x)
    eps = float(jnp.finfo(x.dtype).eps)
    rtol = eps**0.5 if rtol is None else float(rtol)
    for what, ref, others in (
        ("scores", s_alone, (("in the batch", s_batch), ("next to other examples", s_pad))),
        ("input gradients", g_alone, (("in the batch", g_batch), ("next to other examples", g_pad))),
    ):
        ref64 = np.asarray(ref, np.float64).reshape(b, -1)
        tol = (rtol * float(np.max(np.abs(ref64))) if atol is None else float(atol)) + rtol * np.abs(ref64)
        for where, other in others:
            gap = np.abs(np.asarray(other, np.float64).reshape(b, -1) - ref64) - tol
            if (gap > 0).any():
                i = int(np.argmax(gap.max(axis=1)))
                diff = float(np.max(np.abs(np.asarray(other, np.float64).reshape(b, -1)[i] - ref64[i])))
                raise ValueError(
                    f"f mixes the examples of a batch: example {i}'s {what} differ by {diff:.3g} between "
                    f"evaluating it alone and {where}. jaxsal's maps would depend on the batch-mates (and "
                    "can be all zero for B = 1). Use the model in inference mode (e.g. BatchNorm with "
                    "use_running_average=True / train=False) and do not normalise across the batch axis."
                )


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
    single = () if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else (2,)
    if tuple(key.shape) != single:
        raise ValueError(
            f"key must be one PRNG key (jax.random.key(seed)); got an array of keys of shape "
            f"{tuple(key.shape)}. One key serves the whole batch; to run several keys use "
            f"jax.vmap(lambda k: attr(x, target, key=k))(keys)."
        )
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
    picked, pullback = jax.vjp(lambda s: select(s, target), scores)
    # ones_like of the primal output: the seed carries its sharding (Explicit mesh
    # axes) and its varying manual axes (inside shard_map with check_vma=True).
    (cot,) = pullback(jnp.ones_like(picked))
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
    independent, which the contract requires (:func:`check_independent` checks a model).
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

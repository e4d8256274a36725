"""Dataset-scale attribution: :func:`explain_dataset` streams a method's maps to a store.

The dataset is cut into chunks of ``batch_size`` consecutive examples. Each chunk is
read from the source, sharded over the mesh's data axis, explained, and written to
its own files of the Zarr store (:mod:`jaxsal._src.store`); then its completion
counter is committed. Only one or two batches are ever in memory.

Why each example's result does not depend on how the work is cut:

* **Keys.** Example ``i`` gets the key ``jax.random.fold_in(key, i)`` and the method
  is called on it alone: ``jax.vmap`` over ``(x[i][None], target[i][None], key_i)``.
  So a stochastic method (SmoothGrad) draws for example ``i`` the same noise whatever
  the batch size, the number of devices or processes, and across resumption.
* **Targets.** ``targets=None`` is each example's top class, resolved on the clean
  input with ``attr.scores_fn`` (per example as well).
* **Shapes.** The last chunk is padded to the full batch (copies of its last row,
  dropped again), so every chunk runs the same compiled program. A resumed run
  recomputes a chunk bit for bit as the uninterrupted run would have.

Under a different batch size or device count XLA may order a reduction (a
convolution's sum over channels) differently, so maps agree to float rounding
(about 1e-7 relative in float32), not necessarily bit for bit.

Multiple hosts: after ``jax.distributed.initialize`` every process runs the same
call. Chunk ``c`` belongs to process ``c % P``; each process reads only its own
examples and writes only its own chunk files. Process 0 creates the store, and all
meet at a barrier (``multihost_utils.sync_global_devices``) before writing and again
at the end. The default mesh is the process's *local* devices
(``jax.local_devices()``), not the global ``jax.devices()``: examples are
independent, so no collective is needed, and with local meshes each process runs
only as many steps as it has chunks, with no lock-step between processes (a global
mesh would make every process join every step, and idle ones feed dummy batches).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src import store as _store

Array = jax.Array

# ----------------------------------------------------------------------------- sources


class Source:
    """A dataset seen as ``N`` examples, read a range at a time.

    Accepts a NumPy (or JAX) array ``(N, ...)``; a sequence with ``__len__`` and
    ``__getitem__`` whose items are an image, an ``(image, label)`` pair or a mapping
    with ``"image"`` and ``"label"`` keys (a Grain ``MapDataset`` is such a sequence).
    """

    def __init__(self, source: Any):
        self._array = None
        if isinstance(source, Source):
            self.__dict__.update(source.__dict__)
            return
        if isinstance(source, (np.ndarray, jax.Array)):
            if source.ndim < 1:
                raise TypeError(
                    f"source must be an array (N, ...) of examples; got a scalar of shape {source.shape}."
                )
            self._array = source
            self._seq = None
            self._len = int(source.shape[0])
        elif (
            hasattr(source, "__len__")
            and hasattr(source, "__getitem__")
            and not isinstance(source, (str, bytes))
        ):
            self._seq = source
            self._len = int(len(source))
        else:
            raise TypeError(
                "source must be a NumPy array (N, ...), a sequence with __len__ and __getitem__ returning an "
                f"image or (image, label), or a Grain MapDataset; got {type(source).__name__}."
            )
        self.has_labels = False
        if self._len and self._seq is not None:
            _, label = self._split(self._seq[0], 0)
            self.has_labels = label is not None

    def __len__(self) -> int:
        return self._len

    @staticmethod
    def _split(item: Any, i: int) -> tuple[Any, Any]:
        if isinstance(item, Mapping):
            if "image" not in item:
                raise ValueError(
                    f"source[{i}] is a mapping without an 'image' key (keys: {sorted(map(str, item))}); "
                    "items must be an image, (image, label) or {'image': ..., 'label': ...}."
                )
            return item["image"], item.get("label")
        if isinstance(item, tuple) and len(item) == 2:
            return item
        return item, None

    def example(self, i: int) -> np.ndarray:
        """The input of example ``i`` as a NumPy array."""
        if self._array is not None:
            return np.asarray(self._array[i])
        return np.asarray(self._split(self._seq[i], i)[0])

    def read(self, start: int, stop: int, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Inputs ``(stop - start, *shape)`` and labels (or ``None``) of rows ``start:stop``.

        Raises:
          ValueError: an example's shape differs from ``shape`` (the message names it).
        """
        shape = tuple(shape)
        if self._array is not None:
            x = np.asarray(self._array[start:stop])
            if x.shape[1:] != shape:  # only when the store was made from another source
                raise ValueError(
                    f"source examples have shape {x.shape[1:]} but the store holds examples of shape {shape}."
                )
            return x, None
        xs, labels = [], []
        for i in range(start, stop):
            img, label = self._split(self._seq[i], i)
            img = np.asarray(img)
            if img.shape != shape:
                raise ValueError(
                    f"source[{i}] has shape {img.shape} but source[0] has shape {shape}; every example must "
                    "have one shape (resize or crop them first, e.g. with jaxsal.models.preprocess)."
                )
            xs.append(img)
            labels.append(label)
        if self.has_labels:
            if any(lb is None for lb in labels):
                i = start + next(j for j, lb in enumerate(labels) if lb is None)
                raise ValueError(
                    f"source[{i}] has no label, but source[0] has one; give every example a label."
                )
            lab = np.asarray([np.asarray(lb).reshape(()) for lb in labels])
        else:
            lab = None
        return np.stack(xs), lab


def as_source(source: Any) -> Source:
    """``source`` as a :class:`Source` (see :func:`explain_dataset`)."""
    return Source(source)


# ----------------------------------------------------------------------------- metadata


def json_safe(value: Any) -> Any:
    """``value`` as JSON: arrays by shape, dtype and sha256; callables by qualified name."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return json_safe(value.item())
    if isinstance(value, contract.Attribution):
        return {"attribution": value.name, "hyper": json_safe(dict(value.hyper))}
    if isinstance(value, (np.ndarray, jax.Array)):
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        a = np.asarray(value)
        return {"array_sha256": _sha(a), "shape": list(a.shape), "dtype": str(a.dtype)}
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if callable(value):
        return {
            "callable": f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
        }
    return repr(value)


def _sha(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


_LIBRARY_PREFIXES = ("jax.", "jaxlib", "flax.", "numpy", "optax", "builtins", "functools", "equinox")


def model_arrays(attr: contract.Attribution, max_depth: int = 8) -> list[np.ndarray]:
    """The arrays ``attr`` closes over: the model's variables and any array hyper-parameters.

    Walks, from ``attr.scores_fn`` and ``attr.fn``, closure cells, the module
    globals a function reads, default arguments, bound methods' ``self``, ``functools.partial`` arguments, dataclass
    fields (probes, Flax modules) and containers, in a fixed order, and collects the
    NumPy and JAX arrays found (once each). Code of JAX, Flax or NumPy themselves is
    not entered. A Flax NNX module contributes its state.
    """
    found: list[np.ndarray] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if (
            depth > max_depth
            or id(obj) in seen
            or obj is None
            or isinstance(obj, (str, bytes, int, float, bool))
        ):
            return
        seen.add(id(obj))
        if isinstance(obj, (np.ndarray, jax.Array)):
            if isinstance(obj, jax.core.Tracer):
                return
            if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
                obj = jax.random.key_data(obj)
            found.append(np.asarray(obj))
            return
        if isinstance(obj, (types.ModuleType, type)):
            return
        mod = type(obj).__module__ or ""
        if mod.startswith("flax.nnx") or any(
            c.__module__.startswith("flax.nnx") for c in type(obj).__mro__[1:]
        ):
            try:
                from flax import nnx

                if isinstance(obj, nnx.Module):
                    for leaf in jax.tree_util.tree_leaves(nnx.state(obj)):
                        visit(leaf, depth + 1)
                    return
            except Exception:  # pragma: no cover - an NNX without nnx.state
                pass
        if isinstance(obj, Mapping):
            for k in sorted(obj, key=str):
                visit(obj[k], depth + 1)
            return
        if isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v, depth + 1)
            return
        if isinstance(obj, functools.partial):
            visit(obj.func, depth + 1)
            visit(obj.args, depth + 1)
            visit(dict(obj.keywords), depth + 1)
            return
        if isinstance(obj, types.MethodType):
            visit(obj.__self__, depth + 1)
            visit(obj.__func__, depth + 1)
            return
        if isinstance(obj, types.FunctionType):
            if (obj.__module__ or "").startswith(_LIBRARY_PREFIXES):
                return
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
            visit(obj.__defaults__, depth + 1)
            visit(obj.__kwdefaults__, depth + 1)
            glob = (
                {} if (obj.__module__ or "").startswith("jaxsal") else obj.__globals__
            )  # the user's code only
            for name in _global_names(obj.__code__):
                if name in glob:
                    visit(glob[name], depth + 1)
            return
        if dataclasses.is_dataclass(obj):
            for field in dataclasses.fields(obj):
                visit(getattr(obj, field.name, None), depth + 1)

    if isinstance(attr, contract.Attribution):
        visit(attr.scores_fn, 0)
        visit(attr.fn, 0)
        visit(dict(attr.hyper), 0)
    return found


def _global_names(code: types.CodeType) -> list[str]:
    """Global names read by ``code`` and by the functions defined inside it, in order."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return list(dict.fromkeys(names))


def fingerprint_of(attr: contract.Attribution) -> str | None:
    """sha256 over the arrays of :func:`model_arrays` (``None`` when there are none)."""
    arrays = model_arrays(attr)
    if not arrays:
        return None
    h = hashlib.sha256()
    for a in arrays:
        h.update(_sha(a).encode())
    return h.hexdigest()


# Fields compared on resume, in the order they are reported.
_COMPARED = (
    "method",
    "hyper",
    "model_fingerprint",
    "key",
    "n",
    "example_shape",
    "dtype",
    "batch_size",
    "targets",
    "output",
)


def _meta_mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    for field in _COMPARED:
        if json.dumps(old.get(field), sort_keys=True) != json.dumps(new.get(field), sort_keys=True):
            return field
    return None


# ----------------------------------------------------------------------------- checks


def _check_out(out: Any) -> str:
    """``out`` as a path, checked to be a place a store can be written."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(
            f"out must be a path (str or os.PathLike) of the store's folder; got {type(out).__name__}."
        )
    path = os.fspath(out)
    if not path:
        raise ValueError("out is empty; give the store's folder, e.g. 'run.zarr'.")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(
            f"out {path!r} is a file, not a store folder; choose another path or remove it."
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a folder" if os.path.exists(parent) else "does not exist"
        raise FileNotFoundError(f"out {path!r}: its folder {parent!r} {what}; create it first.")
    for folder in [parent] + ([path] if os.path.isdir(path) else []):
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".jaxsal-probe-"):
                pass
        except OSError as e:
            raise PermissionError(f"out {path!r}: cannot write in {folder!r} ({e.strerror or e}).") from None
    if os.path.isdir(path) and os.listdir(path) and not _store.is_store(path):
        raise FileExistsError(
            f"out {path!r} is a folder that holds something else than a store; choose another path or empty it."
        )
    return path


def _key_fields(key: Any) -> tuple[Array | None, Any]:
    if key is None:
        return None, None
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        typed = key
    elif key.dtype == jnp.uint32 and key.shape == (2,):
        typed = jax.random.wrap_key_data(key)
    else:
        raise TypeError(
            f"key must be a PRNG key (jax.random.key(seed)); got an array of dtype {key.dtype} and shape {key.shape}."
        )
    if typed.shape != ():
        raise ValueError(
            f"key must be one PRNG key (jax.random.key(seed)); got an array of keys of shape {typed.shape}."
        )
    data = np.asarray(jax.random.key_data(typed)).tolist()
    return typed, {"impl": str(jax.random.key_impl(typed)), "data": data}


def _targets_spec(targets: Any, n: int, src: Source) -> tuple[str, np.ndarray | None, Any]:
    """``(mode, array, metadata)`` for ``targets``: ``"top"``, ``"label"`` or ``"given"``."""
    if targets is None:
        return "top", None, "top"
    if isinstance(targets, str):
        if targets != "label":
            raise ValueError(
                f"targets must be None, 'label' or an int array (N,); got the string {targets!r}."
            )
        if not src.has_labels:
            raise ValueError(
                "targets='label' but the source has no labels: its items are images, not (image, label) pairs. "
                "Pass a sequence of (image, label), or targets=labels (an int array of shape (N,)), or "
                "targets=None for the top class."
            )
        return "label", None, "label"
    if isinstance(targets, bool):
        raise TypeError("targets must be None, 'label' or an int array of shape (N,); got a bool.")
    if isinstance(targets, (int, np.integer)):
        targets = np.full(n, int(targets))
    t = np.asarray(targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(
            f"targets must hold integer class indices; got dtype {t.dtype}. Use targets.astype(int)."
        )
    if t.shape != (n,):
        raise ValueError(
            f"targets must have shape (N,) = ({n},), one class per example of the source; got shape {t.shape}."
        )
    i32 = np.iinfo(np.int32)
    if t.size and (t.min() < i32.min or t.max() > i32.max):  # would wrap in the int32 cast below
        bad = t.min() if t.min() < i32.min else t.max()
        raise ValueError(
            f"targets holds the class index {int(bad)}, out of range; use 0 <= target < classes."
        )
    t = t.astype(np.int32)
    return "given", t, {"array_sha256": _sha(t)}


def _check_range(t: np.ndarray, classes: int, start: int, what: str) -> None:
    bad = (t < 0) | (t >= classes)
    if bad.any():
        i = start + int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} of example {i} is {int(t[i - start])}, out of range for {classes} classes; "
            f"use 0 <= target < {classes}."
        )


def _default_mesh(mesh: Any) -> tuple[jax.sharding.Mesh, str]:
    if mesh is None:
        return jax.sharding.Mesh(np.array(jax.local_devices()), ("data",)), "data"
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (or None: every local device); got {type(mesh).__name__}."
        )
    axis = "data" if "data" in mesh.axis_names else mesh.axis_names[0]
    local = {d.id for d in jax.local_devices()}
    if any(d.id not in local for d in mesh.devices.flat):
        raise ValueError(
            "mesh must hold only this process's devices (jax.local_devices()): every process explains its own "
            "chunks on its own devices. Build it from jax.local_devices(), or pass mesh=None."
        )
    return mesh, axis


# ----------------------------------------------------------------------------- compute


@functools.lru_cache(maxsize=16)
def _make_step(attr: contract.Attribution, given: bool, sharding: Any) -> Callable:
    """The jitted step ``(x, t, idx, key) -> (maps, scores, pred, targets)`` for one batch.

    Cached per attribution (by identity) and sharding, so that resuming or writing
    several stores with one ``attr`` in a process compiles once.
    """
    scores_fn = attr.scores_fn

    def one(x_i, t_i, k_i, use_given):
        s = scores_fn(x_i[None])
        pred = jnp.argmax(s, axis=1).astype(jnp.int32)
        t = t_i[None] if use_given else pred
        m = attr(x_i[None], t, key=k_i)
        return m[0], s[0], pred[0], t[0]

    def step(x, t, idx, key):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
        return jax.vmap(functools.partial(one, use_given=given))(x, t, keys)

    return jax.jit(step, in_shardings=(sharding, sharding, sharding, None))


# ----------------------------------------------------------------------------- the entry point


def explain_dataset(
    attr: contract.Attribution,
    source: Any,
    out: str | os.PathLike,
    *,
    batch_size: int = 64,
    targets: Any = None,
    key: Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
    overwrite: bool = False,
    progress: bool = True,
    fingerprint: str | None = None,
) -> _store.Store:
    """Explain every example of a dataset and stream the maps to a resumable Zarr store.

    Example ``i`` is explained alone, with key ``jax.random.fold_in(key, i)`` and (for
    ``targets=None``) its top class on the clean input, so its map does not depend on
    the batch size, the devices, the processes or on resumption (module docstring).
    Chunks of ``batch_size`` rows are read from ``source``, sharded over the mesh's
    data axis with ``NamedSharding``, explained and written; memory holds one or two
    batches, whatever ``N``. Kill the process at any moment and run the same call
    again: it computes only the chunks not yet committed, bit for bit as the
    uninterrupted run would. After ``jax.distributed.initialize``, run the same call
    in every process: chunk ``c`` is computed and written by process ``c % P``.

    Args:
      attr: a jaxsal attribution (:class:`jaxsal.Attribution`) with a ``scores_fn``.
      source: a NumPy array ``(N, ...)`` of inputs, or a sequence (``__len__``,
        ``__getitem__``; e.g. a Grain ``MapDataset``) of images, ``(image, label)``
        pairs or ``{"image", "label"}`` mappings. Examples must share one shape and a
        floating dtype (preprocess them first).
      out: the store's folder (e.g. ``"run.zarr"``); its parent folder must exist.
      batch_size: examples per chunk and per compiled step, at least 1. A resumed
        run must use the same value.
      targets: ``None`` (each example's top class), ``"label"`` (the source's
        labels) or an int array ``(N,)``.
      key: PRNG key (``jax.random.key(seed)``); required for stochastic methods.
      mesh: the devices to shard each batch over (its ``"data"`` axis, or its first
        axis); default every local device of this process (``jax.local_devices()``).
      overwrite: replace an existing store made by a different call, instead of
        refusing it.
      progress: show a tqdm bar (examples/s and ETA) on stderr.
      fingerprint: a string identifying the model, stored and compared instead of
        the sha256 of the arrays ``attr`` closes over (give one when the model's
        variables are not reachable from ``attr``, e.g. they live on a server).

    Returns:
      The :class:`jaxsal.Store` at ``out``, complete.

    Raises:
      ValueError: an existing store at ``out`` was made with another method,
        hyper-parameters, model, key, ``N``, shape, batch size or targets (the field
        is named; pass ``overwrite=True`` to replace it); an empty source; examples
        of different shapes (the index is named); ``targets="label"`` without labels;
        targets of the wrong length or out of range; ``batch_size < 1``.
      TypeError: ``attr`` is not an attribution, or a non-floating source.
      OSError: ``out`` cannot be written (checked before anything is computed).

    In every error case an existing store is left as it was: chunks already
    committed stay committed and nothing else is changed.
    """
    # ---- arguments, all checked before the store is touched or anything is compiled
    if not isinstance(attr, contract.Attribution):
        raise TypeError(
            f"attr must be a jaxsal attribution (e.g. jaxsal.vanilla_grad(f)); got {type(attr).__name__}. "
            "Wrap your own function with jaxsal.attribution(fn, scores_fn=f)."
        )
    if attr.scores_fn is None:
        raise ValueError(
            f"attr ({attr.name}) states no scores_fn, so the store's scores and top classes cannot be computed; "
            "build it with jaxsal.attribution(fn, scores_fn=f)."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}.")
    batch_size = int(batch_size)
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise TypeError(f"fingerprint must be a string or None; got {type(fingerprint).__name__}.")
    typed_key, key_meta = _key_fields(key)
    if attr.stochastic and typed_key is None:
        raise ValueError(f"{attr.name} is stochastic and needs key=jax.random.key(seed).")
    path = _check_out(out)
    src = as_source(source)
    n = len(src)
    if n == 0:
        raise ValueError("source is empty: it has no examples to explain; pass a dataset with at least one.")
    x0 = src.example(0)
    if not np.issubdtype(x0.dtype, np.floating):
        raise TypeError(
            f"source examples must be floating images; source[0] has dtype {x0.dtype}. Convert and normalise them "
            "first (e.g. jaxsal.models.preprocess, or x.astype(np.float32) / 255)."
        )
    shape = tuple(int(d) for d in x0.shape)
    mode, given, targets_meta = _targets_spec(targets, n, src)
    mesh, axis = _default_mesh(mesh)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    devices = int(mesh.shape[axis])
    rows = -(-batch_size // devices) * devices  # the compiled batch: a multiple of the devices

    import jaxsal

    meta = {
        "format": _store.FORMAT,
        "method": attr.name,
        "hyper": json.loads(json.dumps(json_safe(dict(attr.hyper)))),
        "output": attr.output,
        "jaxsal_version": jaxsal.__version__,
        "model_fingerprint": fingerprint if fingerprint is not None else fingerprint_of(attr),
        "fingerprint_source": "given" if fingerprint is not None else "closure arrays (sha256)",
        "key": key_meta,
        "n": n,
        "batch_size": batch_size,
        "example_shape": list(shape),
        "dtype": str(np.dtype(x0.dtype)),
        "targets": targets_meta,
    }

    # ---- the store: every process checks an existing one (read-only) before anyone changes it
    create, field = True, None
    if _store.is_store(path) and not overwrite:
        try:
            old = _store.open_store(path)
        except ValueError as e:
            raise ValueError(f"out {path!r}: {e} Pass overwrite=True to replace it.") from None
        field = _meta_mismatch(old.metadata, meta)
        if field is not None and field != "targets":  # targets: after their own checks below
            _refuse(path, field, old.metadata, meta)
        create = False
    # ---- shapes of the outputs, without computing anything
    probe = jax.ShapeDtypeStruct((rows, *shape), x0.dtype)
    step = _make_step(attr, mode != "top", sharding)
    key_arg = typed_key if typed_key is not None else jax.random.key(0)
    abstract = jax.eval_shape(
        step,
        probe,
        jax.ShapeDtypeStruct((rows,), jnp.int32),
        jax.ShapeDtypeStruct((rows,), jnp.int32),
        key_arg,
    )
    out_shape, out_dtype = tuple(abstract[0].shape[1:]), abstract[0].dtype
    classes, scores_dtype = int(abstract[1].shape[1]), abstract[1].dtype
    if given is not None:
        _check_range(given, classes, 0, "targets")
    if not create and field is not None:  # after the checks of this call's own arguments
        _refuse(path, field, old.metadata, meta)

    meta.update(
        output_shape=list(out_shape),
        output_dtype=str(np.dtype(out_dtype)),
        scores_dtype=str(np.dtype(scores_dtype)),
        classes=classes,
    )

    pid, nproc = jax.process_index(), jax.process_count()
    if create and pid == 0:
        _store.create_store(path, meta, out_shape, out_dtype, classes)
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxsal.explain_dataset: {path} created")
    import zarr

    group = zarr.open_group(path, mode="r+")
    arrays = {name: group[name] for name in (*_store.DATA_ARRAYS, "done")}
    done = np.asarray(arrays["done"][:])
    chunks = len(done)
    todo = [c for c in range(pid, chunks, nproc) if done[c] == 0]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(min(batch_size, n - c * batch_size) for c in todo)
        bar = tqdm(total=total, desc=f"jaxsal {attr.name}", unit="img", file=sys.stderr, disable=pid != 0)

    def read(c: int):
        start, stop = c * batch_size, min((c + 1) * batch_size, n)
        x, labels = src.read(start, stop, shape)
        if x.dtype != x0.dtype:
            x = x.astype(x0.dtype)
        if mode == "label":
            t = labels.astype(np.int32)
            _check_range(t, classes, start, "the label")
        elif mode == "given":
            t = given[start:stop]
        else:
            t = np.zeros(stop - start, np.int32)
        idx = np.arange(start, stop, dtype=np.int32)
        pad = rows - (stop - start)  # repeat the last row: same shapes every chunk
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
            t = np.concatenate([t, np.repeat(t[-1:], pad)])
            idx = np.concatenate([idx, np.repeat(idx[-1:], pad)])
        return start, stop, x, t, idx

    def write(c: int, start: int, stop: int, result) -> None:
        maps, scores, pred, t = (np.asarray(r)[: stop - start] for r in result)
        arrays["attributions"][start:stop] = maps
        arrays["scores"][start:stop] = scores
        arrays["pred"][start:stop] = pred
        arrays["targets"][start:stop] = t
        # commit: only now does the chunk count as done (a counter, so a second commit shows)
        arrays["done"][c : c + 1] = np.asarray(arrays["done"][c : c + 1]) + np.uint8(1)
        if bar is not None:
            bar.update(stop - start)

    try:
        pending = None
        for c in todo:
            try:
                start, stop, x, t, idx = read(c)
            except BaseException:  # a bad example ahead: keep the chunk already computed
                if pending is not None:
                    write(*pending)
                raise
            result = step(x, t, idx, key_arg)  # dispatched asynchronously
            if pending is not None:
                write(*pending)  # the previous chunk is written while this one computes
            pending = (c, start, stop, result)
        if pending is not None:
            write(*pending)
    finally:
        if bar is not None:
            bar.close()
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxsal.explain_dataset: {path} written")
    return _store.open_store(path)


def _refuse(path: str, field: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    raise ValueError(
        f"out {path!r} holds a store made with a different {field} "
        f"(stored: {_short(old.get(field))}; this call: {_short(new.get(field))}). "
        "Pass overwrite=True to replace it, or write to another path."
    )


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."

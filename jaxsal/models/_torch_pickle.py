"""Read PyTorch ``.pth`` state_dicts safely, without torch and without :mod:`pickle`.

A PyTorch checkpoint is a pickle, and unpickling runs whatever callables the file
names. :func:`load_state_dict` never hands the file to :mod:`pickle`: it runs its own
small interpreter of the pickle opcodes a state_dict needs (decoded with
:func:`pickletools.genops`), in the spirit of ``torch.load(weights_only=True)``'s
allow-list unpickler, and stricter than it:

* **one read, one hash.** The file is read once into memory (regular files only: a
  FIFO or a device is refused before it is read), the optional sha256 is computed on
  those bytes, and only those bytes are parsed, so a file swapped after the check is
  never used.
* **an allow-list of globals**, each resolved to a *fresh, immutable* stand-in made
  for this load only: ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
  ``torch._utils._rebuild_parameter`` and the ``torch.*Storage`` types. Any other
  global (``os.system``, ``builtins.eval``, a user class, ...) is refused with
  :class:`UnsafePickleError` *before* anything is imported or called.
* **an allow-list of opcodes.** ``INST``, ``OBJ``, ``NEWOBJ``, extension codes, sets
  and out-of-band buffers are refused. ``BUILD`` is accepted only on an
  ``OrderedDict`` this load made (its state, e.g. ``_metadata``, is read and
  dropped, never set as attributes); ``SETITEM``/``APPEND`` only on the plain dicts
  and lists this load made, and only while they are not yet inside another object.
  So no stand-in can be mutated and no object can contain itself.
* **bounds before anything recursive touches the data**: opcode count, nesting
  depth, container and string sizes, memo size, integer size.
* **bounds on tensors**: size and stride non-negative; the elements a tensor
  addresses, ``offset + sum((size_k - 1) stride_k)``, inside its storage, and no
  more elements than the storage holds (so a zero stride cannot turn 4 bytes into
  gigabytes); the storages declared must fit in the file; all tensors together at
  most :data:`MAX_OUTPUT_RATIO` times the storage bytes.
* **zip checks**: unique member names, no absolute paths, drive letters,
  backslashes or ``..``; stored (uncompressed) members only, as ``torch.save``
  writes them, so a compressed "zip bomb" is refused before it is inflated; the
  declared member sizes must fit in the file.

Every problem with the file's contents raises :class:`CheckpointError` (a
``ValueError``) or a subclass: :class:`UnsafePickleError` (a refused global, opcode
or mutation) and :class:`ChecksumError` (wrong sha256).

Two on-disk formats are supported:

* **zip** (``torch.save`` since PyTorch 1.6): a zip archive with ``<prefix>/data.pkl``
  (the object pickle) and ``<prefix>/data/<key>`` (raw little-endian storage bytes,
  unless ``<prefix>/byteorder`` says ``big``).
* **legacy** (before 1.6, or ``_use_new_zipfile_serialization=False``): five
  concatenated pieces: the pickled magic number ``0x1950a86a20f9469cfc6c``, the
  pickled protocol version ``1001``, a pickled ``sys_info`` dict, the object pickle,
  the pickled list of storage keys, then for each key an ``int64`` element count
  followed by the raw storage bytes.

In both formats a tensor is pickled as ``_rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks[, metadata])`` with the storage given by a persistent id
``("storage", StorageType, key, location, numel[, view_metadata])``. Tensors are
rebuilt with :func:`numpy.lib.stride_tricks.as_strided` after the bounds checks and
copied into fresh, C-contiguous, native-endian arrays.

Why not safetensors: jaxsal could cache the verified weights as ``.safetensors``
after the first verified load, but it does not. The verified read of the bundled
EfficientNet-Lite0 ``.pth`` (18.8 MB) already takes well under a second, so a cache
would save nothing that matters; a second file in a user-writable cache would itself
need verifying on every load (an attacker who can write the cache could replace it,
and its hash would have to be stored somewhere just as writable); and it would add a
dependency. The reader above parses no more than a safetensors header parser would
have to trust, with every size checked. Files that already are safetensors can be
read with the ``safetensors`` package directly.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import pickletools
import stat
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "CheckpointError",
    "UnsafePickleError",
    "ChecksumError",
    "load_state_dict",
    "save_state_dict",
    "sha256_of",
    "verify_sha256",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Bounds on one pickle. A real state_dict stays far below each of them (EfficientNet-
# Lite0: ~9,000 opcodes, depth 4; VGG-16: ~600 opcodes).
MAX_OPCODES = 5_000_000
MAX_DEPTH = 32  # nesting of tuples/lists/dicts (a state_dict needs 4)
MAX_MARKS = 32  # open MARKs at once
MAX_CONTAINER = 1_000_000  # items in one tuple/list/dict
MAX_STRING = 1 << 20  # characters in one string, bytes in one bytes object
MAX_MEMO = 5_000_000
MAX_INT_BITS = 128  # the legacy magic number has 80
MAX_DIMS = 64
#: All tensors together may hold at most this many times the bytes of the storages
#: they view (views of one storage may overlap: tied weights, transposes).
MAX_OUTPUT_RATIO = 4


class CheckpointError(ValueError, pickle.UnpicklingError):
    """The file is not a well-formed, safe PyTorch state_dict; the message says why.

    The one error type :func:`load_state_dict` raises for a file's contents (a
    ``ValueError``, and a ``pickle.UnpicklingError`` for older callers).
    """


class UnsafePickleError(CheckpointError):
    """The pickle asks for a global, opcode or mutation a plain state_dict never needs; refused."""


class ChecksumError(CheckpointError):
    """The file's sha256 differs from the expected one; nothing was unpickled."""


# ----------------------------------------------------------------------------- hashes


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a regular file (read once, see :func:`load_state_dict`)."""
    return hashlib.sha256(_read_regular_file(path)).hexdigest()


def _check_digest(data: bytes, sha256: str, path: str | os.PathLike) -> None:
    if not isinstance(sha256, str):
        raise TypeError(f"sha256 must be a hex string or None; got {type(sha256).__name__}.")
    expected = sha256.strip().lower()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {os.fspath(path)!r}: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or not the one you meant; it was not unpickled. "
            "Re-download it, or pass sha256=None only if you trust the file."
        )


def verify_sha256(path: str | os.PathLike, sha256: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``sha256`` (hex, any case).

    Only a check: :func:`load_state_dict` with ``sha256=`` hashes and parses the same
    bytes, which this function followed by a load would not.
    """
    _check_digest(_read_regular_file(path), sha256, path)


def _read_regular_file(path: str | os.PathLike) -> bytes:
    """The whole content of ``path``, read once; a FIFO, device or directory is refused.

    Opened with ``O_NONBLOCK`` so that opening a FIFO cannot block; ``fstat`` on the
    open descriptor (not the path) decides, so the checked file is the read one.
    """
    flags = (
        os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    )
    fd = os.open(os.fspath(path), flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(
                f"{os.fspath(path)!r} is not a regular file (a FIFO, device or directory); "
                "jaxsal reads weights only from regular files."
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 24)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- stand-ins

# Storage class name -> little-endian NumPy dtype of one element.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}


def _bfloat16() -> np.dtype:
    import ml_dtypes  # a JAX dependency

    return np.dtype(ml_dtypes.bfloat16)


def _storage_dtype(name: str) -> np.dtype:
    return _bfloat16() if name == "BFloat16Storage" else np.dtype(_STORAGE_DTYPES[name])


class _Frozen:
    """Base of the stand-ins: no ``__dict__``, and attributes cannot be set after init."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafePickleError(f"refusing to set attribute {name!r} on {self!r}")

    def __delattr__(self, name: str) -> None:
        raise UnsafePickleError(f"refusing to delete attribute {name!r} on {self!r}")


class _StorageType(_Frozen):
    """Stand-in for ``torch.<X>Storage``: its name and element dtype, made fresh per load."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", _storage_dtype(name))

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Callable(_Frozen):
    """Stand-in for an allow-listed callable (``OrderedDict``, ``_rebuild_tensor_v2``, ...)."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        object.__setattr__(self, "qualname", qualname)

    def __repr__(self) -> str:
        return self.qualname


class _Storage:
    """A storage named by a persistent id; ``data`` is filled in once bytes are read."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView(_Storage):
    """Legacy view of a root storage (``view_metadata`` in old persistent ids)."""

    def __init__(self, root: _Storage, offset: int, size: int):
        super().__init__(root.key + f"[{offset}:{offset + size}]", root.dtype, size)
        self.root, self.view_offset = root, offset

    @property  # type: ignore[override]
    def data(self) -> np.ndarray | None:
        if self.root.data is None:
            return None
        return self.root.data[self.view_offset : self.view_offset + self.numel]

    @data.setter
    def data(self, value: Any) -> None:
        pass


class _TensorRef(_Frozen):
    """A tensor whose geometry has been checked against its storage; bytes read later."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        for k, v in (("storage", storage), ("offset", offset), ("size", size), ("stride", stride)):
            object.__setattr__(self, k, v)

    def __repr__(self) -> str:
        return f"tensor(size={self.size})"

    @property
    def numel(self) -> int:
        n = 1
        for s in self.size:
            n *= s
        return n

    def materialise(self) -> np.ndarray:
        st = self.storage
        if st.data is None:
            raise CheckpointError(f"storage {st.key!r} has no data in the file")
        data = st.data
        if 0 in self.size:
            return np.zeros(self.size, dtype=data.dtype.newbyteorder("="))
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Fresh stand-ins for one load: nothing a file touches is shared with another load."""
    out: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _Callable("collections.OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"): _Callable("torch._utils._rebuild_parameter"),
    }
    for name in [*_STORAGE_DTYPES, "BFloat16Storage"]:
        out[("torch", name)] = _StorageType(name)
    out[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage")
    return out


def _refuse_global(module: str, name: str) -> UnsafePickleError:
    import _compat_pickle

    py3 = _compat_pickle.NAME_MAPPING.get((module, name))
    if py3 is None:
        py3 = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    shown = f"{module}.{name}" + (f"' (Python 3: '{py3[0]}.{py3[1]}')" if py3 != (module, name) else "'")
    return UnsafePickleError(
        f"jaxsal refuses to unpickle the global '{shown}: a PyTorch state_dict "
        "only needs OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage. "
        "This file is not a plain state_dict, or it is malicious. Load it with torch "
        "yourself only if you trust its source."
    )


# ----------------------------------------------------------------------------- the interpreter

_ATOMS = (type(None), bool, int, float, str, bytes)
_MARK = object()

# Opcodes whose argument is simply pushed.
_PUSH_ARG = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
}  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


class _Interpreter:
    """Runs one pickle (from the current position of ``stream`` to its ``STOP``).

    Only state_dict opcodes are accepted; see the module docstring for the rules.
    ``storages`` is shared by the pickles of one file (legacy: header and body).
    """

    def __init__(self, globals_: dict | None, storages: dict[str, _Storage], budget: dict[str, int]):
        self.globals = globals_  # None: no global at all (legacy header pickles)
        self.storages = storages
        self.budget = budget  # running totals over the whole file
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}  # id(container) -> nesting depth
        self.sealed: set[int] = set()  # ids of containers placed inside another object
        self.owned: dict[int, str] = {}  # ids of mutable containers this pickle made -> kind
        self.keep: list[Any] = []  # keeps every container alive, so ids stay unique
        self.metadata_dropped = 0

    # -- helpers
    def _depth(self, v: Any) -> int:
        return self.depth.get(id(v), 0) if not isinstance(v, _ATOMS) else 0

    def _new(self, obj: Any, children: Any, kind: str | None = None) -> Any:
        d = 0
        for c in children:
            d = max(d, self._depth(c))
            self._seal(c)
        if d + 1 > MAX_DEPTH:
            raise CheckpointError(
                f"the pickle nests containers deeper than {MAX_DEPTH}; a state_dict needs 4"
            )
        self.depth[id(obj)] = d + 1
        self.keep.append(obj)
        if kind is not None:
            self.owned[id(obj)] = kind
        return obj

    def _seal(self, v: Any) -> None:
        if not isinstance(v, _ATOMS):
            self.sealed.add(id(v))

    def _mutable(self, target: Any, kind: str, op: str) -> None:
        if self.owned.get(id(target)) != kind:
            raise UnsafePickleError(
                f"jaxsal refuses {op} on {type(target).__name__} {target!r:.60}: a state_dict only fills "
                "the dicts and lists it creates"
            )
        if id(target) in self.sealed:
            raise UnsafePickleError(
                f"jaxsal refuses {op} on a container already inside another object (a state_dict never "
                "does this; it is how self-referencing or stand-in-poisoning pickles are built)"
            )

    def _grow(self, target: Any, items: list[Any], op: str) -> None:
        for v in items:
            if v is target:
                raise UnsafePickleError(
                    f"jaxsal refuses {op} of a container into itself, which is already inside another "
                    "object then (a state_dict never contains itself)"
                )
            self._seal(v)
            d = self._depth(v) + 1
            if d > MAX_DEPTH:
                raise CheckpointError(
                    f"the pickle nests containers deeper than {MAX_DEPTH}; a state_dict needs 4"
                )
            self.depth[id(target)] = max(self.depth.get(id(target), 1), d)
        if len(target) + (len(items) // (2 if op == "SETITEM" else 1)) > MAX_CONTAINER:
            raise CheckpointError(f"a container in the pickle holds more than {MAX_CONTAINER} items")

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise CheckpointError("the pickle closes a MARK it never opened")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _pop(self, n: int = 1) -> list[Any]:
        if len(self.stack) < n:
            raise CheckpointError("the pickle pops more values than it pushed (truncated or corrupt)")
        out = self.stack[-n:]
        del self.stack[-n:]
        return out

    def _set_items(self, target: Any, items: list[Any]) -> None:
        if len(items) % 2:
            raise CheckpointError("SETITEMS with an odd number of keys and values")
        self._mutable(target, "dict", "SETITEM")
        self._grow(target, items, "SETITEM")
        for k, v in zip(items[::2], items[1::2], strict=True):
            if not isinstance(k, str):
                raise CheckpointError(
                    f"dict key {k!r:.60} is a {type(k).__name__}; a state_dict's keys (and its metadata's) are str"
                )
            if k in target:
                raise CheckpointError(f"the key {k!r:.60} occurs twice in one dict of the pickle")
            target[k] = v

    # -- calls
    def _reduce(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Callable) or not isinstance(args, tuple):
            raise UnsafePickleError(
                f"jaxsal refuses to call {func!r:.60}: only allow-listed functions are called"
            )
        name = func.qualname
        if name == "collections.OrderedDict":
            if args:
                raise UnsafePickleError(
                    "collections.OrderedDict must be called without arguments in a state_dict"
                )
            return self._new(collections.OrderedDict(), (), kind="dict")
        if name == "torch._utils._rebuild_tensor_v2":
            if not 6 <= len(args) <= 7:
                raise CheckpointError(f"_rebuild_tensor_v2 takes 6 or 7 arguments; got {len(args)}")
            return self._tensor(*args[:4])
        if name == "torch._utils._rebuild_parameter":
            if not 2 <= len(args) <= 3 or not isinstance(args[0], _TensorRef):
                raise CheckpointError("_rebuild_parameter expects (tensor, requires_grad[, hooks])")
            return args[0]
        raise UnsafePickleError(f"jaxsal refuses to call {name}")  # pragma: no cover - exhaustive

    def _tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
        if not isinstance(storage, _Storage):
            raise CheckpointError("_rebuild_tensor_v2 expects a storage persistent id as its first argument")

        def ints(v: Any, what: str) -> tuple[int, ...]:
            if not isinstance(v, tuple) or len(v) > MAX_DIMS:
                raise CheckpointError(
                    f"tensor {what} must be a tuple of at most {MAX_DIMS} ints; got {v!r:.80}"
                )
            if not all(type(s) is int and s >= 0 for s in v):
                raise CheckpointError(f"tensor {what} must hold non-negative ints; got {v!r:.80}")
            return v

        size, stride = ints(size, "size"), ints(stride, "stride")
        if type(offset) is not int or offset < 0:
            raise CheckpointError(f"tensor storage offset must be a non-negative int; got {offset!r:.40}")
        if len(size) != len(stride):
            raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
        t = _TensorRef(storage, offset, size, stride)
        n = t.numel
        if n:
            last = offset + sum((k - 1) * s for k, s in zip(size, stride, strict=True))
            if last >= storage.numel:
                raise CheckpointError(
                    f"tensor (offset={offset}, size={size}, stride={stride}) reads past the end "
                    f"of storage {storage.key!r} ({storage.numel} elements)"
                )
            if n > storage.numel:
                raise CheckpointError(
                    f"tensor of size {size} has {n} elements but views storage {storage.key!r} of only "
                    f"{storage.numel} (zero or overlapping strides); a state_dict's tensors never repeat "
                    "storage elements that much"
                )
        self.budget["output"] += n * storage.dtype.itemsize
        return t

    def _persistent(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(
                f"jaxsal refuses the persistent id {pid!r:.80}: only storages are allowed"
            )
        storage_type, key, location, numel = pid[1], pid[2], pid[3], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"persistent id names {storage_type!r:.60}, not a torch storage type")
        if type(key) not in (str, int) or type(location) is not str or type(numel) is not int or numel < 0:
            raise CheckpointError(f"malformed storage persistent id {pid!r:.80}")
        key = str(key)
        st = self.storages.get(key)
        if st is None:
            self.budget["declared"] += numel * storage_type.dtype.itemsize
            if self.budget["declared"] > self.budget["file"]:
                raise CheckpointError(
                    f"the storages declared so far need {self.budget['declared']} bytes, more than the whole "
                    f"file ({self.budget['file']} bytes): the sizes are forged"
                )
            st = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif isinstance(st, _StorageView) or st.dtype != storage_type.dtype or st.numel != numel:
            raise CheckpointError(f"storage {key!r} is declared twice with different types or sizes")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # very old files: a view into a larger storage
            if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) in (int, str) for v in view)):
                raise CheckpointError(f"malformed storage view {view!r:.80}")
            view_key, view_offset, view_size = str(view[0]), view[1], view[2]
            if type(view_offset) is not int or type(view_size) is not int or view_offset < 0 or view_size < 0:
                raise CheckpointError(f"malformed storage view {view!r:.80}")
            if view_offset + view_size > numel:
                raise CheckpointError(
                    f"storage view {view!r:.80} lies outside storage {key!r} ({numel} elements)"
                )
            existing = self.storages.get(view_key)
            if existing is None:
                existing = self.storages[view_key] = _StorageView(st, view_offset, view_size)
            elif not isinstance(existing, _StorageView):
                raise CheckpointError(f"storage view key {view_key!r} is also a storage key")
            return existing
        return st

    # -- the loop
    def run(self, stream: io.BytesIO) -> Any:
        stack = None
        for opcode, arg, _pos in pickletools.genops(stream):
            self.budget["opcodes"] += 1
            if self.budget["opcodes"] > MAX_OPCODES:
                raise CheckpointError(f"the pickle has more than {MAX_OPCODES} opcodes")
            name = opcode.name
            stack = self.stack
            if name in _PUSH_ARG:
                if isinstance(arg, int) and arg.bit_length() > MAX_INT_BITS:
                    raise CheckpointError(f"an integer in the pickle has more than {MAX_INT_BITS} bits")
                if isinstance(arg, (str, bytes)) and len(arg) > MAX_STRING:
                    raise CheckpointError(f"a string in the pickle is longer than {MAX_STRING}")
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in ("PROTO", "FRAME"):
                if name == "PROTO" and not 0 <= arg <= 5:
                    raise CheckpointError(f"unsupported pickle protocol {arg}")
            elif name == "STOP":
                if len(stack) != 1 or self.metastack:
                    raise CheckpointError("the pickle ends with an unbalanced stack (truncated or corrupt)")
                return stack[0]
            elif name == "MARK":
                if len(self.metastack) >= MAX_MARKS:
                    raise CheckpointError(f"the pickle opens more than {MAX_MARKS} MARKs at once")
                self.metastack.append(stack)
                self.stack = []
            elif name == "POP":
                self._pop()
            elif name == "POP_MARK":
                self._pop_mark()
            elif name == "DUP":
                stack.append(self._pop()[0])
                stack.append(stack[-1])
            elif name == "EMPTY_TUPLE":
                stack.append(self._new((), ()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                items = self._pop(int(name[-1]))
                stack.append(self._new(tuple(items), items))
            elif name == "TUPLE":
                items = self._pop_mark()
                self._size(items)
                self.stack.append(self._new(tuple(items), items))
            elif name == "EMPTY_LIST":
                stack.append(self._new([], (), kind="list"))
            elif name == "LIST":
                items = self._pop_mark()
                self._size(items)
                self.stack.append(self._new(list(items), items, kind="list"))
            elif name == "EMPTY_DICT":
                stack.append(self._new({}, (), kind="dict"))
            elif name == "DICT":
                items = self._pop_mark()
                self._size(items)
                d = self._new({}, (), kind="dict")
                self._set_items(d, items)
                self.stack.append(d)
            elif name in ("APPEND", "APPENDS"):
                items = self._pop() if name == "APPEND" else self._pop_mark()
                target = self._top()
                self._mutable(target, "list", name)
                self._grow(target, items, name)
                target.extend(items)
            elif name in ("SETITEM", "SETITEMS"):
                items = self._pop(2) if name == "SETITEM" else self._pop_mark()
                self._set_items(self._top(), items)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                idx = len(self.memo) if name == "MEMOIZE" else arg
                if type(idx) is not int or idx < 0 or len(self.memo) >= MAX_MEMO:
                    raise CheckpointError("bad or too many memo entries in the pickle")
                self.memo[idx] = self._top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in self.memo:
                    raise CheckpointError(f"the pickle reads memo entry {arg!r} it never wrote")
                stack.append(self.memo[arg])
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "GLOBAL":
                    module, _, qual = str(arg).partition(" ")
                else:
                    module, qual = self._pop(2)
                    if not (isinstance(module, str) and isinstance(qual, str)):
                        raise CheckpointError("STACK_GLOBAL needs two strings")
                stack = self.stack
                stack.append(self._global(module, qual))
            elif name == "REDUCE":
                func, args = self._pop(2)
                self._seal(args)
                self.stack.append(self._reduce(func, args))
            elif name == "BUILD":
                (state,) = self._pop()
                target = self._top()
                if not (isinstance(target, collections.OrderedDict) and self.owned.get(id(target)) == "dict"):
                    raise UnsafePickleError(
                        f"jaxsal refuses BUILD (setting state) on {target!r:.60}: only a state_dict "
                        "(an OrderedDict) carries state, its _metadata"
                    )
                if not isinstance(state, dict):
                    raise UnsafePickleError("jaxsal refuses BUILD with a state that is not a dict")
                self._seal(state)
                self.metadata_dropped += 1  # read and dropped: no attribute is ever set
            elif name == "BINPERSID":
                (pid,) = self._pop()
                self.stack.append(self._persistent(pid))
            else:
                raise UnsafePickleError(
                    f"jaxsal refuses the pickle opcode {name}: a PyTorch state_dict never needs it "
                    "(this file is not a plain state_dict, or it is malicious)"
                )
        raise CheckpointError("the pickle ends without STOP (truncated)")

    def _top(self) -> Any:
        if not self.stack:
            raise CheckpointError("the pickle's stack is empty where a value is needed (corrupt)")
        return self.stack[-1]

    def _size(self, items: list[Any]) -> None:
        if len(items) > MAX_CONTAINER:
            raise CheckpointError(f"a container in the pickle holds more than {MAX_CONTAINER} items")

    def _global(self, module: str, name: str) -> Any:
        import _compat_pickle

        if self.globals is not None:
            py3 = _compat_pickle.NAME_MAPPING.get((module, name)) or (
                _compat_pickle.IMPORT_MAPPING.get(module, module),
                name,
            )
            for key in ((module, name), py3):
                if key in self.globals:
                    return self.globals[key]
        raise _refuse_global(module, name)


def _unpickle(stream: io.BytesIO, state: dict, *, allow_globals: bool = True) -> Any:
    """One pickle from ``stream`` through the restricted interpreter."""
    globals_ = state["globals"] if allow_globals else None
    return _Interpreter(globals_, state["storages"], state["budget"]).run(stream)


# ----------------------------------------------------------------------------- formats


def _storage_array(raw: memoryview | bytes, st: _Storage, byteorder: str) -> np.ndarray:
    dt = st.dtype if byteorder == "little" or st.dtype.itemsize == 1 else st.dtype.newbyteorder(">")
    need = st.numel * dt.itemsize
    if len(raw) < need:
        raise CheckpointError(
            f"storage {st.key!r} holds {len(raw)} bytes, fewer than {st.numel} x {dt.itemsize}"
        )
    return np.frombuffer(raw, dtype=dt, count=st.numel)


def _check_member_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in name
        or "\x00" in name
        or any(p in ("..", ".") for p in parts)
    ):
        raise CheckpointError(
            f"zip member name {name!r:.80} is absolute or climbs out of the archive ('..'); refused"
        )


def _load_zip(data: bytes, state: dict) -> Any:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError("the zip archive names a member twice")
        declared = 0
        for info in infos:
            _check_member_name(info.filename)
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"zip member {info.filename!r} is compressed; torch.save stores members uncompressed, "
                    "and jaxsal does not inflate them (a compressed member can expand to gigabytes). "
                    "Re-save the state_dict with torch.save."
                )
            declared += info.file_size
        if declared > len(data):
            raise CheckpointError(
                f"the zip members declare {declared} bytes, more than the file's {len(data)}: the sizes are forged"
            )
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkls) != 1:
            raise CheckpointError(f"zip checkpoint must hold exactly one data.pkl, found {pkls}")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"unknown byteorder {byteorder!r:.20}")
        obj = _unpickle(io.BytesIO(zf.read(pkls[0])), state)
        for key, st in state["storages"].items():
            if isinstance(st, _StorageView):
                continue
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise CheckpointError(f"zip checkpoint lacks storage {entry!r}")
            if zf.getinfo(entry).file_size < st.numel * st.dtype.itemsize:
                raise CheckpointError(
                    f"zip member {entry!r} holds {zf.getinfo(entry).file_size} bytes, fewer than its "
                    f"storage's {st.numel} x {st.dtype.itemsize}"
                )
            st.data = _storage_array(zf.read(entry), st, byteorder)
    return obj


def _load_legacy(data: bytes, state: dict) -> Any:
    stream = io.BytesIO(data)
    view = memoryview(data)

    def header() -> Any:
        return _unpickle(stream, state, allow_globals=False)

    try:
        magic = header()
    except UnsafePickleError:
        raise
    except CheckpointError as e:
        raise CheckpointError(f"not a PyTorch checkpoint: {e}") from None
    if magic != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (legacy magic number missing)")
    protocol = header()
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {protocol!r:.40}")
    sys_info = header()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    obj = _unpickle(stream, state)
    keys = header()
    if not isinstance(keys, list):
        raise CheckpointError("legacy checkpoint: storage key list missing")
    order = "little" if little else "big"
    pos = stream.tell()
    for key in keys:
        st = state["storages"].get(str(key))
        if st is None or isinstance(st, _StorageView):
            raise CheckpointError(f"legacy checkpoint: unknown storage key {key!r:.40}")
        if pos + 8 > len(data):
            raise CheckpointError("legacy checkpoint: truncated before a storage's element count")
        n = int.from_bytes(view[pos : pos + 8], order, signed=True)
        pos += 8
        if n != st.numel:
            raise CheckpointError(
                f"legacy checkpoint: storage {key!r} has {n} elements, persistent id says {st.numel}"
            )
        nbytes = n * st.dtype.itemsize
        if pos + nbytes > len(data):
            raise CheckpointError(f"legacy checkpoint: storage {key!r} is truncated")
        st.data = _storage_array(view[pos : pos + nbytes], st, order)
        pos += nbytes
    return obj


def _materialise(obj: Any, state: dict) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    refs: dict[str, _TensorRef] = {}
    for k, v in obj.items():
        if not isinstance(v, _TensorRef):
            raise CheckpointError(
                f"state_dict entry {k!r:.60} is a {type(v).__name__}, not a tensor; pass a plain "
                "state_dict (model.state_dict()), not a training checkpoint"
            )
        refs[k] = v
    storage_bytes = sum(
        st.numel * st.dtype.itemsize for st in state["storages"].values() if not isinstance(st, _StorageView)
    )
    out_bytes = sum(t.numel * t.storage.dtype.itemsize for t in refs.values())
    if out_bytes > MAX_OUTPUT_RATIO * storage_bytes + (1 << 16):
        raise CheckpointError(
            f"the tensors would take {out_bytes} bytes, more than {MAX_OUTPUT_RATIO} x the {storage_bytes} "
            "bytes of storage they view (overlapping views repeated many times); refused"
        )
    return {k: t.materialise() for k, t in refs.items()}


def load_state_dict(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Load a PyTorch state_dict file as ``{name: np.ndarray}``, safely.

    The file is read once; the sha256 (when given) is computed on those bytes and only
    those bytes are parsed, by a restricted interpreter that calls nothing outside an
    allow-list and bounds every size (see :mod:`jaxsal.models._torch_pickle`).

    Args:
      path: a regular ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(),
        path)``, in the zip format (PyTorch >= 1.6) or the legacy format.
      sha256: expected hex digest of the file. When given, it is checked *before*
        anything is unpickled and a mismatch raises :class:`ChecksumError`.

    Returns:
      A dict from parameter name to a C-contiguous, native-endian NumPy array with
      the tensor's shape (torch layout, e.g. OIHW for convolutions).

    Raises:
      CheckpointError: (a ``ValueError``) anything wrong with the file's contents, with
        a message saying what; its subclasses :class:`ChecksumError` (the hash
        differs) and :class:`UnsafePickleError` (a refused global, opcode or
        mutation: nothing it names is imported or called).
      OSError: the file cannot be opened or read (e.g. it does not exist).

    Example::

      sd = jaxsal.models.load_state_dict("vgg16-397923af.pth", sha256="397923af...")
    """
    data = _read_regular_file(path)
    if sha256 is not None:
        _check_digest(data, sha256, path)
    state = {
        "globals": _allowed_globals(),
        "storages": {},
        "budget": {"opcodes": 0, "declared": 0, "output": 0, "file": len(data)},
    }
    try:
        if data[:4] == b"PK\x03\x04" or zipfile.is_zipfile(io.BytesIO(data)):
            obj = _load_zip(data, state)
        else:
            obj = _load_legacy(data, state)
        return _materialise(obj, state)
    except CheckpointError:
        raise
    except Exception as e:  # zipfile, numpy and genops errors: one documented type
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a well-formed PyTorch state_dict ({type(e).__name__}: {msg})"
        ) from None


# ----------------------------------------------------------------------------- writing


class _Global:
    """A name written as a pickle ``GLOBAL`` opcode (``torch`` need not be importable)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pragma: no cover - save_reduce wants a callable
        raise TypeError(f"{self.module}.{self.name} is only a name")


class _SavedStorage:
    def __init__(self, key: str, array: np.ndarray, type_name: str):
        self.key, self.array, self.type_name = key, array, type_name


class _SavedTensor:
    def __init__(self, storage: _SavedStorage, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape

    def __reduce__(self) -> tuple:
        stride, acc = [], 1
        for n in reversed(self.shape):
            stride.append(acc)
            acc *= n
        args = (self.storage, 0, self.shape, tuple(reversed(stride)), False, collections.OrderedDict())
        return _Global("torch._utils", "_rebuild_tensor_v2"), args


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler lets us emit GLOBALs by name
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_global_name(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = _save_global_name

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _SavedStorage):
            return ("storage", _Global("torch", obj.type_name), obj.key, "cpu", obj.array.size)
        return None


def _storage_type_name(dtype: np.dtype) -> str:
    if dtype.name == "bfloat16":
        return "BFloat16Storage"
    for name, code in _STORAGE_DTYPES.items():
        if name != "UntypedStorage" and np.dtype(code) == dtype.newbyteorder("<"):
            return name
    raise TypeError(f"no torch storage type for dtype {dtype}")


def save_state_dict(path: str | os.PathLike, state_dict: Mapping[str, Any]) -> None:
    """Write ``{name: array}`` as a PyTorch zip-format state_dict (what ``torch.save`` writes).

    Layout: ``archive/data.pkl`` (protocol 2, tensors as ``_rebuild_tensor_v2`` of a
    storage persistent id), ``archive/data/<i>`` (little-endian bytes),
    ``archive/byteorder`` and ``archive/version``. Arrays are stored C-contiguous.
    """
    obj: collections.OrderedDict[str, _SavedTensor] = collections.OrderedDict()
    storages = []
    for i, (name, value) in enumerate(state_dict.items()):
        a = np.asarray(value)
        type_name = _storage_type_name(a.dtype)
        a = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C", copy=True)
        st = _SavedStorage(str(i), a.reshape(-1), type_name)
        storages.append(st)
        obj[str(name)] = _SavedTensor(st, tuple(int(n) for n in a.shape))
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for st in storages:
            zf.writestr(f"archive/data/{st.key}", st.array.tobytes())
        zf.writestr("archive/version", "3\n")

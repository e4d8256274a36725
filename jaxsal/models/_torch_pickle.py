"""Read PyTorch ``.pth`` state_dicts safely, without torch and without plain pickle.

A PyTorch checkpoint is a pickle, and unpickling runs whatever callables the file
names. :func:`load_state_dict` therefore uses a :class:`pickle.Unpickler` whose
``find_class`` resolves only the handful of globals a state_dict needs, each mapped
to a harmless local stand-in:

* ``collections.OrderedDict`` (the state_dict itself, and empty backward hooks);
* ``torch._utils._rebuild_tensor_v2`` and ``torch._utils._rebuild_parameter``;
* the storage types ``torch.FloatStorage``, ``torch.HalfStorage``, ... and
  ``torch.UntypedStorage`` (they only appear inside persistent ids).

Any other global (``os.system``, ``builtins.eval``, a user class, ...) is refused
with :class:`UnsafePickleError` *before* it is resolved, so it is never called.

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
rebuilt with :func:`numpy.lib.stride_tricks.as_strided` after a bounds check and
copied into fresh, C-contiguous, native-endian arrays.
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "UnsafePickleError",
    "ChecksumError",
    "load_state_dict",
    "save_state_dict",
    "sha256_of",
    "verify_sha256",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a global that a plain state_dict never needs; it was refused."""


class ChecksumError(ValueError):
    """The file's sha256 differs from the expected one; nothing was unpickled."""


# ----------------------------------------------------------------------------- hashes


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, sha256: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``sha256`` (hex, any case)."""
    expected = sha256.strip().lower()
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {os.fspath(path)!r}: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or not the one you meant; it was not unpickled. "
            "Re-download it, or pass sha256=None only if you trust the file."
        )


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


class _StorageType:
    """Stand-in for ``torch.<X>Storage``: it only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name

    @property
    def dtype(self) -> np.dtype:
        if self.name == "BFloat16Storage":
            return _bfloat16()
        return np.dtype(_STORAGE_DTYPES[self.name])

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - defensive
        raise UnsafePickleError(f"refusing to construct torch.{self.name} directly")


class _Storage:
    """A storage named by a persistent id; ``data`` is filled in once bytes are read."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor whose storage bytes may not have been read yet (legacy format)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def materialise(self) -> np.ndarray:
        st = self.storage
        if st.data is None:
            raise pickle.UnpicklingError(f"storage {st.key!r} has no data in the file")
        data = st.data
        size = tuple(int(s) for s in self.size)
        stride = tuple(int(s) for s in self.stride)
        offset = int(self.offset)
        if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
        if 0 in size:
            return np.zeros(size, dtype=data.dtype.newbyteorder("="))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if offset < 0 or last >= data.size:
            raise pickle.UnpicklingError(
                f"tensor (offset={offset}, size={size}, stride={stride}) reads past the end "
                f"of storage {st.key!r} ({data.size} elements)"
            )
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
        )
        return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 expects a storage persistent id")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("_rebuild_parameter expects a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
for _name in [*_STORAGE_DTYPES, "BFloat16Storage"]:
    _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)
_ALLOWED_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS` and storage persistent ids."""

    def __init__(self, file: BinaryIO, *, allow_globals: bool = True):
        super().__init__(file)
        self._allow_globals = allow_globals
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles spell some Python 3 names the Python 2 way (builtins ->
        # __builtin__, subprocess -> commands); the allow-list is checked on both.
        py3 = _compat_pickle.NAME_MAPPING.get((module, name))
        if py3 is None:
            py3 = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        for key in ((module, name), py3):
            if self._allow_globals and key in _ALLOWED_GLOBALS:
                return _ALLOWED_GLOBALS[key]
        shown = f"{module}.{name}" + (f"' (Python 3: '{py3[0]}.{py3[1]}')" if py3 != (module, name) else "'")
        raise UnsafePickleError(
            f"jaxsal refuses to unpickle the global '{shown}: a PyTorch state_dict "
            "only needs OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage. "
            "This file is not a plain state_dict, or it is malicious. Load it with torch "
            "yourself only if you trust its source."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"jaxsal refuses the persistent id {pid!r}: only storages are allowed")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"persistent id names {storage_type!r}, not a torch storage type")
        view = pid[5] if len(pid) == 6 else None
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        if view is not None:  # very old files: a view into a larger storage
            view_key, view_offset, view_size = view
            if str(view_key) not in self.storages:
                self.storages[str(view_key)] = _StorageView(st, int(view_offset), int(view_size))
            return self.storages[str(view_key)]
        return st


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


# ----------------------------------------------------------------------------- formats


def _read_storage_bytes(raw: bytes, st: _Storage, byteorder: str) -> np.ndarray:
    dt = st.dtype if byteorder == "little" or st.dtype.itemsize == 1 else st.dtype.newbyteorder(">")
    if len(raw) < st.numel * dt.itemsize:
        raise pickle.UnpicklingError(
            f"storage {st.key!r} holds {len(raw)} bytes, fewer than {st.numel} x {dt.itemsize}"
        )
    return np.frombuffer(raw, dtype=dt, count=st.numel)


def _load_zip(fh: BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    with zipfile.ZipFile(fh) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkls) != 1:
            raise pickle.UnpicklingError(f"zip checkpoint must hold exactly one data.pkl, found {pkls}")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise pickle.UnpicklingError(f"unknown byteorder {byteorder!r}")
        up = _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])))
        obj = up.load()
        for key, st in up.storages.items():
            if isinstance(st, _StorageView):
                continue
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise pickle.UnpicklingError(f"zip checkpoint lacks storage {entry!r}")
            st.data = _read_storage_bytes(zf.read(entry), st, byteorder)
    return obj, up.storages


def _load_legacy(fh: BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    def header() -> Any:
        return _RestrictedUnpickler(fh, allow_globals=False).load()

    try:
        magic = header()
    except pickle.UnpicklingError:
        raise
    except Exception as e:
        raise pickle.UnpicklingError(f"not a PyTorch checkpoint: {e}") from None
    if magic != LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch checkpoint (legacy magic number missing)")
    protocol = header()
    if protocol != LEGACY_PROTOCOL:
        raise pickle.UnpicklingError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = header()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    up = _RestrictedUnpickler(fh)
    obj = up.load()
    keys = header()
    if not isinstance(keys, list):
        raise pickle.UnpicklingError("legacy checkpoint: storage key list missing")
    for key in keys:
        st = up.storages.get(str(key))
        if st is None:
            raise pickle.UnpicklingError(f"legacy checkpoint: unknown storage key {key!r}")
        n = int.from_bytes(fh.read(8), "little" if little else "big", signed=True)
        if n != st.numel:
            raise pickle.UnpicklingError(
                f"legacy checkpoint: storage {key!r} has {n} elements, persistent id says {st.numel}"
            )
        st.data = _read_storage_bytes(fh.read(n * st.dtype.itemsize), st, "little" if little else "big")
    return obj, up.storages


def _materialise(obj: Any) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise pickle.UnpicklingError(
            f"expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(v, _TensorRef):
            raise pickle.UnpicklingError(
                f"state_dict entry {k!r} is a {type(v).__name__}, not a tensor; pass a plain "
                "state_dict (model.state_dict()), not a training checkpoint"
            )
        out[str(k)] = v.materialise()
    return out


def load_state_dict(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Load a PyTorch state_dict file as ``{name: np.ndarray}``, safely.

    Args:
      path: a ``.pth``/``.pt`` file written by ``torch.save(model.state_dict(), path)``,
        in the zip format (PyTorch >= 1.6) or the legacy format.
      sha256: expected hex digest of the file. When given, it is checked *before*
        anything is unpickled and a mismatch raises :class:`ChecksumError`.

    Returns:
      A dict from parameter name to a C-contiguous, native-endian NumPy array with
      the tensor's shape (torch layout, e.g. OIHW for convolutions).

    Raises:
      ChecksumError: the hash differs.
      UnsafePickleError: the pickle names a global outside the state_dict allow-list
        (nothing it names is imported or called).
      pickle.UnpicklingError: the file is not a well-formed state_dict.
    """
    if sha256 is not None:
        verify_sha256(path, sha256)
    with open(path, "rb") as fh:
        if zipfile.is_zipfile(fh):
            fh.seek(0)
            obj, _ = _load_zip(fh)
        else:
            fh.seek(0)
            obj, _ = _load_legacy(fh)
    return _materialise(obj)


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

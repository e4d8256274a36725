"""The safe PyTorch state_dict reader, on files these tests write byte by byte.

The writer below is independent of jaxsal's: it emits the pickle opcodes torch.save
emits (GLOBAL torch._utils._rebuild_tensor_v2, GLOBAL torch.<X>Storage inside a
BINPERSID persistent id) by hand, and lays out the legacy and zip containers itself.
No torch needed; if torch is importable, real torch.save files are checked too.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest

from jaxsal.models._torch_pickle import (
    ChecksumError,
    UnsafePickleError,
    load_state_dict,
    save_state_dict,
    sha256_of,
)

# ----------------------------------------------------------------------------- hand-made writer

_TYPE = {
    np.dtype("<f4"): "FloatStorage",
    np.dtype("<f8"): "DoubleStorage",
    np.dtype("<f2"): "HalfStorage",
    np.dtype("<i8"): "LongStorage",
    np.dtype("<i4"): "IntStorage",
    np.dtype("u1"): "ByteStorage",
    np.dtype("?"): "BoolStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
}


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _ppickle(obj) -> bytes:
    """Protocol-2 pickle of ints/str/tuples/lists/dicts of those (no globals)."""
    return pickle.dumps(obj, protocol=2)


def _body(obj) -> bytes:
    # pickle.dumps(x, 2) = PROTO 2 + body + STOP; strip both to splice pieces together.
    b = _ppickle(obj)
    assert b[:2] == b"\x80\x02" and b[-1:] == b"."
    return b[2:-1]


class T:
    """A tensor view: storage key, offset, size, stride (in elements)."""

    def __init__(self, key, offset, size, stride, parameter=False):
        self.key, self.offset, self.size, self.stride, self.parameter = key, offset, size, stride, parameter


def _tensor_opcodes(t: T, storages: dict) -> bytes:
    arr = storages[t.key]
    pid = (
        b"("  # MARK
        + _body("storage")
        + _global("torch", _TYPE[arr.dtype])
        + _body(t.key)
        + _body("cpu")
        + _body(int(arr.size))
        + b"tQ"  # TUPLE, BINPERSID
    )
    hooks = _global("collections", "OrderedDict") + b")R"
    args = (
        b"(" + pid + _body(t.offset) + _body(tuple(t.size)) + _body(tuple(t.stride)) + b"\x89" + hooks + b"t"
    )
    out = _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    if t.parameter:
        out = _global("torch._utils", "_rebuild_parameter") + b"(" + out + b"\x89" + hooks + b"tR"
    return out


def state_dict_pickle(tensors: dict[str, T], storages: dict) -> bytes:
    body = _global("collections", "OrderedDict") + b")R"
    for name, t in tensors.items():
        body += _body(name) + _tensor_opcodes(t, storages) + b"s"  # SETITEM
    return b"\x80\x02" + body + b"."


def write_legacy(path, pkl: bytes, storages: dict, *, numel_override=None) -> None:
    with open(path, "wb") as fh:
        fh.write(_ppickle(0x1950A86A20F9469CFC6C))
        fh.write(_ppickle(1001))
        fh.write(
            _ppickle(
                {
                    "protocol_version": 1001,
                    "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 8},
                }
            )
        )
        fh.write(pkl)
        keys = sorted(storages)
        fh.write(_ppickle(keys))
        for k in keys:
            a = storages[k]
            fh.write(struct.pack("<q", a.size if numel_override is None else numel_override))
            fh.write(a.tobytes())


def write_zip(path, pkl: bytes, storages: dict, *, prefix="archive", byteorder="little") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        zf.writestr(f"{prefix}/byteorder", byteorder)
        zf.writestr(f"{prefix}/version", "3\n")
        for k, a in storages.items():
            dt = a.dtype.newbyteorder(">") if byteorder == "big" else a.dtype
            zf.writestr(f"{prefix}/data/{k}", a.astype(dt).tobytes())


def _view(storage: np.ndarray, t: T) -> np.ndarray:
    """Reference: element (i0, i1, ...) = storage[offset + sum_k i_k stride_k], by loops."""
    out = np.empty(t.size, storage.dtype)
    for idx in np.ndindex(*t.size):
        out[idx] = storage[t.offset + sum(i * s for i, s in zip(idx, t.stride, strict=True))]
    return out


@pytest.fixture
def example():
    rng = np.random.default_rng(0)
    storages = {
        "0": rng.standard_normal(24).astype("<f4"),
        "1": rng.standard_normal(6).astype("<f2"),
        "2": np.arange(5, dtype="<i8") - 2,
        "3": rng.standard_normal(4).astype("<f8"),
        "4": rng.standard_normal(3).astype(ml_dtypes.bfloat16),
        "5": np.array([True, False, True]),
    }
    tensors = {
        "conv.weight": T("0", 0, (2, 3, 2, 2), (12, 4, 2, 1)),  # contiguous OIHW
        "transposed": T("0", 0, (4, 6), (1, 4)),  # a .T view: column-major
        "offset_slice": T("0", 5, (3, 2), (6, 2)),  # offset + non-unit strides
        "broadcast": T("0", 7, (3, 4), (0, 1)),  # expand(): stride 0
        "half": T("1", 1, (5,), (1,)),
        "long": T("2", 0, (5,), (1,)),
        "scalar": T("3", 2, (), ()),
        "empty": T("3", 0, (0, 3), (3, 1)),
        "bf16": T("4", 0, (3,), (1,)),
        "bool": T("5", 0, (3,), (1,)),
        "param": T("3", 0, (2, 2), (2, 1), parameter=True),
    }
    return tensors, storages


@pytest.mark.parametrize("fmt", ["legacy", "zip", "zip-big-endian", "zip-other-prefix"])
def test_roundtrip_strides_offsets_dtypes(tmp_path, example, fmt):
    tensors, storages = example
    path = tmp_path / "sd.pth"
    pkl = state_dict_pickle(tensors, storages)
    if fmt == "legacy":
        write_legacy(path, pkl, storages)
    elif fmt == "zip":
        write_zip(path, pkl, storages)
    elif fmt == "zip-big-endian":  # (bfloat16 has no big-endian NumPy dtype: left out)
        tensors = {k: v for k, v in tensors.items() if v.key != "4"}
        storages = {k: v for k, v in storages.items() if k != "4"}
        write_zip(path, state_dict_pickle(tensors, storages), storages, byteorder="big")
    else:
        write_zip(path, pkl, storages, prefix="my_model")
    sd = load_state_dict(path)
    assert list(sd) == list(tensors)
    for name, t in tensors.items():
        want = _view(storages[t.key], t)
        got = sd[name]
        assert got.shape == tuple(t.size), name
        assert got.dtype == want.dtype.newbyteorder("="), name
        assert got.dtype.isnative and got.flags.c_contiguous and got.flags.writeable
        np.testing.assert_array_equal(got, want, err_msg=name)
    # Fresh copies: writing to one tensor does not leak into another sharing storage.
    sd["conv.weight"][...] = 0
    np.testing.assert_array_equal(sd["transposed"], _view(storages["0"], tensors["transposed"]))


def test_real_checkpoint_layout_is_parsed(tmp_path):
    # The legacy header of the shipped EfficientNet weights, re-created: long is 4 bytes there.
    rng = np.random.default_rng(1)
    storages = {"103185984": rng.standard_normal(864).astype("<f4")}
    tensors = {"_conv_stem.weight": T("103185984", 0, (32, 3, 3, 3), (27, 9, 3, 1))}
    write_legacy(tmp_path / "a.pth", state_dict_pickle(tensors, storages), storages)
    sd = load_state_dict(tmp_path / "a.pth")
    np.testing.assert_array_equal(sd["_conv_stem.weight"], storages["103185984"].reshape(32, 3, 3, 3))


def test_jaxsal_writer_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    sd = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "w_t": rng.standard_normal((4, 3)).astype(np.float32).T,  # non-contiguous input
        "n": np.array(7, np.int64),
        "h": rng.standard_normal(5).astype(np.float16),
        "big": np.arange(4, dtype=">f8"),
    }
    save_state_dict(tmp_path / "x.pth", sd)
    out = load_state_dict(tmp_path / "x.pth")
    for k, v in sd.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype.newbyteorder("=")
        np.testing.assert_array_equal(out[k], v)


# ----------------------------------------------------------------------------- refusals


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _evil_payloads(sentinel) -> dict[str, bytes]:
    cmd = f"touch {sentinel}"
    code = f"__import__('pathlib').Path({str(sentinel)!r}).write_text('pwned')"
    return {
        "os.system": pickle.dumps(collections.OrderedDict(w=_Evil(os.system, cmd)), protocol=2),
        "builtins.eval": pickle.dumps(_Evil(eval, code), protocol=2),
        "subprocess.call": pickle.dumps({"x": _Evil(subprocess.call, ["touch", str(sentinel)])}, protocol=2),
    }


@pytest.mark.parametrize("where", ["legacy", "zip", "legacy-header"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.call"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, where, payload):
    sentinel = tmp_path / "pwned"
    pkl = _evil_payloads(sentinel)[payload]
    # Sanity: the payload really is live (plain pickle would run it).
    pickle.loads(pkl)
    assert sentinel.exists()
    sentinel.unlink()

    path = tmp_path / "evil.pth"
    if where == "legacy":
        write_legacy(path, pkl, {})
    elif where == "zip":
        write_zip(path, pkl, {})
    else:  # in place of the sys_info dict, before the object pickle
        with open(path, "wb") as fh:
            fh.write(_ppickle(0x1950A86A20F9469CFC6C) + _ppickle(1001) + pkl)
    named = r"'(posix|os|nt|builtins|__builtin__|subprocess|commands)\.(system|eval|call)'"
    if where == "legacy-header":  # the header pickles may name no global at all
        named = r"'[\w.]+'"
    with pytest.raises(UnsafePickleError, match="refuses to unpickle the global " + named):
        load_state_dict(path)
    assert not sentinel.exists()
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


def test_refused_module_is_never_imported(tmp_path):
    # `this` prints the Zen of Python when imported: a pure import side effect.
    assert "this" not in sys.modules
    pkl = b"\x80\x02" + _global("this", "s") + b"."
    write_zip(tmp_path / "z.pth", pkl, {})
    with pytest.raises(UnsafePickleError, match="this.s"):
        load_state_dict(tmp_path / "z.pth")
    assert "this" not in sys.modules


def test_fake_torch_global_is_refused(tmp_path):
    # Only the allow-listed torch names pass; e.g. torch.load itself does not.
    pkl = b"\x80\x02" + _global("torch", "load") + _body("x") + b"\x85R."
    write_legacy(tmp_path / "t.pth", pkl, {})
    with pytest.raises(UnsafePickleError, match="torch.load"):
        load_state_dict(tmp_path / "t.pth")


def test_wrong_sha256_is_refused_before_unpickling(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    write_zip(path, _evil_payloads(sentinel)["os.system"], {})
    # A ChecksumError, not an UnsafePickleError: the hash is checked first.
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_state_dict(path, sha256="0" * 64)
    assert not sentinel.exists()

    tensors, storages = {"a": T("0", 0, (2,), (1,))}, {"0": np.ones(2, "<f4")}
    good = tmp_path / "good.pth"
    write_zip(good, state_dict_pickle(tensors, storages), storages)
    digest = sha256_of(good)
    assert load_state_dict(good, sha256=digest.upper())["a"].tolist() == [1.0, 1.0]
    assert issubclass(ChecksumError, ValueError)


def test_out_of_bounds_view_is_refused(tmp_path):
    storages = {"0": np.arange(6, dtype="<f4")}
    tensors = {"a": T("0", 2, (2, 3), (3, 1))}  # last element at 2 + 3 + 2 = 7 > 5
    write_zip(tmp_path / "o.pth", state_dict_pickle(tensors, storages), storages)
    with pytest.raises(pickle.UnpicklingError, match="past the end"):
        load_state_dict(tmp_path / "o.pth")


def test_malformed_files(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict(p)

    p.write_bytes(_ppickle(12345))
    with pytest.raises(pickle.UnpicklingError, match="magic"):
        load_state_dict(p)

    storages = {"0": np.arange(4, dtype="<f4")}
    tensors = {"a": T("0", 0, (4,), (1,))}
    write_legacy(p, state_dict_pickle(tensors, storages), storages, numel_override=9)
    with pytest.raises(pickle.UnpicklingError, match="elements"):
        load_state_dict(p)

    # A checkpoint dict whose values are not all tensors.
    pkl = b"\x80\x02}" + _body("epoch") + _body(3) + b"s."
    write_zip(p, pkl, {})
    with pytest.raises(pickle.UnpicklingError, match="not a tensor"):
        load_state_dict(p)

    # Storage bytes missing from the zip.
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", state_dict_pickle(tensors, storages))
    with pytest.raises(pickle.UnpicklingError, match="lacks storage"):
        load_state_dict(p)


# ----------------------------------------------------------------------------- real torch


def test_torch_save_roundtrip(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict(
        w=base,
        t=base.t(),  # strided view of the same storage
        s=base[1:, 2:5],  # offset view
        h=torch.randn(3, generator=g).half(),
        n=torch.tensor(5),
        b=torch.randn(2, generator=g).bfloat16(),
    )
    for legacy in (False, True):
        path = tmp_path / f"t{legacy}.pth"
        torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
        out = load_state_dict(path)
        for k, v in sd.items():
            ref = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
            np.testing.assert_array_equal(np.asarray(out[k], ref.dtype), ref, err_msg=k)
    # And torch reads what jaxsal writes, with its own safe loader.
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}
    save_state_dict(tmp_path / "j.pth", arrays)
    back = torch.load(tmp_path / "j.pth", weights_only=True)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k].numpy(), v)


def test_pickle_module_not_used_for_loading(tmp_path, monkeypatch):
    # The reader never calls pickle.load / pickle.loads (the unrestricted entry points).
    def boom(*a, **k):
        raise AssertionError("plain pickle used")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    storages = {"0": np.ones(3, "<f4")}
    tensors = {"a": T("0", 0, (3,), (1,))}
    write_legacy(tmp_path / "l.pth", state_dict_pickle(tensors, storages), storages)
    assert load_state_dict(tmp_path / "l.pth")["a"].shape == (3,)


def test_legacy_storage_view_metadata(tmp_path):
    # PyTorch < 0.4 wrote views of a root storage as a 6-tuple persistent id:
    # ("storage", type, root_key, location, root_numel, (view_key, view_offset, view_numel)).
    root = np.arange(10, dtype="<f4")
    pid = (
        b"("
        + _body("storage")
        + _global("torch", "FloatStorage")
        + _body("r")
        + _body("cpu")
        + _body(10)
        + _body(("v", 4, 5))
        + b"tQ"
    )
    hooks = _global("collections", "OrderedDict") + b")R"
    tensor = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + _body(1) + _body((2, 2))
    tensor += _body((2, 1)) + b"\x89" + hooks + b"tR"
    pkl = b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + _body("a") + tensor + b"s."
    write_legacy(tmp_path / "v.pth", pkl, {"r": root})
    # view = root[4:9]; tensor = view[1:5] as 2x2
    np.testing.assert_array_equal(load_state_dict(tmp_path / "v.pth")["a"], [[5.0, 6.0], [7.0, 8.0]])

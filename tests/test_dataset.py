"""explain_dataset and the store (issue 13): per-example keys, batch-size independence,
resume after SIGKILL, and bad input that leaves an existing store intact.

Every store here is computed with the tiny CNN of ``tests/_dataset_worker.py``, the
script the subprocess tests run, so that a child's store and the parent's compare
bit for bit. Attributions are built once per module: ``explain_dataset`` compiles one
step per attribution, and reuses it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal._src import dataset as _dataset
from jaxsal._src import store as _store

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_dataset_worker.py")
_spec = importlib.util.spec_from_file_location("_dataset_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

explain_dataset = getattr(jaxsal, "explain_dataset", _dataset.explain_dataset)
open_store = getattr(jaxsal, "open_store", _store.open_store)

N, BATCH = 48, 4  # 12 chunks
KEY = jax.random.key(worker.SEED)


@pytest.fixture(scope="module")
def attrs():
    return {name: worker.method(name) for name in worker.METHODS}


@pytest.fixture(scope="module")
def ref(tmp_path_factory, attrs):
    """The uninterrupted smoothgrad store, N=48 in chunks of 4."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    store = explain_dataset(
        attrs["smoothgrad"], worker.images(N), out, batch_size=BATCH, key=KEY, progress=False
    )
    return store


def digest(path) -> str:
    """sha256 over every file (names and bytes) of a folder: 'left intact' means equal digests."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def arrays(store) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(store, k)[:]) for k in (*_store.DATA_ARRAYS, "done")}


def assert_bitwise(a, b):
    for k, v in arrays(a).items():
        w = np.asarray(getattr(b, k)[:])
        assert v.dtype == w.dtype and np.array_equal(v, w), k


# ----------------------------------------------------------------------------- results


def test_each_example_is_explained_alone_with_its_folded_key(ref, attrs):
    """Store row i == attr(x[i:i+1], key=fold_in(key, i)), with the top class of x[i]."""
    x = worker.images(N)
    sg = attrs["smoothgrad"]
    one = jax.jit(lambda xi, k: sg(xi, None, key=k)[0])
    want = np.stack([one(x[i : i + 1], jax.random.fold_in(KEY, i)) for i in range(N)])
    np.testing.assert_allclose(ref.attributions[:], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    scores = np.asarray(worker.model()[2](x))
    np.testing.assert_allclose(ref.scores[:], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ref.pred[:], scores.argmax(1))
    np.testing.assert_array_equal(ref.targets[:], ref.pred[:])
    # one key for the whole batch would draw other noise: the folded keys are what is stored
    batch_key = np.asarray(jax.jit(lambda xb, k: sg(xb, None, key=k))(x[:BATCH], KEY))
    assert not np.allclose(batch_key, want[:BATCH], rtol=1e-3)
    assert ref.complete and len(ref) == N and ref.attributions[5].shape == worker.IMAGE


def test_batch_size_does_not_change_the_maps(tmp_path, ref, attrs):
    """Batch 4 (ref) vs 64 (one padded chunk), same key: same maps.

    The noise is identical (keys are folded per example); the compiled batch differs,
    so XLA may sum a convolution in another order: equal to float32 rounding.
    """
    big = explain_dataset(
        attrs["smoothgrad"], worker.images(N), tmp_path / "b64.zarr", batch_size=64, key=KEY, progress=False
    )
    a, b = big.attributions[:], ref.attributions[:]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    np.testing.assert_array_equal(big.targets[:], ref.targets[:])
    assert big.metadata["batch_size"] == 64 and len(big.missing_chunks()) == 0


def test_labels_and_given_targets(tmp_path, attrs):
    x = worker.images(10)
    labels = np.arange(10) % 5
    vg = attrs["vanilla_grad"]
    s1 = explain_dataset(
        vg,
        list(zip(x, labels, strict=True)),
        tmp_path / "l.zarr",
        batch_size=4,
        targets="label",
        progress=False,
    )
    np.testing.assert_array_equal(s1.targets[:], labels)
    s2 = explain_dataset(vg, x, tmp_path / "g.zarr", batch_size=4, targets=labels, progress=False)
    np.testing.assert_array_equal(s1.attributions[:], s2.attributions[:])
    want = np.asarray(vg(x, labels))
    np.testing.assert_allclose(s2.attributions[:], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert s1.metadata["targets"] == "label" and "array_sha256" in s2.metadata["targets"]
    items = [{"image": xi, "label": li} for xi, li in zip(x, labels, strict=True)]  # Grain-style records
    s3 = explain_dataset(vg, items, tmp_path / "d.zarr", batch_size=4, targets="label", progress=False)
    np.testing.assert_array_equal(s3.attributions[:], s1.attributions[:])


def test_metrics_over_a_store_batch_by_batch(ref):
    """The dataset mean of a per-example metric, one batch at a time, equals it over all N."""
    f = worker.model()[2]
    x = worker.images(N)
    whole = jaxsal.metrics.deletion(f, x, ref.attributions[:], ref.targets[:], steps=4, score="logit")
    per = [
        np.asarray(jaxsal.metrics.deletion(f, b.x, b.attributions, b.targets, steps=4, score="logit").auc)
        for b in ref.batches(16, source=x)
    ]
    np.testing.assert_allclose(np.concatenate(per), whole.auc, rtol=1e-5, atol=1e-6)


def test_open_store_and_metadata(ref, attrs):
    s = open_store(ref.path)
    m = s.metadata
    assert m["method"] == "smoothgrad(vanilla_grad)" and m["hyper"]["n"] == 4
    assert m["hyper"]["attr"] == {"attribution": "vanilla_grad", "hyper": {}}
    assert m["key"]["data"] == np.asarray(jax.random.key_data(KEY)).tolist()
    assert m["n"] == N and m["example_shape"] == list(worker.IMAGE) and m["dtype"] == "float32"
    assert m["jaxsal_version"] == jaxsal.__version__
    assert m["model_fingerprint"] == _dataset.fingerprint_of(attrs["smoothgrad"]) is not None
    np.testing.assert_array_equal(s.attributions[7], ref.attributions[7:8][0])
    with pytest.raises(ValueError, match="not a jaxsal store"):
        open_store(ROOT / "tests")


def test_fingerprint_sees_the_variables():
    module, variables, f = worker.model()
    g = jax.tree_util.tree_map(lambda v: v + 1e-3, variables)
    a = _dataset.fingerprint_of(jaxsal.vanilla_grad(f))
    b = _dataset.fingerprint_of(jaxsal.vanilla_grad(lambda z: module.apply(g, z)))
    c = _dataset.fingerprint_of(jaxsal.smoothgrad(jaxsal.vanilla_grad(f)))
    assert a is not None and a != b and a == c


# ----------------------------------------------------------------------------- resume


def _spawn(out, cache, delay):
    cmd = [sys.executable, str(WORKER), "run", "--out", str(out), "--n", str(N), "--batch-size", str(BATCH)]
    cmd += ["--delay", str(delay), "--cache", str(cache)]
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    with open(Path(out).with_suffix(".log"), "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)


def _log(out) -> str:
    return Path(out).with_suffix(".log").read_text(errors="replace")[-3000:]


def _committed(out) -> int:
    try:
        return int((np.asarray(open_store(out).done[:]) > 0).sum())
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return 0


@pytest.mark.slow
def test_sigkill_at_three_random_points_then_resume_is_bitwise(tmp_path, ref):
    """Three SIGKILLs at seeded random moments (after k more chunks + a random fraction of
    one), each followed by a resume; the final store equals the uninterrupted one bit for
    bit and every chunk is committed exactly once (done == 1: a resume that redid a
    committed chunk would leave a 2)."""
    out, cache = tmp_path / "run.zarr", tmp_path / "cache"
    rng = random.Random(13)
    delay = 0.02  # per example: a chunk takes ~0.08 s
    chunks = -(-N // BATCH)
    procs = []
    try:
        for _ in range(3):
            before = _committed(out)
            goal = min(before + rng.randint(1, 3), chunks - 2)
            p = _spawn(out, cache, delay)
            procs.append(p)
            deadline = time.monotonic() + 120
            while _committed(out) < goal and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, BATCH * delay))
            assert p.poll() is None, f"the run ended before it was killed: {_log(out)}"
            p.kill()
            p.wait(10)
            assert p.returncode == -signal.SIGKILL
            s = open_store(out)
            assert not s.complete and int(np.asarray(s.done[:]).max()) == 1
        p = _spawn(out, cache, 0.0)
        procs.append(p)
        p.wait(timeout=120)
        assert p.returncode == 0, _log(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    final = open_store(out)
    assert final.complete and final.missing_chunks() == []
    np.testing.assert_array_equal(final.done[:], np.ones(chunks, np.uint8))
    assert_bitwise(final, ref)
    assert final.metadata == ref.metadata


def test_a_resumed_call_computes_only_missing_chunks(tmp_path, ref, attrs, capsys):
    out = tmp_path / "r.zarr"
    shutil.copytree(ref.path, out)
    import zarr

    g = zarr.open_group(str(out), mode="r+")
    g["done"][3:5] = 0
    g["attributions"][12:20] = np.nan  # chunks 3 and 4, "lost"
    kept = digest(out / "attributions" / "c" / "0")
    capsys.readouterr()
    s = explain_dataset(attrs["smoothgrad"], worker.images(N), out, batch_size=BATCH, key=KEY, progress=True)
    assert_bitwise(s, ref)
    assert digest(out / "attributions" / "c" / "0") == kept
    bar = capsys.readouterr().err
    assert "8/8" in bar and "img/s" in bar  # the progress bar counts only the missing examples


# ----------------------------------------------------------------------------- bad input


def _call(attrs, out, name="smoothgrad", source=None, **kw):
    kw = {"batch_size": BATCH, "key": KEY, "progress": False, **kw}
    return explain_dataset(attrs[name], worker.images(N) if source is None else source, out, **kw)


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(key=jax.random.key(1)), "key"),
        (dict(name="integrated_gradients"), "method"),
        (dict(source=worker.images(N + 1)), "n"),
        (dict(source=worker.images(N)[:, :4]), "example_shape"),
        (dict(batch_size=8), "batch_size"),
        (dict(targets=np.zeros(N, int)), "targets"),
    ],
)
def test_a_mismatched_store_is_refused_and_left_intact(tmp_path, ref, attrs, change, field):
    out = tmp_path / "s.zarr"
    shutil.copytree(ref.path, out)
    before = digest(out)
    with pytest.raises(ValueError, match=rf"different {field} .*overwrite=True"):
        _call(attrs, out, **change)
    assert digest(out) == before


def test_other_hyper_or_model_is_refused(tmp_path, ref):
    out = tmp_path / "s.zarr"
    shutil.copytree(ref.path, out)
    before = digest(out)
    module, variables, f = worker.model()
    with pytest.raises(ValueError, match="different hyper"):
        explain_dataset(
            jaxsal.smoothgrad(jaxsal.vanilla_grad(f), n=5), worker.images(N), out, batch_size=BATCH, key=KEY
        )
    g = jax.tree_util.tree_map(lambda v: v * 1.001, variables)
    other = jaxsal.smoothgrad(jaxsal.vanilla_grad(lambda z: module.apply(g, z)), n=4)
    with pytest.raises(ValueError, match="different model_fingerprint"):
        explain_dataset(other, worker.images(N), out, batch_size=BATCH, key=KEY)
    with pytest.raises(ValueError, match="different model_fingerprint"):
        explain_dataset(
            worker.method("smoothgrad"), worker.images(N), out, batch_size=BATCH, key=KEY, fingerprint="v2"
        )
    assert digest(out) == before


def test_overwrite_replaces_a_mismatched_store(tmp_path, ref, attrs):
    out = tmp_path / "s.zarr"
    shutil.copytree(ref.path, out)
    s = _call(attrs, out, source=worker.images(N)[:8], overwrite=True)
    assert len(s) == 8 and s.complete
    np.testing.assert_array_equal(s.attributions[:], ref.attributions[:8])


def test_mixed_shapes_name_the_index_and_keep_the_store(tmp_path, ref, attrs):
    x = list(worker.images(N))
    x[45] = np.zeros((9, 8, 3), np.float32)
    out = tmp_path / "s.zarr"
    shutil.copytree(ref.path, out)
    import zarr

    zarr.open_group(str(out), mode="r+")["done"][11:12] = 0  # the last chunk is still to do
    before = digest(out)
    with pytest.raises(
        ValueError, match=r"source\[45\] has shape \(9, 8, 3\) but source\[0\] has shape \(8, 8, 3\)"
    ):
        _call(attrs, out, source=x)
    assert digest(out) == before
    with pytest.raises(ValueError, match=r"source\[45\]"):
        _call(attrs, tmp_path / "fresh.zarr", source=x)
    fresh = open_store(tmp_path / "fresh.zarr")
    assert fresh.missing_chunks() == [11]  # every chunk before the bad example was kept
    x[45] = worker.images(N)[45]
    assert_bitwise(_call(attrs, tmp_path / "fresh.zarr", source=x), ref)


@pytest.mark.parametrize(
    "kw, err, words",
    [
        (dict(targets="label"), ValueError, "source has no labels"),
        (dict(source=np.zeros((0, 8, 8, 3), np.float32)), ValueError, "source is empty"),
        (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
        (dict(targets=np.zeros(3, int)), ValueError, r"targets must have shape \(N,\) = \(48,\)"),
        (dict(targets=np.full(N, 7)), ValueError, "out of range for 5 classes"),
        (dict(targets="labels"), ValueError, "targets must be None, 'label'"),
        (dict(key=None), ValueError, "needs key="),
        (dict(source=np.zeros((4, 8, 8, 3), np.uint8)), TypeError, "floating"),
        (dict(source=object()), TypeError, "source must be"),
        (dict(mesh="data"), TypeError, "mesh must be a jax.sharding.Mesh"),
    ],
)
def test_bad_input_is_a_clear_error_and_keeps_the_store(tmp_path, ref, attrs, kw, err, words):
    out = tmp_path / "s.zarr"
    shutil.copytree(ref.path, out)
    before = digest(out)
    with pytest.raises(err, match=words):
        _call(attrs, out, **kw)
    assert digest(out) == before


def test_labels_out_of_range_name_the_example(tmp_path, attrs):
    x = worker.images(8)
    labels = [1, 2, 3, 4, 0, 9, 1, 2]
    with pytest.raises(ValueError, match="the label of example 5 is 9, out of range for 5 classes"):
        _call(
            attrs,
            tmp_path / "s.zarr",
            "vanilla_grad",
            source=list(zip(x, labels, strict=True)),
            targets="label",
        )


def test_unwritable_out_is_refused_before_computing(tmp_path, attrs, monkeypatch):
    monkeypatch.setattr(_dataset, "_make_step", _must_not_compile)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        _call(attrs, f / "run.zarr")
    with pytest.raises(FileExistsError, match="is a file"):
        _call(attrs, f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _call(attrs, tmp_path / "no" / "run.zarr")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds something else"):
        _call(attrs, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    assert f.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes in read-only folders")
def test_read_only_folder_is_refused(tmp_path, ref, attrs):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(ref.path, ro / "s.zarr")
    before = digest(ro)
    os.chmod(ro / "s.zarr", 0o555)
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(PermissionError, match="cannot write"):
            _call(attrs, ro / "s.zarr", overwrite=True)
    finally:
        os.chmod(ro, 0o755)
        os.chmod(ro / "s.zarr", 0o755)
    assert digest(ro) == before


def _must_not_compile(*a, **k):
    raise AssertionError("compiled before out was checked")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """The CLI with ``explain``/``show`` wired in, the tiny CNN instead of EfficientNet-Lite0
    and 8 x 8 inputs; three PNG files in ``tmp_path / "img"``."""
    from matplotlib.image import imsave

    from jaxsal import cli
    from jaxsal.cli import explain

    module, variables, _ = worker.model()
    monkeypatch.setattr(explain, "load_model", lambda: (module, variables, [str(i) for i in range(5)], None))
    monkeypatch.setattr(
        explain, "preprocess", lambda img: (np.asarray(img)[::4, ::4] / 255.0).astype(np.float32)
    )
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        imsave(tmp_path / "img" / f"p{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return cli


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_explain_resume_and_show(cli_env, tmp_path, capsys):
    out = tmp_path / "run.zarr"
    argv = ["explain", str(tmp_path / "img"), "--methods", "vanilla_grad", "--out", str(out), "--no-progress"]
    assert cli_env.main(argv) == 0
    s = open_store(out / "vanilla_grad")
    assert s.complete and len(s) == 3 and s.attributions[0].shape == (8, 8, 3)
    before = digest(out)
    assert cli_env.main(argv) == 0  # a rerun finds everything done
    assert digest(out) == before
    fig = tmp_path / "fig.png"
    assert cli_env.main(["show", str(out), "--index", "2", "--out", str(fig)]) == 0
    assert fig.stat().st_size > 0
    capsys.readouterr()


def test_cli_errors_are_one_line(cli_env, tmp_path, capsys):
    out = tmp_path / "run.zarr"
    img = str(tmp_path / "img")
    ok = ["explain", img, "--methods", "vanilla_grad", "--out", str(out), "--no-progress"]
    assert cli_env.main(ok) == 0
    before = digest(out)
    capsys.readouterr()
    cases = [
        (["explain", str(tmp_path / "nope.png"), "--out", str(tmp_path / "x.zarr")], "does not exist"),
        (
            ["explain", img, "--methods", "no_such_method", "--out", str(tmp_path / "x.zarr")],
            "no_such_method",
        ),
        (
            ["explain", img, "--methods", "vanilla_grad", "--out", str(tmp_path / "img" / "p0.png")],
            "is a file",
        ),
        (
            ["explain", str(tmp_path / "img" / "p0.png"), "--methods", "vanilla_grad", "--out", str(out)],
            "other images",
        ),
        (["show", str(tmp_path / "img"), "--index", "0"], "not a run folder"),
        (["show", str(out), "--index", "3"], "out of range for 3 images"),
    ]
    for argv, words in cases:
        assert cli_env.main(argv) == 1, argv
        assert words in _one_line(capsys.readouterr().err)
    assert digest(out) == before


def _linear(x):
    return x.reshape(x.shape[0], -1) @ jnp.ones((x[0].size, 2), x.dtype)


def test_explain_dataset_refuses_targets_that_would_wrap_in_int32(tmp_path):
    x = np.zeros((2, 4, 4, 1), np.float32)
    wraps_to_one = np.array([2**32 + 1, 0], np.int64)  # int32: 1, a valid class of 2
    with pytest.raises(ValueError, match="targets holds the class index 4294967297"):
        _dataset.explain_dataset(
            jaxsal.vanilla_grad(_linear), x, tmp_path / "s.zarr", targets=wraps_to_one, progress=False
        )
    assert not (tmp_path / "s.zarr").exists()


def test_store_chunk_rows_checks_the_chunk_index(tmp_path):
    path = str(tmp_path / "s.zarr")
    meta = {"format": _store.FORMAT, "method": "m", "n": 10, "batch_size": 4, "scores_dtype": "float32"}
    _store.create_store(path, meta, (2, 2), np.float32, 3)
    store = _store.open_store(path)
    assert store.num_chunks == 3
    assert [store.chunk_rows(c) for c in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 10)]
    for bad in (-1, 3, 1.0, True):
        with pytest.raises(ValueError, match="0 <= c < 3"):
            store.chunk_rows(bad)

"""explain_dataset over 8 forced host devices and over two processes (issue 13).

Both run ``tests/_dataset_worker.py`` in child processes: the device count is fixed
when JAX starts, and ``jax.distributed.initialize`` can run once per process. Every
child is killed in a ``finally`` and waited for with a bounded timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_dataset import BATCH, KEY, ROOT, WORKER, _store, arrays, assert_bitwise, explain_dataset, worker

TIMEOUT = 300  # seconds per child, under load


def _run(cmds, logs):
    procs = []
    try:
        for (cmd, env), log in zip(cmds, logs, strict=True):
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT))
        for p, log in zip(procs, logs, strict=True):
            p.wait(timeout=TIMEOUT)
            assert p.returncode == 0, Path(log).read_text(errors="replace")[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_eight_devices_equal_one_device(tmp_path):
    """N = 203 (not a multiple of 8 x 32): 8 devices == 1 device, per method.

    Targets and predicted classes are equal exactly; maps and scores to 1e-6 relative
    (of the largest value), not bit for bit: with 8 devices each device convolves a
    batch of 4 instead of 32 rows, and XLA's CPU kernels sum in another order for
    another batch shape. The keys are folded per example, so the noise is identical.
    """
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, str(WORKER), "devices", "--out", str(tmp_path), "--n", "203", "--batch-size", "32"]
    _run([(cmd, env)], [tmp_path / "log"])
    assert "devices=8" in (tmp_path / "log").read_text()
    for name in worker.METHODS:
        many = _store.open_store(tmp_path / f"{name}-all")
        one = _store.open_store(tmp_path / f"{name}-1")
        assert many.complete and one.complete and len(many) == 203
        a, b = arrays(many), arrays(one)
        for k in ("targets", "pred", "done"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
        for k in ("attributions", "scores"):
            scale = np.abs(b[k]).max()
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6 * scale, err_msg=f"{name} {k}")
        assert many.metadata == one.metadata


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_write_one_store_equal_to_one_process(tmp_path):
    """Two processes (jax.distributed over gloo, one CPU device each) each write their
    own chunks (c % 2) of one store; it equals the single-process store bit for bit:
    same per-device batch, same compiled program, same keys."""
    n = 42  # 11 chunks of 4: the processes get 6 and 5
    out = tmp_path / "mh.zarr"
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    cmds = [
        (
            [
                sys.executable,
                str(WORKER),
                "multihost",
                "--out",
                str(out),
                "--n",
                str(n),
                "--batch-size",
                str(BATCH),
            ]
            + ["--port", str(port), "--process-id", str(i)],
            env,
        )
        for i in range(2)
    ]
    _run(cmds, [tmp_path / f"log{i}" for i in range(2)])
    assert "processes=2" in (tmp_path / "log0").read_text()
    single = explain_dataset(
        worker.method("smoothgrad"),
        worker.images(n),
        tmp_path / "one.zarr",
        batch_size=BATCH,
        key=KEY,
        progress=False,
    )
    mh = _store.open_store(out)
    assert mh.complete
    np.testing.assert_array_equal(mh.done[:], np.ones(11, np.uint8))
    assert_bitwise(mh, single)
    assert jax.process_count() == 1

"""``benchmarks/gpu.py --tiny`` runs on the CPU and writes a complete JSON (the GPU path's
harness, tested without a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.heavy  # minutes of Captum and jaxsal timing runs: the harness, not a result
def test_tiny_plan_runs_on_cpu(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    out = tmp_path / "gpu.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "", "JAXSAL_COMPILE_CACHE": "0"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu",
            "--tiny",
            "--runs",
            "1",
            "--budget-s",
            "100000",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(out.read_text())
    assert info["device"] == "cpu" and info["jax_backend"] == "cpu"
    got = {(r["method"], r["batch"]) for r in info["rows"]}
    assert got == {(m, b) for m in ("vanilla_grad", "integrated_gradients", "grad_cam") for b in (1, 2)}, (
        info["skipped"]
    )
    for r in info["rows"]:
        assert r["jaxsal_ms"] > 0 and r["captum_ms"] > 0 and r["floor_ms"] > 0
        assert r["ratio"] == pytest.approx(r["jaxsal_ms"] / r["captum_ms"])
    (ds,) = info["dataset"]
    assert ds["model"] == "small_cnn" and ds["n"] == 128 and ds["devices"] >= 1
    assert ds["images_per_s"] > 0 and ds["first_store_s"] > 0

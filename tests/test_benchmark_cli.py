"""``jaxsal benchmark`` on tiny settings: files, baseline rows, CIs, reliability."""

from __future__ import annotations

import argparse
import io

import jax
import numpy as np
import pytest

from jaxsal.cli import benchmark


def test_sobel_map_closed_form():
    # a vertical step edge: |gx| = 4 * step on the two columns around it, 0 elsewhere
    x = np.zeros((1, 6, 6, 1), np.float32)
    x[..., 3:, :] = 1.0
    s = np.asarray(benchmark.sobel_map(x))
    np.testing.assert_allclose(s[0, :, 2:4], 4.0)
    np.testing.assert_allclose(s[0, :, [0, 1, 4, 5]], 0.0)


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    v = np.arange(20.0)
    a = benchmark.bootstrap_ci(v, jax.random.key(0), 200)
    assert a == benchmark.bootstrap_ci(v, jax.random.key(0), 200)
    assert a[1] < a[0] < a[2] and a[0] == pytest.approx(9.5)


@pytest.mark.slow
def test_benchmark_quick_tiny(tmp_path):
    calls = []

    def generator(key, n, size):
        calls.append((n, size))
        return benchmark.shapes_generator(key, n, size)

    parser = argparse.ArgumentParser()
    benchmark.add_subcommands(parser.add_subparsers())
    args = parser.parse_args(["benchmark", "--quick", "--methods", "vanilla_grad", "--out", str(tmp_path)])
    assert args.func is benchmark._benchmark and args.quick
    out = io.StringIO()
    r = benchmark.run_benchmark(
        methods=args.methods,
        generator=generator,
        out=str(tmp_path),
        quick=True,
        train_size=32,
        test_size=6,
        steps=3,
        n_boot=20,
        progress=False,
        stream=out,
    )
    assert calls == [(32, 16), (6, 16)]
    assert r["names"] == ["random map", "Sobel edges", "input", "vanilla_grad"]
    assert r["scores"].shape == (4, 6, len(benchmark.METRICS))
    for row in r["rows"].values():
        for mean, lo, hi in row.values():
            assert lo - 1e-12 <= mean <= hi + 1e-12
    rel = r["reliability"]
    assert rel.inter_rater.shape == (len(benchmark.METRICS),) and "deletion" in rel.internal_consistency
    md, png = r["paths"]
    with open(md, encoding="utf-8") as fh:
        text = fh.read()
    assert "| *random map* |" in text and "| vanilla_grad |" in text and "Krippendorff" in text
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert text in out.getvalue()

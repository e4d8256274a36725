"""Parity with Quantus 0.6 on the same maps (needs the ``bench`` extra).

Quantus is installed without its dependencies so that pip cannot replace the CPU torch::

    .venv/bin/pip download quantus==0.6.0 --no-deps
    .venv/bin/pip install --no-deps quantus==0.6.0 pandas cachetools opencv-python-headless

(its other needs, numpy, scipy, scikit-image, scikit-learn, matplotlib, tqdm and torch,
are already there; Zennit, which Quantus imports when present, goes through
:mod:`benchmarks.zennit_shim`). The comparison itself is :mod:`benchmarks.quantus_parity`.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])  # `benchmarks/` lives beside `jaxsal/`
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import quantus_parity, zennit_shim  # noqa: E402

if importlib.util.find_spec("zennit") is not None:
    zennit_shim.import_zennit()  # Quantus imports Zennit, Zennit imports torchvision
pytest.importorskip("quantus")

pytestmark = pytest.mark.bench

METRICS = (
    "sparseness",
    "complexity",
    "faithfulness_correlation",
    "top_k_intersection",
    "attribution_localisation",
    "relevance_mass_accuracy",
)


@pytest.fixture(scope="module")
def rows():
    return quantus_parity.rows(seed=0)


@pytest.mark.parametrize("name", METRICS)
def test_quantus_parity(rows, name):
    ours, theirs = rows[name]
    assert ours.shape == theirs.shape == (quantus_parity.B,)
    assert np.all(np.isfinite(ours))
    assert np.abs(ours - theirs).max() < 1e-5, (name, ours, theirs)


def test_scores_are_not_degenerate(rows):
    # a comparison of constants would pass trivially: the examples must differ
    for name in ("sparseness", "complexity", "faithfulness_correlation", "attribution_localisation"):
        assert np.ptp(rows[name][0]) > 1e-3, name

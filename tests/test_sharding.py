"""Every registered method on a batch sharded over 8 devices equals the unsharded call.

The checks run in a fresh process (``tests/_sharding_worker.py``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: the device count is fixed when
JAX starts, and this pytest process has one CPU device. Three settings per method
(see the worker's docstring): ``jax.jit`` over an Auto mesh axis, over an Explicit mesh
axis, and inside ``jax.shard_map(check_vma=True)``, where stochastic methods run as
``jaxsal.per_example(attr, axis_name="b")`` so that every shard draws the noise of the
unsharded call. Each cell must equal the unsharded result to ``1e-6`` of its largest
magnitude and come back sharded along the batch.

The quick test covers one method per code path that sharding broke (a model gradient,
a path method, a wrapper with per-example noise, a layer method, a sampling method);
the heavy one (``--heavy``) covers the whole registry.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxsal
from jaxsal._src.contract import per_example

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_sharding_worker.py")
# One method per mechanism: the plain gradient, a path, a stochastic wrapper, a layer
# method, a ReLU rule (the interpreter inside shard_map), a probe (Grad-CAM), a host-keyed
# sampler, an attention method (gradient rollout on a tiny ViT). The whole registry runs under --heavy.
QUICK = [
    "vanilla_grad",
    "integrated_gradients",
    "smoothgrad",
    "layer_grad_x_activation",
    "guided_backprop",
    "grad_cam",
    "rise",
    "gradient_rollout",  # the attention family: a replayed softmax, a vjp through captured maps
]
SETTINGS = ["auto", "explicit", "shard_map"]

LEFT_OUT: dict = {}  # (method, setting) cells not run, with the reason; none today.

# Blur IG's blurred path points come from a convolution whose CPU kernel sums in another
# order at another batch size: the sharded map differs from the unsharded one by ~2e-6
# relative (measured 2.1e-6 in every setting), float32 rounding of the blur.
RTOL_FOR = {"blur_ig": 1e-5}


def run_worker(names: list[str]) -> dict[tuple[str, str], dict]:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, WORKER, *names], capture_output=True, text=True, env=env, timeout=3000, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {(r["method"], r["setting"]): r for r in rows if "setting" in r}


@functools.cache
def _cells(names: tuple[str, ...]) -> dict:
    """One worker run per pytest process (half a minute of compiles), whichever tests need it."""
    return run_worker(list(names))


@pytest.fixture
def quick():
    return _cells(tuple(QUICK))


@pytest.fixture
def full():
    return _cells(())


def check_cell(cells, method, setting):
    row = cells[(method, setting)]
    assert row["error"] is None, row["error"]
    rtol = RTOL_FOR.get(method, 1e-6)
    assert row["rel_err"] <= rtol, f"{method} under {setting}: relative error {row['rel_err']:.3g}"
    assert row["sharded"], f"{method} under {setting}: output sharding {row['spec']}, not along the batch"


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("method", QUICK)
def test_sharded_equals_unsharded(quick, method, setting):
    check_cell(quick, method, setting)


def test_plain_rise_in_shard_map_draws_the_unsharded_masks(quick):
    # RISE draws its masks from the key alone, so even without per_example every
    # shard uses the unsharded call's masks.
    check_cell(quick, "rise", "shard_map_plain")


FULL = [
    (m, s)
    for m in jaxsal.methods()
    for s in SETTINGS
    + (["shard_map_plain"] if m in ("shapley_sampling", "rise", "kernel_shap", "lime") else [])
    if (m, s) not in LEFT_OUT
]


@pytest.mark.heavy  # the whole registry, 4 compilations each: minutes of CPU (run with --heavy)
@pytest.mark.parametrize(("method", "setting"), FULL, ids=[f"{m}-{s}" for m, s in FULL])
def test_every_method_sharded_equals_unsharded(full, method, setting):
    check_cell(full, method, setting)


# ----------------------------------------------------------------------------- per_example, one device


def test_per_example_is_batch_size_independent(cnn):
    """Example i's noise comes from fold_in(key, i): the same alone or in the batch."""
    key = jax.random.key(0)
    sg = per_example(jaxsal.smoothgrad(jaxsal.vanilla_grad(cnn.f), n=3))
    whole = sg(cnn.x, key=key)
    for i in range(cnn.x.shape[0]):
        alone = jaxsal.smoothgrad(jaxsal.vanilla_grad(cnn.f), n=3)(
            cnn.x[i : i + 1], key=jax.random.fold_in(key, i)
        )
        np.testing.assert_allclose(whole[i : i + 1], alone, rtol=1e-5, atol=1e-7)
    assert not np.allclose(whole[0], whole[1]), "examples must get different noise"


def test_per_example_keeps_deterministic_maps_and_targets(cnn):
    attr = jaxsal.integrated_gradients(cnn.f, steps=4)
    wrapped = per_example(attr)
    assert wrapped.stochastic is False and wrapped.output == attr.output
    t = jax.numpy.array([0, 3, 1])
    np.testing.assert_allclose(wrapped(cnn.x, t), attr(cnn.x, t), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(wrapped(cnn.x), attr(cnn.x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(wrapped(cnn.x, 2), attr(cnn.x, 2), rtol=1e-5, atol=1e-7)


def test_per_example_bad_input(cnn):
    with pytest.raises(TypeError, match="axis_name"):
        per_example(jaxsal.vanilla_grad(cnn.f), axis_name=3)
    with pytest.raises(ValueError, match="key"):
        per_example(jaxsal.smoothgrad(jaxsal.vanilla_grad(cnn.f), n=2))(cnn.x)
    with pytest.raises(ValueError, match="target"):
        per_example(jaxsal.vanilla_grad(cnn.f))(cnn.x, jax.numpy.array([0, 1]))

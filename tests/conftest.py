"""Shared fixtures: small Flax models that every method is tested on."""

from __future__ import annotations

import functools
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

# Equinox's strict flags (and optax's habit of running every member in several dtypes):
# implicit dtype promotion and implicit rank promotion are errors, so a library bug
# that relies on them fails here instead of silently upcasting or broadcasting. Warnings
# are errors too (pyproject.toml: filterwarnings = ["error", ...]).
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


# The heaviest end-to-end demonstrations (a whole notebook, the full demo on the bundled
# photos, ...) are marked ``heavy``: they run with ``--heavy`` (or JAXSAL_HEAVY_TESTS=1)
# and are skipped otherwise, so the default suite stays near 10 minutes on 2 cores.
# Each of them repeats at full size what a faster test checks on a small model.
def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true", help="also run tests marked heavy")


@pytest.fixture(autouse=True)
def _no_compile_cache(monkeypatch):
    """No test writes to the user's persistent XLA cache (the CLI enables it by default)."""
    monkeypatch.setenv("JAXSAL_COMPILE_CACHE", "0")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--heavy") or os.environ.get("JAXSAL_HEAVY_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="heavy end-to-end run: pass --heavy (or JAXSAL_HEAVY_TESTS=1)")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


# Tolerances per dtype for comparisons of the same computation done two ways (jit vs
# eager, vmap vs loop, chunked vs not).
TOL = {
    jnp.dtype(jnp.float32): dict(rtol=2e-5, atol=2e-6),
    jnp.dtype(jnp.float64): dict(rtol=1e-10, atol=1e-12),
    jnp.dtype(jnp.bfloat16): dict(rtol=2e-2, atol=2e-2),
}


def tol(dtype) -> dict:
    return TOL[jnp.dtype(dtype)]


class Features(nn.Module):
    """Two conv layers; its output (B, h, w, K) is the probed layer."""

    act: callable = nn.relu

    @nn.compact
    def __call__(self, x):
        x = self.act(nn.Conv(6, (3, 3), name="conv1")(x))
        x = self.act(nn.Conv(8, (3, 3), strides=(2, 2), name="conv2")(x))
        return x


class SmallCNN(nn.Module):
    """conv-relu-conv-relu -> (features) -> dense-relu -> dense: scores (B, 5)."""

    act: callable = nn.relu
    num_classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = Features(self.act, name="features")(x)
        x = x.reshape((x.shape[0], -1))
        x = self.act(nn.Dense(16, name="fc1")(x))
        return nn.Dense(self.num_classes, name="head")(x)


class NNXCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, act=nnx.relu):
        self.act = act
        self.conv1 = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(6, 8, (3, 3), strides=(2, 2), rngs=rngs)
        self.fc1 = nnx.Linear(4 * 4 * 8, 16, rngs=rngs)
        self.head = nnx.Linear(16, 5, rngs=rngs)

    def __call__(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = x.reshape((x.shape[0], -1))
        return self.head(self.act(self.fc1(x)))


INPUT_SHAPE = (3, 8, 8, 3)


@pytest.fixture(scope="session")
def cnn():
    """A small linen CNN with its variables, ``f`` and a batch ``x``."""
    module = SmallCNN()
    x = jax.random.normal(jax.random.key(1), INPUT_SHAPE)
    variables = module.init(jax.random.key(0), x)
    return types.SimpleNamespace(
        module=module,
        variables=variables,
        x=x,
        f=lambda inp: module.apply(variables, inp),
        layer="features",
    )


@pytest.fixture(scope="session")
def nnx_cnn():
    model = NNXCNN(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), INPUT_SHAPE)
    return types.SimpleNamespace(model=model, x=x)


# A 4 x 4 grid of 2 x 2 patches (16 groups) for the 8 x 8 inputs: feature masks of the
# sampling methods in FAST (their default 8 x 8 grid would be 64 single pixels).
GRID4 = jnp.repeat(jnp.repeat(jnp.arange(16).reshape(4, 4), 2, axis=0), 2, axis=1)

# Hyper-parameters small enough for the unit tests, per registered method (test-only
# data: the registry holds none). Methods not named here run with their defaults.
FAST = {
    "integrated_gradients": {"steps": 8},
    "layer_integrated_gradients": {"steps": 8},
    "smoothgrad": {"n": 4},
    "smoothgrad_sq": {"n": 4},
    "vargrad": {"n": 4},
    "score_cam": {"batch_size": 4},
    "occlusion": {"window": (3, 3), "strides": (2, 2)},
    "shapley_sampling": {"n": 2, "feature_mask": GRID4},
    "kernel_shap": {"n": 40, "feature_mask": GRID4},
    "lime": {"n": 40, "feature_mask": GRID4},
    "rise": {"n": 16, "grid": 3},
    "expected_gradients": {"n": 4},
    "guided_ig": {"steps": 4},
    "blur_ig": {"steps": 4, "max_sigma": 2.0},
    "xrai": {"steps": 4, "segment_resize": None, "min_pixel_diff": 1, "dilation_radius": 1},
}


@pytest.fixture
def captured_runs(monkeypatch):
    """The DemoResult of every ``jaxsal.cli.demo.run`` call made through the CLI."""
    from jaxsal.cli import demo

    results = []
    run = demo.run
    monkeypatch.setattr(demo, "run", lambda *a, **k: results.append(run(*a, **k)) or results[-1])
    return results


@functools.cache
def _tiny_vit():
    """A two-block ViT on the 8×8 test inputs (2-px patches: a 4×4 token grid, 5 classes)."""
    from jaxsal.models.vit import ViT

    vit = ViT(num_classes=5, patch=2, dim=8, depth=2, heads=2, mlp_dim=16, stem=0)
    return vit, vit.init(jax.random.key(0), jnp.zeros(INPUT_SHAPE, jnp.float32))


def model_of(method, cnn):
    """The scores function ``x -> (B, C)`` that :func:`build` builds ``method`` on."""
    if method.family == "attention":
        vit, variables = _tiny_vit()
        v = jax.tree.map(lambda a: a.astype(cnn.x.dtype), variables)
        return lambda inp: vit.apply(v, inp)
    return cnn.f


def build(method, cnn, **hyper):
    """Build a registered method on the small CNN (``f`` or a probe of ``features``).

    The attention family needs attention: it runs on a tiny ViT instead, whose 4×4 patch
    grid gives maps of the same shape as the CNN's probed layer."""
    hyper = {**FAST.get(method.name, {}), **hyper}
    if method.family == "attention":
        from jaxsal import Tokens

        return method.build(model_of(method, cnn), tokens=Tokens(grid=(4, 4)), **hyper)
    if method.takes == "f":
        return method.build(cnn.f, **hyper)
    from jaxsal import flax as jflax

    return method.build(jflax.probe(cnn.module, cnn.variables, cnn.layer), **hyper)

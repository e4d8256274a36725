"""Train a small Flax linen classifier: softmax cross-entropy, Adam (optax), one jitted step.

Used by ``jaxsal evaluate`` and the data randomisation test
(:func:`jaxsal.metrics.data_randomization`) to train :class:`jaxsal.models.ShapesCNN`
in seconds. optax is imported on the first call, not with :mod:`jaxsal.models`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsal.datasets import _as_key

Array = jax.Array


class Trained(NamedTuple):
    """Attributes:
    variables: the Flax variables ``{"params": ...}``.
    losses: ``(steps,)`` training loss per step.
    train_accuracy: accuracy on the full training set after training.
    """

    variables: Any
    losses: Array
    train_accuracy: Array


def train_classifier(
    module: nn.Module,
    images: Any,
    labels: Any,
    *,
    key: Any,
    steps: int = 800,
    batch_size: int = 64,
    learning_rate: float = 5e-3,
    init_key: Any = None,
) -> Trained:
    """Train ``module`` with softmax cross-entropy and Adam (optax).

    Mini-batches of ``batch_size`` examples are drawn uniformly (with replacement) from ``key``; the
    parameters are initialised from ``init_key`` (default: a key derived from ``key``).
    One jitted step, compiled once. Deterministic given the keys.
    """
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels must have the same length; got {images.shape[0]} and {labels.shape[0]}."
        )
    key = _as_key(key)
    init_key = jax.random.fold_in(key, 0) if init_key is None else _as_key(init_key)
    n = images.shape[0]
    bs = min(int(batch_size), n)
    variables = module.init(init_key, images[:1])
    tx, step = _train_step(module, float(learning_rate), bs)
    params, opt_state = variables["params"], tx.init(variables["params"])
    losses = []
    for k in jax.random.split(jax.random.fold_in(key, 1), int(steps)):
        params, opt_state, loss = step(params, opt_state, k, images, labels)
        losses.append(loss)
    losses = jnp.stack(losses) if losses else jnp.zeros((0,))
    acc = accuracy(module, {"params": params}, images, labels)
    return Trained({"params": params}, losses, acc)


@functools.lru_cache(maxsize=16)
def _train_step(module: nn.Module, learning_rate: float, batch_size: int):
    """Adam and one jitted training step, cached per (module, learning rate, batch size).

    A Python loop over this step, rather than ``lax.scan``: on CPU, XLA runs
    convolutions inside a scan body several times slower than at top level. The data
    are arguments (no large constants baked into the program).
    """
    import optax

    tx = optax.adam(learning_rate)

    def loss_fn(params, xb, yb):
        logits = module.apply({"params": params}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(params, opt_state, k, xs, ys):
        idx = jax.random.randint(k, (batch_size,), 0, xs.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(params, xs[idx], ys[idx])
        # optax mixes Python floats with int32 step counts (Adam's bias correction), which
        # JAX's strict dtype promotion refuses; the update itself is float32 throughout.
        with jax.numpy_dtype_promotion("standard"):
            upd, opt_state = tx.update(g, opt_state, params)
            return optax.apply_updates(params, upd), opt_state, loss

    return tx, step


@functools.lru_cache(maxsize=16)
def _predict(module: nn.Module):
    return jax.jit(lambda v, x: module.apply(v, x).argmax(-1))


def accuracy(module: nn.Module, variables: Any, images: Array, labels: Array, batch_size: int = 512) -> Array:
    """Top-1 accuracy of ``module`` on ``(images, labels)``."""
    apply = _predict(module)
    preds = jnp.concatenate(
        [apply(variables, images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    )
    return (preds == labels).mean()

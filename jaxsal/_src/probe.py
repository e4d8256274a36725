"""Probes: where a layer attribution lives, without hooks.

A *probe* evaluates the model while reading one intermediate layer's output ``A``
and adding a perturbation ``delta`` to it (``delta = 0`` leaves the model
unchanged). Because ``delta`` enters as an ordinary function argument,
``dy/dA = dy/d(delta)`` at ``delta = 0`` is a plain JAX gradient, and::

    scores, pullback, A = jax.vjp(lambda d: probe.run(x, d), zeros, has_aux=True)

gives the activations *and* their gradient from one forward and one backward pass
(:func:`layer_gradient`). Nothing is registered on, or left behind in, the model:
a probe is a pair of pure functions, so every layer method built on it is
jittable, vmappable and differentiable, like the input methods.

This module holds the contract and the plain-function probe
:func:`probe` (``scores = head_fn(features_fn(x))``). The Flax adapters are in
:mod:`jaxsal.flax`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src.tokens import Tokens

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Probe:
    """A model seen through one of its layers.

    Attributes:
      scores_fn: the full, unmodified model ``x (B, ...) -> raw scores (B, C)``.
        Used to resolve ``target=None`` and by input-gradient methods such as Guided
        Backprop.
      run: ``run(x, delta) -> (scores, A)``: the model with ``delta`` added to the
        probed layer's output ``A`` (``delta=None`` adds nothing). ``A`` is the
        unperturbed layer output, channels last, ``(B, h, w, K)``.
      layer: the probed layer's name, for messages.
    """

    scores_fn: Callable[[Array], Array]
    run: Callable[[Array, Array | None], tuple[Array, Array]]
    layer: str = "features"

    def activation_shape(self, x: Array) -> jax.ShapeDtypeStruct:
        """Shape and dtype of the layer output for input ``x``, without running the model.

        Raises ``ValueError`` if it is not ``(B, h, w, K)``.
        """
        _, a = jax.eval_shape(lambda x: self.run(x, None), x)
        check_activation(a, x.shape[0], self.layer)
        return a


def check_activation(a: Any, batch: int, layer: str) -> None:
    """The probed layer must output feature maps ``(B, h, w, K)`` (channels last)."""
    shape = getattr(a, "shape", None)
    if shape is None or len(shape) != 4 or shape[0] != batch:
        got = f"a {type(a).__name__}" if shape is None else f"shape {tuple(shape)}"
        raise ValueError(
            f"layer {layer!r} outputs {got}, but layer methods need feature maps of shape "
            f"(B, h, w, K) = ({batch}, h, w, K), channels last; probe a convolutional layer, "
            f"or use jaxsal.probe(features_fn, head_fn) with a features_fn that reshapes to (B, h, w, K)."
        )
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"layer {layer!r} outputs dtype {a.dtype}; layer methods need floating feature maps.")


def check_probe(p: Any, name: str = "probe") -> Probe:
    if not isinstance(p, Probe):
        raise TypeError(
            f"{name} must be a jaxsal probe; got {type(p).__name__}. Build one with "
            f"jaxsal.flax.probe(module, variables, 'path/to/layer') (Flax linen), "
            f"jaxsal.flax.probe(module, 'path.to.layer') (NNX) or jaxsal.probe(features_fn, head_fn)."
        )
    return p


def layer_gradient(p: Probe, x: Array, target: contract.Target) -> tuple[Array, Array, Array]:
    """``(scores, A, dy/dA)`` from one forward and one backward pass.

    ``y = select(scores, target)`` per example (the raw score of the target class,
    or ``target(scores)`` for a callable), so ``dy/dA`` backpropagates that score
    alone (every other class's output gradient is zero) to the layer. Shapes: ``(B, C)``,
    ``(B, h, w, K)``, ``(B, h, w, K)``.
    """
    spec = p.activation_shape(x)
    # Varying over the same shard_map axes as x: otherwise its gradient is summed over shards.
    zeros = contract.varying_like(jnp.zeros(spec.shape, spec.dtype), x)
    scores, pullback, a = jax.vjp(lambda d: p.run(x, d), zeros, has_aux=True)
    contract.check_scores(scores, x.shape[0], name="the probed model")
    (grad,) = pullback(contract.target_cotangent(scores, target))
    return scores, a, grad


def layer_forward(p: Probe, x: Array) -> tuple[Array, Array]:
    """``(scores, A)`` from one forward pass, checked."""
    scores, a = p.run(x, None)
    contract.check_scores(scores, x.shape[0], name="the probed model")
    check_activation(a, x.shape[0], p.layer)
    return scores, a


def with_tokens(p: Probe, tokens: Tokens) -> Probe:
    """The probe ``p`` on a token layer ``(B, T, D)``, seen as the patch feature map ``(B, h, w, D)``.

    ``run(x, delta)`` takes ``delta`` of shape ``(B, h, w, D)``, adds it to the patch
    tokens (zero on the prefix and suffix tokens: CLS, registers) and returns the patch
    tokens reshaped to ``(B, h, w, D)``. So ``dy/dA`` of the map is the gradient with
    respect to the patch tokens, and every layer method (the CAM family, ``at_layer``)
    works on a ViT with no reshape transform.

    Args:
      p: a probe whose layer outputs tokens ``(B, T, D)``.
      tokens: the token layout, :class:`jaxsal.Tokens`.

    Returns:
      A :class:`Probe` with the same ``scores_fn`` and layer name.

    A ``ValueError`` is raised when the probe is called if the layer does not output
    ``(B, T, D)``, or if ``tokens`` does not fit its ``T`` (the message names ``T`` and
    the spec).
    """
    check_probe(p)
    if not isinstance(tokens, Tokens):
        raise TypeError(
            f"tokens must be a jaxsal.Tokens, e.g. Tokens(grid=(h, w), prefix=1); got {type(tokens).__name__}."
        )
    inner = p.run
    where = f"layer {p.layer!r}"

    def run(x, delta):
        if delta is None:
            scores, a = inner(x, None)
            return scores, tokens.to_map(a, where)
        _, a0 = jax.eval_shape(lambda x: inner(x, None), x)
        tokens.check(a0, where)
        scores, a = inner(x, tokens.to_tokens(delta.astype(a0.dtype), a0.shape[1]))
        return scores, tokens.to_map(a, where)

    return Probe(scores_fn=p.scores_fn, run=run, layer=p.layer)


def probe(
    features_fn: Callable[[Array], Array],
    head_fn: Callable[[Array], Array],
    *,
    name: str = "features",
    tokens: Tokens | None = None,
) -> Probe:
    """A probe for a model given as two plain functions, ``scores = head_fn(features_fn(x))``.

    Args:
      features_fn: ``x (B, ...) -> A (B, h, w, K)``, the model up to and including the
        probed layer (channels last); with ``tokens``, token activations ``(B, T, D)``.
      head_fn: ``A -> raw scores (B, C)``, the rest of the model.
      name: the layer's name in error messages.
      tokens: for a token layer, its layout (:class:`jaxsal.Tokens`): the probe then
        presents the patch tokens as a map ``(B, h, w, D)`` (see :func:`with_tokens`).

    Returns:
      A :class:`Probe` for :func:`jaxsal.grad_cam` and the other layer methods.

    Example::

      p = jaxsal.probe(lambda x: model.apply(v, x, method=Net.features),
                       lambda a: model.apply(v, a, method=Net.head))
      cam = jaxsal.grad_cam(p)(images)       # (B, h, w)
    """
    contract.check_callable(features_fn, "features_fn")
    contract.check_callable(head_fn, "head_fn")

    def scores_fn(x):
        return head_fn(features_fn(x))

    def run(x, delta):
        a = features_fn(x)
        return head_fn(a if delta is None else a + delta), a

    p = Probe(scores_fn=scores_fn, run=run, layer=name)
    return p if tokens is None else with_tokens(p, tokens)

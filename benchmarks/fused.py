"""Prototype: several methods from one forward pass (a proposal for the library).

The demo computes Vanilla Gradient, Gradient x Input, Grad-CAM, Guided Backprop and
Guided Grad-CAM of the same images. Called one by one, that is five forward and five
backward passes. But

* one ``jax.vjp`` of ``probe.run`` with respect to ``(x, delta)`` gives the input
  gradient *and* the layer gradient: Vanilla Gradient, Gradient x Input and Grad-CAM
  from one forward and one backward pass;
* Guided Backprop needs its own backward pass (other ReLU rule) but not its own
  forward pass: the forward of the guided rule is the same ``max(x, 0)``;
* Guided Grad-CAM is Guided Backprop times the upsampled Grad-CAM: no pass at all.

:func:`fused_gradient_family` does this with public jaxsal pieces; :func:`separate`
calls the five methods one after the other inside one ``jit`` (XLA may or may not
merge their forward passes; this measures whether it does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxsal
from benchmarks.parity import jx
from jaxsal._src import contract


def fused_gradient_family(probe, x, target):
    """dict of vanilla_grad, grad_x_input, grad_cam, guided_backprop, guided_grad_cam."""
    upsample = jx("upsample")
    zeros = jnp.zeros(probe.activation_shape(x).shape, x.dtype)
    scores, pullback, a = jax.vjp(lambda x, d: probe.run(x, d), x, zeros, has_aux=True)
    gx, ga = pullback(contract.target_cotangent(scores, target))
    alpha = jnp.mean(ga, axis=(1, 2), keepdims=True)
    cam = jax.nn.relu(jnp.sum(alpha * a, axis=-1))
    guided_f = jaxsal.with_relu_rule(probe.scores_fn, "guided")
    s2, pull2 = jax.vjp(guided_f, x)
    (gb,) = pull2(contract.target_cotangent(s2, target))
    up = upsample(cam, x.shape[1:3], method="bilinear")
    return {
        "vanilla_grad": gx,
        "grad_x_input": gx * x,
        "grad_cam": cam,
        "guided_backprop": gb,
        "guided_grad_cam": gb * up[..., None],
    }


def separate(probe, x, target):
    f = probe.scores_fn
    gb = jx("guided_backprop")(f)(x, target)
    return {
        "vanilla_grad": jx("vanilla_grad")(f)(x, target),
        "grad_x_input": jx("grad_x_input")(f)(x, target),
        "grad_cam": jx("grad_cam")(probe)(x, target),
        "guided_backprop": gb,
        "guided_grad_cam": jx("guided_grad_cam")(probe)(x, target),
    }

"""Composition in a training loop: an input-gradient penalty ("Right for the Right
Reasons", Ross, Hughes & Doshi-Velez 2017) computed with jaxsal inside a jitted
optax step, differentiated with respect to the parameters."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsal


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))
        return nn.Dense(3)(x)


def make_problem():
    kx, kp = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (32, 6))
    y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0.5).astype(jnp.int32)
    # Annotation: features 3.. are "wrong reasons"; the penalty pushes their attribution to zero.
    mask = jnp.zeros((6,)).at[3:].set(1.0)
    model = MLP()
    return model, model.init(kp, x), x, y, mask


@pytest.mark.parametrize(
    "method",
    [jaxsal.vanilla_grad, lambda f: jaxsal.integrated_gradients(f, steps=4, method="riemann_middle")],
    ids=["vanilla_grad", "integrated_gradients"],
)
def test_input_gradient_penalty_trains_under_jit(method):
    model, params, x, y, mask = make_problem()
    opt = optax.adam(1e-2)

    def loss_fn(params, x, y):
        f = lambda v: model.apply(params, v)  # noqa: E731
        logits = f(x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        # Ross et al. use the gradient of the summed log-probabilities.
        log_probs = lambda s: jnp.sum(jax.nn.log_softmax(s), axis=1)  # noqa: E731
        r = method(f)(x, log_probs)
        return ce + 10.0 * jnp.mean(jnp.sum((mask[None] * r) ** 2, axis=1))

    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32 counts
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

    state = opt.init(params)
    jstep = jax.jit(step)
    p_j, s_j, p_e, s_e = params, state, params, state
    losses = []
    for _ in range(25):
        p_j, s_j, loss_j = jstep(p_j, s_j, x, y)
        losses.append(float(loss_j))
    for _ in range(3):
        p_e, s_e, loss_e = step(p_e, s_e, x, y)
    # jit matches eager after the same number of steps.
    p_check = params
    s_check = state
    for _ in range(3):
        p_check, s_check, _ = jstep(p_check, s_check, x, y)
    np.testing.assert_allclose(float(loss_fn(p_e, x, y)), float(loss_fn(p_check, x, y)), rtol=1e-4)
    assert losses[-1] < 0.7 * losses[0], losses
    # The penalty itself went down, not only the cross-entropy.
    grads = jax.grad(loss_fn)(p_j, x, y)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))

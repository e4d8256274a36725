"""Expected Gradients: Integrated Gradients averaged over a distribution of baselines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src.perturbation import acc_dtype, clean_scores
from jaxsal._src.registry import Method, register
from jaxsal._src.relu_rules import with_fast_max_pool

Array = jax.Array


def _check_baselines(baselines: Any) -> Any:
    if baselines is None:
        return None
    if isinstance(baselines, (list, tuple)):
        baselines = np.asarray(baselines)
    if not hasattr(baselines, "shape") or not hasattr(baselines, "dtype"):
        raise TypeError(
            f"baselines must be an array (K, ...) of K baselines; got {type(baselines).__name__}."
        )
    if baselines.ndim < 1 or baselines.shape[0] == 0:
        raise ValueError(
            f"baselines must be a non-empty set of K >= 1 baselines, shape (K, ...) like x's examples; "
            f"got shape {tuple(baselines.shape)}."
        )
    if not (jnp.issubdtype(baselines.dtype, jnp.floating) or jnp.issubdtype(baselines.dtype, jnp.integer)):
        raise TypeError(f"baselines must be numeric; got dtype {baselines.dtype}.")
    return baselines


def expected_gradients(
    f: Callable,
    baselines: Array | np.ndarray | None = None,
    *,
    n: int = 50,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Expected Gradients (Erion, Janizek, Sturmfels, Lundberg & Lee 2021, "Improving
    performance of deep learning models with axiomatic attribution priors and expected
    gradients", https://arxiv.org/abs/1906.10670).

    .. math::

       R^c_i(x) = \mathbb{E}_{x' \sim D,\ \alpha \sim U(0, 1)}
                  \Big[(x_i - x'_i)\, \frac{\partial S_c(x' + \alpha (x - x'))}{\partial x_i}\Big]
                \approx \frac{1}{n} \sum_{s=1}^{n} (x_i - x'_{k_s, i})\,
                  \frac{\partial S_c(x'_{k_s} + \alpha_s (x - x'_{k_s}))}{\partial x_i}

    with, per sample and example, a baseline :math:`x'_{k_s}` drawn uniformly (with
    replacement) from the set ``baselines`` :math:`D` and :math:`\alpha_s \sim U(0, 1)`.
    With one baseline it is a Monte-Carlo estimate of Integrated Gradients from that
    baseline, converging to it as ``n`` grows; it equals Captum's ``GradientShap``
    with ``stdevs=0`` (both draw the baseline and :math:`\alpha` per sample and
    example), up to the random draws. Completeness holds in expectation:
    :math:`E[\sum_i R_i] = S_c(x) - E_{x'}[S_c(x')]`.

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)`` (differentiable).
      baselines: ``(K, ...)``, ``K >= 1`` baselines shaped like one example (e.g. a
        sample of training images, as the paper). ``None`` (the registry default): the
        *uniform* reference distribution of Sturmfels, Lundberg & Lee (2020,
        "Visualizing the Impact of Feature Attribution Baselines", Distill,
        https://distill.pub/2020/attribution-baselines/): each sample's baseline is
        fresh noise, uniform in ``[min(x_b), max(x_b)]`` of its example ``b``, drawn
        from ``key``. Pass a data sample for Expected Gradients as the paper.
      n: samples per example (static), >= 1; the paper uses one per example and
        training step, and 100-200 for evaluation.
      batch_size: at most this many interpolated inputs go through ``f`` (and its
        gradient) per call; ``None``: all ``n * B`` at once. The draws do not depend on
        it, so neither does the result (beyond float rounding).

    Returns:
      ``attr(x, target=None, *, key)``; ``key`` is required. Same key, same result.
      ``target=None`` is the class predicted at ``x``.

    Example::

      refs = train_images[:100]                                   # (100, H, W, C)
      eg = jaxsal.expected_gradients(f, refs, n=200, batch_size=64)
      r = eg(images, key=jax.random.key(0))
    """
    contract.check_callable(f)
    baselines = _check_baselines(baselines)
    n = contract.check_positive_int(n, "n")
    batch_size = contract.check_optional_batch_size(batch_size)
    model = with_fast_max_pool(f)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        key = contract.check_key(key, "expected_gradients")
        if baselines is None:
            refs = None
        else:
            if tuple(baselines.shape[1:]) != tuple(x.shape[1:]):
                raise ValueError(
                    f"baselines must have shape (K,) + x.shape[1:] = (K, {', '.join(map(str, x.shape[1:]))}); "
                    f"got {tuple(baselines.shape)}."
                )
            refs = jnp.asarray(baselines).astype(x.dtype)
        target, _ = clean_scores(f, x, target, batch_size)
        b = x.shape[0]
        k_idx, k_alpha = jax.random.split(key)
        if refs is None:  # uniform noise per sample (row), from fold_in(k_idx, row)
            axes = tuple(range(1, x.ndim))
            lo, hi = jnp.min(x, axis=axes), jnp.max(x, axis=axes)
        else:
            which = jax.random.randint(k_idx, (n, b), 0, refs.shape[0]).reshape(-1)
        alpha = jax.random.uniform(k_alpha, (n, b), acc_dtype(x.dtype)).astype(x.dtype).reshape(-1)
        per_row = target if callable(target) else jnp.broadcast_to(jnp.asarray(target), (b,))
        total = n * b
        size = total if batch_size is None else min(batch_size, total)
        chunks = -(-total // size)
        ids = jnp.arange(chunks * size).reshape(chunks, size)
        scale = jnp.asarray(1.0 / n, x.dtype)

        def chunk_sum(acc, r):
            rr = jnp.minimum(r, total - 1)
            e = rr % b
            if refs is None:
                u = jax.vmap(
                    lambda i: jax.random.uniform(jax.random.fold_in(k_idx, i), x.shape[1:], x.dtype)
                )(rr)
                span = (hi - lo)[e].reshape((-1,) + (1,) * (x.ndim - 1))
                ref = lo[e].reshape(span.shape) + u * span
            else:
                ref = refs[which[rr]]
            a = alpha[rr].reshape((-1,) + (1,) * (x.ndim - 1))
            diff = x[e] - ref
            pts = ref + a * diff
            scores, pullback = jax.vjp(model, pts)
            contract.check_scores(scores, size)
            t = per_row if callable(per_row) else per_row[e]
            (grad,) = pullback(contract.target_cotangent(scores, t))
            live = (r < total).astype(x.dtype).reshape(a.shape)
            contrib = diff * grad * (live * scale)
            return acc + jax.ops.segment_sum(contrib, e, num_segments=b), None

        acc = jnp.zeros_like(x)
        if chunks == 1:
            acc, _ = chunk_sum(acc, ids[0])
        else:
            acc, _ = jax.lax.scan(chunk_sum, acc, ids)
        return acc

    hyper = {"baselines": baselines, "n": n, "batch_size": batch_size}
    return contract.Attribution(attr, f, stochastic=True, name="expected_gradients", hyper=hyper)


register(
    Method(
        "expected_gradients",
        expected_gradients,
        "f",
        "path",
        "Expected Gradients",
        "Erion et al. 2021",
        stochastic=True,
        signed=True,
        captum="GradientShap(stdevs=0.0)",
    )
)

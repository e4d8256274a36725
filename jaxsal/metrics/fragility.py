r"""Fragility of interpretations (Ghorbani, Abid & Zou, 2019).

Ghorbani, Abid & Zou (2019), "Interpretation of Neural Networks Is Fragile", AAAI,
https://arxiv.org/abs/1710.10547 (code: https://github.com/amiratag/InterpretationFragility).

An iterative attack looks for a perturbation :math:`\delta` with
:math:`\lVert\delta\rVert_\infty \le \varepsilon` that keeps the predicted label but
moves the saliency map :math:`S(x) = \sum_c |A(x)_c|` (absolute attribution summed over
channels, normalised to sum 1) as far as possible:

* ``measure="topk"``: minimise the mass of :math:`S(x + \delta)` on the ``k`` pixels
  that are the top-``k`` of :math:`S(x)`;
* ``measure="center_of_mass"``: maximise :math:`\lVert C(x + \delta) - C(x)\rVert_2`,
  :math:`C` the map's centre of mass in pixels.

Each step is :math:`x_{t+1} = \Pi(x_t + \alpha\,\mathrm{sign}\,\nabla_x D)`, with
:math:`\Pi` the projection onto the ε-ball around ``x`` (and onto ``bounds``). As in the
paper's code, every step is evaluated on the *real* model and map, and the result is the
step with the best criterion among those that keep the label of every example; a step
that changes an example's label is rejected for that example (the iteration goes on).

**ReLU networks.** The map of a piecewise-linear network is piecewise constant in
``x`` (its input gradient is zero almost everywhere), so the attack differentiates a
surrogate: every ReLU that the rule interpreter finds (:data:`jaxsal.matchers.RELU`:
``relu``, ``relu6``, clips) is replaced by the softplus
:math:`\mathrm{softplus}(\beta z)/\beta` (a clip at ``c`` by
:math:`(\mathrm{softplus}(\beta z) - \mathrm{softplus}(\beta (z - c)))/\beta`),
for the attack's gradient only; the reported maps and labels are those of ``f``.

The control is a random sign perturbation of the same size,
:math:`x + \varepsilon\,\mathrm{sign}(u)`, :math:`u` uniform on :math:`\{-1, 1\}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src import interpreter as interp
from jaxsal._src.registry import Method
from jaxsal._src.relu import RELU
from jaxsal.metrics._common import reduce_channels
from jaxsal.metrics.invariance import _factory
from jaxsal.metrics.similarity import spearman as _spearman

Array = jax.Array
Measure = Literal["topk", "center_of_mass"]


class Fragility(NamedTuple):
    """Result of :func:`fragility_attack`; every per-example field has shape ``(B,)``.

    Attributes:
      topk_intersection: share of the original top-``k`` pixels that are still in the
        top-``k`` of the attacked map (1 = unchanged).
      spearman: Spearman rank correlation of the original and attacked saliency maps.
      center_shift: distance in pixels between the maps' centres of mass.
      random_topk_intersection: the same for the random sign perturbation.
      random_spearman: the same for the random sign perturbation.
      random_center_shift: the same for the random sign perturbation.
      x_adv: the attacked inputs (``x`` itself where no step kept the label).
      x_random: the randomly perturbed inputs.
      labels: the predicted labels of ``x`` (the explained classes).
      adv_labels: the predicted labels of ``x_adv`` (equal to ``labels``).
      random_labels: the predicted labels of ``x_random``.
      maps: ``(B, H, W)`` saliency maps of ``x`` (sum 1 per example).
      adv_maps: saliency maps of ``x_adv``.
      random_maps: saliency maps of ``x_random``.
      best_step: the accepted step per example (0: none, ``x_adv == x``).
    """

    topk_intersection: Array
    spearman: Array
    center_shift: Array
    random_topk_intersection: Array
    random_spearman: Array
    random_center_shift: Array
    x_adv: Array
    x_random: Array
    labels: Array
    adv_labels: Array
    random_labels: Array
    maps: Array
    adv_maps: Array
    random_maps: Array
    best_step: Array


# ----------------------------------------------------------------------------- the surrogate


def _smooth_clip(z: Array, beta: float, hi: float) -> Array:
    b = jnp.asarray(beta, z.dtype)
    y = jax.nn.softplus(b * z) / b
    if hi != float("inf"):
        y = y - jax.nn.softplus(b * (z - jnp.asarray(hi, z.dtype))) / b
    return y


def softplus_surrogate(f: Callable, beta: float) -> Callable:
    r"""``f`` with every ReLU (and clipped ReLU) replaced by its softplus of sharpness ``beta``.

    :math:`\mathrm{relu}(z) \to \mathrm{softplus}(\beta z)/\beta`, and
    :math:`\mathrm{clip}(z, 0, c) \to (\mathrm{softplus}(\beta z) - \mathrm{softplus}(\beta(z - c)))/\beta`.
    The ReLUs are found in the traced model by :data:`jaxsal.matchers.RELU`; a model
    without one is returned unchanged in value.

    Args:
      f: model ``x -> scores``.
      beta: the softplus sharpness :math:`\beta > 0` (larger: closer to the ReLU).

    Returns:
      The surrogate model, a function ``x -> scores``.
    """
    contract.check_callable(f)
    beta = _check_positive(beta, "beta")
    return interp.interpret(f, [(RELU, lambda unit, forward, z: _smooth_clip(z, beta, float(unit.info.hi)))])


# ----------------------------------------------------------------------------- measures


def saliency(maps: Array) -> Array:
    """``(B, H, W)`` saliency: absolute attribution summed over channels, normalised to sum 1."""
    s = reduce_channels(maps, "abs", name="attribution").astype(jnp.float32)
    total = s.sum((1, 2), keepdims=True)
    return s / jnp.where(total > 0, total, 1)


def _top_mask(s: Array, k: int) -> Array:
    b = s.shape[0]
    _, idx = jax.lax.top_k(s.reshape(b, -1), k)
    return jnp.zeros((b, s.shape[1] * s.shape[2]), bool).at[jnp.arange(b)[:, None], idx].set(True)


def topk_intersection(a: Array, b: Array, k: int) -> Array:
    """Share of the top-``k`` pixels of ``a`` that are top-``k`` pixels of ``b`` too, ``(B,)``."""
    return (_top_mask(a, k) & _top_mask(b, k)).sum(1) / k


def center_of_mass(s: Array) -> Array:
    """Centre of mass ``(row, col)`` in pixels of non-negative maps ``(B, H, W)``: ``(B, 2)``."""
    _, h, w = s.shape
    total = s.sum((1, 2))
    total = jnp.where(total > 0, total, 1)
    rows = (s.sum(2) * jnp.arange(h, dtype=s.dtype)[None]).sum(1) / total
    cols = (s.sum(1) * jnp.arange(w, dtype=s.dtype)[None]).sum(1) / total
    return jnp.stack([rows, cols], 1)


def _center_shift(a: Array, b: Array) -> Array:
    return jnp.linalg.norm(center_of_mass(a) - center_of_mass(b), axis=1)


# ----------------------------------------------------------------------------- the attack


def _check_positive(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and getattr(v, "ndim", None) != 0:
        raise TypeError(f"{name} must be a number > 0; got {type(v).__name__}.")
    v = float(v)
    if not v > 0 or v == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0; got {v}.")
    return v


def fragility_attack(
    method: Callable | Method,
    f: Callable,
    x: Any,
    *,
    epsilon: float,
    steps: int,
    key: Array,
    k: int = 1000,
    measure: Measure = "topk",
    step_size: float | None = None,
    bounds: tuple[float, float] | None = None,
    beta: float = 10.0,
    hyper: Mapping[str, Any] | None = None,
) -> Fragility:
    r"""The iterative fragility attack of Ghorbani, Abid & Zou (2019, Algorithm 1).

    See the module docstring for the objective, the projection, the softplus surrogate
    and the random control. Every example is attacked at once (the model must treat the
    examples of a batch independently) and keeps its own best step.

    Args:
      method: a factory ``f -> attribution`` whose map is attacked (``jaxsal.vanilla_grad``,
        ``lambda g: jaxsal.integrated_gradients(g, steps=16)``) or a registered
        :class:`jaxsal.Method` taking ``f``; called as ``method(model, **hyper)``. The
        attack differentiates the map, so the method must be differentiable in ``x``.
      f: model ``x (B, H, W, C) -> raw scores (B, classes)``.
      x: images ``(B, H, W, C)``, floating.
      epsilon: the L-infinity budget :math:`\varepsilon > 0`, in the units of ``x``
        (Ghorbani et al. use 8 intensity levels of 255: ``8 / 128`` for inputs
        ``(u8 - 127) / 128``).
      steps: number of attack steps, ``>= 1``.
      key: PRNG key: the random control's signs, and the key of a stochastic method
        (the same key at every step, so SmoothGrad's noise is fixed).
      k: the top-``k`` of the intersection measure (the paper: 1000 at 224x224);
        ``1 <= k <= H W``.
      measure: the attack's objective, ``"topk"`` or ``"center_of_mass"``.
      step_size: :math:`\alpha`, in the units of ``x``; default ``epsilon / 8`` (one
        intensity level for the paper's ε = 8).
      bounds: ``(low, high)`` valid input range that ``x + delta`` is clipped to, or ``None``.
      beta: softplus sharpness of the ReLU surrogate (see the module docstring).
      hyper: hyper-parameters for ``method``.

    Returns:
      :class:`Fragility`: the three measures for the attack and for the random control,
      the perturbed inputs, labels and maps.

    Raises:
      ValueError: ``epsilon <= 0``, ``steps < 1``, ``k`` outside ``[1, H W]``, an unknown
        ``measure``, or bad ``bounds``.

    Example::

      r = jaxsal.metrics.fragility_attack(jaxsal.vanilla_grad, f, x, epsilon=8 / 128,
                                          steps=20, key=jax.random.key(0))
      r.topk_intersection, r.random_topk_intersection
    """
    build = _factory(method, "method")
    contract.check_callable(f)
    x = contract.check_input(x)
    contract.nonfinite_rows(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (B, H, W, C); got shape {tuple(x.shape)}.")
    eps = _check_positive(epsilon, "epsilon")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}.")
    pixels = x.shape[1] * x.shape[2]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= pixels:
        raise ValueError(
            f"k must be an int with 1 <= k <= H * W = {pixels} (the pixel count of x); got {k!r}. "
            f"The paper's k = 1000 is for 224 x 224 images: scale it to the image size."
        )
    if measure not in ("topk", "center_of_mass"):
        raise ValueError(f"measure must be 'topk' or 'center_of_mass'; got {measure!r}.")
    alpha = eps / 8 if step_size is None else _check_positive(step_size, "step_size")
    if bounds is not None:
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):  # not two numbers
            raise ValueError(f"bounds must be (low, high), two numbers, or None; got {bounds!r}.") from None
        if not lo < hi:
            raise ValueError(f"bounds must be (low, high) with low < high; got {bounds!r}.")
    contract.check_key(key, "fragility_attack")
    beta = _check_positive(beta, "beta")
    hyper = dict(hyper or {})
    k_method, k_random = jax.random.split(key)

    attr = build(f, **hyper)
    attr_soft = build(softplus_surrogate(f, beta), **hyper)

    def project(z, x0):
        z = x0 + jnp.clip(z - x0, -eps, eps)
        return z if bounds is None else jnp.clip(z, lo, hi)

    @jax.jit
    def evaluate(z, labels):
        lab = jnp.argmax(f(z), axis=1)
        return lab, saliency(attr(z, labels, key=k_method))

    labels, s0 = evaluate(x, None)

    # Everything that varies is an argument (not a constant of the trace), so that XLA does
    # not constant-fold the original map's sort or the model on x.
    def objective(z, labels, top0, c0):
        s = saliency(attr_soft(z, labels, key=k_method))
        if measure == "topk":
            return -jnp.where(top0, s.reshape(s.shape[0], -1), 0).sum()
        return ((center_of_mass(s) - c0) ** 2).sum()

    @jax.jit
    def step(z, x0, labels, s0):
        top0 = _top_mask(s0, k)
        g = jax.grad(objective)(z, labels, top0, center_of_mass(s0))
        z = project(z + alpha * jnp.sign(g).astype(z.dtype), x0)
        lab, s = evaluate(z, labels)
        crit = topk_intersection(s0, s, k) if measure == "topk" else -_center_shift(s0, s)
        return z, lab, crit

    best_x = x
    best = jnp.ones(x.shape[:1]) if measure == "topk" else jnp.zeros(x.shape[:1])
    best_step = jnp.zeros(x.shape[:1], jnp.int32)
    z = x
    for t in range(1, steps + 1):
        z, lab, crit = step(z, x, labels, s0)
        take = (lab == labels) & (crit < best)
        best = jnp.where(take, crit, best)
        best_step = jnp.where(take, t, best_step)
        best_x = jnp.where(take.reshape((-1,) + (1,) * (x.ndim - 1)), z, best_x)

    x_random = project(x + eps * jax.random.rademacher(k_random, x.shape, dtype=x.dtype), x)
    adv_labels, s_adv = evaluate(best_x, labels)
    random_labels, s_rand = evaluate(x_random, labels)
    return Fragility(
        topk_intersection=topk_intersection(s0, s_adv, k),
        spearman=_spearman(s0, s_adv),
        center_shift=_center_shift(s0, s_adv),
        random_topk_intersection=topk_intersection(s0, s_rand, k),
        random_spearman=_spearman(s0, s_rand),
        random_center_shift=_center_shift(s0, s_rand),
        x_adv=best_x,
        x_random=x_random,
        labels=labels,
        adv_labels=adv_labels,
        random_labels=random_labels,
        maps=s0,
        adv_maps=s_adv,
        random_maps=s_rand,
        best_step=best_step,
    )


def plot_fragility(
    result: Fragility,
    images: Any = None,
    *,
    titles: Any = None,
    percentile: float = 99.0,
    path: str | None = None,
    dpi: int = 100,
):
    """A figure of the original, attacked and randomly perturbed saliency maps, one row per example.

    Args:
      result: a :class:`Fragility`.
      images: optional images to show in a first column, ``(B, H, W, 3)`` in ``[0, 1]``
        or ``uint8``.
      titles: optional row titles, one per example (e.g. the photo names).
      percentile: the maps are clipped at this percentile of each map for display.
      path: where to write the figure (any format matplotlib knows), or ``None``.
      dpi: resolution of the written figure.

    Returns:
      The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    maps = [np.asarray(result.maps), np.asarray(result.adv_maps), np.asarray(result.random_maps)]
    b = maps[0].shape[0]
    cols = 3 + (images is not None)
    fig, axes = plt.subplots(b, cols, figsize=(2.4 * cols, 2.4 * b), squeeze=False)
    heads = (["image"] if images is not None else []) + [
        "original map",
        "attacked map",
        "random perturbation",
    ]
    for i in range(b):
        panels = ([np.asarray(images)[i]] if images is not None else []) + [m[i] for m in maps]
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            if images is not None and j == 0:
                ax.imshow(panel)
            else:
                vmax = float(np.percentile(panel, percentile)) or None
                ax.imshow(panel, cmap="gray", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
        note = (
            f"top-k {float(result.topk_intersection[i]):.2f} (random "
            f"{float(result.random_topk_intersection[i]):.2f})"
        )
        axes[i][cols - 2].set_xlabel(note, fontsize=8)
        if titles is not None:
            axes[i][0].set_ylabel(str(titles[i]), fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig

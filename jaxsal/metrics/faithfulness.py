"""Faithfulness: does removing what the map calls important change the prediction?

* :func:`deletion` and :func:`insertion` (Petsiuk, Das & Saenko, 2018, "RISE:
  Randomized Input Sampling for Explanation of Black-box Models", BMVC,
  https://arxiv.org/abs/1806.07421, Sec. 4.1).
* :func:`road` (Rong, Leemann, Borisov, Kasneci & Kasneci, 2022, "A Consistent and
  Efficient Evaluation Strategy for Attribution Methods", ICML,
  https://arxiv.org/abs/2202.00449): Remove And Debias, with
  :func:`noisy_linear_imputation`.

Protocol common to all three (documented choices):

* The map is reduced to one value per pixel by the **signed sum over channels**
  (a ``(B, H, W)`` map, e.g. an upsampled Grad-CAM, is used as is). Pixels are ranked
  by that value, largest first; ties are broken by row-major pixel index (stable sort).
* A pixel is removed/inserted in all channels at once.
* The curve's score is the model's **softmax probability** of the target class
  (``score="probability"``, as in Petsiuk et al.) or the raw logit (``score="logit"``).
  ``target=None`` explains the class predicted on the clean ``x`` and keeps it fixed.
* AUC: the trapezoid rule over the *actual* fraction of pixels removed at each step.

``f`` is the model (``(B, H, W, C) -> (B, K)`` raw scores); ``attribution`` is a
precomputed map or an attribution function following the jaxsal contract (it is
then called as ``attribution(x, target, key=key)``). All functions are pure JAX and
jittable with ``f``, the attribution and the static options closed over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.contract import check_scores, resolve_target, select
from jaxsal.metrics._common import check_fraction_grid, check_image_batch, check_pixel_map

Array = jax.Array
Baseline = Literal["zero", "mean", "blur"] | Array
Score = Literal["probability", "logit"]


class PerturbationCurve(NamedTuple):
    """A deletion / insertion / ROAD curve.

    Attributes:
      fractions: ``(S,)`` fraction of pixels removed (deletion, ROAD) or inserted
        (insertion) at each step.
      scores: ``(S, B)`` the target's score at each step, per example.
      auc: ``(B,)`` area under the curve, trapezoid rule over ``fractions``.
    """

    fractions: Array
    scores: Array
    auc: Array


# ----------------------------------------------------------------------------- helpers


def trapezoid_auc(fractions: Any, scores: Any) -> Array:
    """Trapezoid-rule area under ``scores`` (``(S, ...)``) over ``fractions`` (``(S,)``)."""
    # jnp.trapezoid broadcasts the widths (S - 1,) against (S - 1, B) implicitly, which
    # JAX's rank_promotion="raise" refuses; the result is the same.
    with jax.numpy_rank_promotion("allow"):
        return jnp.trapezoid(jnp.asarray(scores), jnp.asarray(fractions), axis=0)


def gaussian_blur(x: Array, sigma: float) -> Array:
    """Separable Gaussian blur of ``(B, H, W, C)`` images, reflect padding.

    Kernel radius ``ceil(3 sigma)``, capped at ``min(H, W) - 1``; weights normalised.
    """
    x = jnp.asarray(x)
    if sigma <= 0:
        return x
    return _blur(x, float(sigma))


@partial(jax.jit, static_argnums=1)
def _blur(x: Array, sigma: float) -> Array:
    h, w = x.shape[1:3]
    r = int(min(math.ceil(3 * sigma), h - 1, w - 1))
    t = jnp.arange(-r, r + 1, dtype=x.dtype)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    xp = jnp.pad(x, ((0, 0), (r, r), (0, 0), (0, 0)), mode="reflect")
    x = sum(k[i] * xp[:, i : i + h] for i in range(2 * r + 1))
    xp = jnp.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    return sum(k[i] * xp[:, :, i : i + w] for i in range(2 * r + 1))


def make_baseline(x: Array, baseline: Baseline, blur_sigma: float = 5.0) -> Array:
    """The image a removed pixel is replaced by.

    ``"zero"``: zeros in the model's input space (black only if the model's input is
    unnormalised); ``"mean"``: each image's per-channel mean; ``"blur"``: the image
    blurred with a Gaussian of std ``blur_sigma`` pixels (Petsiuk et al. use sigma=5);
    or an array broadcastable to ``x``.
    """
    if isinstance(baseline, str):
        if baseline == "zero":
            return jnp.zeros_like(x)
        if baseline == "mean":
            return jnp.broadcast_to(x.mean((1, 2), keepdims=True), x.shape)
        if baseline == "blur":
            return gaussian_blur(x, blur_sigma)
        raise ValueError(f"baseline must be 'zero', 'mean', 'blur' or an array; got {baseline!r}.")
    b = jnp.asarray(baseline, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise ValueError(
            f"baseline array of shape {tuple(b.shape)} does not broadcast to x's shape {tuple(x.shape)}."
        ) from None


def _resolve(f: Callable, x: Array, target: Any) -> Array:
    """A fixed per-example target: ``None`` becomes the argmax class on the clean ``x``."""
    scores = f(x)
    check_scores(scores, x.shape[0])
    target = resolve_target(scores, target)
    return target if callable(target) else jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))


def _score_fn(f: Callable, target: Any, score: Score) -> Callable[[Array], Array]:
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit'; got {score!r}.")

    def fn(xk):
        s = f(xk)
        if score == "probability":
            s = jax.nn.softmax(s, axis=-1)
        return select(s, target)

    return fn


def _pixel_map(attribution: Any, x: Array, target: Any, key: Array | None) -> Array:
    if callable(attribution):
        attribution = attribution(x, target, key=key)
    return check_pixel_map(jnp.asarray(attribution), x)


def _ranks(pix: Array) -> Array:
    """``(B, H, W)`` map -> rank of each pixel (0 = most relevant), stable row-major ties."""
    b = pix.shape[0]
    order = jnp.argsort(-pix.reshape(b, -1), axis=1, stable=True)
    return jnp.argsort(order, axis=1).reshape(pix.shape)


def _curve(
    score_fn, start: Array, end: Array, ranks: Array, counts: Sequence[int], n: int
) -> PerturbationCurve:
    counts_arr = jnp.asarray(counts)

    def at(c):
        m = (ranks < c)[..., None]
        return score_fn(jnp.where(m, end, start))

    scores = jax.lax.map(at, counts_arr)
    fractions = counts_arr.astype(scores.dtype) / n
    return PerturbationCurve(fractions, scores, trapezoid_auc(fractions, scores))


def _setup(f, x, attribution, target, key):
    x = check_image_batch(x)
    target = _resolve(f, x, target)
    pix = _pixel_map(attribution, x, target, key)
    return x, target, pix


# ----------------------------------------------------------------------------- deletion / insertion


def deletion(
    f: Callable,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    steps: int = 16,
    baseline: Baseline = "zero",
    blur_sigma: float = 5.0,
    score: Score = "probability",
    key: Array | None = None,
) -> PerturbationCurve:
    """Deletion curve and AUC (Petsiuk et al., 2018; lower AUC = more faithful).

    At step ``k = 0..steps`` the ``n_k = floor(k N / steps)`` most relevant of the
    ``N = H W`` pixels are replaced by the ``baseline`` (default ``"zero"``, as in
    Petsiuk et al.'s deletion), and the target's score is recorded. Returns
    ``steps + 1`` points from the clean image (fraction 0) to the fully removed one
    (fraction 1). See the module docstring for ranking, channel and AUC choices.
    """
    return _most_relevant_first(
        f, x, attribution, target, steps, baseline, blur_sigma, score, key, insert=False
    )


def insertion(
    f: Callable,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    steps: int = 16,
    baseline: Baseline = "blur",
    blur_sigma: float = 5.0,
    score: Score = "probability",
    key: Array | None = None,
) -> PerturbationCurve:
    """Insertion curve and AUC (Petsiuk et al., 2018; higher AUC = more faithful).

    Starts from the ``baseline`` (default ``"blur"``: Gaussian blur with
    ``blur_sigma=5`` pixels, as in Petsiuk et al.'s insertion) and at step ``k``
    restores the ``floor(k N / steps)`` most relevant pixels of ``x``. ``steps + 1``
    points, fraction 0 (baseline) to 1 (clean image).
    """
    return _most_relevant_first(
        f, x, attribution, target, steps, baseline, blur_sigma, score, key, insert=True
    )


def _most_relevant_first(f, x, attribution, target, steps, baseline, blur_sigma, score, key, *, insert: bool):
    """Deletion (``x`` -> baseline) or insertion (baseline -> ``x``), most relevant pixels first."""
    steps = check_fraction_grid(steps)
    x, target, pix = _setup(f, x, attribution, target, key)
    n = x.shape[1] * x.shape[2]
    counts = [(k * n) // steps for k in range(steps + 1)]
    base = make_baseline(x, baseline, blur_sigma)
    start, end = (base, x) if insert else (x, base)
    return _curve(_score_fn(f, target, score), start, end, _ranks(pix), counts, n)


# ----------------------------------------------------------------------------- ROAD

# ROAD's neighbour weights: 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonals.
_ROAD_KERNEL = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def _neighbour_sum(v: Array, kernel: Array) -> Array:
    """``sum_j w_j v_{i+j}`` over in-bounds neighbours, for ``(N, H, W)`` planes."""
    return jax.lax.conv_general_dilated(v[:, None], kernel[None, None], (1, 1), "SAME")[:, 0]


def noisy_linear_imputation(
    x: Any,
    removed: Any,
    *,
    key: Array,
    noise: float = 0.01,
    tol: float = 1e-6,
    maxiter: int | None = None,
) -> Array:
    """Fill ``removed`` pixels by noisy linear imputation (Rong et al., 2022, Sec. 4).

    Each removed pixel ``i`` is set to the weighted mean of its in-bounds 8-neighbours
    (weights 1/6 for edge, 1/12 for diagonal neighbours):

    .. math:: \\Big(\\sum_{j \\in \\mathcal N(i)} w_{ij}\\Big) x_i - \\sum_{j \\in \\mathcal N(i)} w_{ij} x_j = 0,

    with the kept pixels fixed. This is a sparse symmetric positive-definite system
    (a Dirichlet graph Laplacian) per image and channel, solved here matrix-free by
    conjugate gradients in JAX (``jax.scipy.sparse.linalg.cg``, relative ``tol``,
    ``maxiter`` default ``20 max(H, W)``), which is jittable; the tests check it
    against a direct ``scipy.sparse`` solve. Then i.i.d. Gaussian noise of std
    ``noise`` (absolute, in the input's units; ROAD's default 0.01) is added to the
    imputed pixels only, drawn from ``key``.

    Args:
      x: ``(B, H, W, C)`` images.
      removed: ``(B, H, W)`` boolean, True where the pixel is removed. At least one
        pixel per image must be kept (otherwise the system is singular).
    """
    x = check_image_batch(x)
    removed = jnp.asarray(removed).astype(bool)
    if tuple(removed.shape) != tuple(x.shape[:3]):
        raise ValueError(
            f"removed must have shape (B, H, W) = {tuple(x.shape[:3])}; got {tuple(removed.shape)}."
        )
    if not isinstance(removed, jax.core.Tracer) and bool(
        np.asarray(removed).reshape(x.shape[0], -1).all(1).any()
    ):
        raise ValueError(
            "removed covers a whole image; keep at least one pixel so the imputation is defined."
        )
    maxiter = maxiter or 20 * max(x.shape[1:3])
    return _impute(x, removed, key, float(noise), float(tol), int(maxiter))


@partial(jax.jit, static_argnums=(3, 4, 5))
def _impute(x: Array, removed: Array, key: Array, noise: float, tol: float, maxiter: int) -> Array:
    b, h, w, c = x.shape
    kernel = jnp.asarray(_ROAD_KERNEL, x.dtype)
    planes = jnp.moveaxis(x, 3, 1).reshape(b * c, h, w)
    u = jnp.repeat(removed, c, axis=0).astype(x.dtype)  # (B*C, H, W), 1 = unknown
    wsum = _neighbour_sum(jnp.ones_like(u), kernel)

    def matvec(v):  # unknown rows: W_i v_i - sum_{unknown j} w_ij v_j; known rows: identity
        return u * (wsum * v - _neighbour_sum(u * v, kernel)) + (1 - u) * v

    rhs = u * _neighbour_sum((1 - u) * planes, kernel) + (1 - u) * planes
    init = jnp.where(u > 0, (rhs / jnp.where(wsum > 0, wsum, 1.0)), planes)
    sol, _ = jax.scipy.sparse.linalg.cg(matvec, rhs, x0=init, tol=tol, maxiter=maxiter)
    sol = sol + noise * u * jax.random.normal(key, sol.shape, sol.dtype)
    sol = jnp.where(u > 0, sol, planes)
    return jnp.moveaxis(sol.reshape(b, c, h, w), 1, 3)


def road(
    f: Callable,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    key: Array,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    order: Literal["morf", "lerf"] = "morf",
    noise: float = 0.01,
    score: Score = "probability",
) -> PerturbationCurve:
    """ROAD: Remove And Debias (Rong et al., 2022).

    For each fraction ``p`` the ``round(p N)`` most relevant (``order="morf"``, lower
    curve = more faithful) or least relevant (``order="lerf"``, higher = more faithful)
    pixels are removed and filled by :func:`noisy_linear_imputation`, and the target's
    score is recorded. The paper's fractions are 10%..90% (the default); 0 and 1 are not
    allowed (1 would leave nothing to impute from). ``key`` drives the imputation noise;
    it is split per fraction, and when ``attribution`` is a stochastic attribution
    function it is also passed to it (``fold_in(key, 0)``). ``auc`` integrates over the
    given fractions; ``scores.mean(0)`` is the paper's average over thresholds.
    """
    if key is None:
        raise ValueError("road needs an explicit PRNG key for its imputation noise: key=jax.random.key(0).")
    fr = [float(p) for p in fractions]
    if not fr or any(not 0.0 < p < 1.0 for p in fr):
        raise ValueError(
            f"fractions must be a non-empty sequence of numbers in (0, 1); got {list(fractions)}."
        )
    if order not in ("morf", "lerf"):
        raise ValueError(
            f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first); got {order!r}."
        )
    x, target, pix = _setup(f, x, attribution, target, jax.random.fold_in(key, 0))
    n = x.shape[1] * x.shape[2]
    ranks = _ranks(pix if order == "morf" else -pix)
    score_fn = _score_fn(f, target, score)
    counts = [min(max(round(p * n), 1), n - 1) for p in fr]
    keys = jax.random.split(jax.random.fold_in(key, 1), len(counts))
    scores = jnp.stack(
        [
            score_fn(noisy_linear_imputation(x, ranks < cnt, key=k, noise=noise))
            for cnt, k in zip(counts, keys, strict=True)
        ]
    )
    fracs = jnp.asarray(counts, scores.dtype) / n
    return PerturbationCurve(fracs, scores, trapezoid_auc(fracs, scores))

"""Fidelity: do the map's values predict what the model does when features change?

* :func:`infidelity` (Yeh, Hsieh, Suggala, Inouye & Ravikumar, 2019, "On the
  (In)fidelity and Sensitivity of Explanations", NeurIPS,
  https://arxiv.org/abs/1901.09392, Eq. 2).
* :func:`sensitivity_n` (Ancona, Ceolini, Öztireli & Gross, 2018, "Towards better
  understanding of gradient-based attribution methods for Deep Neural Networks",
  ICLR, https://arxiv.org/abs/1711.06104, Sec. 3.1).
* :func:`faithfulness_correlation` (Bhatt, Weller & Moura, 2020, "Evaluating and
  Aggregating Feature-based Model Explanations", IJCAI,
  https://arxiv.org/abs/2005.00631, Eq. 2).
* :func:`random_logit` (Sixt, Granz & Landgraf, 2020, "When Explanations Lie: Why Many
  Modified BP Attributions Fail", ICML, https://arxiv.org/abs/1912.09818, Sec. 6).
* :func:`smooth_mprt` and :func:`efficient_mprt` (Hedström, Weber, Krakowczyk, Bareeva,
  Motzkus, Samek, Lapuschkin & Höhne, 2023, "Sanity Checks Revisited: An Exploration to
  Repair the Model Parameter Randomisation Test", XAI in Action workshop, NeurIPS,
  https://arxiv.org/abs/2401.06465).

Protocol, shared with :mod:`jaxsal.metrics.faithfulness`: ``f`` maps ``(B, H, W, C)``
images to ``(B, K)`` raw scores; ``attribution`` is a precomputed map (input-shaped
or ``(B, H, W)``) or a jaxsal attribution function (called as
``attribution(x, target, key=key)``); ``target=None`` is the class predicted on the
clean ``x``. Features are **pixels** (all channels at once); a subset's attribution is
the sum of the signed channel-summed map over its pixels, and the model's score
(``score="logit"`` by default, as in the papers, or ``"probability"``) is compared
before and after replacing the subset by ``baseline``. Randomness comes only from
explicit keys; the same key gives the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.contract import (
    as_attribution,
    check_key,
    check_positive_int,
    check_target,
    resolve_target_at,
)
from jaxsal.metrics._common import as_array, check_image_batch
from jaxsal.metrics.faithfulness import Baseline, Score, _pixel_map, _resolve, _score_fn, make_baseline
from jaxsal.metrics.randomization import RandomizationResult, layer_names, model_parameter_randomization
from jaxsal.metrics.similarity import _pearson_rows, normalize_abs, ssim

Array = jax.Array


class SubsetCorrelation(NamedTuple):
    """Attribution sums against score drops over random pixel subsets.

    Attributes:
      correlation: ``(B,)`` Pearson correlation over the subsets (NaN if either side is
        constant).
      attribution_sums: ``(R, B)`` the map summed over each subset.
      score_drops: ``(R, B)`` ``score(x) - score(x with the subset replaced)``.
      subsets: ``(B, R, n)`` the flat pixel indices used.
    """

    correlation: Array
    attribution_sums: Array
    score_drops: Array
    subsets: Array


class SensitivityN(NamedTuple):
    """Sensitivity-n curve.

    Attributes:
      ns: ``(N,)`` the subset sizes.
      correlation: ``(N, B)`` the Pearson correlation at each size.
      mean: ``(N,)`` the batch mean at each size.
    """

    ns: Array
    correlation: Array
    mean: Array


class Infidelity(NamedTuple):
    """Infidelity per example.

    Attributes:
      infidelity: ``(B,)`` the Monte-Carlo estimate of Yeh et al.'s Eq. 2 (lower is better).
      dots: ``(S, B)`` :math:`I^\\top \\Phi` for each perturbation.
      drops: ``(S, B)`` :math:`f(x) - f(x - I)` for each perturbation.
      beta: ``(B,)`` the scale applied to the map (1 unless ``normalize=True``).
    """

    infidelity: Array
    dots: Array
    drops: Array
    beta: Array


class RandomLogit(NamedTuple):
    """Random-logit test per example.

    Attributes:
      similarity: ``(B,)`` similarity of the target's map and another class's map
        (lower means the method is class sensitive).
      other: ``(B,)`` the randomly drawn other class.
    """

    similarity: Array
    other: Array


class EfficientMPRT(NamedTuple):
    """Efficient MPRT per example.

    Attributes:
      score: ``(B,)`` relative rise in complexity,
        ``(H(fully randomised map) - H(original map)) / H(original map)``.
      complexity_original: ``(B,)`` the original map's histogram entropy.
      complexity_randomized: ``(B,)`` the fully randomised model's map's entropy.
    """

    score: Array
    complexity_original: Array
    complexity_randomized: Array


# ----------------------------------------------------------------------------- subsets


def draw_subsets(key: Array, batch: int, runs: int, size: int, pixels: int) -> Array:
    """``(batch, runs, size)`` flat pixel indices, each row drawn without replacement.

    Row ``(b, r)`` uses ``jax.random.fold_in(fold_in(key, b), r)``.

    Args:
      key: PRNG key.
      batch: number of examples ``B``.
      runs: subsets per example ``R``.
      size: pixels per subset ``n``.
      pixels: number of pixels ``H * W`` to choose from.

    Returns:
      An int32 array of shape ``(batch, runs, size)``.
    """
    batch = check_positive_int(batch, "batch")
    runs = check_positive_int(runs, "runs")
    pixels = check_positive_int(pixels, "pixels")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= pixels:
        raise ValueError(
            f"subset size must be an int between 1 and the number of pixels {pixels}; got {size!r}."
        )
    return _draw(key, batch, runs, int(size), pixels)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw(key: Array, batch: int, runs: int, size: int, pixels: int) -> Array:
    def one(b, r):
        k = jax.random.fold_in(jax.random.fold_in(key, b), r)
        return jax.random.choice(k, pixels, (size,), replace=False).astype(jnp.int32)

    bs, rs = jnp.meshgrid(jnp.arange(batch), jnp.arange(runs), indexing="ij")
    return jax.vmap(jax.vmap(one))(bs, rs)


def _check_subsets(subsets: Any, batch: int, pixels: int) -> Array:
    s = as_array(subsets, "subsets")
    if s.ndim == 2:
        s = jnp.broadcast_to(s, (batch, *s.shape))
    if s.ndim != 3 or s.shape[0] != batch:
        raise ValueError(
            f"subsets must be (R, n) or (B, R, n) flat pixel indices with B = {batch}; got shape {tuple(s.shape)}."
        )
    if not jnp.issubdtype(s.dtype, jnp.integer):
        raise TypeError(f"subsets must hold integer pixel indices; got dtype {s.dtype}.")
    if not isinstance(s, jax.core.Tracer):
        v = np.asarray(s)
        if v.size and (v.min() < 0 or v.max() >= pixels):
            raise ValueError(
                f"subsets must index pixels 0 <= i < H * W = {pixels}; got {v.min()}..{v.max()}."
            )
    return s


def _subset_correlation(score_fn, x, base, pix, subsets) -> SubsetCorrelation:
    b, h, w = pix.shape
    flat = pix.reshape(b, -1)
    s0 = score_fn(x)

    def run(sub):  # sub: (B, n)
        m = jnp.zeros((b, h * w), bool).at[jnp.arange(b)[:, None], sub].set(True)
        xp = jnp.where(m.reshape(b, h, w)[..., None], base, x)
        return jnp.take_along_axis(flat, sub, 1).sum(1), s0 - score_fn(xp)

    sums, drops = jax.lax.map(run, jnp.swapaxes(subsets, 0, 1))
    return SubsetCorrelation(_pearson_rows(sums.T, drops.T), sums, drops, subsets)


def faithfulness_correlation(
    f: Callable,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    subsets: Any = None,
    key: Array | None = None,
    runs: int = 100,
    subset_size: int = 224,
    baseline: Baseline = "zero",
    score: Score = "logit",
) -> SubsetCorrelation:
    """Faithfulness correlation (Bhatt et al., 2020, Eq. 2).

    .. math:: \\mu_F = \\operatorname{corr}_{S}\\Big(\\sum_{i \\in S} \\Phi_i,\\;
              f(x) - f(x_{[x_S = \\bar x_S]})\\Big)

    the Pearson correlation, over ``runs`` random pixel subsets ``S`` of
    ``subset_size`` pixels, between the map's sum over ``S`` and the drop of the
    target's score when ``S`` is replaced by the baseline :math:`\\bar x`. Higher is
    better. Quantus 0.6 defaults: 100 runs of 224 features, ``baseline`` the image's
    minimum ("black").

    Args:
      f: the model, ``(B, H, W, C) -> (B, K)`` raw scores.
      x: ``(B, H, W, C)`` images.
      attribution: precomputed map or attribution function (see the module docstring).
      target: class per example; ``None`` = the predicted class on ``x``.
      subsets: fixed ``(R, n)`` (shared by the batch) or ``(B, R, n)`` flat pixel
        indices (row-major over ``H, W``); when given, ``key``, ``runs`` and
        ``subset_size`` are not used for drawing.
      key: PRNG key used to draw the subsets (:func:`draw_subsets`) when ``subsets`` is
        None, and passed to a stochastic attribution function.
      runs: number of random subsets ``R``.
      subset_size: pixels per subset ``n``.
      baseline: what replaces a subset: ``"zero"``, ``"mean"``, ``"blur"`` or an
        array broadcastable to ``x`` (see :func:`jaxsal.metrics.make_baseline`).
      score: ``"logit"`` or ``"probability"`` (softmax).

    Returns:
      :class:`SubsetCorrelation`.
    """
    x = check_image_batch(x)
    b, h, w, _ = x.shape
    if subsets is None:
        if key is None:
            raise ValueError(
                "faithfulness_correlation draws random subsets: pass key=jax.random.key(0) or subsets=."
            )
        subsets = draw_subsets(key, b, check_positive_int(runs, "runs"), subset_size, h * w)
    subsets = _check_subsets(subsets, b, h * w)
    target = _resolve(f, x, target)
    pix = _pixel_map(attribution, x, target, key)
    return _subset_correlation(_score_fn(f, target, score), x, make_baseline(x, baseline), pix, subsets)


def sensitivity_n(
    f: Callable,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    ns: Sequence[int],
    key: Array,
    samples: int = 100,
    baseline: Baseline = "zero",
    score: Score = "logit",
) -> SensitivityN:
    """Sensitivity-n (Ancona et al., 2018, Sec. 3.1).

    An attribution satisfies sensitivity-n when, for every subset ``S`` of ``n``
    features, :math:`\\sum_{i \\in S} R_i = f(x) - f(x_{[x_S = \\bar x_S]})`. Ancona et
    al. measure how close a method comes by the Pearson correlation of the two sides
    over ``samples`` random subsets, for a range of ``n``. Higher is better; a
    linear model's exact attribution (gradient × (input - baseline)) scores 1 at
    every ``n``.

    Args:
      f: the model, ``(B, H, W, C) -> (B, K)`` raw scores.
      x: ``(B, H, W, C)`` images.
      attribution: precomputed map or attribution function.
      target: class per example; ``None`` = the predicted class on ``x``.
      ns: subset sizes in pixels (Ancona et al. sweep from 1 to most of the image).
      key: PRNG key; size ``ns[i]`` draws its subsets with ``fold_in(key, i)``.
      samples: subsets per size (Ancona et al. use 100).
      baseline: what replaces a subset (Ancona et al. use zero).
      score: ``"logit"`` or ``"probability"``.

    Returns:
      :class:`SensitivityN`.
    """
    x = check_image_batch(x)
    key = check_key(key, "sensitivity_n")
    samples = check_positive_int(samples, "samples")
    b, h, w, _ = x.shape
    sizes = np.asarray(ns)
    if sizes.ndim != 1 or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(f"ns must be a sequence of int subset sizes (pixels); got {ns!r}.")
    ns = [int(n) for n in sizes]
    if not ns or any(not 1 <= n <= h * w for n in ns):
        raise ValueError(f"ns must be subset sizes between 1 and H * W = {h * w}; got {ns}.")
    target = _resolve(f, x, target)
    pix = _pixel_map(attribution, x, target, key)
    fn, base = _score_fn(f, target, score), make_baseline(x, baseline)
    corr = [
        _subset_correlation(
            fn, x, base, pix, draw_subsets(jax.random.fold_in(key, i), b, samples, n, h * w)
        ).correlation
        for i, n in enumerate(ns)
    ]
    corr = jnp.stack(corr)
    return SensitivityN(jnp.asarray(ns), corr, corr.mean(1))


def infidelity(
    f: Callable,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    key: Array,
    samples: int = 10,
    perturbation: str = "gaussian",
    noise_level: float = 0.1,
    patch_size: int = 4,
    baseline: Baseline = "zero",
    normalize: bool = False,
    score: Score = "logit",
) -> Infidelity:
    """Infidelity (Yeh et al., 2019, Eq. 2), by Monte Carlo.

    .. math:: \\mathrm{INFD}(\\Phi, f, x)
              = \\mathbb{E}_{I}\\big[(I^\\top \\Phi(f, x) - (f(x) - f(x - I)))^2\\big]

    with perturbations ``I`` (Yeh et al. Sec. 3):

    * ``"gaussian"``: :math:`I \\sim \\mathcal{N}(0, \\sigma^2)` per input element,
      ``sigma = noise_level`` in input units (the "noisy baseline").
    * ``"square"``: a random ``patch_size`` × ``patch_size`` square is replaced by the
      baseline, i.e. ``I = (x - baseline)`` on the square and 0 elsewhere ("square
      removal").

    An input-shaped map is multiplied with ``I`` element-wise; a ``(B, H, W)`` map with
    ``I`` summed over channels. With ``normalize=True`` the map is first scaled by the
    optimal :math:`\\beta = \\mathbb{E}[I^\\top\\Phi\\,\\Delta] / \\mathbb{E}[(I^\\top\\Phi)^2]`
    (as Yeh et al. do to compare methods of different scales, and Captum's
    ``normalize=True``).

    Args:
      f: the model, ``(B, H, W, C) -> (B, K)`` raw scores.
      x: ``(B, H, W, C)`` images.
      attribution: precomputed map or attribution function.
      target: class per example; ``None`` = the predicted class on ``x``.
      key: PRNG key; sample ``s`` uses ``fold_in(key, s)``.
      samples: number of perturbations.
      perturbation: ``"gaussian"`` or ``"square"``.
      noise_level: std of the Gaussian perturbation, in input units.
      patch_size: side of the removed square, in pixels.
      baseline: the value a removed square takes (``"square"`` only).
      normalize: rescale the map by the optimal ``beta`` first.
      score: ``"logit"`` or ``"probability"``.

    Returns:
      :class:`Infidelity`.
    """
    x = check_image_batch(x)
    key = check_key(key, "infidelity")
    samples = check_positive_int(samples, "samples")
    if perturbation not in ("gaussian", "square"):
        raise ValueError(f"perturbation must be 'gaussian' or 'square'; got {perturbation!r}.")
    b, h, w, _ = x.shape
    if perturbation == "gaussian" and not noise_level > 0:
        raise ValueError(f"noise_level must be > 0 (std in input units); got {noise_level}.")
    if perturbation == "square" and (
        isinstance(patch_size, bool)
        or not isinstance(patch_size, (int, np.integer))
        or not 1 <= patch_size <= min(h, w)
    ):
        raise ValueError(
            f"patch_size must be an int between 1 and min(H, W) = {min(h, w)}; got {patch_size!r}."
        )
    target = _resolve(f, x, target)
    phi = attribution(x, target, key=key) if callable(attribution) else as_array(attribution, "attribution")
    if tuple(phi.shape) not in (tuple(x.shape), tuple(x.shape[:3])):
        raise ValueError(
            f"attribution must have the shape of x {tuple(x.shape)} or (B, H, W) {tuple(x.shape[:3])}; "
            f"got {tuple(phi.shape)}."
        )
    fn = _score_fn(f, target, score)
    s0 = fn(x)
    diff = x - make_baseline(x, baseline)

    def one(s):
        k = jax.random.fold_in(key, s)
        if perturbation == "gaussian":
            pert = noise_level * jax.random.normal(k, x.shape, x.dtype)
        else:
            kr, kc = jax.random.split(k)
            r0 = jax.random.randint(kr, (b, 1, 1), 0, h - patch_size + 1)
            c0 = jax.random.randint(kc, (b, 1, 1), 0, w - patch_size + 1)
            rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
            sq = (rows >= r0) & (rows < r0 + patch_size) & (cols >= c0) & (cols < c0 + patch_size)
            pert = jnp.where(sq[..., None], diff, 0)
        ip = pert if phi.ndim == 4 else pert.sum(-1)
        dot = (ip * phi).reshape(b, -1).sum(1)
        return dot, s0 - fn(x - pert)

    dots, drops = jax.lax.map(one, jnp.arange(samples))
    if normalize:
        den = (dots * dots).mean(0)
        beta = jnp.where(den > 0, (dots * drops).mean(0) / jnp.where(den > 0, den, 1), 1.0)
    else:
        beta = jnp.ones_like(s0)
    return Infidelity(((beta[None] * dots - drops) ** 2).mean(0), dots, drops, beta)


# ----------------------------------------------------------------------------- randomisation


def random_logit(
    attr: Callable,
    x: Any,
    target: Any = None,
    *,
    key: Array,
    num_classes: int | None = None,
    similarity: Callable[[Array, Array], Array] | None = None,
) -> RandomLogit:
    """Random-logit test (Sixt et al., 2020, Sec. 6).

    The map for the target class is compared with the map for a class drawn uniformly
    from the other ``num_classes - 1`` classes. A method that explains the class, not
    just the input, gives dissimilar maps (low score). The default similarity is SSIM
    of the normalised absolute maps (:func:`jaxsal.metrics.ssim` on
    :func:`jaxsal.metrics.normalize_abs`), as in Quantus.

    Args:
      attr: an attribution function following the jaxsal contract.
      x: ``(B, ...)`` inputs.
      target: class per example; ``None`` = the predicted class.
      key: PRNG key; ``fold_in(key, 0)`` draws the other class, ``fold_in(key, 1)`` is
        the attribution key (used for both maps).
      num_classes: number of classes (default: read from ``attr.scores_fn(x)``).
      similarity: ``(maps_a, maps_b) -> (B,)``; default SSIM as above.

    Returns:
      :class:`RandomLogit`.
    """
    key = check_key(key, "random_logit")
    attr = as_attribution(attr, "random_logit")
    x = jnp.asarray(x)
    if num_classes is None:
        if attr.scores_fn is None:
            raise ValueError(
                "random_logit needs num_classes= when the attribution does not expose scores_fn."
            )
        num_classes = int(attr.scores_fn(x).shape[-1])
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    target = resolve_target_at(attr.scores_fn, x, target, who="random_logit")
    if target is None or callable(target):
        raise ValueError("random_logit needs integer class targets; pass target= as an int or (B,) array.")
    check_target(target, x.shape[0], num_classes)  # 0 <= target < num_classes (also without scores_fn)
    target = jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))
    shift = jax.random.randint(jax.random.fold_in(key, 0), target.shape, 1, num_classes)
    other = (target + shift) % num_classes
    ka = jax.random.fold_in(key, 1)
    a, o = attr(x, target, key=ka), attr(x, other, key=ka)
    if similarity is None:
        sim = ssim(normalize_abs(_as_maps(a)), normalize_abs(_as_maps(o)))
    else:
        sim = similarity(a, o)
    return RandomLogit(jnp.asarray(sim), other)


def _as_maps(a: Array) -> Array:
    return jnp.abs(a).sum(-1) if a.ndim == 4 else a


def smooth_mprt(
    make_attr: Callable[[Any], Callable],
    variables: Any,
    x: Any,
    target: Any = None,
    *,
    key: Array,
    samples: int = 50,
    noise_level: float = 0.1,
    **kwargs: Any,
) -> RandomizationResult:
    """Smooth MPRT (Hedström et al., 2023): MPRT on denoised explanations.

    Each model's explanation (trained and every randomised one) is averaged over
    ``samples`` noisy copies of the input,
    :math:`\\bar e(x) = \\frac{1}{N}\\sum_i e(x + \\varepsilon_i)`,
    :math:`\\varepsilon_i \\sim \\mathcal{N}(0, \\sigma^2)`, with
    ``sigma = noise_level * (max(x) - min(x))`` per example, i.e. the method wrapped
    in :func:`jaxsal.smoothgrad` (Quantus' ``SmoothMPRT`` uses the same noise
    scaling, N = 50, noise 0.1). Noise that dominates gradient-based maps of trained
    models then no longer masks how much the map depends on the weights. The noise
    draws are the same for every model (one attribution key).

    Args:
      make_attr: ``variables -> attr`` (see
        :func:`jaxsal.metrics.model_parameter_randomization`).
      variables: the trained Flax variables.
      x: ``(B, ...)`` inputs.
      target: class per example; ``None`` = the trained model's predicted class.
      key: PRNG key (as in :func:`jaxsal.metrics.model_parameter_randomization`).
      samples: noisy copies per explanation ``N``.
      noise_level: noise std relative to each input's value range.
      **kwargs: passed to :func:`jaxsal.metrics.model_parameter_randomization`
        (``module``, ``order``, ``mode``, ``init``, ``steps``, ...).

    Returns:
      :class:`jaxsal.metrics.RandomizationResult` of the smoothed maps.
    """
    from jaxsal._src.smoothing import smoothgrad

    samples = check_positive_int(samples, "samples")

    def smoothed(v):
        return smoothgrad(make_attr(v), n=samples, noise_level=noise_level)

    return model_parameter_randomization(smoothed, variables, x, target, key=key, **kwargs)


def histogram_entropy(maps: Any, n_bins: int = 100) -> Array:
    """Discrete entropy of each map's value histogram, shape ``(B,)``.

    ``n_bins`` equal-width bins between each map's minimum and maximum (the maximum in
    the last bin, as ``numpy.histogram``); natural logarithm. A constant map scores 0.

    Args:
      maps: ``(B, ...)`` maps.
      n_bins: number of histogram bins.

    Returns:
      ``(B,)`` entropies.
    """
    a = as_array(maps, "maps")
    a = a.reshape(a.shape[0], -1)
    lo, hi = a.min(1, keepdims=True), a.max(1, keepdims=True)
    width = jnp.where(hi > lo, hi - lo, 1.0)
    idx = jnp.clip(jnp.floor((a - lo) / width * n_bins).astype(jnp.int32), 0, n_bins - 1)
    counts = jax.vmap(lambda i: jnp.zeros(n_bins).at[i].add(1.0))(idx)
    p = counts / counts.sum(1, keepdims=True)
    return -jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0).sum(1)


def efficient_mprt(
    make_attr: Callable[[Any], Callable],
    variables: Any,
    x: Any,
    target: Any = None,
    *,
    key: Array,
    n_bins: int = 100,
    **kwargs: Any,
) -> EfficientMPRT:
    """Efficient MPRT (Hedström et al., 2023): the rise in complexity under randomisation.

    Instead of correlating maps layer by layer, eMPRT randomises the whole model once
    and measures how much more complex the explanation became:

    .. math:: \\mathrm{eMPRT} = \\frac{H(e_{\\mathrm{rand}}) - H(e)}{H(e)}

    with :math:`H` the discrete entropy of the histogram of the absolute map
    (``n_bins`` bins, as Quantus' ``EfficientMPRT`` with ``discrete_entropy``). A
    method sensitive to the weights scores > 0 (a randomised model's map is noisier);
    about 0 means the map ignores the weights.

    Args:
      make_attr: ``variables -> attr``.
      variables: the trained Flax variables.
      x: ``(B, ...)`` inputs.
      target: class per example; ``None`` = the trained model's predicted class.
      key: PRNG key (as in :func:`jaxsal.metrics.model_parameter_randomization`).
      n_bins: histogram bins of the entropy.
      **kwargs: passed to :func:`jaxsal.metrics.model_parameter_randomization`
        (``module``, ``order``, ``init``, ...); every layer in ``order`` is randomised.

    Returns:
      :class:`EfficientMPRT`.
    """
    n_bins = check_positive_int(n_bins, "n_bins", minimum=2)
    for name in ("steps", "keep_maps", "mode", "hog"):
        if name in kwargs:
            raise ValueError(f"efficient_mprt randomises every layer at once; do not pass {name}=.")
    order = kwargs.pop("order", None)
    if order is None:
        module = kwargs.get("module")
        order = layer_names(
            variables,
            module=module,
            x=None if module is None else jnp.asarray(x)[:1],
            collection=kwargs.get("collection", "params"),
        )
    res = model_parameter_randomization(
        make_attr,
        variables,
        x,
        target,
        key=key,
        order=order,
        steps=[len(order)],
        hog=False,
        keep_maps=True,
        **kwargs,
    )
    orig = histogram_entropy(jnp.abs(res.original), n_bins)
    rand = histogram_entropy(jnp.abs(res.maps[-1]), n_bins)
    return EfficientMPRT(
        jnp.where(orig > 0, (rand - orig) / jnp.where(orig > 0, orig, 1), jnp.nan), orig, rand
    )

"""Adaptive and blur paths from the PAIR saliency family: Guided IG and Blur IG.

Both integrate gradients along a path other than Integrated Gradients' straight line:

* :func:`guided_ig` (Kapishnikov et al. 2021) lets the path choose, at every step, to
  move the input features whose gradients are smallest first;
* :func:`blur_ig` (Xu et al. 2020) walks from the image towards ever stronger Gaussian
  blur, so it needs no baseline.

Both follow PAIR ``saliency`` 0.2.1 (``saliency.core.GuidedIG``, ``saliency.core.BlurIG``)
step for step, but run batched and jitted: every path step sends all examples through
the model in one call (at most ``batch_size`` rows), and Guided IG's per-example
feature selection runs inside ``jax.lax`` loops, so ``jax.jit`` and ``jax.vmap`` apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src.registry import Method, register
from jaxsal._src.relu_rules import with_fast_max_pool

Array = jax.Array

# scipy.ndimage.gaussian_filter's default: the kernel is cut at truncate * sigma.
TRUNCATE = 4.0


def _check_unit_interval(value: Any, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1]; got {value!r}.")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1] ({hint}); got {v}.")
    return v


def _check_positive_float(value: Any, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive float; got {value!r}.")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be > 0 and finite ({hint}); got {v}.")
    return v


def _work_dtype(dtype) -> jnp.dtype:
    """The path is computed in at least float32 (bfloat16 L1 sums cannot hit their targets)."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype


def _gradients(model: Callable, pts: Array, target: contract.Target, batch_size: int | None) -> Array:
    """``d select(model(pts), target) / d pts``, at most ``batch_size`` rows per model call."""

    def grad(xc, tc):
        return contract.input_gradient(model, xc, tc)[1]

    if batch_size is None or batch_size >= pts.shape[0]:
        return grad(pts, target)
    return contract.in_batches(grad, pts, target, batch_size)


def check_callable_target(f: Callable | None, x: Array, target: contract.Target) -> None:
    """A callable ``target`` must map ``f(x)`` to ``(B,)``: checked abstractly (no
    forward pass), so that the error comes before any other shape error."""
    if f is not None and callable(target):
        jax.eval_shape(lambda z: contract.select(f(z), target), jax.ShapeDtypeStruct(x.shape, x.dtype))


# ----------------------------------------------------------------------------- Guided IG


def guided_ig_schedule(steps: int, max_dist: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Guided IG's per-step constants, in float64 on the host.

    For step :math:`s = 1..m` (``m = steps``): :math:`\alpha = s/m`, the allowed band
    :math:`[\max(\alpha - d, 0), \min(\alpha + d, 1)]` (``d = max_dist``) and the L1
    target factor :math:`1 - s/m`, computed exactly as PAIR does (so the last target is
    exactly 0, not a rounding residue that a float32 sum could never reach).

    Returns:
      ``(alpha_min, alpha_max, l1_factor)``, each of shape ``(steps,)``.
    """
    s = np.arange(1, steps + 1, dtype=np.float64)
    alpha = s / steps
    alpha_min = np.maximum(alpha - max_dist, 0.0)
    alpha_max = np.minimum(alpha + max_dist, 1.0)
    l1_factor = 1.0 - s / steps
    return alpha_min, alpha_max, l1_factor


def kth_smallest(a: Array, k: int) -> Array:
    """The ``k``-th smallest (0-based) entry of a flat array ``a >= 0`` (``+inf`` allowed),
    exactly ``jnp.sort(a)[k]``, by bisection over the float's bit pattern (monotonic for
    non-negative floats): one comparison-and-count pass per bit instead of a sort."""
    bits = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[a.dtype.itemsize]
    u = jax.lax.bitcast_convert_type(a, bits)
    need = jnp.asarray(k + 1, jnp.int32)
    lo = jnp.zeros((), bits)
    hi = jax.lax.bitcast_convert_type(jnp.asarray(jnp.inf, a.dtype), bits)
    one = jnp.ones((), bits)

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // jnp.asarray(2, bits)
        ok = jnp.sum(u <= mid, dtype=jnp.int32) >= need
        return jnp.where(ok, lo, mid + one), jnp.where(ok, mid, hi)

    lo, _ = jax.lax.fori_loop(0, 8 * a.dtype.itemsize, body, contract.varying_like((lo, hi), a))
    return jax.lax.bitcast_convert_type(lo, a.dtype)


def _guided_step(x, xi, xb, grad, a_min, a_max, l1_target, *, k, rel_tol, abs_tol, max_iter):
    """One Guided IG step for one example (all arrays flat, shape ``(n,)``).

    Moves ``x`` towards ``xi`` until its L1 distance to ``xi`` is ``l1_target``, always
    moving the not-yet-saturated features with the smallest ``|grad|`` first (PAIR's
    inner ``while gamma > 1`` loop). Returns the new ``x`` and ``(x_new - x) * grad``.
    """
    diff = xi - xb

    def at(a):  # the straight-line point at alpha = a; alpha = 1 is exactly the input
        return jnp.where(a >= 1.0, xi, xb + diff * a)

    x_min, x_max = at(a_min), at(a_max)
    nonzero = diff != 0
    safe = jnp.where(nonzero, diff, jnp.ones_like(diff))
    inf = jnp.asarray(jnp.inf, x.dtype)

    def cond(state):
        _, _, gamma, it = state
        return (gamma > 1.0) & (it < max_iter)

    def body(state):
        x, acc, _, it = state
        x_old = x
        x_alpha = jnp.where(nonzero, (x - xb) / safe, a_max)
        x = jnp.where(x_alpha < a_min, x_min, x)  # features behind the band catch up
        l1_current = jnp.sum(jnp.abs(x - xi))
        close = jnp.abs(l1_target - l1_current) <= jnp.maximum(
            rel_tol * jnp.maximum(jnp.abs(l1_target), jnp.abs(l1_current)), abs_tol
        )
        g = jnp.where(x == x_max, inf, grad)  # saturated features are never selected
        threshold = kth_smallest(jnp.abs(g), k)  # np.quantile(|g|, fraction, method="lower")
        selected = (jnp.abs(g) <= threshold) & (g != inf)
        l1_s = jnp.sum(jnp.abs(x - x_max) * selected.astype(x.dtype))
        gamma = jnp.where(l1_s > 0, (l1_current - l1_target) / jnp.where(l1_s > 0, l1_s, 1.0), inf)
        # gamma <= 0 can only come from rounding at the target: then move nothing.
        partial = x + (x_max - x) * jnp.clip(gamma, 0.0, 1.0)
        moved = jnp.where(selected, jnp.where(gamma > 1.0, x_max, partial), x)
        x = jnp.where(close, x, moved)
        gamma = jnp.where(close, jnp.zeros_like(gamma), gamma)
        return x, acc + (x - x_old) * grad, gamma, it + 1

    init = contract.varying_like((x, jnp.zeros_like(x), inf, jnp.asarray(0, jnp.int32)), x)
    x, acc, _, _ = jax.lax.while_loop(cond, body, init)
    return x, acc


def guided_ig(
    f: Callable,
    *,
    baseline: Array | float | None = None,
    steps: int = 25,
    fraction: float = 0.25,
    max_dist: float = 1.0,
    batch_size: int | None = None,
    unroll: int | bool = 1,
) -> contract.Attribution:
    r"""Guided Integrated Gradients (Kapishnikov, Venugopalan, Avci, Wedin, Terry &
    Bolukbasi 2021, "Guided Integrated Gradients: an Adaptive Path Method for Removing
    Noise", https://arxiv.org/abs/2106.09788).

    IG along an adaptive path :math:`\gamma` from the baseline :math:`x'` to :math:`x`:

    .. math:: R_i(x) = \sum_{s=1}^{m} \sum_{t} \big(\gamma^{(s,t)}_i - \gamma^{(s,t-1)}_i\big)\,
              \frac{\partial S_c}{\partial x_i}\Big|_{\gamma^{(s,0)}}

    At step :math:`s` of :math:`m` (``steps``) the path point must get to L1 distance
    :math:`(1 - s/m)\,\lVert x - x' \rVert_1` from :math:`x`. It gets there by moving,
    repeatedly, the ``fraction`` of features with the smallest :math:`|\partial S_c /
    \partial x_i|` (taken at the step's start point, never re-evaluated within the step)
    to the far edge of the band :math:`\alpha_i \in [s/m - d, s/m + d]` (``d =
    max_dist``, in units of the straight line :math:`x' + \alpha(x - x')`), the last
    move only partly; features that fall behind the band are pulled up to it first.
    ``max_dist = 0`` is IG on the straight line (a left Riemann sum); ``max_dist = 1``
    is the unbounded Guided IG of the paper. The path ends at :math:`x`, so
    :math:`\sum_i R_i \approx S_c(x) - S_c(x')` (exact as ``steps`` grows for a
    smooth model; :func:`jaxsal.completeness_gap` measures it).

    Same semantics as PAIR ``saliency.core.GuidedIG().GetMask(x, ..., x_baseline=,
    x_steps=steps, fraction=, max_dist=)`` (PAIR's defaults are ``x_steps=200``,
    ``max_dist=0.02``: pass them for a comparison). The per-step targets are computed
    in float64 on the host. Two deliberate differences, both at rounding level: the
    point at :math:`\alpha = 1` is exactly :math:`x` (PAIR's :math:`x' + (x - x')` can
    miss it by an ulp), and below float64 the "target reached" test uses a tolerance of
    32 ulp of the dtype relative to the L1 distance, rather than PAIR's ``1e-9``, which
    a float32 sum cannot resolve. bfloat16 inputs are computed in float32 and cast back.

    The path follows the gradient, so one gradient that flips across a ReLU kink in
    float32 sends it elsewhere: compare with another implementation in float64.

    Args:
      f: model ``x (B, ...) -> raw scores (B, C)``.
      baseline: ``None`` (zeros, as PAIR) or an array broadcasting to ``x``.
      steps: number of path steps ``m`` (static), >= 1; one gradient per step.
      fraction: the fraction of features, in [0, 1], moved per selection round: the
        features with ``|grad| <=`` the ``fraction`` quantile (NumPy's
        ``method="lower"``) of ``|grad|`` over all features.
      max_dist: the band half-width ``d`` in [0, 1].
      batch_size: at most this many rows through the model per call. Each step needs
        ``B`` rows (one per example, the path is sequential), so it only matters when
        ``batch_size < B``.
      unroll: passed to the ``jax.lax.fori_loop`` over the steps. XLA on CPU runs a
        model inside a loop body several times slower than at the top level, so
        ``unroll=True`` (no loop) can run several times faster, for a compile time that
        grows with ``steps``.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, ...)``; ``key`` is ignored.

    Example::

      gig = jax.jit(jaxsal.guided_ig(f, steps=25, max_dist=0.1))
      r = gig(x)                      # explains each example's top class
    """
    steps = contract.check_positive_int(steps, "steps")
    fraction = _check_unit_interval(fraction, "fraction", "the share of features moved per round, e.g. 0.25")
    max_dist = _check_unit_interval(
        max_dist, "max_dist", "0 is IG on the straight line, 1 the unbounded Guided IG"
    )
    batch_size = contract.check_optional_batch_size(batch_size)
    if not isinstance(unroll, (bool, int, np.integer)) or (not isinstance(unroll, bool) and unroll < 1):
        raise ValueError(
            f"unroll must be True, False or an int >= 1 (steps per loop iteration); got {unroll!r}."
        )
    contract.check_callable(f)
    alpha_min, alpha_max, l1_factor = guided_ig_schedule(steps, max_dist)
    model = with_fast_max_pool(f)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        base = contract.check_baseline(baseline, x)
        target = contract.resolve_target_at(f, x, target, who="guided_ig")
        b = x.shape[0]
        n = math.prod(x.shape[1:])
        wd = _work_dtype(x.dtype)
        k = int(np.floor((n - 1) * fraction))  # NumPy's "lower" quantile index
        f64 = wd == jnp.float64
        rel_tol = 1e-9 if f64 else 32 * float(jnp.finfo(wd).eps)
        xi = x.reshape(b, n).astype(wd)
        xb = base.reshape(b, n).astype(wd)
        l1_total = jnp.sum(jnp.abs(xi - xb), axis=1)
        abs_tol = jnp.full((b,), 1e-9, wd) if f64 else rel_tol * l1_total
        consts = tuple(jnp.asarray(a, wd) for a in (alpha_min, alpha_max, l1_factor))

        def one_step(s, carry):
            pt, acc = carry
            grad = _gradients(model, pt.reshape(x.shape).astype(x.dtype), target, batch_size)
            grad = grad.reshape(b, n).astype(wd)
            a_min, a_max, factor = (c[s] for c in consts)

            def per_example(pt_e, xi_e, xb_e, g_e, target_e, atol_e):
                return _guided_step(
                    pt_e,
                    xi_e,
                    xb_e,
                    g_e,
                    a_min,
                    a_max,
                    target_e,
                    k=k,
                    rel_tol=rel_tol,
                    abs_tol=atol_e,
                    max_iter=n + 2,
                )

            pt, delta = jax.vmap(per_example)(pt, xi, xb, grad, l1_total * factor, abs_tol)
            return pt, acc + delta

        _, acc = jax.lax.fori_loop(0, steps, one_step, (xb, jnp.zeros_like(xi)), unroll=unroll)
        return acc.reshape(x.shape).astype(x.dtype)

    hyper = {
        "baseline": baseline,
        "steps": steps,
        "fraction": fraction,
        "max_dist": max_dist,
        "batch_size": batch_size,
        "unroll": unroll,
    }
    return contract.Attribution(attr, f, name="guided_ig", hyper=hyper)


# ----------------------------------------------------------------------------- Gaussian blur


def gaussian_kernel1d(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    r"""scipy.ndimage's 1-D Gaussian kernel, in float64: taps :math:`d = -r..r` with
    :math:`r = \lfloor \text{truncate}\,\sigma + 0.5 \rfloor` and weights
    :math:`e^{-d^2 / 2\sigma^2}` normalised to sum 1 (``[1.]`` for :math:`\sigma = 0`)."""
    if sigma <= 1e-15:  # scipy skips such an axis: the identity
        return np.ones(1)
    radius = int(truncate * float(sigma) + 0.5)
    d = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * d**2)
    return phi / phi.sum()


def _kernel_table(sigmas: np.ndarray, length: int, truncate: float) -> np.ndarray:
    """Kernels of ``sigmas`` as rows of width ``2 * (length - 1) + 1`` (offsets beyond
    the axis length never touch a pixel under zero padding)."""
    half = length - 1
    table = np.zeros((len(sigmas), 2 * half + 1))
    for i, s in enumerate(sigmas):
        k = gaussian_kernel1d(float(s), truncate)
        r = len(k) // 2
        keep = min(r, half)
        table[i, half - keep : half + keep + 1] = k[r - keep : r + keep + 1]
    return table


def _blur_matrix(row: Array, length: int) -> Array:
    """The ``(length, length)`` matrix of a 1-D correlation with zero padding:
    ``M[i, j] = row[j - i + length - 1]``."""
    idx = jnp.arange(length)
    return row[idx[None, :] - idx[:, None] + (length - 1)]


def _blur_with(x: Array, kh: Array, kw: Array) -> Array:
    """Blur ``x (B, H, W, ...)`` along axes 1 and 2 with kernel rows ``kh`` and ``kw``."""
    hi = jax.lax.Precision.HIGHEST
    mh, mw = _blur_matrix(kh, x.shape[1]), _blur_matrix(kw, x.shape[2])
    y = jnp.einsum("ij,bj...->bi...", mh, x, precision=hi)
    return jnp.einsum("kl,bil...->bik...", mw, y, precision=hi)


def gaussian_blur(x: Array, sigma: float, *, truncate: float = TRUNCATE) -> Array:
    r"""Gaussian blur of ``x (B, H, W, ...)`` over axes 1 and 2 with zero padding.

    Equal (to float rounding) to ``scipy.ndimage.gaussian_filter(x[b], sigma=[sigma,
    sigma, 0, ...], mode="constant", truncate=truncate)`` for every example ``b``: the
    same kernel (``gaussian_kernel1d``) applied separably, as PAIR's Blur IG blurs.
    ``sigma`` is a static float >= 0 (0 returns ``x``).
    """
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be >= 0 and finite; got {sigma}.")
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"x must be (B, H, W, ...) with the spatial axes 1 and 2; got shape {x.shape}.")
    if sigma <= 1e-15:
        return x
    kh = jnp.asarray(_kernel_table(np.array([sigma]), x.shape[1], truncate)[0], x.dtype)
    kw = jnp.asarray(_kernel_table(np.array([sigma]), x.shape[2], truncate)[0], x.dtype)
    return _blur_with(x, kh, kw)


# ----------------------------------------------------------------------------- Blur IG


def blur_ig_schedule(max_sigma: float, steps: int, sqrt: bool) -> np.ndarray:
    r"""The blur levels :math:`\sigma_0 .. \sigma_m`, float64, exactly as PAIR computes
    them: :math:`\sigma_i = i\,\sigma_{max}/m`, or its square root with ``sqrt``."""
    if sqrt:
        return np.array([math.sqrt(float(i) * max_sigma / float(steps)) for i in range(steps + 1)])
    return np.array([float(i) * max_sigma / float(steps) for i in range(steps + 1)])


def blur_ig(
    f: Callable,
    *,
    max_sigma: float = 50.0,
    steps: int = 100,
    grad_step: float = 0.01,
    sqrt: bool = False,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Blur Integrated Gradients (Xu, Venugopalan & Sundararajan 2020, "Attribution in
    Scale and Space", https://arxiv.org/abs/2004.03383).

    IG along the path of ever stronger Gaussian blur :math:`G_\sigma * x`, from
    :math:`\sigma = 0` (the image) to :math:`\sigma_{max}`, so no baseline is needed:

    .. math:: R_i(x) = -\sum_{s=0}^{m-1} (\sigma_{s+1} - \sigma_s)\,
              \frac{(G_{\sigma_s + h} * x)_i - (G_{\sigma_s} * x)_i}{h}\,
              \frac{\partial S_c}{\partial x_i}\Big|_{G_{\sigma_s} * x}

    with :math:`\sigma_s = s\,\sigma_{max}/m` (``sqrt=True``: its square root),
    :math:`m` = ``steps`` and :math:`h` = ``grad_step`` (a forward difference for
    :math:`\partial (G_\sigma * x) / \partial \sigma`). Up to quadrature and
    difference errors, :math:`\sum_i R_i = S_c(x) - S_c(G_{\sigma_{max}} * x)`.

    Same as PAIR ``saliency.core.BlurIG().GetMask(x, ..., max_sigma=, steps=,
    grad_step=, sqrt=, batch_size=1)``, including its blur: scipy's
    ``gaussian_filter`` with its default ``truncate=4.0`` and ``mode="constant"``
    (zero padding) over the two spatial axes (``jaxsal._src.pair_paths.gaussian_blur``, written in JAX as
    two banded matrix products). PAIR's ``batch_size > 1`` weights a whole chunk of
    steps with the last step's :math:`\Delta\sigma` (different for ``sqrt=True``);
    jaxsal always uses each step's own :math:`\Delta\sigma`.

    Args:
      f: model ``x (B, H, W, ...) -> raw scores (B, C)``; axes 1 and 2 of ``x`` are
        the blurred spatial axes (channels last).
      max_sigma: the strongest blur :math:`\sigma_{max}` in pixels, > 0.
      steps: number of path steps ``m`` (static), >= 1.
      grad_step: the difference step :math:`h` in pixels, > 0. With scipy's kernel a
        blur of :math:`\sigma < 1/8` is the identity, so at the default 0.01 the first
        step (:math:`\sigma_0 = 0`) contributes nothing, as in PAIR.
      sqrt: space the :math:`\sigma_s` as square roots of a linear ramp.
      batch_size: at most this many rows (blurred images) through the model per call;
        ``None`` sends all ``steps * B`` at once. Results do not depend on it beyond
        float rounding.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, H, W, ...)``; ``key`` is ignored.

    Example::

      big = jax.jit(jaxsal.blur_ig(f, max_sigma=50.0, steps=100, batch_size=64))
      r = big(images)
    """
    max_sigma = _check_positive_float(max_sigma, "max_sigma", "the strongest blur in pixels, e.g. 50")
    steps = contract.check_positive_int(steps, "steps")
    grad_step = _check_positive_float(grad_step, "grad_step", "the blur difference step in pixels, e.g. 0.01")
    if not isinstance(sqrt, (bool, np.bool_)):
        raise TypeError(f"sqrt must be a bool; got {sqrt!r}.")
    batch_size = contract.check_optional_batch_size(batch_size)
    contract.check_callable(f)
    sigmas = blur_ig_schedule(max_sigma, steps, bool(sqrt))
    dsig = np.diff(sigmas)
    model = with_fast_max_pool(f)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        target = contract.resolve_target_at(f, x, target, who="blur_ig")
        check_callable_target(f, x, target)
        if x.ndim < 3:
            raise ValueError(
                f"blur_ig blurs axes 1 and 2 of x (B, H, W, ...); got shape {x.shape}. "
                f"Pass images with their spatial axes, e.g. (B, H, W, C)."
            )
        b, h, w = x.shape[:3]
        tables = {}
        for name, sig in (("lo", sigmas[:-1]), ("hi", sigmas[:-1] + grad_step)):
            tables[name] = (
                jnp.asarray(_kernel_table(sig, h, TRUNCATE), x.dtype),
                jnp.asarray(_kernel_table(sig, w, TRUNCATE), x.dtype),
            )
        weights = jnp.asarray(dsig / grad_step, x.dtype)
        per_row = target is not None and not callable(target) and jnp.ndim(target) == 1

        def contribution(idx):
            """Sum over the steps ``idx (c,)`` of dsigma * dblur/dsigma * grad."""
            c = idx.shape[0]

            def blurred(i):
                lo = _blur_with(x, tables["lo"][0][i], tables["lo"][1][i])
                hi = _blur_with(x, tables["hi"][0][i], tables["hi"][1][i])
                return lo, (hi - lo) * weights[i]

            lo, dblur = jax.vmap(blurred)(idx)  # (c, B, ...)
            tgt = jnp.tile(jnp.asarray(target), c) if per_row else target
            grads = _gradients(model, lo.reshape((c * b,) + x.shape[1:]), tgt, sub)
            return jnp.sum(dblur * grads.reshape(lo.shape), axis=0)

        chunk = steps if batch_size is None else max(1, min(steps, batch_size // b))
        sub = batch_size if batch_size is not None and batch_size < b else None
        n_full, rest = divmod(steps, chunk)
        idx = jnp.arange(steps)
        if n_full == 1 and rest == 0:
            total = contribution(idx)
        else:
            total = jax.lax.fori_loop(
                0,
                n_full,
                lambda j, acc: acc + contribution(jax.lax.dynamic_slice_in_dim(idx, j * chunk, chunk)),
                jnp.zeros_like(x),
            )
            if rest:
                total = total + contribution(idx[n_full * chunk :])
        return -total

    hyper = {
        "max_sigma": max_sigma,
        "steps": steps,
        "grad_step": grad_step,
        "sqrt": bool(sqrt),
        "batch_size": batch_size,
    }
    return contract.Attribution(attr, f, name="blur_ig", hyper=hyper)


register(
    Method(
        "guided_ig",
        guided_ig,
        "f",
        "path",
        "Guided IG",
        "Kapishnikov et al. 2021",
        signed=True,
    )
)
register(
    Method(
        "blur_ig",
        blur_ig,
        "f",
        "path",
        "Blur IG",
        "Xu et al. 2020",
        signed=True,
    )
)

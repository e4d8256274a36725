"""Perturbation methods: occlusion, feature ablation and Shapley value sampling.

They only run the model forward (no gradients), so they also explain models that
cannot be differentiated (a rounding or an argmax inside). Every perturbed input is
built inside a chunk of at most ``batch_size`` rows, from its index alone, so memory
is bounded by ``batch_size`` whatever the number of windows, features or samples,
and the result does not depend on ``batch_size``.

The shared machinery (:func:`forward_rows`, :func:`clean_scores`, :func:`groups`) is
also used by :mod:`jaxsal._src.surrogate` (KernelSHAP, LIME) and :mod:`jaxsal._src.rise`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src.registry import Method, register
from jaxsal._src.segments import grid_mask, is_mask_fn

Array = jax.Array

# Cells per side of the default feature mask (feature_mask=None): an 8 x 8 grid of patches.
DEFAULT_CELLS = 8


# ----------------------------------------------------------------------------- chunked forward passes


def acc_dtype(dtype) -> jnp.dtype:
    """The dtype the methods accumulate in: ``dtype``, but at least float32."""
    dtype = jnp.dtype(dtype)
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def clean_scores(f: Callable, x: Array, target: contract.Target, batch_size: int | None):
    """``(target, s)``: the resolved target and the explained score ``s (B,)`` at ``x``,
    from at most ``batch_size`` rows per model call."""

    def scores_of(xc, _):
        s = f(xc)
        contract.check_scores(s, xc.shape[0])
        return s

    scores = contract.in_batches(scores_of, x, None, batch_size or x.shape[0])
    target = contract.resolve_target(scores, target)
    return target, contract.select(scores, target).astype(acc_dtype(x.dtype))


def forward_rows(
    f: Callable,
    row: Callable[[Array, Array], Array],
    n: int,
    x: Array,
    target: contract.Target,
    batch_size: int | None,
) -> Array:
    """The explained score of ``n`` perturbed copies of every example: shape ``(n, B)``.

    ``row(s, e)`` builds perturbation ``s`` of example ``e`` (one input, shaped like
    ``x[0]``). Rows ``r = s * B + e`` go through ``f`` in chunks of at most
    ``batch_size`` (all ``n * B`` at once for ``None``), one chunk after the other
    (``jax.lax.map``); each row is built inside its chunk, so no more than one chunk of
    perturbed inputs exists at a time. ``target`` must be resolved (:func:`clean_scores`).
    """
    b = x.shape[0]
    total = n * b
    size = total if batch_size is None else min(batch_size, total)
    chunks = -(-total // size)
    ids = jnp.minimum(jnp.arange(chunks * size), total - 1).reshape(chunks, size)  # padding repeats a row
    per_row = target if callable(target) else jnp.broadcast_to(jnp.asarray(target), (b,))
    dtype = acc_dtype(x.dtype)

    def one(r):
        s, e = r // b, r % b
        inputs = jax.vmap(row)(s, e)
        scores = f(inputs)
        contract.check_scores(scores, size)
        t = per_row if callable(per_row) else per_row[e]
        return contract.select(scores, t).astype(dtype)

    out = one(ids[0]) if chunks == 1 else jax.lax.map(one, ids)
    return out.reshape(-1)[:total].reshape(n, b)


# ----------------------------------------------------------------------------- feature masks


class Groups(NamedTuple):
    """A feature mask made ready: ``ids`` (``x.ndim`` axes, broadcasting to ``x``; the
    leading axis is 1 or B), the number of groups ``num`` (static) and, for a traced
    mask, a per-example validity flag (``None`` when checked on the host)."""

    ids: Array
    num: int
    valid: Array | None

    def of(self, e: Array) -> Array:
        """Example ``e``'s ids, broadcasting to ``x[e]``."""
        return self.ids[0] if self.ids.shape[0] == 1 else self.ids[e]

    def keep(self, z: Array, e: Array) -> Array:
        """Pixel mask of example ``e`` for a group keep-vector ``z (G,)``."""
        return jnp.take(z, jnp.clip(self.of(e), 0, self.num - 1))

    def spread(self, phi: Array, x: Array) -> Array:
        """Group values ``phi (B, G)`` painted on every element of their group, shaped like ``x``."""
        ids = jnp.clip(self.ids, 0, self.num - 1)
        if ids.shape[0] == 1:
            out = phi[:, ids[0]]
        else:
            out = jax.vmap(lambda p, i: p[i])(phi, ids)
        out = jnp.broadcast_to(out, x.shape)
        if self.valid is not None:
            bad = jnp.where(self.valid, 1.0, jnp.nan).astype(out.dtype)
            out = out * bad.reshape((-1,) + (1,) * (x.ndim - 1))
        return out


def check_mask_values(mask: Any, name: str = "feature_mask") -> None:
    """A concrete mask must hold non-negative integer ids."""
    dtype = getattr(mask, "dtype", None)
    if dtype is None or dtype == np.bool_ or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            f"{name} must hold integer group ids 0 .. G-1 (one id per pixel); got dtype {dtype}. "
            f"Use `{name}.astype(np.int32)` after rounding, or jaxsal.segments(x, 'slic')."
        )
    if not isinstance(mask, jax.core.Tracer) and np.asarray(mask).size and np.asarray(mask).min() < 0:
        raise ValueError(
            f"{name} must hold non-negative group ids; got minimum {int(np.asarray(mask).min())}."
        )


def check_feature_mask(feature_mask: Any, num_features: Any) -> None:
    """Factory-time checks of a concrete ``feature_mask`` and of ``num_features``."""
    if num_features is not None:
        contract.check_positive_int(num_features, "num_features")
    if feature_mask is None or is_mask_fn(feature_mask):
        return
    if isinstance(feature_mask, (list, tuple)):
        feature_mask = np.asarray(feature_mask)
    if not hasattr(feature_mask, "shape"):
        raise TypeError(
            "feature_mask must be an int array of group ids ((H, W), (B, H, W) or shaped like x), "
            f"a function x -> such an array, or None; got {type(feature_mask).__name__}."
        )
    check_mask_values(feature_mask)


def groups(feature_mask: Any, x: Array, num_features: int | None) -> Groups:
    """``feature_mask`` (``None``: an 8 x 8 grid; an array; or a function of ``x``) for ``x``."""
    if feature_mask is None:
        if x.ndim != 4:
            raise ValueError(
                f"the default feature_mask (an {DEFAULT_CELLS} x {DEFAULT_CELLS} grid of patches) needs images "
                f"x of shape (B, H, W, C); got shape {x.shape}. Pass feature_mask= for other inputs."
            )
        mask = grid_mask(x.shape[1], x.shape[2], DEFAULT_CELLS)
    elif is_mask_fn(feature_mask):
        mask = feature_mask(x)
    else:
        mask = feature_mask
    if not isinstance(mask, jax.core.Tracer):
        mask = np.asarray(mask)  # concrete: reshaped and checked on the host, even while tracing
    check_mask_values(mask)
    shape, xs = tuple(mask.shape), x.shape
    if shape == xs:
        ids = mask
    elif x.ndim >= 3 and shape == xs[:-1]:
        ids = mask[..., None]
    elif shape == xs[1:]:
        ids = mask[None]
    elif x.ndim >= 3 and shape == xs[1:-1]:
        ids = mask[None, ..., None]
    else:
        spatial = f"(H, W) = {xs[1:-1]}, (B, H, W) = {xs[:-1]}, " if x.ndim >= 3 else ""
        raise ValueError(
            f"feature_mask of shape {shape} does not fit x of shape {xs}: use {spatial}"
            f"one example's shape {xs[1:]}, or x's shape (ids broadcast over the missing axes)."
        )
    traced = isinstance(ids, jax.core.Tracer)
    if traced:
        if num_features is None:
            raise ValueError(
                "feature_mask is traced (computed inside jit or vmap), so the number of groups is not known "
                "when tracing: pass num_features=G (a bound on the ids), e.g. the max_segments of "
                "jaxsal.segments."
            )
        axes = tuple(range(1, ids.ndim))
        valid = jnp.all((ids >= 0) & (ids < num_features), axis=axes)
        return Groups(ids, int(num_features), jnp.broadcast_to(valid, (xs[0],)))
    top = int(np.asarray(ids).max()) if np.asarray(ids).size else 0
    if num_features is not None and top >= num_features:
        raise ValueError(
            f"feature_mask has id {top} but num_features={num_features}; ids must be < num_features."
        )
    return Groups(jnp.asarray(ids, jnp.int32), int(num_features or top + 1), None)


def check_window(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints (height, width); got {value!r}.")
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1 along each axis; got {tuple(int(v) for v in pair)}.")
    return int(pair[0]), int(pair[1])


def check_images(x: Array, who: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{who} slides over images: x must have shape (B, H, W, C); got shape {x.shape}.")


# ----------------------------------------------------------------------------- occlusion


def _starts(size: int, window: int, stride: int) -> np.ndarray:
    """Captum's window positions: ``ceil((size - window) / stride) + 1`` starts ``k * stride``
    (the last window is cut at the border)."""
    return np.arange(math.ceil((size - window) / stride) + 1) * stride


def occlusion(
    f: Callable,
    *,
    window: int | tuple[int, int] | None = None,
    strides: int | tuple[int, int] | None = None,
    baseline: Array | float = 0.0,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
    Networks", https://arxiv.org/abs/1311.2901).

    A ``window`` of ``h x w`` pixels (all channels) slides over the image with
    ``strides``; for each position :math:`k` the window is replaced by ``baseline``
    (:math:`x^{(k)}`). Each pixel gets the mean score drop over the windows
    :math:`W(i)` that cover it:

    .. math:: R^c_i(x) = \frac{1}{|W(i)|} \sum_{k \in W(i)} \big(S_c(x) - S_c(x^{(k)})\big)

    Windows start at :math:`0, s, 2s, \dots` along each axis,
    :math:`\lceil (H - h)/s \rceil + 1` of them, the last one cut at the border, so
    every pixel is covered. This equals Captum's ``Occlusion`` with
    ``sliding_window_shapes=(C, h, w)`` and ``strides=(C, sh, sw)`` (NCHW there).

    Args:
      f: model ``x (B, H, W, C) -> raw scores (B, C')``; only forward passes are used.
      window: ``(h, w)`` or an int; ``None``: ``(max(1, H // 8), max(1, W // 8))``.
      strides: ``(sh, sw)`` or an int, each in ``[1, window]``; ``None``: half the
        window (at least 1).
      baseline: what occluded pixels become: a scalar or an array broadcasting to ``x``.
      batch_size: at most this many occluded images go through ``f`` per call; ``None``
        sends all windows times ``B`` at once. The result does not depend on it.

    Example::

      attr = jaxsal.occlusion(f, window=(16, 16), strides=(8, 8), batch_size=64)
      r = attr(images)                   # (B, H, W, C), the same value on every channel
    """
    contract.check_callable(f)
    window = check_window(window, "window")
    strides = check_window(strides, "strides")
    batch_size = contract.check_optional_batch_size(batch_size)
    if (
        window is not None
        and strides is not None
        and any(s > w for s, w in zip(strides, window, strict=True))
    ):
        raise ValueError(
            f"strides {strides} must not exceed window {window}: pixels between windows would be "
            f"covered by none."
        )

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        check_images(x, "occlusion")
        _, hh, ww, _ = x.shape
        win = window or (max(1, hh // 8), max(1, ww // 8))
        if win[0] > hh or win[1] > ww:
            raise ValueError(f"window {win} is larger than the image ({hh}, {ww}); use window <= (H, W).")
        st = strides or (max(1, win[0] // 2), max(1, win[1] // 2))
        if st[0] > win[0] or st[1] > win[1]:
            raise ValueError(f"strides {st} must not exceed window {win}.")
        base = contract.check_baseline(baseline, x)
        target, s_x = clean_scores(f, x, target, batch_size)
        r0, c0 = _starts(hh, win[0], st[0]), _starts(ww, win[1], st[1])
        rows, cols = np.arange(hh), np.arange(ww)
        cover_r = (rows[None] >= r0[:, None]) & (rows[None] < r0[:, None] + win[0])  # (nh, H)
        cover_c = (cols[None] >= c0[:, None]) & (cols[None] < c0[:, None] + win[1])  # (nw, W)
        nw = len(c0)
        cover_r_j, cover_c_j = jnp.asarray(cover_r), jnp.asarray(cover_c)

        def row(s, e):
            inside = cover_r_j[s // nw][:, None] & cover_c_j[s % nw][None, :]
            return jnp.where(inside[:, :, None], base[e], x[e])

        v = forward_rows(f, row, len(r0) * nw, x, target, batch_size)
        drop = (s_x[None] - v).reshape(len(r0), nw, x.shape[0])
        dtype = drop.dtype
        total = jnp.einsum(
            "ai,abe,bj->eij",
            cover_r_j.astype(dtype),
            drop,
            cover_c_j.astype(dtype),
            precision=jax.lax.Precision.HIGHEST,
        )
        count = np.outer(cover_r.sum(0), cover_c.sum(0))
        out = total / jnp.asarray(count, dtype)[None]
        return jnp.broadcast_to(out[..., None], x.shape).astype(x.dtype)

    hyper = {"window": window, "strides": strides, "baseline": baseline, "batch_size": batch_size}
    return contract.Attribution(attr, f, name="occlusion", hyper=hyper)


# ----------------------------------------------------------------------------- feature ablation

_MASK_DOC = r"""
      feature_mask: integer group ids ``0 .. G-1``: shaped ``(H, W)`` or ``(B, H, W)``
        (broadcast over channels), or like one example or like ``x``; or a function
        ``x -> ids`` (e.g. ``functools.partial(jaxsal.segments, method="slic")``);
        ``None``: an 8 x 8 grid of patches (:func:`jaxsal.segments` ``"grid"``). Every
        element of a group gets the group's value. Ids that occur nowhere are groups
        that change nothing.
      num_features: the number of groups ``G``, required when the mask is traced
        (computed under ``jit``/``vmap``); by default ``max(id) + 1``. A traced mask
        with an id outside ``[0, G)`` makes that example's map ``NaN``."""


def feature_ablation(
    f: Callable,
    feature_mask: Any = None,
    *,
    baseline: Array | float = 0.0,
    num_features: int | None = None,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Feature ablation (e.g. Captum's ``FeatureAblation``; Zeiler & Fergus 2014,
    https://arxiv.org/abs/1311.2901, occlude image regions the same way).

    Each group :math:`g` of ``feature_mask`` in turn is set to ``baseline``
    (:math:`x^{(\setminus g)}`), and every element of the group gets

    .. math:: R^c_i(x) = S_c(x) - S_c(x^{(\setminus g)}), \quad i \in g.

    Equals Captum's ``FeatureAblation`` with the same ``feature_mask`` and
    ``baselines``.

    Args:
      f: model ``x -> raw scores (B, C)``; only forward passes are used."""
    contract.check_callable(f)
    check_feature_mask(feature_mask, num_features)
    batch_size = contract.check_optional_batch_size(batch_size)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        g = groups(feature_mask, x, num_features)
        base = contract.check_baseline(baseline, x)
        target, s_x = clean_scores(f, x, target, batch_size)

        def row(s, e):
            return jnp.where(g.of(e) == s.astype(g.ids.dtype), base[e], x[e])

        v = forward_rows(f, row, g.num, x, target, batch_size)
        return g.spread((s_x[None] - v).T, x).astype(x.dtype)

    hyper = {"feature_mask": feature_mask, "baseline": baseline, "num_features": num_features}
    return contract.Attribution(attr, f, name="feature_ablation", hyper={**hyper, "batch_size": batch_size})


feature_ablation.__doc__ += (
    _MASK_DOC
    + r"""
      baseline: what ablated elements become: a scalar or an array broadcasting to ``x``.
      batch_size: at most this many ablated inputs go through ``f`` per call (``None``:
        all ``G * B`` at once). The result does not depend on it.

    Example::

      mask = jaxsal.segments(images, "slic", n_segments=50)
      r = jaxsal.feature_ablation(f, mask, batch_size=32)(images)
    """
)


# ----------------------------------------------------------------------------- Shapley sampling


def permutations(key: Array, n: int, num: int) -> Array:
    """``n`` random permutations of ``range(num)``, one per ``jax.random.fold_in(key, k)``."""
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n))
    return jax.vmap(lambda k: jax.random.permutation(k, num))(keys)


def shapley_sampling(
    f: Callable,
    feature_mask: Any = None,
    *,
    n: int = 25,
    baseline: Array | float = 0.0,
    num_features: int | None = None,
    batch_size: int | None = None,
) -> contract.Attribution:
    r"""Shapley value sampling (Castro, Gómez & Tejada 2009, "Polynomial calculation of
    the Shapley value based on sampling", https://doi.org/10.1016/j.cor.2008.04.004;
    Captum's ``ShapleyValueSampling``).

    For ``n`` random orders :math:`\pi_k` of the ``G`` groups, the groups are switched
    from ``baseline`` to ``x`` one after the other; group :math:`g` gets the mean score
    change when it is switched on:

    .. math::

       \phi_g = \frac{1}{n} \sum_{k=1}^{n}
                \big(S_c(x_{P^k_g \cup \{g\}}) - S_c(x_{P^k_g})\big)

    where :math:`P^k_g` are the groups before :math:`g` in :math:`\pi_k` and
    :math:`x_P` is ``x`` on the groups in :math:`P` and ``baseline`` elsewhere. Every
    order telescopes, so efficiency holds for any ``n``:
    :math:`\sum_g \phi_g = S_c(x) - S_c(\text{baseline})` (the full coalition is
    ``x`` itself and is not re-evaluated). Each element of a group gets
    :math:`\phi_g`. Costs ``n (G - 1) + 1`` forward passes per example.

    Args:
      f: model ``x -> raw scores (B, C)``; only forward passes are used."""
    contract.check_callable(f)
    check_feature_mask(feature_mask, num_features)
    n = contract.check_positive_int(n, "n")
    batch_size = contract.check_optional_batch_size(batch_size)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        key = contract.check_key(key, "shapley_sampling")
        g = groups(feature_mask, x, num_features)
        base = contract.check_baseline(baseline, x)
        target, s_x = clean_scores(f, x, target, batch_size)
        num = g.num
        perms = permutations(key, n, num)  # (n, G)
        ranks = jnp.argsort(perms, axis=1)  # rank of each group in each order
        inner = num - 1  # coalitions of sizes 1 .. G-1 per order; size 0 is the baseline row

        def row(s, e):
            k, j = s // max(inner, 1), s % max(inner, 1)
            on = (ranks[jnp.minimum(k, n - 1)] <= j) & (s < n * inner)  # the last row: the baseline
            return jnp.where(g.keep(on, e), x[e], base[e])

        v = forward_rows(f, row, n * inner + 1, x, target, batch_size)
        b = x.shape[0]
        s_base = v[-1]
        path = jnp.concatenate(
            [
                jnp.broadcast_to(s_base, (n, 1, b)),
                v[:-1].reshape(n, inner, b),
                jnp.broadcast_to(s_x, (n, 1, b)),
            ],
            axis=1,
        )
        marginal = jnp.diff(path, axis=1)  # (n, G, B): the change when group perms[k, j] switches on
        phi = jnp.zeros((num, b), marginal.dtype).at[perms.reshape(-1)].add(marginal.reshape(-1, b)) / n
        return g.spread(phi.T, x).astype(x.dtype)

    hyper = {"feature_mask": feature_mask, "n": n, "baseline": baseline, "num_features": num_features}
    return contract.Attribution(
        attr, f, stochastic=True, name="shapley_sampling", hyper={**hyper, "batch_size": batch_size}
    )


shapley_sampling.__doc__ += (
    _MASK_DOC
    + r"""
      n: number of random orders (static), >= 1.
      baseline: the value of switched-off elements: a scalar or an array broadcasting to ``x``.
      batch_size: at most this many perturbed inputs go through ``f`` per call (``None``:
        all at once). The result does not depend on it.

    Returns:
      ``attr(x, target=None, *, key)``; ``key`` is required (the orders are drawn from
      it, the same for every example). Same key, same result.

    Example::

      attr = jaxsal.shapley_sampling(f, jaxsal.segments(images, "slic", n_segments=30), n=50)
      phi = attr(images, key=jax.random.key(0))
    """
)


# ----------------------------------------------------------------------------- registry

_FAMILY = "perturbation"
register(
    Method(
        "occlusion",
        occlusion,
        "f",
        _FAMILY,
        "Occlusion",
        "Zeiler & Fergus 2014",
        signed=True,
        # Captum's Occlusion needs sliding_window_shapes/strides from the image's shape:
        # compared in benchmarks/perturbation.py instead of benchmarks/parity.py
        captum=None,
    )
)
register(
    Method(
        "feature_ablation",
        feature_ablation,
        "f",
        _FAMILY,
        "Feature Ablation",
        "Zeiler & Fergus 2014",
        signed=True,
    )
)
register(
    Method(
        "shapley_sampling",
        shapley_sampling,
        "f",
        _FAMILY,
        "Shapley Sampling",
        "Castro et al. 2009",
        stochastic=True,
        signed=True,
        captum="ShapleyValueSampling",
    )
)

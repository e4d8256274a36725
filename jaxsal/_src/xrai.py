"""XRAI: region attribution by greedy ranking of over-segmented regions.

The base attribution is any jaxsal method (batched and jitted like every other). The
segmentation (scikit-image's Felzenszwalb) and the greedy region ranking are
sequential, data-dependent NumPy code: they run on the host, through
``jax.pure_callback``, so an XRAI attribution still works under ``jax.jit`` and
``jax.vmap`` (the callback runs example by example) but has no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract
from jaxsal._src.pair_paths import check_callable_target
from jaxsal._src.path import integrated_gradients
from jaxsal._src.registry import Method, register

Array = jax.Array

# PAIR saliency 0.2.1's segmentation settings (saliency/core/xrai.py).
FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
SEGMENT_RESIZE = (224, 224)
VALUE_RANGE = (-1.0, 1.0)


# ----------------------------------------------------------------------------- host side


def felzenszwalb_masks(
    image: np.ndarray,
    *,
    resize: tuple[int, int] | None = SEGMENT_RESIZE,
    dilation_radius: int = 5,
) -> np.ndarray:
    """PAIR's XRAI segments of one image ``(H, W)`` or ``(H, W, C)``, as boolean masks ``(M, H, W)``.

    The image is rescaled to [-1, 1] (its own min and max), resized to ``resize``
    (bicubic, anti-aliased; ``None``: segmented at its own size), segmented by
    scikit-image's Felzenszwalb at scales 50, 100, 150, 250, 500 and 1200 (sigma 0.8,
    min_size 150), the labels resized back (nearest), every label of every scale made a
    mask, and each mask dilated by a disk of ``dilation_radius`` (0: none).
    """
    from skimage import segmentation
    from skimage.morphology import dilation, disk
    from skimage.transform import resize as sk_resize

    im = np.asarray(image, np.float64)
    shape = im.shape[:2]
    lo, hi = im.min(), im.max()
    im = (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im)
    im = im * (VALUE_RANGE[1] - VALUE_RANGE[0]) + VALUE_RANGE[0]
    if resize is not None:
        im = sk_resize(im, tuple(resize), order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    channel_axis = -1 if im.ndim == 3 else None
    masks = []
    for scale in FELZENSZWALB_SCALES:
        seg = segmentation.felzenszwalb(
            im,
            scale=scale,
            sigma=FELZENSZWALB_SIGMA,
            min_size=FELZENSZWALB_MIN_SIZE,
            channel_axis=channel_axis,
        )
        if resize is not None:
            seg = sk_resize(seg, shape, order=0, preserve_range=True, mode="constant", anti_aliasing=False)
            seg = seg.astype(int)
        masks.extend(_labels_to_masks(seg))
    if dilation_radius:
        footprint = disk(dilation_radius)
        masks = [dilation(m, footprint=footprint) for m in masks]
    return np.stack(masks).astype(bool)


def _labels_to_masks(labels: np.ndarray) -> list[np.ndarray]:
    """One mask per label value from ``labels.min()`` to ``labels.max()`` (PAIR's order)."""
    labels = np.asarray(labels)
    return [labels == v for v in range(int(labels.min()), int(labels.max()) + 1)]


def rank_regions(
    attr: np.ndarray, masks: np.ndarray, *, area_threshold: float = 1.0, min_pixel_diff: int = 50
) -> np.ndarray:
    """XRAI's greedy ranking (PAIR's "full" algorithm) of one ``attr (H, W)`` over ``masks (M, H, W)``.

    Repeatedly: drop every mask that would add fewer than ``min_pixel_diff`` new
    pixels, add the mask whose new pixels have the highest mean attribution (its gain;
    ties: the lowest index), and give its new pixels that gain; stop when no mask is
    left or the covered area exceeds ``area_threshold``. Pixels never covered get the
    mean attribution over them. Returns the ``(H, W)`` float64 map.

    Gains are tracked incrementally for speed and recomputed exactly (as PAIR's
    ``attr[new].mean()``) for every mask within 1e-9 of the best, so the choice is
    PAIR's.
    """
    attr = np.asarray(attr, np.float64)
    shape = attr.shape
    a = attr.reshape(-1)
    m = np.asarray(masks, bool).reshape(len(masks), -1)
    out = np.full(a.shape, -np.inf)
    current = np.zeros(a.shape, bool)
    remaining = np.ones(len(m), bool)
    counts = m.sum(axis=1).astype(np.int64)
    sums = np.array([a[row].sum() for row in m]) if len(m) else np.zeros(0)
    area = 0.0
    while area <= area_threshold:
        remaining &= counts >= min_pixel_diff
        if not remaining.any():
            break
        idx = np.flatnonzero(remaining)
        approx = sums[idx] / counts[idx]
        top = np.nanmax(approx) if np.isfinite(approx).any() else -np.inf
        near = idx[approx >= top - 1e-9 * max(1.0, abs(top))] if np.isfinite(top) else idx
        best, best_gain = None, -np.inf
        for i in near:  # ascending index, strict >: PAIR's tie rule
            gain = a[m[i] & ~current].mean()
            if gain > best_gain:
                best, best_gain = i, gain
        if best is None:
            break
        new = m[best] & ~current
        out[new] = best_gain
        current |= new
        area = float(np.mean(current))
        remaining[best] = False
        added = np.flatnonzero(new)
        sub = m[:, added]
        counts -= sub.sum(axis=1)
        sums -= sub.astype(np.float64) @ a[added]
    uncomputed = out == -np.inf
    if uncomputed.any():
        out[uncomputed] = a[uncomputed].mean()
    return out.reshape(shape)


def _host_xrai(image, attr, segments, *, kind, resize, dilation_radius, area_threshold, min_pixel_diff):
    """The callback: XRAI maps ``(B, H, W)`` for a batch, one example at a time."""
    attr = np.asarray(attr, np.float64)
    out = np.empty(attr.shape, np.float64)
    for b in range(attr.shape[0]):
        if kind == "felzenszwalb":
            masks = felzenszwalb_masks(
                np.asarray(image[b], np.float64), resize=resize, dilation_radius=dilation_radius
            )
        else:
            seg = np.asarray(segments)
            seg = seg[b] if kind.startswith("per_example") else seg
            masks = np.stack(_labels_to_masks(seg)) if kind.endswith("labels") else seg.astype(bool)
        out[b] = rank_regions(attr[b], masks, area_threshold=area_threshold, min_pixel_diff=min_pixel_diff)
    return out


# ----------------------------------------------------------------------------- the method


def _segments_kind(segments: Any, x_shape: tuple[int, ...]) -> str:
    """How ``segments`` is laid out, checked against ``x``'s shape ``(B, H, W, ...)``."""
    b, hw = x_shape[0], tuple(x_shape[1:3])
    seg = segments
    if not hasattr(seg, "shape") or not hasattr(seg, "dtype"):
        raise TypeError(f"segments must be an array (labels or boolean masks); got {type(seg).__name__}.")
    is_bool = seg.dtype == bool
    if not is_bool and not jnp.issubdtype(seg.dtype, jnp.integer):
        raise ValueError(
            f"segments must be integer labels or boolean masks; got dtype {seg.dtype}. "
            f"Use jaxsal.segments(...) or segments.astype(int)."
        )
    shape = tuple(seg.shape)
    if is_bool and seg.ndim == 3 and shape[1:] == hw:
        return "shared_masks"
    if is_bool and seg.ndim == 4 and shape[0] == b and shape[2:] == hw:
        return "per_example_masks"
    if not is_bool and shape == hw:
        return "shared_labels"
    if not is_bool and shape == (b,) + hw:
        return "per_example_labels"
    raise ValueError(
        f"segments of shape {shape} and dtype {seg.dtype} do not fit x of shape {x_shape}: pass integer "
        f"labels (H, W) = {hw} or (B, H, W) = {(b,) + hw}, or boolean masks (M, H, W) or (B, M, H, W)."
    )


def _pair_ig_base(f: Callable, steps: int, batch_size: int | None) -> contract.Attribution:
    """PAIR's XRAI base: the mean of IG from a black and from a white baseline."""

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        target = contract.resolve_target_at(f, x, target, who="xrai")
        axes = tuple(range(1, x.ndim))
        out = jnp.zeros_like(x)
        for baseline in (jnp.min(x, axis=axes, keepdims=True), jnp.max(x, axis=axes, keepdims=True)):
            ig = integrated_gradients(
                f, baseline=baseline, steps=steps, method="riemann_trapezoid", batch_size=batch_size
            )
            out = out + ig(x, target)
        return out * jnp.asarray(0.5, x.dtype)

    return contract.Attribution(attr, f, name="integrated_gradients(black, white)")


def xrai(
    base: Callable,
    *,
    segments: Array | np.ndarray | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    area_threshold: float = 1.0,
    min_pixel_diff: int = 50,
    dilation_radius: int = 5,
    segment_resize: Sequence[int] | None = SEGMENT_RESIZE,
) -> contract.Attribution:
    r"""XRAI (Kapishnikov, Bolukbasi, Viégas & Terry 2019, "XRAI: Better Attributions
    Through Regions", https://arxiv.org/abs/1906.02825).

    Over-segment the image into overlapping regions :math:`\{m_j\}`, then grow the
    explained area greedily: with :math:`C` the pixels covered so far, add the region
    of highest gain

    .. math:: j^* = \arg\max_j \frac{1}{|m_j \setminus C|} \sum_{p \in m_j \setminus C} a_p ,
              \qquad a_p = \max_c A_{p,c}

    (:math:`A` the base attribution, maximised over channels) and give each of its new
    pixels that gain; regions adding fewer than ``min_pixel_diff`` new pixels are
    dropped. The map's value at a pixel is the gain of the region that covered it, so
    ranking the map ranks regions by attribution density. Same as PAIR
    ``saliency.core.XRAI().GetMask(x, ..., base_attribution=, segments=)`` with its
    "full" algorithm and default ``XRAIParameters``.

    Args:
      base: the base attribution. A jaxsal :class:`~jaxsal.Attribution` (e.g.
        ``jaxsal.integrated_gradients(f)``) returning maps shaped like ``x`` (or
        ``(B, H, W)``) is used as it is. Any other callable is taken as the model
        ``f``, and the base is PAIR's: the mean of Integrated Gradients from a black
        (``min(x)``) and a white (``max(x)``) baseline, ``steps`` points each
        (default 100, nodes ``linspace(0, 1, steps)`` as PAIR; jaxsal's trapezoid
        weights, which halve the two end nodes where PAIR weights every node ``1/steps``).
        Wrap a plain attribution function with :func:`jaxsal.attribution` to use it
        as a base.
      segments: ``None``: PAIR's segments (``jaxsal._src.xrai.felzenszwalb_masks``: Felzenszwalb
        at six scales on the image resized to ``segment_resize``, each region dilated
        by ``dilation_radius``), computed on the host. Or given: integer labels
        ``(H, W)`` or ``(B, H, W)`` (one region per label value, not dilated, e.g.
        from ``jaxsal.segments``) or boolean masks ``(M, H, W)`` or
        ``(B, M, H, W)``, used as they are (PAIR's ``segments=`` list).
      steps: the default IG base's points per baseline (default 100); only for the
        default base.
      batch_size: the default IG base's rows per model call; only for the default base.
      area_threshold: stop once this fraction of the image is covered (PAIR: 1.0).
      min_pixel_diff: >= 1 (PAIR's ``experimental_params["min_pixel_diff"]``, 50).
      dilation_radius: disk radius for the default segments (PAIR: 5).
      segment_resize: the size the default segmentation runs at (PAIR: 224 x 224);
        ``None`` segments at the image's own size.

    Returns:
      ``attr(x, target=None, *, key=None)`` for images ``x (B, H, W, C)`` or
      ``(B, H, W)``: the XRAI map ``(B, H, W)``, repeated over the channel axis so
      that it is shaped like ``x`` (``r[..., 0]`` is PAIR's map), in ``x``'s dtype.

    Under ``jax.jit``: the base attribution is traced and compiled as usual; the
    segmentation and the ranking run on the host inside a ``jax.pure_callback``
    (NumPy and scikit-image, one example after the other, also under ``jax.vmap``), so
    the result has no gradient and that part does not run on an accelerator. Given
    ``segments`` may be concrete or traced arrays.

    Example::

      r = jaxsal.xrai(f)(images)                                   # PAIR's defaults
      r = jax.jit(jaxsal.xrai(jaxsal.guided_ig(f), segments=labels))(images)
    """
    contract.check_callable(base, "base")
    if isinstance(base, contract.Attribution):
        if steps is not None or batch_size is not None:
            raise ValueError(
                "steps and batch_size configure xrai's default IG base only; set them on the base "
                "attribution you pass instead, e.g. jaxsal.xrai(jaxsal.integrated_gradients(f, steps=50))."
            )
        inner = base
    else:
        steps = contract.check_positive_int(100 if steps is None else steps, "steps", 2)
        batch_size = contract.check_optional_batch_size(batch_size)
        inner = _pair_ig_base(base, steps, batch_size)
    if isinstance(area_threshold, bool) or not isinstance(
        area_threshold, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"area_threshold must be a float in [0, 1]; got {area_threshold!r}.")
    area_threshold = float(area_threshold)
    if not (math.isfinite(area_threshold) and 0.0 <= area_threshold <= 1.0):
        raise ValueError(
            f"area_threshold must be in [0, 1] (the covered fraction, PAIR: 1.0); got {area_threshold}."
        )
    min_pixel_diff = contract.check_positive_int(min_pixel_diff, "min_pixel_diff")
    dilation_radius = contract.check_positive_int(dilation_radius, "dilation_radius", 0)
    if segment_resize is not None:
        if len(tuple(segment_resize)) != 2:
            raise ValueError(f"segment_resize must be (height, width) or None; got {segment_resize!r}.")
        segment_resize = tuple(contract.check_positive_int(s, "segment_resize") for s in segment_resize)
    seg_array = (
        None if segments is None else (segments if isinstance(segments, jax.Array) else np.asarray(segments))
    )

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        target = contract.resolve_target_at(inner.scores_fn, x, target, who="xrai")
        check_callable_target(inner.scores_fn, x, target)
        if x.ndim not in (3, 4):
            raise ValueError(
                f"xrai explains images x of shape (B, H, W, C) or (B, H, W); got shape {x.shape}."
            )
        kind = "felzenszwalb" if seg_array is None else _segments_kind(seg_array, x.shape)
        a = inner(x, target, key=key)
        if a.shape == x.shape and x.ndim == 4:
            a = jnp.max(a, axis=-1)
        elif a.shape != x.shape[:3]:
            raise ValueError(
                f"xrai's base attribution must return maps shaped like x {x.shape} or (B, H, W) = {x.shape[:3]}; "
                f"got {a.shape}. For a coarse map (a CAM) upsample it first with jaxsal.upsample."
            )
        host = lambda img, at, seg: _host_xrai(  # noqa: E731
            img,
            at,
            seg,
            kind=kind,
            resize=segment_resize,
            dilation_radius=dilation_radius,
            area_threshold=area_threshold,
            min_pixel_diff=min_pixel_diff,
        ).astype(x.dtype)
        # A 64-bit result crosses the callback as uint32 pairs: JAX checks the callback's
        # dtype against the x64 setting of the thread that runs it, which need not be the
        # caller's (a ``jax.enable_x64`` context is thread-local).
        wide = jnp.dtype(x.dtype).itemsize == 8
        if wide:
            narrow = host

            def host(img, at, seg):
                img64 = np.ascontiguousarray(img).view(np.float64)[..., 0]
                at64 = np.ascontiguousarray(at).view(np.float64)[..., 0]
                return narrow(img64, at64, seg).view(np.uint32).reshape(a.shape + (2,))

        spec = (
            jax.ShapeDtypeStruct(a.shape + (2,), jnp.uint32)
            if wide
            else jax.ShapeDtypeStruct(a.shape, x.dtype)
        )
        seg_arg = jnp.zeros((), jnp.int32) if seg_array is None else seg_array
        out = jax.pure_callback(
            host,
            spec,
            *(
                jax.lax.bitcast_convert_type(jax.lax.stop_gradient(v), jnp.uint32)
                if wide
                else jax.lax.stop_gradient(v)
                for v in (x, a)
            ),
            seg_arg,
            vmap_method="sequential",
        )
        if wide:
            out = jax.lax.bitcast_convert_type(out, x.dtype)
        if x.ndim == 4:
            out = jnp.broadcast_to(out[..., None], x.shape)
        return out

    hyper = {
        "base": inner,
        "segments": segments,
        "steps": steps,
        "batch_size": batch_size,
        "area_threshold": area_threshold,
        "min_pixel_diff": min_pixel_diff,
        "dilation_radius": dilation_radius,
        "segment_resize": segment_resize,
    }
    return contract.Attribution(attr, inner.scores_fn, stochastic=inner.stochastic, name="xrai", hyper=hyper)


register(Method("xrai", xrai, "f", "region", "XRAI", "Kapishnikov et al. 2019", signed=True))

"""Feature masks for the perturbation methods: superpixels through scikit-image, or a grid.

A feature mask assigns every pixel an integer group id ``0 .. G-1``; the perturbation
methods (:func:`jaxsal.feature_ablation`, :func:`jaxsal.shapley_sampling`,
:func:`jaxsal.kernel_shap`, :func:`jaxsal.lime`) switch whole groups on and off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SEGMENTERS = ("slic", "quickshift", "felzenszwalb", "grid")


def _cells(cells: Any) -> tuple[int, int]:
    pair = (cells, cells) if isinstance(cells, (int, np.integer)) and not isinstance(cells, bool) else cells
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in pair)
    ):
        raise TypeError(f"cells must be an int or a pair of ints (rows, columns); got {cells!r}.")
    if min(pair) < 1:
        raise ValueError(f"cells must be >= 1 along each axis; got {tuple(pair)}.")
    return int(pair[0]), int(pair[1])


def grid_mask(height: int, width: int, cells: int | tuple[int, int] = 8) -> np.ndarray:
    """``(height, width)`` int32 ids of a ``cells`` grid of near-square patches, row-major.

    Each patch is ``ceil(height / rows) x ceil(width / columns)`` pixels (the last row
    and column of patches may be smaller); with more cells than pixels along an axis
    every pixel of that axis is its own cell. Ids run ``0 .. G-1`` without gaps.
    """
    rows, cols = _cells(cells)
    ph, pw = math.ceil(height / min(rows, height)), math.ceil(width / min(cols, width))
    r = np.arange(height) // ph
    c = np.arange(width) // pw
    ids = r[:, None] * (c.max() + 1) + c[None, :]
    return ids.astype(np.int32)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Ids ``0 .. k-1`` in order of first appearance along the flattened image."""
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each unique label by first appearance
    return order[inverse].reshape(labels.shape).astype(np.int32)


def _segment_one(img: np.ndarray, method: str, options: dict) -> np.ndarray:
    import skimage.segmentation as seg

    img = np.asarray(img, np.float64)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)  # [0, 1], as scikit-image expects
    channel_axis = -1 if img.ndim == 3 else None
    if method == "slic":
        labels = seg.slic(img, channel_axis=channel_axis, **options)
    elif method == "quickshift":
        if img.ndim == 2 or img.shape[-1] != 3:
            raise ValueError(f"quickshift needs RGB images (H, W, 3); got shape {img.shape}.")
        labels = seg.quickshift(img, **options)
    else:
        labels = seg.felzenszwalb(img, channel_axis=channel_axis, **options)
    return _relabel(labels)


def _segment_host(images: np.ndarray, method: str, options: dict, max_segments: int | None) -> np.ndarray:
    images = np.asarray(images)
    lead, spatial = images.shape[:-3], images.shape[-3:]
    flat = images.reshape((-1,) + spatial)
    out = np.stack([_segment_one(im, method, options) for im in flat]) if flat.shape[0] else None
    if out is None:
        return np.zeros(lead + spatial[:2], np.int32)
    if max_segments is not None and out.max(initial=-1) >= max_segments:
        raise ValueError(
            f"segments: {method} made {int(out.max()) + 1} segments, more than max_segments={max_segments}; "
            f"raise max_segments or ask for fewer segments (e.g. n_segments for slic)."
        )
    return out.reshape(lead + spatial[:2])


def segments(
    image: Any,
    method: str = "slic",
    *,
    max_segments: int | None = None,
    cells: int | tuple[int, int] = 8,
    **options: Any,
) -> np.ndarray | Array:
    r"""Superpixel feature masks: integer group ids for :func:`jaxsal.kernel_shap` and friends.

    ``"slic"`` (Achanta et al. 2012, "SLIC Superpixels Compared to State-of-the-Art
    Superpixel Methods", https://doi.org/10.1109/TPAMI.2012.120), ``"quickshift"``
    (Vedaldi & Soatto 2008, https://doi.org/10.1007/978-3-540-88693-8_52) and
    ``"felzenszwalb"`` (Felzenszwalb & Huttenlocher 2004, "Efficient Graph-Based Image
    Segmentation", https://doi.org/10.1023/B:VISI.0000022288.19776.77) are
    scikit-image's ``skimage.segmentation.slic``/``quickshift``/``felzenszwalb`` with
    ``options`` passed through unchanged (e.g. ``n_segments=50, compactness=10``) and
    scikit-image's defaults otherwise. Each image is first min-max scaled to
    :math:`[0, 1]` (so normalised network inputs segment like photos), and its labels
    are renumbered ``0 .. k-1`` in order of first appearance. ``"grid"`` is a grid of
    ``cells`` near-square patches, the same for every image; it
    needs only the shape.

    Args:
      image: one image ``(H, W, C)`` or a batch ``(B, H, W, C)`` (channels last, any
        float or integer dtype; ``(H, W)`` grayscale works for slic and felzenszwalb).
        Under ``jax.jit`` (a traced image) scikit-image runs on the host through
        ``jax.pure_callback`` and ``max_segments`` is required; ``"grid"`` runs anywhere.
      method: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"`` or ``"grid"``.
      max_segments: a bound on the number of segments per image. Required for a traced
        image (the perturbation methods then need ``num_features=max_segments``); a
        segmentation with more segments raises rather than being cut.
      cells: for ``"grid"``: cells per side, an int or ``(rows, columns)``.
      **options: keyword options of the scikit-image function.

    Returns:
      int32 ids shaped like the image without its channel axis: ``(H, W)`` or
      ``(B, H, W)``; a NumPy array for concrete images and for ``"grid"``, a JAX array
      for a traced image.

    Example::

      mask = jaxsal.segments(images, "slic", n_segments=50)      # (B, H, W), on the host
      phi = jaxsal.kernel_shap(f, mask, n=500)(images, key=jax.random.key(0))

      # inside jit: the segmentation runs as a host callback
      fm = functools.partial(jaxsal.segments, method="slic", n_segments=50, max_segments=100)
      attr = jaxsal.kernel_shap(f, fm, num_features=100, n=500)
    """
    if method not in SEGMENTERS:
        raise ValueError(f"method must be one of {SEGMENTERS}; got {method!r}.")
    shape = getattr(image, "shape", None)
    if shape is None:
        image = np.asarray(image)
        shape = image.shape
    if len(shape) not in (2, 3, 4):
        raise ValueError(
            f"image must have shape (H, W), (H, W, C) or (B, H, W, C); got shape {tuple(shape)}."
        )
    if max_segments is not None:
        if isinstance(max_segments, bool) or not isinstance(max_segments, (int, np.integer)):
            raise TypeError(f"max_segments must be an int >= 1 or None; got {max_segments!r}.")
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1; got {max_segments}.")
    batched = len(shape) == 4
    spatial = shape[1:3] if batched else shape[:2]
    if method == "grid":
        if options:
            raise TypeError(f"grid takes only cells=; got options {sorted(options)}.")
        ids = grid_mask(*spatial, cells)
        return np.broadcast_to(ids, (shape[0], *spatial)).copy() if batched else ids
    if "channel_axis" in options:
        raise TypeError("segments: channels are always the last axis; do not pass channel_axis.")
    out_shape = tuple(shape[:-1]) if len(shape) >= 3 else tuple(shape)
    if isinstance(image, jax.core.Tracer):
        if max_segments is None:
            raise ValueError(
                "segments of a traced image (inside jax.jit or vmap) need a static bound: pass "
                "max_segments=K, and num_features=K to the perturbation method."
            )

        def host(img):
            img = np.asarray(img)
            return _segment_host(img[..., None] if len(shape) == 2 else img, method, options, max_segments)

        # The callback handles any leading axes, so vmap adds one (expand_dims).
        return jax.pure_callback(
            host,
            jax.ShapeDtypeStruct(out_shape, jnp.int32),
            image,
            vmap_method="expand_dims",
        )
    img = np.asarray(image)
    return _segment_host(img[..., None] if len(shape) == 2 else img, method, options, max_segments)


def is_mask_fn(obj: Any) -> bool:
    """Whether ``feature_mask`` is a function of the input (rather than an array)."""
    return callable(obj) and not hasattr(obj, "shape")


MaskFn = Callable[[Array], Any]

"""Plotting attribution maps: a thin matplotlib layer over :mod:`jaxsal._src.normalize`.

Matplotlib is imported inside the functions, so ``import jaxsal.viz`` costs nothing
and works without it (install the ``viz`` extra to plot). All value mapping is done
by the pure functions of :mod:`jaxsal._src.normalize`; this module only draws:

* :func:`show_abs`: magnitude, ``|m|`` clipped at a percentile, grey scale;
* :func:`show_signed`: sign and magnitude, diverging colour map with 0 at its centre;
* :func:`overlay`: a heat map (e.g. Grad-CAM) drawn over its photo;
* :func:`grid`: the demo figure, one row per image, one column per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from jaxsal._src import normalize as _nz

Kind = Literal["abs", "signed", "overlay"]

__all__ = ["grid", "image_to_float", "overlay", "show_abs", "show_signed"]


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("jaxsal.viz.grid needs matplotlib: pip install 'jaxsal[viz]'.") from e
    return Figure


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def image_to_float(image: Any) -> np.ndarray:
    """An image as float ``[0, 1]`` RGB ``(H, W, 3)``: uint8 is divided by 255, floats are clipped."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3:
        raise ValueError(f"image must have shape (H, W) or (H, W, C); got {img.shape}.")
    if img.shape[-1] == 4:
        img = img[..., :3]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float32) / 255.0
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def _as_2d(m: Any, reduce: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` -> ``(1, H, W)`` with channels reduced by ``reduce``."""
    m = np.asarray(m, dtype=np.float32)
    if m.ndim == 3:
        m = np.asarray(_nz.reduce_channels(m, reduce))
    if m.ndim != 2:
        raise ValueError(f"a map must have shape (H, W) or (H, W, C); got {m.shape}.")
    return m[None]


def show_abs(ax, m: Any, percentile: float = 99.0, *, reduce: str = "abs_sum", cmap: str = "gray"):
    """Draw ``|m|`` clipped at its ``percentile`` and scaled to ``[0, 1]`` (black = 0).

    Args:
      ax: a matplotlib Axes.
      m: ``(H, W)`` or ``(H, W, C)``; channels are collapsed with
        :func:`~jaxsal._src.normalize.reduce_channels` (``reduce``, default the sum of
        absolute values).
      percentile: values above this percentile of ``|m|`` saturate.
    Returns:
      the ``AxesImage``.
    """
    v = np.asarray(_nz.abs_percentile(_as_2d(m, reduce), percentile))[0]
    im = ax.imshow(v, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    _clean(ax)
    return im


def show_signed(ax, m: Any, percentile: float = 99.0, *, reduce: str = "sum", cmap: str = "bwr"):
    """Draw a signed map with a diverging colour map centred at 0 (white = 0).

    The map is scaled by the symmetric limit ``P_percentile(|m|)`` to ``[-1, 1]``
    (:func:`~jaxsal._src.normalize.signed_symmetric`) and drawn with limits
    ``[-1, 1]``: red is positive evidence for the explained class, blue negative.

    Args:
      ax: a matplotlib Axes.
      m: ``(H, W)`` or ``(H, W, C)``; channels are summed by default (signs cancel).
      percentile: percentile of ``|m|`` used as the symmetric limit.
    Returns:
      the ``AxesImage``.
    """
    v = np.asarray(_nz.signed_symmetric(_as_2d(m, reduce), percentile))[0]
    im = ax.imshow(v, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    _clean(ax)
    return im


def overlay(ax, image: Any, heatmap: Any, alpha: float = 0.5, *, cmap: str = "jet", reduce: str = "sum"):
    """Draw ``heatmap`` min-max scaled to ``[0, 1]`` over ``image`` with opacity ``alpha``.

    A coarse heat map (e.g. Grad-CAM's ``7 x 7``) is stretched over the whole image
    with bilinear interpolation, so it need not be upsampled first.

    Args:
      ax: a matplotlib Axes.
      image: ``(H, W, 3)`` uint8 or float in ``[0, 1]``.
      heatmap: ``(h, w)`` (or ``(h, w, C)``, reduced with ``reduce``).
      alpha: opacity of the heat map, in ``[0, 1]``.
    Returns:
      the heat map's ``AxesImage``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    img = image_to_float(image)
    h, w = img.shape[:2]
    v = np.asarray(_nz.minmax(_as_2d(heatmap, reduce)))[0]
    ax.imshow(img, extent=(0, w, h, 0))
    im = ax.imshow(
        v, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, extent=(0, w, h, 0), interpolation="bilinear"
    )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    _clean(ax)
    return im


def grid(
    images: Any,
    maps: Mapping[str, Any],
    row_labels: Sequence[str] | None = None,
    *,
    kinds: Mapping[str, Kind] | None = None,
    percentile: float = 99.0,
    image_title: str = "",
    cell_size: float = 2.0,
    title: str | None = None,
):
    """The demo figure: one row per image, the photo then one column per method.

    Args:
      images: ``(N, H, W, 3)`` photos (uint8, or float in ``[0, 1]``), as seen by the model.
      maps: ``{column title: (N, H, W) or (N, H, W, C) maps}``, in column order. Maps
        drawn with ``"overlay"`` may be coarser than the photo.
      row_labels: one label per row, written above the photo (e.g. ``"espresso p=0.95"``).
      kinds: ``{column title: "abs" | "signed" | "overlay"}``; the default is ``"abs"``
        (:func:`show_abs`); ``"signed"`` uses :func:`show_signed`, ``"overlay"``
        :func:`overlay`.
      percentile: clipping percentile for ``"abs"`` and ``"signed"`` columns.
      image_title: column title of the photo column (first row only).
      cell_size: inches per cell.
      title: optional figure title.

    Returns:
      a ``matplotlib.figure.Figure`` with ``N * (1 + len(maps))`` axes in row-major
      order. Column titles are set on the first row's axes, the row labels as the
      titles of the photo axes.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    n = images.shape[0]
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"row_labels must have one label per image ({n}); got {len(row_labels)}.")
    kinds = dict(kinds or {})
    unknown = set(kinds) - set(maps)
    if unknown:
        raise ValueError(f"kinds names columns that are not in maps: {sorted(unknown)}.")
    arrays = {}
    for name, m in maps.items():
        a = np.asarray(m)
        if a.shape[0] != n:
            raise ValueError(f"maps[{name!r}] must hold one map per image ({n}); got shape {a.shape}.")
        arrays[name] = a
        if kinds.get(name, "abs") not in ("abs", "signed", "overlay"):
            raise ValueError(f"kinds[{name!r}] must be 'abs', 'signed' or 'overlay'; got {kinds[name]!r}.")

    Figure = _figure_class()
    ncols = 1 + len(arrays)
    # A Figure not registered with pyplot: no GUI backend, no global state, freed with its
    # last reference. Save it with ``fig.savefig(path)``; Jupyter displays it inline.
    fig = Figure(figsize=(cell_size * ncols, cell_size * n + (0.4 if title else 0.0)), layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(image_to_float(images[r]))
        _clean(ax)
        label = row_labels[r] if row_labels is not None else ""
        if r == 0 and image_title:
            label = f"{image_title}\n{label}" if label else image_title
        ax.set_title(label, fontsize=9)
        for c, (name, a) in enumerate(arrays.items(), start=1):
            ax = axes[r, c]
            kind = kinds.get(name, "abs")
            if kind == "overlay":
                overlay(ax, images[r], a[r])
            elif kind == "signed":
                show_signed(ax, a[r], percentile)
            else:
                show_abs(ax, a[r], percentile)
            if r == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig

"""Plotting attribution maps: a thin matplotlib layer over :mod:`jaxsal._src.normalize`.

Matplotlib is imported inside the functions, so ``import jaxsal.viz`` costs nothing
and works without it (install the ``viz`` extra to plot). All value mapping is done
by the pure functions of :mod:`jaxsal._src.normalize`; this module only draws:

* :func:`show_abs`: magnitude, ``|m|`` clipped at a percentile, grey scale;
* :func:`show_signed`: sign and magnitude, diverging colour map with 0 at its centre;
* :func:`overlay`: a heat map (e.g. Grad-CAM) drawn over its photo;
* :func:`grid`: the demo figure, one row per image, one column per method;
* :func:`randomization_grid`, :func:`randomization_curves`: the figures of the
  model-parameter randomisation sanity check (:func:`jaxsal.metrics.model_parameter_randomization`).

Maps with NaN or inf values (jaxsal's answer to a non-finite input or a traced
out-of-range target) are never drawn blank: the pixels are drawn in
``NAN_COLOR``, the panel is labelled, and an all-NaN map is hatched.

Every figure is a ``matplotlib.figure.Figure`` that is not registered with pyplot: no
backend is selected or switched, nothing global changes, and the figure is freed with
its last reference. Save it with ``fig.savefig(path)``; Jupyter displays it inline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from jaxsal._src import normalize as _nz
from jaxsal.models import to_rgb

Kind = Literal["abs", "signed", "overlay"]

__all__ = [
    "grid",
    "image_to_float",
    "overlay",
    "randomization_curves",
    "randomization_grid",
    "show_abs",
    "show_signed",
]


def _figure(**kwargs):
    """A new ``matplotlib.figure.Figure`` (not registered with pyplot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("jaxsal.viz needs matplotlib to draw figures: pip install 'jaxsal[viz]'.") from e
    return Figure(**kwargs)


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def image_to_float(image: Any) -> np.ndarray:
    """An image as float32 RGB ``(H, W, 3)`` in ``[0, 1]``: ``jaxsal.models.to_rgb(image, np.float32)``.

    uint8 is divided by 255, floats in ``[0, 1]`` are kept; grey and RGBA become RGB.
    """
    return to_rgb(image, np.float32)


def _as_2d(m: Any, reduce: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` -> ``(1, H, W)`` with channels reduced by ``reduce``."""
    m = np.asarray(m, dtype=np.float32)
    if m.ndim == 3:
        m = np.asarray(_nz.reduce_channels(m, reduce))
    if m.ndim != 2:
        raise ValueError(f"a map must have shape (H, W) or (H, W, C); got {m.shape}.")
    return m[None]


#: Colour of NaN/inf pixels, and of the hatching and label of a map that has them.
NAN_COLOR = "#d62728"


def _finite_part(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``m`` with non-finite values set to 0 (so they do not spoil the scaling), and their mask."""
    bad = ~np.isfinite(m)
    return np.where(bad, np.float32(0), m), bad


def _with_bad(cmap: str):
    """The colour map ``cmap`` drawing NaN in ``NAN_COLOR`` (matplotlib's default: transparent)."""
    import matplotlib

    return matplotlib.colormaps[cmap].with_extremes(bad=NAN_COLOR)


def _mark_nonfinite(ax, bad: np.ndarray) -> None:
    """Label a panel whose map has NaN/inf values, and hatch it when the whole map is.

    jaxsal returns NaN maps on purpose (a non-finite input or a traced out-of-range
    target under ``jit``): they must never look like a blank, all-zero map.
    """
    if not bad.any():
        return
    from matplotlib.patches import Rectangle

    whole = bool(bad.all())
    if whole:
        ax.add_patch(
            Rectangle(
                (0, 0),
                1,
                1,
                transform=ax.transAxes,
                facecolor="white",
                edgecolor=NAN_COLOR,
                hatch="xx",
                zorder=3,
            )
        )
    label = "NaN map" if whole else f"NaN/inf: {bad.mean():.0%} of pixels"
    ax.text(
        0.5,
        0.5,
        label,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=8,
        color=NAN_COLOR,
        zorder=4,
        bbox={"facecolor": "white", "edgecolor": NAN_COLOR, "alpha": 0.9},
    )


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
    m2, bad = _finite_part(_as_2d(m, reduce))
    v = np.where(bad, np.nan, np.asarray(_nz.abs_percentile(m2, percentile)))[0]
    im = ax.imshow(v, cmap=_with_bad(cmap), vmin=0.0, vmax=1.0, interpolation="nearest")
    _clean(ax)
    _mark_nonfinite(ax, bad[0])
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
    m2, bad = _finite_part(_as_2d(m, reduce))
    v = np.where(bad, np.nan, np.asarray(_nz.signed_symmetric(m2, percentile)))[0]
    im = ax.imshow(v, cmap=_with_bad(cmap), vmin=-1.0, vmax=1.0, interpolation="nearest")
    _clean(ax)
    _mark_nonfinite(ax, bad[0])
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
    m2, bad = _finite_part(_as_2d(heatmap, reduce))
    v = np.where(bad, np.nan, np.asarray(_nz.minmax(m2)))[0]
    ax.imshow(img, extent=(0, w, h, 0))
    im = ax.imshow(
        v,
        cmap=_with_bad(cmap),
        alpha=alpha,
        vmin=0.0,
        vmax=1.0,
        extent=(0, w, h, 0),
        interpolation="nearest" if bad.any() else "bilinear",
    )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    _clean(ax)
    _mark_nonfinite(ax, bad[0])
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

    ncols = 1 + len(arrays)
    fig = _figure(figsize=(cell_size * ncols, cell_size * n + (0.4 if title else 0.0)), layout="constrained")
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


def randomization_grid(
    results: Mapping[str, Any], images: Any, *, image_index: int = 0, percentile: float = 99.0
):
    """The sanity-check figure of Adebayo et al. (2018), Fig. 2: how maps decay under randomisation.

    One row per method: the photo, the trained model's map, then the map after each
    randomisation step (top layer first), drawn as :func:`show_abs`.

    Args:
      results: ``{method name: RandomizationResult}`` of
        :func:`jaxsal.metrics.model_parameter_randomization`, all over the same layers.
      images: ``(N, H, W, 3)`` photos (uint8, or float in ``[0, 1]``), as seen by the model.
      image_index: which image of the batch to draw.
      percentile: clipping percentile of the maps.

    Returns:
      a ``matplotlib.figure.Figure`` with ``len(results) * (2 + steps)`` axes in
      row-major order; the first row's map axes are titled ``"original"`` and the layer names.
    """
    if not results:
        raise ValueError("results must hold at least one method's RandomizationResult.")
    first = next(iter(results.values()))
    ncol = 2 + len(first.layers)
    fig = _figure(figsize=(1.3 * ncol, 1.4 * len(results)), layout="tight")
    axes = fig.subplots(len(results), ncol, squeeze=False)
    for row, (name, r) in enumerate(results.items()):
        panels = [np.asarray(r.original[image_index])] + [np.asarray(m[image_index]) for m in r.maps]
        axes[row, 0].imshow(image_to_float(np.asarray(images)[image_index]))
        axes[row, 0].set_ylabel(name, fontsize=7)
        for col, m in enumerate(panels, start=1):
            ax = axes[row, col]
            show_abs(ax, m, percentile)
            if row == 0:
                ax.set_title("original" if col == 1 else r.layers[col - 2], fontsize=6)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{first.mode} randomisation (top layer first)", fontsize=9)
    return fig


def randomization_curves(results: Mapping[str, Any]):
    """Rank correlation of ``|map|`` with the trained model's map after each randomisation step.

    One line per method, the mean over images of ``RandomizationResult.spearman_abs``
    (NaNs ignored), against the randomised layers (top layer first).

    Args:
      results: ``{method name: RandomizationResult}``, all over the same layers.

    Returns:
      a ``matplotlib.figure.Figure`` with one axes.
    """
    if not results:
        raise ValueError("results must hold at least one method's RandomizationResult.")
    first = next(iter(results.values()))
    fig = _figure(figsize=(7, 3.5), layout="tight")
    ax = fig.subplots()
    for name, r in results.items():
        ax.plot(
            range(1, len(r.layers) + 1), np.nanmean(np.asarray(r.spearman_abs), 1), marker="o", label=name
        )
    ax.set_xticks(range(1, len(first.layers) + 1), first.layers, rotation=70, fontsize=6)
    ax.set_ylabel("rank correlation |map|")
    ax.set_ylim(-0.1, 1.05)
    ax.axhline(0, color="gray", lw=0.5)
    ax.legend(fontsize=7)
    return fig

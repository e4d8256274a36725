"""Plotting without a display: layout, titles, labels and the colour limits used."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxsal import viz


def test_importing_jaxsal_and_viz_does_not_import_matplotlib():
    code = "import sys, jaxsal, jaxsal.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def _maps(n, h=16, w=20, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "Vanilla Gradient": rng.normal(size=(n, h, w, 3)),
        "Integrated Gradients": rng.normal(size=(n, h, w, 3)),
        "Grad-CAM": np.maximum(rng.normal(size=(n, 4, 5)), 0),  # coarse, layer resolution
    }


def test_grid_layout_titles_and_labels():
    n = 2
    images = np.random.default_rng(1).integers(0, 256, size=(n, 16, 20, 3), dtype=np.uint8)
    maps = _maps(n)
    labels = ["espresso p=0.95", "tabby p=0.41"]
    fig = viz.grid(images, maps, labels, kinds={"Integrated Gradients": "signed", "Grad-CAM": "overlay"})
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == n * (1 + len(maps))
    ncols = 1 + len(maps)
    # Row-major order: the first axes of each row is the photo with its label.
    assert [axes[r * ncols].get_title() for r in range(n)] == labels
    assert [a.get_title() for a in axes[1:ncols]] == list(maps)
    # Other rows carry no column titles.
    assert all(a.get_title() == "" for a in axes[ncols + 1 :])
    # Grid geometry: N rows x (1 + M) columns.
    spec = axes[0].get_subplotspec().get_gridspec()
    assert (spec.nrows, spec.ncols) == (n, ncols)


def test_grid_colour_limits_follow_the_kind():
    images = np.zeros((1, 16, 20, 3), np.uint8)
    fig = viz.grid(images, _maps(1), None, kinds={"Integrated Gradients": "signed", "Grad-CAM": "overlay"})
    photo, absolute, signed, over = fig.axes
    im_abs = absolute.get_images()[0]
    assert im_abs.get_clim() == (0.0, 1.0)
    assert im_abs.get_cmap().name == "gray"
    im_signed = signed.get_images()[0]
    assert im_signed.get_clim() == (-1.0, 1.0)  # symmetric: 0 at the centre of the diverging map
    assert im_signed.get_array().min() >= -1 and im_signed.get_array().max() <= 1
    # Overlay: the photo, then the heat map on top, stretched over the photo's extent.
    photo_im, heat = over.get_images()
    assert heat.get_extent() == photo_im.get_extent() == [0, 20, 16, 0]
    assert heat.get_alpha() == 0.5


def test_grid_draws_to_png(tmp_path):
    fig = viz.grid(np.zeros((3, 8, 8, 3)), {"A": np.ones((3, 8, 8))}, ["a", "b", "c"], image_title="image")
    out = tmp_path / "g.png"
    fig.savefig(out, dpi=50)
    img = matplotlib.image.imread(out)
    w_in, h_in = fig.get_size_inches()
    assert img.shape[:2] == (round(h_in * 50), round(w_in * 50))
    assert fig.axes[0].get_title() == "image\na"


def test_show_signed_and_abs_values():
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2)
    m = np.array([[-4.0, 0.0], [2.0, 1.0]])
    im = viz.show_signed(a1, m, percentile=100)
    np.testing.assert_allclose(im.get_array(), [[-1.0, 0.0], [0.5, 0.25]])
    im = viz.show_abs(a2, m, percentile=100)
    np.testing.assert_allclose(im.get_array(), [[1.0, 0.0], [0.5, 0.25]])
    # Channels: abs maps sum |m_c| by default, signed maps sum m_c.
    m3 = np.stack([m, -m, m], axis=-1)
    np.testing.assert_allclose(viz.show_abs(a2, m3, percentile=100).get_array(), [[1.0, 0.0], [0.5, 0.25]])
    np.testing.assert_allclose(
        viz.show_signed(a1, m3, percentile=100).get_array(), [[-1.0, 0.0], [0.5, 0.25]]
    )
    plt.close(fig)


def test_overlay_minmax_and_alpha():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    im = viz.overlay(ax, np.full((8, 8, 3), 255, np.uint8), np.array([[1.0, 3.0], [5.0, 1.0]]), alpha=0.3)
    np.testing.assert_allclose(im.get_array(), [[0.0, 0.5], [1.0, 0.0]])
    assert im.get_alpha() == 0.3
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(ax, np.zeros((8, 8, 3)), np.zeros((2, 2)), alpha=2)
    plt.close(fig)


def test_image_to_float_converts_gray_and_rgba():
    assert viz.image_to_float(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    rgba = np.full((4, 5, 4), 255, np.uint8)
    out = viz.image_to_float(rgba)
    assert out.shape == (4, 5, 3) and out.max() == 1.0


def test_grid_errors_name_the_argument():
    images = np.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="row_labels"):
        viz.grid(images, {"A": np.zeros((2, 8, 8))}, ["only one"])
    with pytest.raises(ValueError, match=r"maps\['A'\]"):
        viz.grid(images, {"A": np.zeros((3, 8, 8))})
    with pytest.raises(ValueError, match="kinds"):
        viz.grid(images, {"A": np.zeros((2, 8, 8))}, kinds={"A": "fancy"})
    with pytest.raises(ValueError, match="kinds"):
        viz.grid(images, {"A": np.zeros((2, 8, 8))}, kinds={"B": "abs"})

"""Plotting without a display: layout, titles, labels and the colour limits used."""

import subprocess
import sys
import types

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxsal import models, viz


def test_importing_jaxsal_and_viz_does_not_import_matplotlib():
    code = "import sys, jaxsal, jaxsal.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_import_jaxsal_loads_no_optional_or_heavy_dependency():
    """``import jaxsal`` stays light: plotting, training and data libraries load on first use."""
    heavy = ("optax", "matplotlib", "sklearn", "skimage", "torch", "PIL", "tqdm", "flax.nnx")
    code = (
        "import sys, jaxsal; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    # The subpackages are still reachable as attributes.
    code = "import jaxsal; print(jaxsal.metrics.spearman.__name__, jaxsal.flax.probe.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["spearman", "probe"], out.stderr


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
    a1, a2 = Figure().subplots(1, 2)
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


def test_overlay_minmax_and_alpha():
    ax = Figure().subplots()
    im = viz.overlay(ax, np.full((8, 8, 3), 255, np.uint8), np.array([[1.0, 3.0], [5.0, 1.0]]), alpha=0.3)
    np.testing.assert_allclose(im.get_array(), [[0.0, 0.5], [1.0, 0.0]])
    assert im.get_alpha() == 0.3
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(ax, np.zeros((8, 8, 3)), np.zeros((2, 2)), alpha=2)


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


def test_image_to_float_is_the_models_converter():
    img = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(viz.image_to_float(img), img.astype(np.float32) / 255)
    np.testing.assert_array_equal(viz.image_to_float(img), models.to_rgb(img, np.float32))
    assert models.to_rgb(viz.image_to_float(img)).tolist() == img.tolist()  # round trip
    assert viz.image_to_float(np.full((2, 2, 3), 0.25)).dtype == np.float32


def test_deprocess_inverts_preprocess_scaling():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = ((u8.astype(np.float32) - 127.0) / 128.0)[None, ..., None].repeat(3, -1)  # preprocess's scaling
    back = models.deprocess(x)
    assert back.shape == x.shape and back.dtype == np.float32
    np.testing.assert_allclose(back[0, ..., 0] * 255, u8, atol=1e-4)
    assert models.deprocess(np.array([-5.0, 5.0])).tolist() == [0.0, 1.0]  # clipped


def _randomization_results(methods=("grad", "cam"), layers=("head", "conv1", "conv0"), n=2):
    rng = np.random.default_rng(0)
    one = types.SimpleNamespace(
        mode="cascading",
        layers=list(layers),
        original=rng.normal(size=(n, 8, 8)),
        maps=[rng.normal(size=(n, 8, 8)) for _ in layers],
        spearman_abs=rng.uniform(size=(len(layers), n)),
    )
    return {m: one for m in methods}


def test_randomization_grid_layout():
    results = _randomization_results()
    fig = viz.randomization_grid(results, np.zeros((2, 8, 8, 3), np.uint8), image_index=1)
    assert isinstance(fig, Figure)
    ncol = 2 + 3
    assert len(fig.axes) == len(results) * ncol
    assert [a.get_title() for a in fig.axes[1:ncol]] == ["original", "head", "conv1", "conv0"]
    assert [fig.axes[r * ncol].get_ylabel() for r in range(len(results))] == list(results)
    assert "cascading" in fig.get_suptitle()


def test_randomization_curves_one_line_per_method(tmp_path):
    results = _randomization_results(methods=("a", "b", "c"))
    fig = viz.randomization_curves(results)
    (ax,) = fig.axes
    lines = [ln for ln in ax.get_lines() if ln.get_label() in results]
    assert [ln.get_label() for ln in lines] == ["a", "b", "c"]
    np.testing.assert_allclose(lines[0].get_ydata(), results["a"].spearman_abs.mean(1))
    fig.savefig(tmp_path / "c.png", dpi=30)
    assert (tmp_path / "c.png").exists()

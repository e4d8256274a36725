"""Images read right (CMYK, 16-bit, palettes), against Pillow's own conversions, and NaN
maps drawn visibly, never as a blank panel (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxsal import viz
from jaxsal.cli import demo
from jaxsal.models import to_rgb
from jaxsal.models._data import read_image


def _pil(path, mode: str) -> np.ndarray:
    """Pillow's own conversion of the file at ``path`` to ``mode``."""
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def _mode(path) -> str:
    with Image.open(path) as im:
        return im.mode


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    a[:8, :8] = (255, 0, 0)  # a pure red corner
    return a


def test_cmyk_jpeg_matches_pillows_conversion(tmp_path, rgb):
    path = tmp_path / "print.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert _mode(path) == "CMYK"
    got = read_image(path)
    want = _pil(path, "RGB")
    np.testing.assert_array_equal(got, want)
    r, g, b = got[:6, :6].reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60, "red must stay red (C, M, Y are not R, G, B)"
    np.testing.assert_array_equal(demo.read_image(path), want)  # the CLI reads the same


def test_dark_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    a = (np.arange(40 * 50).reshape(40, 50) % 250).astype(np.uint16)  # max 249 of 65535: very dark
    path = tmp_path / "dark16.png"
    Image.fromarray(a).save(path)
    assert _mode(path).startswith("I")
    got = read_image(path)
    # Pillow's own 16 -> 8 bit scaling: v / 257 (65535 -> 255), as an "I" point transform.
    with Image.open(path) as im:
        want = np.asarray(im.convert("I").point(lambda v: v * (1 / 257)).convert("L"))
    assert got.shape == (40, 50, 3)
    assert np.abs(got[..., 0].astype(int) - want.astype(int)).max() <= 1
    np.testing.assert_array_equal(got[..., 0], np.round(a / 257).astype(np.uint8))
    assert got.max() <= 1, "a dark 16-bit image must stay dark, not be read as 8-bit"
    # the array converter agrees: uint16 spans 0..65535 whatever its values
    np.testing.assert_array_equal(to_rgb(a), got)
    bright = np.full((2, 2), 65535, np.uint16)
    assert to_rgb(bright).min() == 255


@pytest.mark.parametrize("mode", ["P", "LA", "1", "YCbCr", "L", "RGBA"])
def test_other_modes_match_pillow(tmp_path, rgb, mode):
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "YCbCr" else "x.png")
    im.save(path)  # (a YCbCr image is written as JPEG)
    np.testing.assert_array_equal(read_image(path), _pil(path, "RGB"))


def test_palette_with_transparency(tmp_path, rgb):
    im = Image.fromarray(rgb).convert("P")
    im.info["transparency"] = 0
    im.save(tmp_path / "t.png", transparency=0)
    got = read_image(tmp_path / "t.png")
    want = _pil(tmp_path / "t.png", "RGBA")[..., :3]
    np.testing.assert_array_equal(got, want)


def test_unreadable_and_missing(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match="cannot read image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(OSError, match="floating-point"):
        read_image(tmp_path / "f.tiff")


# ----------------------------------------------------------------------------- NaN maps


def _panel_pixels(fig, ax) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = np.asarray(canvas.buffer_rgba())[..., :3]
    bb = ax.get_window_extent()
    h = buf.shape[0]
    y0, y1 = int(h - bb.y1) + 2, int(h - bb.y0) - 2
    return buf[y0:y1, int(bb.x0) + 2 : int(bb.x1) - 2]


@pytest.mark.parametrize("kind", ["abs", "signed", "overlay"])
def test_all_nan_map_is_drawn_as_nan_not_blank(kind):
    photos = np.full((1, 16, 16, 3), 0.5, np.float32)
    maps = {"M": np.full((1, 16, 16), np.nan, np.float32)}
    fig = viz.grid(photos, maps, kinds={"M": kind})
    ax = fig.axes[1]
    assert any(t.get_text() == "NaN map" for t in ax.texts)
    assert any(p.get_hatch() for p in ax.patches), "an all-NaN panel is hatched"
    px = _panel_pixels(fig, ax)
    assert px.reshape(-1, 3).std(0).max() > 10, "the panel is blank"
    # the hatching is drawn in the NaN colour
    red = np.array([0xD6, 0x27, 0x28])
    assert (np.abs(px.astype(int) - red).sum(-1) < 60).any()


def test_partly_nan_map_is_labelled_and_coloured():
    m = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)
    m[:4] = np.nan
    from matplotlib.figure import Figure

    for show in (viz.show_abs, viz.show_signed):
        fig = Figure()
        ax = fig.subplots()
        im = show(ax, m)
        assert any("25%" in t.get_text() for t in ax.texts)
        assert im.cmap.get_bad()[3] == 1.0, "NaN pixels must not be transparent"
        v = np.asarray(im.get_array())
        assert np.isfinite(v[4:]).all() and v[4:].max() > 0, "the finite part is still scaled and drawn"
    fig = Figure()
    ax = fig.subplots()
    viz.show_abs(ax, np.ones((4, 4)))
    assert not ax.texts, "finite maps get no label"

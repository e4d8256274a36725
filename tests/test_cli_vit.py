"""``jaxsal demo --model vit_tiny`` and ``jaxsal sanity --model vit_tiny``, in-process.

Tiny settings (two images, two or three methods, small n / steps): each run costs the
compilation of its methods on the 73k-parameter ViT, a few seconds on 2 cores. Nothing
here depends on the committed weights' accuracy or predictions: the expected values
are computed from the model itself.
"""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from jaxsal import cli, datasets, models
from jaxsal._src import registry
from jaxsal.cli import _models, demo, sanity
from jaxsal.metrics import layer_names

DPI = 40  # one 2-inch cell = 80 x 80 pixels
SEED = 3  # one seed throughout: each pool of shapes costs a compilation
SMALL = ["--smoothgrad-n", "2", "--ig-steps", "2", "--dpi", str(DPI), "--no-progress"]
RELU_RULES = ("deconvnet", "guided_backprop", "guided_grad_cam")


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _must_not_run(*a, **k):
    raise AssertionError("the model was loaded although the options were wrong")


@functools.cache
def _pool(seed: int):
    """The shapes that ``--images`` indexes, drawn independently of the CLI code."""
    key = jax.random.fold_in(jax.random.key(seed), _models.SHAPES_FOLD)
    return datasets.synthetic_shapes(key, _models.SHAPES_POOL, size=32)


# ----------------------------------------------------------------------------- defaults


def test_vit_defaults_suit_a_gelu_transformer():
    """Every default is registered; no ReLU-rule method; the attention family and AttnLRP are in."""
    ms = registry.methods()
    for defaults in (demo.VIT_METHODS, sanity.VIT_SANITY_METHODS):
        assert set(defaults) <= set(ms)
        assert not set(defaults) & set(RELU_RULES)
        assert set(registry.methods(family="attention")) <= set(defaults)
        assert {"attn_lrp", "vanilla_grad", "smoothgrad", "integrated_gradients", "grad_cam"} <= set(defaults)


def test_default_model_is_still_efficientnet(monkeypatch):
    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).model == "efficientnet_lite0"
    assert parser.parse_args(["sanity"]).model == "efficientnet_lite0"
    assert demo.DEFAULT_METHODS[0] == "vanilla_grad" and "guided_grad_cam" in demo.DEFAULT_METHODS
    loaded = []

    def record(model="efficientnet_lite0"):
        loaded.append(model)
        raise KeyboardInterrupt  # stop before any compilation

    monkeypatch.setattr(demo, "load_model", record)
    with pytest.raises(KeyboardInterrupt):
        demo.run(samples=["coffee"], methods=["vanilla_grad"], out=None, progress=False)
    assert loaded == ["efficientnet_lite0"]


def test_default_images_are_one_shape_of_each_class():
    inputs = _models.get("vit_tiny").demo_inputs(None, None, SEED)
    labels = np.asarray(_pool(SEED).labels)
    assert inputs.truth == list(range(len(datasets.SHAPES)))
    idx = [int(n.removeprefix("shapes[").removesuffix("]")) for n in inputs.names]
    assert [int(labels[i]) for i in idx] == inputs.truth
    assert all(not (labels[:i] == labels[i]).any() for i in idx), "not the first of its class"
    np.testing.assert_array_equal(np.asarray(inputs.x), np.asarray(_pool(SEED).images)[idx])


def test_image_files_are_resized_to_32_px(tmp_path):
    import imageio.v3 as iio

    img = np.asarray(_pool(SEED).images[3])
    big = np.repeat(np.repeat(np.round(img * 255).astype(np.uint8), 2, axis=0), 2, axis=1)  # 64 x 64
    wide = np.pad(big, ((0, 0), (16, 16), (0, 0)))  # 64 x 96: the centre crop is the shape
    iio.imwrite(tmp_path / "big.png", big)
    iio.imwrite(tmp_path / "wide.png", wide)
    inputs = _models.get("vit_tiny").demo_inputs(
        ["3", str(tmp_path / "big.png"), str(tmp_path / "wide.png")], None, SEED
    )
    assert inputs.names == ["shapes[3]", "big", "wide"]
    assert inputs.truth == [int(_pool(SEED).labels[3]), None, None]
    x = np.asarray(inputs.x)
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32
    assert np.abs(x[1] - img).mean() < 0.03
    assert np.abs(x[2] - img).mean() < 0.03


# ----------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_vit_demo_draws_the_grid(tmp_path, capsys, captured_runs):
    """Two shapes, a gradient, Grad-CAM through the tokens and an attention method."""
    out = tmp_path / "vit.png"
    argv = ["demo", "--model", "vit_tiny", "--images", "0", "1", "--seed", str(SEED)]
    methods = ["vanilla_grad", "grad_cam", "attention_rollout"]
    assert cli.main([*argv, "--methods", ",".join(methods), "--out", str(out), *SMALL]) == 0

    (res,) = captured_runs
    rows, cols = 2, 1 + len(methods)
    titles = [registry.get_method(m).title for m in methods]
    assert (res.rows, res.cols) == (rows, cols) and res.model == "vit_tiny"
    assert res.column_titles == titles
    assert matplotlib.image.imread(out).shape[:2] == (rows * 2 * DPI, cols * 2 * DPI)
    assert len(res.figure.axes) == rows * cols
    assert [a.get_title() for a in res.figure.axes[1:cols]] == titles
    assert [res.figure.axes[r * cols].get_title() for r in range(rows)] == res.row_labels
    assert res.maps["Vanilla Gradient"].shape == (rows, 32, 32, 3)
    assert res.maps["Grad-CAM"].shape == (rows, 8, 8)
    assert res.maps["Attention rollout"].shape == (rows, 8, 8)
    for m in res.maps.values():
        assert np.isfinite(m).all()
    # Attention rollout: a distribution over the 64 patches, not all equal.
    roll = res.maps["Attention rollout"]
    assert (roll >= 0).all() and (roll.reshape(rows, -1).std(axis=1) > 0).all()

    # Predictions: the model's own top-1 on the pool's images; the truth from the pool's labels.
    pool = _pool(SEED)
    module, variables = models.vit_tiny()
    probs = jax.nn.softmax(module.apply(variables, jnp.asarray(pool.images[:2])), axis=-1)
    assert [p.image for p in res.predictions] == ["shapes[0]", "shapes[1]"]
    for i, p in enumerate(res.predictions):
        assert p.class_index == int(np.argmax(probs[i]))
        assert p.label == datasets.SHAPES[p.class_index]
        assert p.truth == datasets.SHAPES[int(pool.labels[i])]
        assert p.correct == (p.class_index == int(pool.labels[i]))
        assert abs(p.probability - float(probs[i, p.class_index])) < 1e-5
        assert res.row_labels[i].startswith(f"{p.label} p=") and f"true {p.truth}" in res.row_labels[i]

    stdout = capsys.readouterr().out
    assert "true class" in stdout and "correct" in stdout
    assert f"{sum(p.correct for p in res.predictions)} of 2 correct" in stdout
    for t in titles:
        assert t in stdout


@pytest.mark.slow
def test_relu_rule_method_on_the_vit_runs_with_a_one_line_warning(tmp_path, capsys, captured_runs):
    out = tmp_path / "deconv.png"
    argv = ["demo", "--model", "vit_tiny", "--images", "2", "--methods", "deconvnet", "--seed", str(SEED)]
    assert cli.main([*argv, "--out", str(out), *SMALL]) == 0
    err = capsys.readouterr().err
    line = _one_line_error(err)
    assert line.startswith("jaxsal demo: warning: deconvnet:") and "no ReLU" in line
    (res,) = captured_runs
    assert res.column_titles == ["DeconvNet"] and out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--samples", "coffee"], ["--samples", "efficientnet_lite0"]),
        (["--images", "chelsea"], ["chelsea", "bundled", "efficientnet_lite0"]),
        (["--images", "0", str(_models.SHAPES_POOL)], [str(_models.SHAPES_POOL), "0 to"]),
        (["--images", "-1"], ["-1", "index"]),
    ],
)
def test_bad_combinations_are_usage_errors(monkeypatch, capsys, tmp_path, argv, words):
    monkeypatch.setattr(demo, "load_model", _must_not_run)
    out = tmp_path / "x.png"
    assert cli.main(["demo", "--model", "vit_tiny", *argv, "--out", str(out), "--no-progress"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("jaxsal demo: error:")
    for w in words:
        assert w in line
    assert not out.exists()


def test_sanity_bad_combination_and_unknown_model(monkeypatch, capsys):
    monkeypatch.setattr(_models, "load", _must_not_run)
    assert cli.main(["sanity", "--model", "vit_tiny", "--images", "coffee", "--out", ""]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("jaxsal sanity: error:") and "coffee" in line and "vit_tiny" in line
    for cmd in ("demo", "sanity"):
        assert cli.main([cmd, "--model", "resnet50"]) == 2
        assert "--model" in _one_line_error(capsys.readouterr().err)


def test_help_names_the_models_and_the_vit_defaults(capsys):
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "vit_tiny" in out and "efficientnet_lite0" in out
    assert "default with --model vit_tiny: " + ", ".join(demo.VIT_METHODS) in " ".join(out.split())
    assert cli.main(["sanity", "--help"]) == 0
    assert "vit_tiny" in capsys.readouterr().out


# ----------------------------------------------------------------------------- sanity


@pytest.mark.slow
def test_vit_sanity_randomises_the_layers_top_down(tmp_path, capsys, monkeypatch):
    results = []
    run = sanity.run_sanity
    monkeypatch.setattr(sanity, "run_sanity", lambda **k: results.append(run(**k)) or results[-1])
    out = tmp_path / "sanity.png"
    argv = ["sanity", "--model", "vit_tiny", "--methods", "vanilla_grad", "raw_attention"]
    argv += ["--images", "0", "1", "--seed", str(SEED), "--no-hog", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0

    (res,) = results
    assert list(res) == ["vanilla_grad", "raw_attention"]
    module, variables = models.vit_tiny()
    order = layer_names(variables, module=module, x=jnp.zeros((1, 32, 32, 3)), depth=1)
    assert order[0] == "stem" and order[-1] == "head"
    for r in res.values():
        assert list(r.layers) == order[::-1]  # cascading: the head first
        assert np.asarray(r.spearman_abs).shape == (len(order), 2)
    # Attention does not depend on the head nor the final LayerNorm: raw attention is
    # unchanged by the first two steps, and changes once the blocks are randomised.
    att = np.asarray(res["raw_attention"].spearman_abs)
    np.testing.assert_allclose(att[:2], 1.0, atol=1e-6)
    assert att[-1].mean() < 0.9
    assert np.asarray(res["vanilla_grad"].spearman_abs)[-1].mean() < 0.9
    assert out.exists() and (tmp_path / "sanity-curves.png").exists()
    stdout = capsys.readouterr().out
    assert "raw_attention" in stdout and "patch_embed"[-10:] in stdout


def test_run_sanity_api_takes_the_model():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        sanity.run_sanity(model="vgg", out=None, stream=io.StringIO())

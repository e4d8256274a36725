"""``jaxsal sanity`` / ``jaxsal evaluate``: argument handling, errors, and a tiny evaluate run."""

import argparse
import io
import warnings

import jax
import numpy as np
import pytest

from jaxsal.cli import _common, evaluate, sanity
from jaxsal.metrics import model_parameter_randomization


def _parser():
    parser = argparse.ArgumentParser(prog="jaxsal")
    subparsers = parser.add_subparsers(dest="command")
    sanity.add_subcommands(subparsers)
    evaluate.add_subcommands(subparsers)
    return parser


def test_subcommands_parse():
    args = _parser().parse_args(
        ["sanity", "--methods", "vanilla_grad,guided_backprop", "--depth", "2", "--no-hog"]
    )
    assert args.func is sanity._sanity and args.depth == 2 and args.no_hog
    assert _common.split_list(args.methods) == ["vanilla_grad", "guided_backprop"]
    args = _parser().parse_args(["evaluate", "--steps", "5", "--test-size", "4", "--no-road"])
    assert args.func is evaluate._evaluate and args.steps == 5 and args.no_road
    with pytest.raises(SystemExit):
        _parser().parse_args(["evaluate", "--steps", "0"])


def test_unknown_method_is_a_value_error():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        evaluate.run_evaluate(methods=["nope"], train_size=8, test_size=2, steps=1, progress=False)


def test_cli_prints_one_line_error(capsys):
    from jaxsal import cli

    status = cli.main(["evaluate", "--methods", "nope", "--train-size", "8", "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and "unknown method 'nope'" in err and "Traceback" not in err


@pytest.mark.slow
def test_evaluate_tiny_run():
    out = io.StringIO()
    rows = evaluate.run_evaluate(
        methods=["grad_cam"],
        train_size=16,
        test_size=4,
        size=16,
        steps=2,
        road=False,
        sensitivity_samples=2,
        progress=False,
        stream=out,
    )
    assert set(rows) == {"grad_cam"}
    for row in rows.values():
        assert 0 <= row["pointing"] <= 1 and 0 <= row["mass"] <= 1 and np.isfinite(row["del AUC"])
    assert "pointing" in out.getvalue()


def test_sanity_figure_writes(tmp_path):
    """The figure writer on a tiny randomisation result (no pretrained model)."""
    from jaxsal.models import ShapesCNN

    model = ShapesCNN(num_classes=3, features=(4,))
    x = jax.random.uniform(jax.random.key(0), (2, 12, 12, 3))
    v = model.init(jax.random.key(1), x[:1])

    def make(variables):
        def attr(z, target=None, *, key=None):
            return jax.grad(lambda q: model.apply(variables, q)[:, 0].sum())(z)

        return attr

    r = model_parameter_randomization(make, v, x, 0, key=jax.random.key(0), module=model, hog=False)
    out = tmp_path / "s.png"
    sanity.write_sanity_figure({"grad": r, "grad2": r}, np.asarray(x), str(out))
    assert out.exists() and (tmp_path / "s-curves.png").exists()
    buf = io.StringIO()
    sanity._print_sanity_table({"grad": r}, buf)
    assert "head" in buf.getvalue() and "conv0" in buf.getvalue()


MOVED = [
    ("jaxsal.metrics", "synthetic_shapes", "jaxsal.datasets", "synthetic_shapes"),
    ("jaxsal.metrics", "ShapesDataset", "jaxsal.datasets", "ShapesDataset"),
    ("jaxsal.metrics", "SHAPES", "jaxsal.datasets", "SHAPES"),
    ("jaxsal.metrics", "load_digits", "jaxsal.datasets", "load_digits"),
    ("jaxsal.metrics", "SmallCNN", "jaxsal.models", "ShapesCNN"),
    ("jaxsal.metrics", "Trained", "jaxsal.models", "Trained"),
    ("jaxsal.metrics", "train_classifier", "jaxsal.models", "train_classifier"),
    ("jaxsal.metrics.synthetic", "SmallCNN", "jaxsal.models", "ShapesCNN"),
    ("jaxsal.metrics.synthetic", "synthetic_shapes", "jaxsal.datasets", "synthetic_shapes"),
    ("jaxsal.metrics.synthetic", "accuracy", "jaxsal.models", "accuracy"),
    ("jaxsal.metrics.data_randomization", "load_digits", "jaxsal.datasets", "load_digits"),
]


@pytest.mark.parametrize(("old", "name", "new", "new_name"), MOVED, ids=[f"{o}.{n}" for o, n, *_ in MOVED])
def test_moved_names_still_work_and_warn_with_their_new_home(old, name, new, new_name):
    import importlib

    old_mod, new_mod = importlib.import_module(old), importlib.import_module(new)
    with pytest.warns(DeprecationWarning, match=f"{new}.{new_name}"):
        value = getattr(old_mod, name)
    assert value is getattr(new_mod, new_name)
    assert name not in old_mod.__dict__.get("__all__", ())
    with pytest.raises(AttributeError):
        old_mod.no_such_name  # noqa: B018


def test_new_homes_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from jaxsal.datasets import SHAPES, load_digits, synthetic_shapes  # noqa: F401
        from jaxsal.models import ShapesCNN, Trained, accuracy, train_classifier  # noqa: F401

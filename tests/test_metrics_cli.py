"""``jaxsal sanity`` / ``jaxsal evaluate``: argument handling, errors, and a tiny evaluate run."""

import argparse
import io

import jax
import numpy as np
import pytest

from jaxsal.metrics import _cli, model_parameter_randomization


def _parser():
    parser = argparse.ArgumentParser(prog="jaxsal")
    _cli.add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def test_subcommands_parse():
    args = _parser().parse_args(
        ["sanity", "--methods", "vanilla_grad,guided_backprop", "--depth", "2", "--no-hog"]
    )
    assert args.func is _cli._sanity and args.depth == 2 and args.no_hog
    assert _cli._split(args.methods) == ["vanilla_grad", "guided_backprop"]
    args = _parser().parse_args(["evaluate", "--steps", "5", "--test-size", "4", "--no-road"])
    assert args.func is _cli._evaluate and args.steps == 5 and args.no_road
    with pytest.raises(SystemExit):
        _parser().parse_args(["evaluate", "--steps", "0"])


def test_unknown_method_is_a_value_error():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        _cli.run_evaluate(methods=["nope"], train_size=8, test_size=2, steps=1, progress=False)


def test_cli_prints_one_line_error(capsys):
    from jaxsal import cli

    status = cli.main(["evaluate", "--methods", "nope", "--train-size", "8", "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and "unknown method 'nope'" in err and "Traceback" not in err


@pytest.mark.slow
def test_evaluate_tiny_run():
    out = io.StringIO()
    rows = _cli.run_evaluate(
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
    from jaxsal.metrics import SmallCNN

    model = SmallCNN(num_classes=3, features=(4,))
    x = jax.random.uniform(jax.random.key(0), (2, 12, 12, 3))
    v = model.init(jax.random.key(1), x[:1])

    def make(variables):
        def attr(z, target=None, *, key=None):
            return jax.grad(lambda q: model.apply(variables, q)[:, 0].sum())(z)

        return attr

    r = model_parameter_randomization(make, v, x, 0, key=jax.random.key(0), module=model, hog=False)
    out = tmp_path / "s.png"
    _cli.write_sanity_figure({"grad": r, "grad2": r}, np.asarray(x), str(out))
    assert out.exists() and (tmp_path / "s-curves.png").exists()
    buf = io.StringIO()
    _cli._print_sanity_table({"grad": r}, buf)
    assert "head" in buf.getvalue() and "conv0" in buf.getvalue()

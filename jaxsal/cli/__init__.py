"""The ``jaxsal`` command line: a user of the library, outside its core.

One module per command, each adding its subcommand with ``add_subcommands(subparsers)``:

* ``jaxsal demo`` (:mod:`jaxsal.cli.demo`): every registered method on a pretrained
  ImageNet classifier, written as the grid figure;
* ``jaxsal sanity`` (:mod:`jaxsal.cli.sanity`): the model-parameter randomisation
  sanity check on the same classifier;
* ``jaxsal evaluate`` (:mod:`jaxsal.cli.evaluate`): localisation, faithfulness and
  robustness metrics per method on the synthetic shapes set;
* ``jaxsal benchmark`` (:mod:`jaxsal.cli.benchmark`): every method × every metric on a
  generated ground-truth set, with random, Sobel and input baselines, bootstrap
  confidence intervals and the reliability of the metrics themselves;
* ``jaxsal explain`` / ``jaxsal show`` (:mod:`jaxsal.cli.explain`): a folder of images
  explained into a resumable on-disk store, and one stored example drawn.

Helpers they share live in :mod:`jaxsal.cli._common`. A module of :data:`COMMANDS`
that fails to import (e.g. an optional dependency is missing) costs only its own
commands, with a one-line warning. Each subparser must call
``set_defaults(func=handler)`` with ``handler(args) -> int | None``.

Errors a user can cause (a missing or unreadable image, an unknown method, a bad
hyper-parameter, an unwritable ``--out``, a full disk) are reported as one line on
stderr with exit status 1 (usage errors: status 2), never as a traceback (set
``JAXSAL_TRACEBACK=1`` to see one). Figures are written to a temporary name and
renamed, so an interrupted or failed write leaves no partial file. The console
script (``jaxsal_cli``) handles Ctrl-C at any moment, start-up included: one line,
``jaxsal: interrupted``, exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from jaxsal.cli._common import one_line

__all__ = ["COMMANDS", "build_parser", "main"]

PROG = "jaxsal"
#: Modules that add subcommands with ``add_subcommands(subparsers)``, in ``--help`` order.
COMMANDS: tuple[str, ...] = (
    "jaxsal.cli.demo",
    "jaxsal.cli.sanity",
    "jaxsal.cli.evaluate",
    "jaxsal.cli.benchmark",
    "jaxsal.cli.explain",
)


def _add_commands(subparsers) -> None:
    """Subcommands of every module in :data:`COMMANDS`; a module that is absent is skipped."""
    for name in COMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):  # the module (or its package) is absent
                continue
            _warn_import(name, e)
            continue
        except Exception as e:  # a broken command module must not take the others down with it
            _warn_import(name, e)
            continue
        add = getattr(mod, "add_subcommands", None)
        if callable(add):
            add(subparsers)


def _warn_import(name: str, e: BaseException) -> None:
    print(
        f"{PROG}: warning: {name} failed to import ({type(e).__name__}: {one_line(e)}); its commands are unavailable.",
        file=sys.stderr,
    )


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``prog: error: ...``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxsal`` parser with the subcommands of every module in :data:`COMMANDS`."""
    parser = _Parser(
        prog=PROG,
        description="jaxsal: pixel attribution (saliency maps) for JAX, every method a pure function transform.",
    )
    from jaxsal import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxsal`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = func(args)
    except (ValueError, TypeError, OSError, OverflowError) as e:
        if os.environ.get("JAXSAL_TRACEBACK"):
            raise
        print(f"{PROG} {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unforeseen failure: still one line
        if os.environ.get("JAXSAL_TRACEBACK"):
            raise
        print(
            f"{PROG} {args.command}: internal error: {type(e).__name__}: {one_line(e)} "
            "(set JAXSAL_TRACEBACK=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

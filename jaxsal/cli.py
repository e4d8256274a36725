"""The ``jaxsal`` command line.

``jaxsal demo`` runs every registered method on a pretrained ImageNet classifier and
writes the grid figure (see :mod:`jaxsal._src.demo`). Other subcommands come from
plug-ins: a module ``jaxsal.metrics._cli`` with ``add_subcommands(subparsers)`` adds
its own (``jaxsal sanity``, ``jaxsal evaluate``); each subparser it adds must call
``set_defaults(func=handler)`` with ``handler(args) -> int | None``.

Errors a user can cause (a missing or unreadable image, an unknown method, a bad
hyper-parameter) are reported as one line on stderr with exit status 1, never as
a traceback (set ``JAXSAL_TRACEBACK=1`` to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

PROG = "jaxsal"
# Modules that may add subcommands with ``add_subcommands(subparsers)``.
PLUGINS: tuple[str, ...] = ("jaxsal.metrics._cli",)


def _method_list() -> str:
    from jaxsal._src import demo, registry

    demo._import_methods()
    ms = registry.methods()
    if not ms:
        return "  (no methods registered)"
    width = max(len(n) for n in ms)
    lines = []
    for name, m in ms.items():
        mark = "*" if name in demo.DEFAULT_METHODS else " "
        lines.append(f" {mark}{name:<{width}}  {m.title} ({m.paper})")
    return "\n".join(lines)


def _split_list(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _add_demo(subparsers) -> None:
    from jaxsal._src import demo

    p = subparsers.add_parser(
        "demo",
        help="saliency maps of EfficientNet-Lite0 on bundled photos, saved as a grid PNG",
        description=(
            "Classify photos with a pretrained EfficientNet-Lite0 (offline) and draw every "
            "method's map of the top-1 class: one row per photo, one column per method."
        ),
        epilog="registered methods (* = run by default):\n" + _method_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="PATH",
        help="image files to explain (JPEG, PNG, ...); default: the bundled photos "
        + ", ".join(demo.DEFAULT_IMAGES),
    )
    p.add_argument(
        "--samples",
        metavar="NAME,NAME",
        help="bundled photos to use, comma-separated (default: all five, unless --images is given)",
    )
    p.add_argument(
        "--methods",
        action="append",
        metavar="M1,M2",
        help="registry names, comma-separated or repeated, or 'all'; default: the starred ones",
    )
    p.add_argument(
        "--out", default="jaxsal-demo.png", metavar="PNG", help="output figure (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the SmoothGrad key jax.random.key(SEED) (default: 0)"
    )
    p.add_argument(
        "--smoothgrad-n",
        type=_positive_int,
        default=demo.DEFAULT_SMOOTHGRAD_N,
        metavar="N",
        help="SmoothGrad noisy samples (default: %(default)s, the paper's)",
    )
    p.add_argument(
        "--noise-level",
        type=float,
        default=demo.DEFAULT_NOISE_LEVEL,
        help="SmoothGrad sigma / (x_max - x_min) (default: %(default)s, the paper's 10-20%%)",
    )
    p.add_argument(
        "--ig-steps",
        type=_positive_int,
        default=demo.DEFAULT_IG_STEPS,
        metavar="N",
        help="Integrated Gradients steps (default: %(default)s)",
    )
    p.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="clip displayed maps at this percentile of |map| (default: 99)",
    )
    p.add_argument("--dpi", type=_positive_int, default=100, help="resolution of the PNG (default: 100)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from jaxsal._src import demo

    methods = _split_list(args.methods)
    if not 0 <= args.percentile <= 100:
        raise ValueError(f"--percentile must be in [0, 100]; got {args.percentile}.")
    demo.run(
        images=args.images,
        samples=_split_list([args.samples]) if args.samples else None,
        methods=methods,
        out=args.out,
        seed=args.seed,
        smoothgrad_n=args.smoothgrad_n,
        noise_level=args.noise_level,
        ig_steps=args.ig_steps,
        percentile=args.percentile,
        dpi=args.dpi,
        progress=not args.no_progress,
    )
    return 0


def _add_plugins(subparsers) -> None:
    """Subcommands of optional modules; a missing plug-in is silently skipped."""
    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):  # the plug-in (or its package) is absent
                continue
            _warn_plugin(name, e)
            continue
        except Exception as e:  # a broken plug-in must not take the demo down with it
            _warn_plugin(name, e)
            continue
        add = getattr(mod, "add_subcommands", None)
        if callable(add):
            add(subparsers)


def _warn_plugin(name: str, e: BaseException) -> None:
    print(
        f"{PROG}: warning: {name} failed to import ({type(e).__name__}: {_one_line(e)}); its commands are unavailable.",
        file=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="jaxsal: pixel attribution (saliency maps) for JAX, every method a pure function transform.",
    )
    from jaxsal import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(subparsers)
    _add_plugins(subparsers)
    return parser


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text


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
    except (ValueError, TypeError, OSError) as e:
        if os.environ.get("JAXSAL_TRACEBACK"):
            raise
        print(f"{PROG} {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

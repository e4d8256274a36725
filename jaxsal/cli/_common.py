"""What the ``jaxsal`` commands share: option parsing, method lookup and model wiring.

Every command is a user of the public library: it looks methods up in the registry
(:func:`jaxsal.methods`), builds them with :meth:`jaxsal.Method.build` and draws with
:mod:`jaxsal.viz`. The helpers here are written once for all commands.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any


def split_list(values: Sequence[str] | str | None, option: str | None = None) -> list[str] | None:
    """Values of a repeatable, comma-separated option, e.g. ``["a,b", "c"] -> ["a", "b", "c"]``.

    ``None`` when the option was not given (``values`` is ``None``).

    Raises:
      ValueError: the option was given but names nothing (``--methods ""`` or ``",,,"``),
        when ``option`` names it; without ``option`` that gives ``None``.
    """
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if not out and option is not None:
        raise ValueError(
            f"{option} was given but names nothing (got {', '.join(repr(v) for v in values) or 'no value'}); "
            f"give at least one name, or leave {option} out for the default."
        )
    return out or None


#: Seeds are taken as unsigned 32-bit integers; larger ones would alias smaller ones.
SEED_LIMIT = 2**32


def seed(text: str) -> int:
    """An argparse ``type=`` for ``--seed``: an integer in ``[0, 2**32)``."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}") from None
    if not 0 <= v < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 2**32) = [0, {SEED_LIMIT}), got {v}: larger seeds would silently "
            "give the same key as smaller ones"
        )
    return v


def output_path(out: str | os.PathLike, default_format: str = "png") -> tuple[str, str]:
    """``(path, format)`` of a figure to write, checked *before* anything is computed.

    A name without an extension gets ``.{default_format}`` (and that is the name
    reported). The format must be one matplotlib writes, the folder must exist and be
    writable (a temporary file is created and removed there), and the path must not be
    a folder.

    Raises:
      ValueError: unknown format. OSError: the folder is missing or not writable, or
        ``out`` is a folder.
    """
    path = os.fspath(out)
    if not path:
        raise ValueError("--out is empty; give a file name such as jaxsal-demo.png.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"--out {path!r} is a folder; give a file name inside it.")
    root, ext = os.path.splitext(path)
    if not ext:
        path, ext = f"{path}.{default_format}", f".{default_format}"
    fmt = ext[1:].lower()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(
            f"--out {path!r}: unknown figure format {ext!r}; use one of {', '.join(sorted(formats))}."
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"--out {path!r} is a folder; give a file name inside it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out {path!r}: the folder {folder!r} does not exist.")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".jaxsal-probe-"):
            pass
    except OSError as e:
        raise OSError(f"--out {path!r}: cannot write in {folder!r} ({e.strerror or e}).") from None
    return path, fmt


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it to ``path``.

    The rename is atomic, so ``path`` is either absent (or its old version) or
    complete: an error (a full disk, a file-size limit) or an interrupt while writing
    leaves no half-written file under that name. The temporary file is removed on
    failure, and by the console script's interrupt handler (``jaxsal_cli``).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=folder)
    os.close(fd)
    launcher = sys.modules.get("jaxsal_cli")
    if launcher is not None:
        launcher.register_temp(tmp)
    try:
        write(tmp)
        # mkstemp makes the file 0600; give the figure the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        if launcher is not None:
            launcher.unregister_temp(tmp)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` that accepts integers ``>= minimum`` (a usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {v}")
        return v

    return parse


positive_int = int_at_least(1)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (its type name if it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


class UsageError(ValueError):
    """Options that do not go together (e.g. bundled photo names with ``--model vit_tiny``).

    The command's handler reports it with :func:`usage_error`: one line and exit status 2,
    as argparse does for its own usage errors.
    """


def usage_error(command: str, e: UsageError) -> int:
    """Print ``e`` as ``jaxsal COMMAND: error: ...`` on stderr and return 2 (re-raised with ``JAXSAL_TRACEBACK=1``)."""
    if os.environ.get("JAXSAL_TRACEBACK"):
        raise e
    print(
        f"jaxsal {command}: error: {one_line(e).rstrip('.')} (see jaxsal {command} --help)", file=sys.stderr
    )
    return 2


@contextlib.contextmanager
def one_line_warnings(command: str, who: str) -> Iterator[None]:
    """Report jaxsal's own warnings raised inside as one line each, ``jaxsal COMMAND: warning: WHO: ...``.

    Library warnings (``UserWarning`` whose message starts with ``"jaxsal:"``, e.g. a
    ReLU rule on a model without ReLUs) are printed once each on stderr instead of
    Python's two-line warning with a source line. Other warnings are re-issued
    unchanged, under the caller's filters.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen: set[str] = set()
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, UserWarning) and text.startswith("jaxsal:"):
            line = one_line(Warning(text.removeprefix("jaxsal:")))
            if line not in seen:
                seen.add(line)
                print(f"jaxsal {command}: warning: {who}: {line}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def progress(iterable: Iterable, desc: str, enabled: bool) -> Iterable:
    """``iterable`` with a tqdm bar on stderr when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, file=sys.stderr)


# ----------------------------------------------------------------------------- methods


def resolve_methods(names: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """Registry names to run.

    ``None`` or empty: the registered names of ``default``; ``["all"]``: every registered
    method; otherwise ``names`` in order, without repeats.

    Raises:
      ValueError: an unknown name (the message lists the registered ones).
    """
    import jaxsal  # importing the package registers every method

    available = jaxsal.methods()
    if not names:
        return [m for m in default if m in available]
    if list(names) == ["all"]:
        return list(available)
    out: list[str] = []
    for n in names:
        jaxsal.get_method(n)  # raises ValueError naming the choices
        if n not in out:
            out.append(n)
    return out


def hyper_for(method, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``hyper`` that ``method``'s factory names in its signature.

    ``None`` values are left out (the factory's default applies), and so is everything
    for a factory that only takes ``**kwargs`` (it names nothing).
    """
    try:
        params = inspect.signature(method.factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {}
    return {k: v for k, v in hyper.items() if v is not None and k in params}


def model_for(method, module, variables, layer: str | None, tokens: Any = None) -> Any:
    """What ``method``'s factory takes: the scores function ``f`` or a probe of ``layer``.

    With ``tokens`` (a :class:`jaxsal.Tokens`, for a transformer) the probe presents the
    token layer as a ``(B, h, w, D)`` map.
    """
    if method.takes == "probe":
        if layer is None:
            raise ValueError(f"method {method.name!r} needs a layer to probe, but the model names none.")
        import jaxsal.flax

        return jaxsal.flax.probe(module, variables, layer, tokens=tokens)
    if method.family == "propagation" and getattr(module, "plain_convs", None) is False:
        # The bundled EfficientNet writes depthwise convolutions as shifted slices for speed;
        # propagation rules must see them as convolutions (the same variables).
        module = module.clone(plain_convs=True)
    return lambda z: module.apply(variables, z)


def build_attr(
    method,
    module,
    variables,
    layer: str | None,
    hyper: Mapping[str, Any],
    *,
    size: tuple[int, int] | None = None,
    tokens: Any = None,
) -> Callable:
    """``method`` built on a Flax linen ``module`` with ``variables``.

    Only the hyper-parameters the factory names are passed (:func:`hyper_for`). With
    ``size``, maps at a layer's resolution (the CAM family, input methods at a layer)
    are upsampled to ``size`` pixels, so that pixel metrics can compare them with
    input-shaped ones. ``tokens`` (a :class:`jaxsal.Tokens`, for a transformer) is the
    token layout of ``layer``, given to probes and to every factory that names
    ``tokens`` (the attention family).
    """
    if tokens is not None:
        hyper = {**hyper, "tokens": tokens}
    attr = method.build(model_for(method, module, variables, layer, tokens), **hyper_for(method, hyper))
    if size is None or method.output == "input":
        return attr
    import jaxsal
    from jaxsal._src import contract

    def upsampled(x, target=None, *, key=None):
        return jaxsal.upsample(attr(x, target, key=key), size)

    return contract.attribution(
        upsampled,
        scores_fn=getattr(attr, "scores_fn", None),
        stochastic=getattr(attr, "stochastic", False),
        name=f"upsample({method.name})",
    )


# ----------------------------------------------------------------------------- compile cache

#: Environment variable naming the persistent compilation cache folder (``0``: none).
COMPILE_CACHE_ENV = "JAXSAL_COMPILE_CACHE"
#: Programs that compile faster than this are not written to the cache (JAX's default is 1 s).
COMPILE_CACHE_MIN_SECS = 0.2
_OFF = frozenset({"0", "off", "false", "no", "none"})


def compile_cache_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The folder of the CLI's persistent XLA compilation cache, or None when it is off.

    ``$JAXSAL_COMPILE_CACHE`` if set (``0``, ``off``, ``false``, ``no`` or the empty
    string switch the cache off), else ``$XDG_CACHE_HOME/jaxsal/xla``, else
    ``~/.cache/jaxsal/xla``.

    Args:
      environ: the environment to read (default ``os.environ``).

    Returns:
      An absolute path, or None.
    """
    env = os.environ if environ is None else environ
    value = env.get(COMPILE_CACHE_ENV)
    if value is not None:
        if value.strip().lower() in _OFF or not value.strip():
            return None
        return os.path.abspath(os.path.expanduser(value))
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.abspath(os.path.join(base, "jaxsal", "xla"))


def enable_compile_cache(disabled: bool = False, environ: Mapping[str, str] | None = None) -> str | None:
    """Point JAX's persistent compilation cache at :func:`compile_cache_dir`.

    Compiled programs are then written there and reused by later runs of the same
    command with the same shapes, JAX version and backend (the compile is the larger
    part of a first ``jaxsal demo``). The folder is created if needed; when it cannot
    be created the cache stays off and a warning line goes to stderr.

    Args:
      disabled: ``--no-compile-cache`` was given: do nothing.
      environ: the environment to read (default ``os.environ``).

    Returns:
      The folder in use, or None when the cache is off.
    """
    if disabled:
        return None
    path = compile_cache_dir(environ)
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        print(
            f"jaxsal: warning: compile cache off, cannot create {path!r} ({e.strerror or e})", file=sys.stderr
        )
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def add_compile_cache_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-compile-cache`` to a subcommand's parser (see :func:`enable_compile_cache`)."""
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help=f"do not read or write the persistent XLA compilation cache (also: {COMPILE_CACHE_ENV}=0); "
        "default folder $XDG_CACHE_HOME/jaxsal/xla or ~/.cache/jaxsal/xla, or $" + COMPILE_CACHE_ENV,
    )

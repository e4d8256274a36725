"""What the ``jaxsal`` commands share: option parsing, method lookup and model wiring.

Every command is a user of the public library: it looks methods up in the registry
(:func:`jaxsal.methods`), builds them with :meth:`jaxsal.Method.build` and draws with
:mod:`jaxsal.viz`. The helpers here are written once for all commands.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


def split_list(values: Sequence[str] | None) -> list[str] | None:
    """Values of a repeatable, comma-separated option, e.g. ``["a,b", "c"] -> ["a", "b", "c"]``.

    ``None`` when nothing (or only commas and blanks) was given.
    """
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


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


def model_for(method, module, variables, layer: str | None) -> Any:
    """What ``method``'s factory takes: the scores function ``f`` or a probe of ``layer``."""
    if method.takes == "probe":
        if layer is None:
            raise ValueError(f"method {method.name!r} needs a layer to probe, but the model names none.")
        import jaxsal.flax

        return jaxsal.flax.probe(module, variables, layer)
    return lambda z: module.apply(variables, z)


def build_attr(
    method,
    module,
    variables,
    layer: str | None,
    hyper: Mapping[str, Any],
    *,
    size: tuple[int, int] | None = None,
) -> Callable:
    """``method`` built on a Flax linen ``module`` with ``variables``.

    Only the hyper-parameters the factory names are passed (:func:`hyper_for`). With
    ``size``, maps at a layer's resolution (the CAM family, input methods at a layer)
    are upsampled to ``size`` pixels, so that pixel metrics can compare them with
    input-shaped ones.
    """
    attr = method.build(model_for(method, module, variables, layer), **hyper_for(method, hyper))
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

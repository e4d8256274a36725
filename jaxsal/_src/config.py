"""Library-wide settings: ``jaxsal.config``.

``rewrites`` chooses the speed rewrites of convolutions applied when jaxsal
differentiates a model (:mod:`jaxsal._src.rewrites`):

* ``"auto"`` (default): the rewrites measured to be faster, on the CPU backend only;
* ``"all"``: every rewrite, on every backend;
* ``False``: none (``"off"`` is accepted too).

Set it for the process, or for a block of code (the block's value wins; it is per
thread / asyncio task)::

  import jaxsal
  jaxsal.config.rewrites = False
  with jaxsal.config.using(rewrites="all"):
      attr = jax.jit(jaxsal.vanilla_grad(f))
      attr(x, 3)     # traced here: uses "all"

The value is read when an attribution is *traced*; a function already compiled by
``jax.jit`` keeps the value it was traced with. :func:`jaxsal.with_rewrites`
chooses per model instead.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

#: The process-wide setting (see the module docstring).
rewrites: str | bool = "auto"

_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("jaxsal_rewrites", default=None)
_UNSET = object()


def check_rewrites(value) -> str | bool:
    """``value`` as a rewrites mode (``"auto"``, ``"all"`` or ``False``), or ValueError."""
    if value is False or value == "off" or value is None:
        return False
    if value is True:
        return "auto"
    if isinstance(value, str) and value in ("auto", "all"):
        return value
    raise ValueError(
        f"jaxsal.config.rewrites must be 'auto', 'all' or False; got {value!r}. "
        f"Use False to switch the convolution rewrites off."
    )


def get_rewrites() -> str | bool:
    """The rewrites mode in force here: the innermost :func:`using` block, else ``rewrites``."""
    v = _OVERRIDE.get()
    return check_rewrites(rewrites if v is None else v[0])


@contextlib.contextmanager
def using(*, rewrites=_UNSET) -> Iterator[None]:
    """A block of code with other settings.

    Args:
      rewrites: ``"auto"``, ``"all"`` or ``False`` inside the block.

    Yields:
      None.
    """
    if rewrites is _UNSET:
        yield
        return
    token = _OVERRIDE.set((check_rewrites(rewrites),))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)

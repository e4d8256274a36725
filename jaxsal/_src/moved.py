"""Names that moved to another module keep working there, with a ``DeprecationWarning``.

Usage, at the end of the old module::

    __getattr__ = moved(__name__, {"old_name": "jaxsal.new.module:new_name"})
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that resolves ``names`` (``{old: "module:new"}``) and warns.

    The warning names the new home, so the fix is a one-line import change.
    """
    names = dict(names)

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, attr = target.partition(":")
        new = f"{where}.{attr}"
        renamed = "" if attr == name else f" (renamed from {name})"
        warnings.warn(
            f"{module}.{name} is deprecated: use {new}{renamed}; the old name will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(where), attr)

    return __getattr__

"""One registry of methods, shared by the tests, the CLI, the benchmarks and the demo.

Adding a method means: one factory, one ``register(...)`` call next to it, and one
reference test. The common test suite (``tests/test_contract.py``) runs every
registered method through the same checks (jit == eager, vmap, no retrace, dtype,
composition with SmoothGrad, key semantics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

from jaxsal._src.contract import Attribution

Takes = Literal["f", "probe"]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered attribution method.

    Attributes:
      name: registry key, also the CLI's ``--methods`` name.
      factory: ``factory(model, **hyper) -> attr``, where ``model`` is ``f`` (a
        function ``x -> (B, C)`` scores) when ``takes == "f"`` and a probe when
        ``takes == "probe"``.
      takes: what the factory needs, ``"f"`` or ``"probe"``.
      family: module family (``"gradient"``, ``"path"``, ``"smoothing"``, ``"cam"``, ...).
      title: human name for tables and figure columns.
      paper: short citation (authors, year).
      stochastic: whether the returned ``attr`` needs a ``key``.
      output: ``"input"`` (shaped like ``x``), ``"layer"`` (``(B, h, w)`` at the
        probed layer's resolution) or ``"activation"`` (shaped like the probed
        layer's activation).
      signed: whether the sign of the attribution carries meaning (drawn with a
        diverging colour map, e.g. Integrated Gradients), rather than only its
        magnitude (drawn as ``|R|``).
      captum: the Captum call with the same definition, if any, written as
        ``Class(keyword=literal, ...)`` (e.g. ``"LayerGradCam(relu_attributions=True)"``):
        the Captum parity harness (``benchmarks/parity.py``) compares every such
        method with that call, with no other edit.
      wraps: for a wrapper (``factory(attr, **hyper)``, e.g. SmoothGrad), the
        registered method it wraps when built from a model; ``None`` otherwise.
    """

    name: str
    factory: Callable[..., Callable]
    takes: Takes
    family: str
    title: str
    paper: str
    stochastic: bool = False
    output: Literal["input", "layer", "activation"] = "input"
    signed: bool = False
    captum: str | None = None
    wraps: str | None = None

    def build(self, model: Any, **hyper: Any) -> Attribution:
        """The attribution of this method for ``model`` (``f`` or a probe, see ``takes``).

        A wrapper is built around its ``wraps`` method: ``smoothgrad`` from ``f`` is
        ``jaxsal.smoothgrad(jaxsal.vanilla_grad(f), **hyper)``.
        """
        if self.wraps is not None:
            model = get_method(self.wraps).build(model)
        return self.factory(model, **hyper)


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def methods(*, takes: Takes | None = None, family: str | None = None) -> dict[str, Method]:
    """Registered methods, in registration order, optionally filtered."""
    return {
        k: m
        for k, m in _METHODS.items()
        if (takes is None or m.takes == takes) and (family is None or m.family == family)
    }


def get_method(name: str) -> Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(_METHODS)}") from None

"""Probes for unmodified Flax models (linen and NNX), by layer name.

* **linen**: ``probe(module, variables, "backbone/conv3")``. The layer is the module
  path as Flax names it (``Module.path`` joined by ``/``). The model runs under
  ``flax.linen.intercept_methods``; the interceptor reads the output of that
  submodule's ``__call__``, stores it with ``sow`` in a private collection and adds
  ``delta`` to it. The stored value comes out of ``apply`` through any lifted
  transform that returns its variables, so a layer inside ``nn.remat`` (or a module
  wrapped in it) is probed like any other. The interceptor exists only during the
  traced ``apply`` call: nothing stays registered. A layer inside ``nn.scan`` or
  ``nn.vmap`` is refused with a ``ValueError``: its body is traced once for all
  iterations (or examples), so there is no single call's output to probe.
* **NNX**: ``probe(module, "backbone.conv3")``, an attribute path (list items by
  index: ``"blocks.0.conv"``). The module is split once (``nnx.split``) when the
  probe is built; every call merges a fresh copy (``nnx.merge``) and swaps the
  named submodule *of that copy* for a thin wrapper. The user's module is never
  touched. The probe snapshots the module's state when it is built: build a new
  probe after changing the weights.

A layer called more than once per forward pass (a shared submodule) is an error,
unless ``call_index`` picks one call (0-based, in call order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxsal._src.probe import Probe, check_activation

Array = jax.Array


def probe(
    module: Any,
    variables: Any = None,
    layer: str | None = None,
    *,
    call_index: int | None = None,
    tokens: Any = None,
    **call_kwargs: Any,
) -> Probe:
    """A probe on a named layer of an unmodified Flax model.

    Args:
      module: a ``flax.linen.Module`` or a ``flax.nnx.Module``. Its ``__call__`` maps
        ``x (B, ...)`` to raw scores ``(B, C)``.
      variables: linen only, the variables dict (``{"params": ...}``, plus e.g.
        ``"batch_stats"``). May be traced: the probe can be built inside ``jax.jit``
        and differentiated with respect to ``variables``. NNX modules carry their own
        state, so call ``probe(module, "path")`` or ``probe(module, layer="path")``.
      layer: linen: the module path, ``"backbone/conv3"``; NNX: the attribute path,
        ``"backbone.conv3"``. Its output must be ``(B, h, w, K)``.
      call_index: which call to probe when the layer is called several times in one
        forward pass (0-based). ``None`` (default) requires exactly one call.
      tokens: for a token layer ``(B, T, D)`` (a transformer block), a
        :class:`jaxsal.Tokens` saying which tokens are patches and their grid; the
        probe then shows the layer as ``(B, h, w, D)``, so the CAM family needs no
        reshape transform (see :func:`jaxsal.with_tokens`). ``None``: the layer's
        output must already be ``(B, h, w, K)``.
      **call_kwargs: extra keyword arguments for every model call, e.g.
        ``train=False`` (linen: passed to ``module.apply``, so ``method=`` and
        ``rngs=`` work too; NNX: passed to ``module(x, **call_kwargs)``).

    Returns:
      A :class:`jaxsal.Probe`.

    Example::

      p = jaxsal.flax.probe(model, variables, "backbone/conv3")
      cam = jax.jit(jaxsal.grad_cam(p))(images)        # (B, h, w)
    """
    from flax import linen, nnx

    if call_index is not None and (
        isinstance(call_index, bool) or not isinstance(call_index, int) or call_index < 0
    ):
        raise ValueError(f"call_index must be None or an int >= 0; got {call_index!r}.")
    if isinstance(module, nnx.Module):
        if layer is None and isinstance(variables, str):
            variables, layer = None, variables
        if variables is not None:
            raise TypeError(
                "an NNX module carries its own state: call jaxsal.flax.probe(module, layer='path.to.layer') "
                "without variables."
            )
        _check_layer_arg(layer, "backbone.conv3")
        return _with_tokens(_nnx_probe(module, layer, call_index, call_kwargs), tokens)
    if isinstance(module, linen.Module):
        if not isinstance(variables, Mapping):
            raise TypeError(
                "a linen module needs its variables: call jaxsal.flax.probe(module, variables, 'path/to/layer') "
                f"with variables = module.init(...); got variables of type {type(variables).__name__}."
            )
        _check_layer_arg(layer, "backbone/conv3")
        return _with_tokens(_linen_probe(module, variables, layer, call_index, call_kwargs), tokens)
    raise TypeError(
        f"module must be a flax.linen.Module or a flax.nnx.Module; got {type(module).__name__}. "
        "For other models use jaxsal.probe(features_fn, head_fn)."
    )


def _with_tokens(p: Probe, tokens: Any) -> Probe:
    from jaxsal._src.probe import with_tokens

    return p if tokens is None else with_tokens(p, tokens)


def _check_layer_arg(layer: Any, example: str) -> None:
    if not isinstance(layer, str) or not layer:
        raise TypeError(
            f"layer must be the layer's path as a non-empty string, e.g. {example!r}; got {layer!r}."
        )


class _Calls:
    """Records the probed layer's outputs during one traced forward pass."""

    def __init__(self, layer: str, call_index: int | None, delta: Array | None):
        self.layer, self.call_index, self.delta = layer, call_index, delta
        self.outputs: list[Any] = []

    def __call__(self, out: Any) -> Any:
        i = len(self.outputs)
        self.outputs.append(out)
        if self.delta is None or i != (self.call_index or 0):
            return out
        if getattr(out, "shape", None) != self.delta.shape:
            check_activation(out, self.delta.shape[0], self.layer)
            raise ValueError(
                f"layer {self.layer!r} output shape {out.shape} differs from the probed shape {self.delta.shape}."
            )
        return out + self.delta

    def result(self, missing: Callable[[], str]) -> Any:
        n = len(self.outputs)
        if n == 0:
            raise ValueError(missing())
        if self.call_index is None and n > 1:
            raise ValueError(
                f"layer {self.layer!r} is called {n} times per forward pass; pass call_index=i "
                f"(0 <= i < {n}) to jaxsal.flax.probe to choose one call."
            )
        idx = self.call_index or 0
        if idx >= n:
            raise ValueError(
                f"call_index={idx} but layer {self.layer!r} is called only {n} time(s); use call_index < {n}."
            )
        return self.outputs[idx]


# ----------------------------------------------------------------------------- linen


# Flax names a lifted module class ``transform.__name__.capitalize() + cls.__name__``
# (flax.linen.transforms.module_class_lift_transform). Transforms whose body runs
# once per iteration or example cannot give one call's output.
_REPEATING = {"Scan": "nn.scan", "Vmap": "nn.vmap"}
_SOW = "_jaxsal_probe"


def _lifted_by(cls: type) -> str | None:
    """The capitalised transform name of a Flax lifted module class, else None."""
    base = cls.__mro__[1] if len(cls.__mro__) > 1 else None
    if (
        base is None
        or cls.__module__ != "flax.linen.transforms"
        or cls.__name__ == base.__name__
        or not cls.__name__.endswith(base.__name__)
    ):
        return None
    return cls.__name__[: -len(base.__name__)] or None


def _refuse_repeating(layer: str, transform: str, where: str) -> ValueError:
    return ValueError(
        f"layer {layer!r} runs inside {transform} ({where}): Flax traces that body once for all "
        f"its iterations or examples, so one call's output cannot be probed. Probe a layer outside "
        f"the {transform}, unroll it into separate submodules (a Python loop), or split the model "
        f"with jaxsal.probe(features_fn, head_fn)."
    )


def _linen_probe(module, variables, layer: str, call_index, call_kwargs) -> Probe:
    from flax import linen

    path = tuple(layer.strip("/").split("/"))
    call_kwargs = dict(call_kwargs)
    user_mutable = call_kwargs.pop("mutable", False)

    def scores_fn(x):
        if user_mutable is not False:
            return module.apply(variables, x, mutable=user_mutable, **call_kwargs)
        return module.apply(variables, x, **call_kwargs)

    def apply(x):
        if user_mutable is False:
            out, state = module.apply(variables, x, mutable=[_SOW], **call_kwargs)
            return out, state.get(_SOW, {})
        if user_mutable is True:
            mutable = True
        elif isinstance(user_mutable, str):
            mutable = [user_mutable, _SOW]
        else:
            mutable = [*user_mutable, _SOW]
        out, state = module.apply(variables, x, mutable=mutable, **call_kwargs)
        state = dict(state)
        sown = state.pop(_SOW, {})
        return (out, state), sown

    def run(x, delta):
        calls = _Calls(layer, call_index, delta)
        seen: list[str] = []
        lifted: list[tuple[str, str]] = []  # (name, transform) of lifted wrappers entered
        inside: dict[tuple, str] = {}  # module path of a lifted body -> its transform

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            t = _lifted_by(type(mod))
            if t is not None and isinstance(mod.name, str):
                lifted.append((mod.name, t))
            mpath = tuple(mod.path)
            if mpath and lifted and not isinstance(mod.parent, linen.Module):
                # a lifted transform's body: a clone of the wrapped module, bound to a bare scope
                for name, tr in lifted:
                    if mpath[-1] == name:
                        inside.setdefault(mpath, tr)
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            if mpath == path:
                for k in range(len(path), 0, -1):
                    if inside.get(path[:k]) in _REPEATING:
                        where = "/".join(map(str, path[:k]))
                        raise _refuse_repeating(layer, _REPEATING[inside[path[:k]]], f"module {where!r}")
            out = next_fun(*args, **kwargs)
            if mpath:
                name = "/".join(str(p) for p in mpath)
                if name not in seen:
                    seen.append(name)
            if mpath == path:
                context.module.sow(_SOW, "out", out)  # A comes back through the sown collection
                out = calls(out)
                calls.outputs[-1] = None
            return out

        with linen.intercept_methods(interceptor):
            scores, sown = apply(x)
        calls.result(
            lambda: (
                f"unknown layer {layer!r}; pass one of the layers the model calls (module paths, "
                f"in call order): {', '.join(seen) or '(none)'}."
            )
        )
        node = sown
        for k in path:
            node = node.get(k, {}) if isinstance(node, Mapping) else {}
        outs = node.get("out", ()) if isinstance(node, Mapping) else ()
        if len(outs) != len(calls.outputs):
            raise ValueError(
                f"layer {layer!r} runs inside a Flax lifted transform that does not return its "
                f"variables (such as nn.scan or nn.vmap), so its output cannot be probed. Probe a "
                f"layer outside that transform, or split the model with jaxsal.probe(features_fn, head_fn)."
            )
        return scores, outs[call_index or 0]

    return Probe(scores_fn=scores_fn, run=run, layer=layer)


# ----------------------------------------------------------------------------- NNX


class _Tap:
    """Stands in for the probed submodule inside a merged copy of an NNX model."""

    def __init__(self, inner, calls: _Calls):
        self._inner, self._calls = inner, calls

    def __call__(self, *args, **kwargs):
        return self._calls(self._inner(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _nnx_get(obj, key):
    return obj[key] if isinstance(key, int) else getattr(obj, key)


def _nnx_set(obj, key, value) -> None:
    if isinstance(key, int):
        obj[key] = value
    else:
        setattr(obj, key, value)


def _nnx_probe(module, layer: str, call_index, call_kwargs) -> Probe:
    from flax import nnx

    paths = {".".join(str(k) for k in p): tuple(p) for p, _ in nnx.iter_modules(module) if p}
    if layer not in paths:
        raise ValueError(
            f"unknown layer {layer!r}; submodules of {type(module).__name__} (attribute paths): "
            f"{', '.join(paths) or '(none)'}."
        )
    path = paths[layer]
    graphdef, state = nnx.split(module)

    def scores_fn(x):
        return nnx.merge(graphdef, state)(x, **call_kwargs)

    def run(x, delta):
        model = nnx.merge(graphdef, state)
        parent = model
        for k in path[:-1]:
            parent = _nnx_get(parent, k)
        calls = _Calls(layer, call_index, delta)
        _nnx_set(parent, path[-1], _Tap(_nnx_get(parent, path[-1]), calls))
        scores = model(x, **call_kwargs)
        a = calls.result(
            lambda: (
                f"layer {layer!r} is never called by the model's forward pass; pass one of its "
                f"submodules that is called (attribute paths): {', '.join(paths)}."
            )
        )
        return scores, a

    return Probe(scores_fn=scores_fn, run=run, layer=layer)

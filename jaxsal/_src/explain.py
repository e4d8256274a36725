"""Several attribution methods of one model, as one call: :func:`explain`.

``explain(f, methods={"vanilla": jaxsal.vanilla_grad, "ig": ig_attr})(x, target, key=k)``
returns ``{"vanilla": ..., "ig": ...}``. Methods are given as built attributions
(``jaxsal.vanilla_grad(f)``) or as factories ``method(f) -> attribution`` that
``explain`` builds on ``f``.

**Groups and compiles.** The methods are split into *groups*, and each group is one
jitted program (``jit=True``), compiled on its first call. Putting every method of
the demo in one program was measured to make the compile several times longer
(XLA optimises one large program much more slowly than several small ones) for no
faster run, so the default is one group per method. ``groups=[["vanilla",
"gxi"], ["ig"]]`` fuses methods that share their forward and backward pass (XLA's
common-subexpression elimination then computes ``vanilla_grad`` and
``grad_x_input``'s shared gradient once); methods not named in ``groups`` get a group
of their own. ``jit=False`` calls the methods eagerly (or under the caller's own
``jax.jit``, which then compiles everything as one program).

**Keys.** Every stochastic method receives the *same* ``key`` it would get as a
separate call ``attr(x, target, key=key)``, so ``explain(...)(x, t, key=k)[name]``
equals ``methods[name](x, t, key=k)``. Pass ``fold_keys=True`` to give the i-th
method (in the order of ``methods``) ``jax.random.fold_in(key, i)`` instead, so that
two stochastic methods do not draw the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxsal._src import contract


def _build(name: str, m: Any, f: Callable) -> Callable:
    if isinstance(m, contract.Attribution):
        return m
    if not callable(m):
        raise TypeError(
            f"methods[{name!r}] must be an attribution or a factory method(f); got {type(m).__name__}."
        )
    built = m(f)
    if not callable(built):
        raise TypeError(f"methods[{name!r}](f) must return an attribution; got {type(built).__name__}.")
    return built


def _is_stochastic(attr: Any) -> bool:
    return bool(getattr(attr, "stochastic", True))


def explain(
    f: Callable,
    methods: Mapping[str, Any],
    *,
    jit: bool = True,
    groups: Sequence[Sequence[str]] | None = None,
    fold_keys: bool = False,
) -> Callable[..., dict]:
    """Several methods of the model ``f`` in one call, compiled by groups.

    Args:
      f: the model ``x -> (B, C)`` raw scores; factories in ``methods`` are built on it.
      methods: ``{name: attribution or factory}``; a factory is called as ``factory(f)``.
      jit: compile each group as one ``jax.jit`` program (on its first call).
      groups: lists of method names to compile together; the other methods get a
        group each (default: every method alone, the fastest to compile).
      fold_keys: give the i-th method ``jax.random.fold_in(key, i)`` instead of ``key``.

    Returns:
      ``run(x, target=None, *, key=None) -> {name: attributions}``, in the order of
      ``methods``. ``key`` is needed when a method is stochastic.

    Raises:
      TypeError: a method is neither an attribution nor a factory.
      ValueError: no methods, or ``groups`` names an unknown method or one twice.
    """
    contract.check_callable(f, "f")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError("methods must be a non-empty dict {name: attribution or factory}.")
    built = {str(n): _build(str(n), m, f) for n, m in methods.items()}
    order = list(built)
    seen: set[str] = set()
    plan: list[list[str]] = []
    for g in groups or ():
        g = [str(n) for n in g]
        for n in g:
            if n not in built:
                raise ValueError(f"groups names {n!r}, which is not in methods ({', '.join(order)}).")
            if n in seen:
                raise ValueError(f"groups names {n!r} twice; put each method in at most one group.")
            seen.add(n)
        if g:
            plan.append(g)
    plan += [[n] for n in order if n not in seen]
    index = {n: i for i, n in enumerate(order)}

    def make(group: list[str]) -> Callable:
        def run_group(x, target, key):
            out = {}
            for n in group:
                k = key
                if key is not None and fold_keys:
                    k = jax.random.fold_in(key, index[n])
                out[n] = built[n](x, target, key=k)
            return out

        return jax.jit(run_group) if jit else run_group

    runners = [(g, make(g)) for g in plan]

    def run(x, target=None, *, key=None) -> dict:
        if key is None:
            need = [n for n in order if _is_stochastic(built[n])]
            if need:
                raise ValueError(
                    f"{', '.join(need)} {'is' if len(need) == 1 else 'are'} stochastic: call "
                    f"explain(...)(x, target, key=jax.random.key(0))."
                )
        out: dict = {}
        for _, r in runners:
            out.update(r(x, target, key))
        return {n: out[n] for n in order}

    run.groups = [list(g) for g in plan]  # type: ignore[attr-defined]
    return run

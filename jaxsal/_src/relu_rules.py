"""Compatibility module: the ReLU rules and the max-pool rewrite, by their old names.

The code now lives in :mod:`jaxsal._src.interpreter` (the engine and every JAX
internal it touches), :mod:`jaxsal._src.relu` (the ReLU matcher and rules) and
:mod:`jaxsal._src.max_pool` (the fast max-pool derivative).
"""

from __future__ import annotations

from jaxsal._src import interpreter as _interp
from jaxsal._src.max_pool import FAST_MAX_POOL, MAX_POOL, _max_pool, count_max_pools, with_fast_max_pool
from jaxsal._src.relu import RELU, RULES, Rule, count_relus, relu_rule, relu_with_rule, with_relu_rule

__all__ = [
    "RULES",
    "Rule",
    "count_max_pools",
    "count_relus",
    "eval_with_rule",
    "relu_with_rule",
    "with_fast_max_pool",
    "with_relu_rule",
]


def eval_with_rule(jaxpr, consts, *args, rule: Rule | None, in_values: tuple = ()) -> list:
    """Evaluate ``jaxpr`` like ``jax.core.eval_jaxpr``, with ReLU backward rules swapped
    (``rule=None``: ReLUs keep their own derivative) and max-pools made fast."""
    pairs = ([(RELU, relu_rule(rule))] if rule is not None else []) + [(MAX_POOL, FAST_MAX_POOL)]
    facts = tuple((v, True) for v in in_values)
    node = _interp._plan(jaxpr, consts, facts, pairs, [0] * len(pairs))
    return _interp.evaluate(node, consts, *args)


_ = _max_pool  # re-exported for tests that compare it with XLA's derivative

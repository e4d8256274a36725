"""What the rule interpreter (:func:`jaxsal.interpret`) can match in a traced model.

A matcher finds *units* (one or a few equations of the traced jaxpr, e.g. a ReLU or a
convolution with its bias add) in unmodified models, inside ``jit``, ``scan``,
``cond``, ``while_loop`` and ``checkpoint`` bodies too. Pair a matcher with a rule::

    import jaxsal
    from jaxsal.matchers import RELU

    def leaky(unit, inputs, y, g):        # a backward rule for one ReLU unit
        (x,) = inputs
        return (jnp.where(x > 0, g, 0.01 * g),)

    f2 = jaxsal.interpret(f, [(RELU, jaxsal.backward_rule(leaky))])

* :data:`RELU`: ReLU activations (``jax.nn.relu``, ``jnp.maximum(x, 0)``, ``relu6``,
  ``jnp.clip(x, 0, c)``); numerical clamps such as LayerNorm's
  ``maximum(0, E[x²] − E[x]²)`` are not activations and are not matched
  (:class:`ReluInfo` holds the upper bound ``hi``).
* :data:`LINEAR`: ``dot_general`` and ``conv_general_dilated`` with a weight operand,
  with a following bias ``add`` (:class:`LinearInfo`: kind, weight and bias positions).
* :data:`MAX_POOL`: non-overlapping VALID max-pools (``lax.reduce_window`` max with
  window == stride).
* :data:`SOFTMAX`: softmaxes (``jax.nn.softmax``, or ``exp(z - max) / sum(exp)`` written
  out): the attention probabilities the attention methods read.
"""

from jaxsal._src.attention import SOFTMAX
from jaxsal._src.interpreter import Matcher, Unit, View
from jaxsal._src.linear import LINEAR, LinearInfo
from jaxsal._src.max_pool import MAX_POOL
from jaxsal._src.relu import RELU, ReluInfo

__all__ = ["LINEAR", "MAX_POOL", "RELU", "SOFTMAX", "LinearInfo", "Matcher", "ReluInfo", "Unit", "View"]

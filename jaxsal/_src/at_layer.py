r"""Input methods at a layer: ``at_layer(probe)`` is *where* the attribution lives.

Every input method (:func:`jaxsal.vanilla_grad`, :func:`jaxsal.grad_x_input`,
:func:`jaxsal.deconvnet`, :func:`jaxsal.guided_backprop`,
:func:`jaxsal.integrated_gradients`) accepts ``jaxsal.at_layer(probe)`` in place of
the model ``f``. It then attributes the explained score to the probed layer's
activation ``A = A(x)`` instead of the input ``x``:

.. math:: R^c(x) = \mathrm{method}\big(a \mapsto S_c(x; A \leftarrow a)\big)(A(x))

where :math:`S_c(x; A \leftarrow a)` is the model run on ``x`` with the layer's output
replaced by ``a`` (the probe adds ``a - A(x)`` to it, so the rest of the network,
skip connections included, sees ``x`` as usual). This is Captum's
``LayerGradientXActivation`` (``grad_x_input``) and ``LayerIntegratedGradients``
(``integrated_gradients``), without a ``Layer*`` copy of each method. Wrappers compose
as usual: ``smoothgrad(vanilla_grad(at_layer(p)))`` adds the noise to the *input* and
averages the layer gradients, as Captum's ``NoiseTunnel`` around a layer method.

Conventions:

* ``target=None`` is resolved once, from the model's scores at ``x``.
* Integrated Gradients' ``baseline`` stays an *input*: the path runs in layer space
  from :math:`A(x')` to :math:`A(x)` (``x' = 0`` by default), as in Captum.
* Each example is explained on its own (``jax.vmap`` over the batch; one example
  after the other when the method's ``batch_size`` is set, so that it still bounds
  the rows of one model call), so the model must treat examples independently, as
  the contract requires everywhere.
* The output is shaped like the layer's activation, ``(B, ...)``, any rank (feature
  maps ``(B, h, w, K)``, tokens ``(B, T, D)``, vectors ``(B, D)``); reduce it with
  :func:`jaxsal.viz.reduce_channels` or sum it per token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src.probe import Probe, check_probe

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AtLayer:
    """A model seen at one of its layers; pass it to an input method instead of ``f``.

    Built by :func:`at_layer`. Attributes: ``probe``, the :class:`~jaxsal.Probe`.
    """

    probe: Probe

    @property
    def scores_fn(self) -> Callable[[Array], Array]:
        return self.probe.scores_fn

    def lift(
        self, make: Callable[..., contract.Attribution], name: str, **hyper: Any
    ) -> contract.Attribution:
        """The attribution ``make(f_A, **hyper)`` evaluated at the layer, per example.

        ``make`` is an input method's factory. A ``baseline`` in ``hyper`` is an input
        (``None``: zeros) and is mapped through the layer.
        """
        p = self.probe
        input_baseline = "baseline" in hyper
        baseline = hyper.pop("baseline", None)
        bounded = hyper.get("batch_size") is not None

        def attr(x, target=None, *, key=None):
            x = contract.check_input(x)
            scores, a = p.run(x, None)
            contract.check_scores(scores, x.shape[0], name="the probed model")
            if not hasattr(a, "shape") or a.shape[:1] != x.shape[:1]:
                raise ValueError(
                    f"layer {p.layer!r} outputs {getattr(a, 'shape', type(a).__name__)}; at_layer needs an "
                    f"activation with the batch axis first, ({x.shape[0]}, ...)."
                )
            if not jnp.issubdtype(a.dtype, jnp.floating):
                raise TypeError(
                    f"layer {p.layer!r} outputs dtype {a.dtype}; at_layer needs a floating activation."
                )
            target = contract.resolve_target(scores, target)
            b = x.shape[0]
            targets = None if callable(target) else jnp.broadcast_to(jnp.asarray(target), (b,))
            keys = None if key is None else jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))
            bases = None
            if input_baseline:
                x0 = contract.check_baseline(
                    baseline, x, " (at a layer the baseline is an input, mapped through it)"
                )
                bases = p.run(x0, None)[1]

            def one(args):
                xi, ai, ti, ki, bi = args

                def f_at(z):  # the model on x_i with the layer's output replaced by z (rows of it)
                    rows = jnp.broadcast_to(xi[None], (z.shape[0],) + xi.shape)
                    return p.run(rows, z - ai[None].astype(z.dtype))[0]

                extra = {} if bi is None else {"baseline": bi[None]}
                t = target if callable(target) else ti[None]
                return make(f_at, **hyper, **extra)(ai[None], t, key=ki)[0]

            per_example = (x, a, targets, keys, bases)
            # batch_size bounds the rows of one model call: then one example at a time.
            return jax.lax.map(one, per_example, batch_size=None if bounded else b)

        full = dict(hyper, **({"baseline": baseline} if input_baseline else {}))
        return contract.Attribution(
            attr, p.scores_fn, output="activation", name=f"{name}@{p.layer}", hyper=full
        )


def at_layer(probe: Probe) -> AtLayer:
    """Attribute to a layer instead of the input: ``method(jaxsal.at_layer(probe))``.

    Args:
      probe: the layer, from :func:`jaxsal.flax.probe` or :func:`jaxsal.probe`. Its
        activation may have any shape ``(B, ...)``.

    Returns:
      An :class:`AtLayer` that the input methods accept in place of ``f``.

    Example::

      p = jaxsal.flax.probe(model, variables, "backbone/conv3")
      lig = jaxsal.integrated_gradients(jaxsal.at_layer(p), steps=32)
      r = lig(x, y)                       # shaped like the layer's output
    """
    return AtLayer(check_probe(probe))

"""Flax adapters: probe a named layer of an unmodified linen or NNX model.

Example::

    import jaxsal, jaxsal.flax
    p = jaxsal.flax.probe(model, variables, "backbone/conv3")   # linen
    p = jaxsal.flax.probe(nnx_model, "backbone.conv3")          # NNX
    cam = jaxsal.grad_cam(p)(images)
"""

from jaxsal._src.flax_probe import probe

__all__ = ["probe"]

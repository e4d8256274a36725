"""Adebayo et al.'s finding on the pretrained EfficientNet-Lite0 (loads the weights: slow).

Measured with ``jaxsal sanity`` (chelsea + coffee, init="normal", seed 0): after
randomising the top 2 / 10 of 19 blocks (down to ``head`` / ``blocks_8``), Guided Backprop's |map| keeps a rank
correlation of 0.99 / 0.81 with the original, Vanilla Gradient's 0.43 / 0.31.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal.metrics import layer_names, model_parameter_randomization

models = pytest.importorskip("jaxsal.models")


@pytest.mark.slow
def test_guided_backprop_insensitive_to_top_layer_randomisation():
    module, variables = models.efficientnet_lite0()
    x = jnp.asarray(models.preprocess(models.sample_images()["coffee"]))
    order = layer_names(variables, module=module, x=x, depth=1)
    assert order[0] == "stem" and order[-2:] == ["head", "fc"] and len(order) == 19
    kw = dict(key=jax.random.key(0), order=order, steps=[2, 10], hog=False, keep_maps=False)
    vg = model_parameter_randomization(
        lambda v: jaxsal.vanilla_grad(lambda z: module.apply(v, z)), variables, x, **kw
    )
    gb = model_parameter_randomization(
        lambda v: jaxsal.guided_backprop(lambda z: module.apply(v, z)), variables, x, **kw
    )
    assert vg.layers == ("head", "blocks_8")
    gap = np.asarray(gb.spearman_abs - vg.spearman_abs)[:, 0]
    assert np.all(gap > 0.3), (np.asarray(gb.spearman_abs), np.asarray(vg.spearman_abs))
    assert float(gb.spearman_abs[0, 0]) > 0.9

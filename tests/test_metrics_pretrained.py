"""Adebayo et al.'s finding on the pretrained EfficientNet-Lite0 (loads the weights: slow).

Measured with ``jaxsal sanity`` (chelsea + coffee, default ``init="initializer"``, seed 0),
Spearman rank correlation of |map| with the trained model's map, mean over the two
photos, after randomising the top 2 / 10 / all 19 blocks (down to ``head`` /
``blocks_8`` / ``stem``): Guided Backprop 0.98 / 0.80 / 0.35, Vanilla Gradient
0.40 / 0.40 / 0.13.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from jaxsal.metrics import layer_names, model_parameter_randomization

models = pytest.importorskip("jaxsal.models")


@pytest.mark.slow
@pytest.mark.heavy
def test_guided_backprop_insensitive_to_randomisation_vanilla_gradient_is_not():
    module, variables = models.efficientnet_lite0()
    photos = models.sample_images()
    x = jnp.concatenate([jnp.asarray(models.preprocess(photos[n])) for n in ("chelsea", "coffee")])
    order = layer_names(variables, module=module, x=x[:1], depth=1)
    assert order[0] == "stem" and order[-2:] == ["head", "fc"] and len(order) == 19
    kw = dict(
        key=jax.random.key(0), module=module, order=order, steps=[2, 10, 19], hog=False, keep_maps=False
    )
    vg = model_parameter_randomization(
        lambda v: jaxsal.vanilla_grad(lambda z: module.apply(v, z)), variables, x, **kw
    )
    gb = model_parameter_randomization(
        lambda v: jaxsal.guided_backprop(lambda z: module.apply(v, z)), variables, x, **kw
    )
    assert vg.layers == ("head", "blocks_8", "stem")
    g, v = np.asarray(gb.spearman_abs).mean(1), np.asarray(vg.spearman_abs).mean(1)
    assert g[0] > 0.9 and g[1] > 0.7, (g, v)  # top layers random: Guided Backprop barely changes
    assert np.all(g - v > 0.15), (g, v)  # ... and stays above Vanilla Gradient at every depth
    assert g[2] > 2 * v[2], (g, v)  # the whole network random: still more than twice as similar

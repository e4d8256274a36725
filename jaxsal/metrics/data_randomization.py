"""Data randomisation test (Adebayo et al., 2018, Sec. 4).

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018), "Sanity Checks for Saliency
Maps", NeurIPS, https://arxiv.org/abs/1810.03292. Train the same architecture twice,
once on the true labels and once on randomly permuted labels (which it can only
memorise), and compare the two models' maps on the same images. A method whose maps
stay alike explains the input, not what the model learned from the labels.

Protocol: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download),
scaled to ``[0, 1]`` and centred (``x - 0.5``, :func:`jaxsal.datasets.load_digits`);
the same :class:`jaxsal.models.ShapesCNN` (``features=(16, 32, 64)``), the same initialisation and the same mini-batch
sequence for both runs; Adam. The explained class is the *true* label for both
models. Similarity: :func:`jaxsal.metrics.compare_maps`. Training is kept to seconds,
so the shuffled-label model only partly memorises its labels: its training accuracy
is reported next to the similarities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxsal._src.moved import moved
from jaxsal.metrics.similarity import MapSimilarity, compare_maps

Array = jax.Array


class DataRandomizationResult(NamedTuple):
    """Attributes:
    similarity: :class:`MapSimilarity` between the two models' maps, ``(B,)`` each.
    accuracy_true: training accuracy of the model trained on the true labels.
    accuracy_random: training accuracy of the model on its permuted labels.
    maps_true, maps_random: ``(B, 8, 8, 1)`` maps of the two models.
    images, labels: the explained images and their true labels.
    """

    similarity: MapSimilarity
    accuracy_true: Array
    accuracy_random: Array
    maps_true: Array
    maps_random: Array
    images: Array
    labels: Array


def data_randomization(
    make_attr: Callable[[Callable], Callable],
    *,
    key: Any,
    steps: int = 400,
    n_explain: int = 32,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    hog: bool = True,
) -> DataRandomizationResult:
    """Adebayo et al.'s data randomisation test on scikit-learn digits.

    Args:
      make_attr: ``f -> attr``, an attribution factory taking the model function
        ``f(x) -> (B, 10)`` logits, e.g. ``jaxsal.vanilla_grad`` or
        ``lambda f: jaxsal.integrated_gradients(f, steps=16)``.
      key: PRNG key (or int seed): ``fold_in(key, 0)`` permutes the labels,
        ``fold_in(key, 1)`` initialises both models and draws their mini-batches,
        ``fold_in(key, 2)`` is the attribution key.
      steps: Adam steps per model.
      n_explain: how many images (the first ones of the set) to explain.

    Returns:
      :class:`DataRandomizationResult`.
    """
    from jaxsal.datasets import _as_key, load_digits
    from jaxsal.models import ShapesCNN, train_classifier

    key = _as_key(key)
    images, labels = load_digits()
    shuffled = jax.random.permutation(jax.random.fold_in(key, 0), labels)
    module = ShapesCNN(num_classes=10, features=(16, 32, 64), center=0.0)
    train_key = jax.random.fold_in(key, 1)
    kw = dict(key=train_key, steps=steps, batch_size=batch_size, learning_rate=learning_rate)
    true_model = train_classifier(module, images, labels, **kw)
    rand_model = train_classifier(module, images, shuffled, **kw)
    x, y = images[:n_explain], labels[:n_explain]

    def maps(variables):
        attr = make_attr(lambda z: module.apply(variables, z))
        return attr(x, y, key=jax.random.fold_in(key, 2))

    m_true, m_rand = maps(true_model.variables), maps(rand_model.variables)
    return DataRandomizationResult(
        compare_maps(m_true, m_rand, hog=hog),
        true_model.train_accuracy,
        rand_model.train_accuracy,
        m_true,
        m_rand,
        x,
        y,
    )


# Moved in 0.2; the old names warn.
__getattr__ = moved(__name__, {"load_digits": "jaxsal.datasets:load_digits"})

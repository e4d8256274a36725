r"""XAI-TRIS-style ground truth: tetromino signals in (correlated) noise, from a seeded generator.

After Clark, Wilming, Dox, Tamaki & Haufe (2024), "XAI-TRIS: non-linear image benchmarks
to quantify false positive post-hoc attribution of feature importance", Machine
Learning, https://doi.org/10.1007/s10994-024-06574-3, and Wilming et al. (2023),
"Theoretical behavior of XAI methods in the presence of suppressor variables",
https://arxiv.org/abs/2306.01464.

Each image is a class signal in known pixels (the ``mask``: one or two tetrominoes made
of ``size // 8``-pixel blocks) plus a background:

.. math:: x = \mathrm{snr}\cdot s_y + \eta \quad(\text{additive}), \qquad
          x = \eta \odot (1 + \mathrm{snr}\cdot s_y) \quad(\text{multiplicative})

with :math:`\eta` of unit per-pixel standard deviation. ``snr`` is the signal's
amplitude per pixel in units of the background's standard deviation. Scenarios
(``s_y`` is the pattern on the mask, 0 elsewhere):

* ``"linear"``: a T tetromino at a fixed place, ``+1`` on it for class 1 and ``-1`` for
  class 0 (additive: the classes differ in their means);
* ``"multiplicative"``: the same T, the background's contrast raised (class 1) or
  lowered (class 0) on it (the classes differ in their variances only);
* ``"translations_rotations"``: as ``"linear"``, the T at a random place and rotation
  (multiples of 90 degrees) per image;
* ``"xor"``: a T and an L at two fixed places with signs :math:`a, b \in \{-1, 1\}`; the
  class is 1 when :math:`a = b` (no single pattern's sign carries the class).

Backgrounds: ``"white"`` (i.i.d. Gaussian) or ``"correlated"`` (white noise smoothed by
a Gaussian of ``smoothing`` pixels, circularly, and rescaled to unit variance). The
correlated background makes the pixels *around* the signal **suppressor variables**:
they carry no class information, but they are correlated with the noise on the
signal's pixels, so the optimal classifier subtracts them and uses them (Haufe et al.
2014; Wilming et al. 2023). Because the signal is weak per pixel and changes sign with
the class, the input itself and its edges are no good explanation *by construction*:
on the correlated set their localisation scores are close to a random map's.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src import contract

Array = jax.Array
Scenario = Literal["linear", "multiplicative", "translations_rotations", "xor"]
Background = Literal["white", "correlated"]
SCENARIOS: tuple[str, ...] = ("linear", "multiplicative", "translations_rotations", "xor")
BACKGROUNDS: tuple[str, ...] = ("white", "correlated")

# Tetrominoes on a grid of blocks, (row, col) of each block.
_T = ((0, 0), (0, 1), (0, 2), (1, 1))
_L = ((0, 0), (1, 0), (2, 0), (2, 1))


class TRIS(NamedTuple):
    """A generated set (:func:`tris`).

    Attributes:
      images: ``(n, size, size, 1)`` float32, channels last.
      labels: ``(n,)`` int32 classes in ``{0, 1}``, balanced in expectation.
      masks: ``(n, size, size)`` bool, the pixels that carry the signal (ground truth).
      signals: ``(n, size, size)`` the signal pattern :math:`s_y` (±1 on the mask).
      backgrounds: ``(n, size, size)`` the background :math:`\\eta`.
    """

    images: Array
    labels: Array
    masks: Array
    signals: Array
    backgrounds: Array


def _pattern(blocks: tuple, block: int) -> np.ndarray:
    h = (max(r for r, _ in blocks) + 1) * block
    w = (max(c for _, c in blocks) + 1) * block
    p = np.zeros((h, w), np.float32)
    for r, c in blocks:
        p[r * block : (r + 1) * block, c * block : (c + 1) * block] = 1
    return p


def _place(p: Array, size: int, row: Any, col: Any) -> Array:
    canvas = jnp.zeros((size, size), p.dtype)
    return jax.lax.dynamic_update_slice(canvas, p, (row, col))


def _gaussian_kernel_fft(size: int, sigma: float) -> Array:
    d = np.minimum(np.arange(size), size - np.arange(size)).astype(np.float64)
    g = np.exp(-0.5 * (d / sigma) ** 2)
    k = np.outer(g, g)
    k /= np.sqrt((k**2).sum())  # unit variance of the filtered white noise
    return jnp.asarray(np.fft.fft2(k))


def background_noise(key: Array, n: int, size: int, background: Background, smoothing: float) -> Array:
    """``(n, size, size)`` Gaussian background with unit per-pixel variance."""
    white = jax.random.normal(key, (n, size, size), jnp.float32)
    if background == "white":
        return white
    k = _gaussian_kernel_fft(size, smoothing)
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(white) * k[None])).astype(jnp.float32)


def tris(
    key: Array,
    n: int,
    *,
    size: int = 32,
    scenario: Scenario = "linear",
    background: Background = "correlated",
    snr: float = 0.5,
    smoothing: float | None = None,
) -> TRIS:
    r"""Generate an XAI-TRIS-style binary classification set with ground-truth masks.

    See the module docstring for the scenarios and backgrounds. Everything comes from
    ``key``: the same key gives the same set.

    Args:
      key: JAX PRNG key.
      n: number of images, ``>= 1``.
      size: image side in pixels, a multiple of 8 and ``>= 16`` (the tetromino blocks
        are ``size // 8`` pixels).
      scenario: ``"linear"``, ``"multiplicative"``, ``"translations_rotations"`` or ``"xor"``.
      background: ``"white"`` or ``"correlated"``.
      snr: signal amplitude per pixel in units of the background's standard deviation, ``> 0``.
      smoothing: the correlated background's Gaussian σ in pixels; default ``size / 8``.

    Returns:
      :class:`TRIS` with images, labels, masks, signals and backgrounds.

    Example::

      data = jaxsal.metrics.tris(jax.random.key(0), 512, scenario="xor")
      data.images.shape, data.masks.shape   # (512, 32, 32, 1), (512, 32, 32)
    """
    contract.check_key(key, "tris")
    n = contract.check_positive_int(n, "n")
    size = contract.check_positive_int(size, "size", minimum=16)
    if size % 8:
        raise ValueError(f"size must be a multiple of 8 (tetromino blocks of size // 8 pixels); got {size}.")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}; got {scenario!r}.")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}; got {background!r}.")
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not 0 < snr < float("inf"):
        raise ValueError(f"snr must be a finite number > 0; got {snr!r}.")
    sigma = size / 8 if smoothing is None else smoothing
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"smoothing must be a number of pixels > 0; got {smoothing!r}.")

    block = size // 8
    t = jnp.asarray(_pattern(_T, block))
    lp = jnp.asarray(_pattern(_L, block))
    k_noise, k_label, k_pos, k_rot, k_sign = jax.random.split(key, 5)
    noise = background_noise(k_noise, n, size, background, float(sigma))

    if scenario == "xor":
        signs = jax.random.rademacher(k_sign, (n, 2), jnp.float32)
        labels = (signs[:, 0] == signs[:, 1]).astype(jnp.int32)
        pt = _place(t, size, block, block)
        pl = _place(lp, size, size - lp.shape[0] - block, size - lp.shape[1] - block)
        signal = signs[:, :1, None] * pt[None] + signs[:, 1:, None] * pl[None]
        mask = jnp.broadcast_to((pt + pl) > 0, (n, size, size))
    else:
        labels = jax.random.bernoulli(k_label, 0.5, (n,)).astype(jnp.int32)
        sign = (2 * labels - 1).astype(jnp.float32)
        if scenario == "translations_rotations":
            side = t.shape[1]  # the T fits in a side x side square in every rotation
            square = jnp.zeros((side, side), t.dtype).at[: t.shape[0], :].set(t)
            rots = jnp.stack([jnp.rot90(square, r) for r in range(4)])
            r = jax.random.randint(k_rot, (n,), 0, 4)
            pos = jax.random.randint(k_pos, (n, 2), 0, size - side + 1)
            placed = jax.vmap(lambda rr, p: _place(rots[rr], size, p[0], p[1]))(r, pos)
        else:
            placed = jnp.broadcast_to(_place(t, size, block, block), (n, size, size))
        mask = placed > 0
        signal = sign[:, None, None] * placed

    if scenario == "multiplicative":
        images = noise * (1 + snr * signal)
    else:
        images = snr * signal + noise
    return TRIS(images[..., None].astype(jnp.float32), labels, mask, signal, noise)


def sobel_edges(images: Any) -> Array:
    """Sobel gradient magnitude ``(B, H, W)`` of ``(B, H, W, C)`` images (summed over channels).

    :math:`\\sqrt{G_x^2 + G_y^2}` with the 3x3 Sobel kernels and edge-replicated borders:
    the "edge detector" baseline map.
    """
    x = contract.check_input(images, "images")
    if x.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C); got shape {tuple(x.shape)}.")
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1], x.shape[2]

    def sl(i, j):
        return p[:, i : i + h, j : j + w]

    gx = (sl(0, 2) + 2 * sl(1, 2) + sl(2, 2)) - (sl(0, 0) + 2 * sl(1, 0) + sl(2, 0))
    gy = (sl(2, 0) + 2 * sl(2, 1) + sl(2, 2)) - (sl(0, 0) + 2 * sl(0, 1) + sl(0, 2))
    return jnp.sqrt(gx**2 + gy**2).sum(-1)

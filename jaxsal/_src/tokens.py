"""Token layouts: which tokens of a transformer layer are image patches, and on which grid.

A ViT layer outputs tokens ``(B, T, D)``: ``prefix`` tokens first (CLS, register
tokens), then the ``h * w`` patch tokens in row-major order, then ``suffix`` tokens.
:class:`Tokens` names that layout, so a probe on such a layer
(``jaxsal.probe(..., tokens=Tokens(grid=(h, w)))``) presents the patch tokens to the
CAM family as a feature map ``(B, h, w, D)``, and the attention methods return maps on
the patch grid.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

Array = jax.Array


def _nonneg_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"Tokens: {name} must be an int >= 0; got {v!r}.")
    return v


@dataclasses.dataclass(frozen=True)
class Tokens:
    """The layout of a token sequence ``(B, T, D)``: ``prefix`` tokens, an ``h x w`` grid of patches, ``suffix`` tokens.

    Attributes:
      grid: ``(h, w)``, the patch grid (patches in row-major order), or ``None``: a
        square grid, inferred from the token count.
      prefix: tokens before the patches (1 for a CLS token; add register tokens).
      suffix: tokens after the patches (e.g. registers appended at the end).

    Example::

      Tokens(grid=(14, 14), prefix=1)   # ViT-B/16 at 224 px: CLS + 196 patches
      Tokens(grid=(16, 16), prefix=5)   # CLS + 4 registers + 256 patches
    """

    grid: tuple[int, int] | None = None
    prefix: int = 1
    suffix: int = 0

    def __post_init__(self):
        _nonneg_int(self.prefix, "prefix")
        _nonneg_int(self.suffix, "suffix")
        if self.grid is not None:
            g = tuple(self.grid) if isinstance(self.grid, (tuple, list)) else None
            if (
                g is None
                or len(g) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in g)
            ):
                raise ValueError(f"Tokens: grid must be (h, w), two ints >= 1, or None; got {self.grid!r}.")
            object.__setattr__(self, "grid", g)

    def grid_for(self, t: int, layer: str = "the layer") -> tuple[int, int]:
        """The ``(h, w)`` grid for a sequence of ``t`` tokens; ``ValueError`` if the spec does not fit ``t``."""
        n = t - self.prefix - self.suffix
        if n < 1:
            raise ValueError(
                f"{layer} has T = {t} tokens, but {self!r} takes {self.prefix} prefix + {self.suffix} "
                f"suffix tokens, leaving no patches; fix prefix/suffix to the model's token layout."
            )
        if self.grid is None:
            s = math.isqrt(n)
            if s * s != n:
                raise ValueError(
                    f"{layer} has T = {t} tokens, {n} after {self.prefix} prefix and {self.suffix} suffix "
                    f"tokens, which is not a square grid; pass Tokens(grid=(h, w)) with h * w = {n}."
                )
            return s, s
        h, w = self.grid
        if h * w != n:
            raise ValueError(
                f"{layer} has T = {t} tokens: {self.prefix} prefix + {self.suffix} suffix + {n} patch tokens, "
                f"but the patch grid {self.grid} has {h} * {w} = {h * w} patches; pass a grid whose "
                f"product is {n}, or fix prefix/suffix (spec: {self!r})."
            )
        return h, w

    def check(self, a, layer: str = "the layer") -> tuple[int, int]:
        """The ``(h, w)`` grid for an activation (or ``jax.ShapeDtypeStruct``) ``(B, T, D)``; ``ValueError`` otherwise."""
        shape = getattr(a, "shape", None)
        if shape is None or len(shape) != 3:
            got = type(a).__name__ if shape is None else f"shape {tuple(shape)}"
            raise ValueError(
                f"{layer} outputs {got}, but tokens={self!r} needs token activations (B, T, D); "
                f"drop tokens= for a layer that already outputs (B, h, w, K)."
            )
        return self.grid_for(shape[1], layer)

    def to_map(self, a: Array, layer: str = "the layer") -> Array:
        """Token activations ``(B, T, D)`` to the patch feature map ``(B, h, w, D)`` (prefix/suffix dropped)."""
        h, w = self.check(a, layer)
        b, _, d = a.shape
        return a[:, self.prefix : self.prefix + h * w].reshape(b, h, w, d)

    def to_tokens(self, m: Array, t: int) -> Array:
        """A patch map ``(B, h, w, D)`` back to ``(B, T, D)``, zeros at the prefix and suffix tokens."""
        b, h, w, d = m.shape
        return jnp.pad(m.reshape(b, h * w, d), ((0, 0), (self.prefix, t - self.prefix - h * w), (0, 0)))

    def patch_index(self, t: int, layer: str = "the layer") -> tuple[slice, tuple[int, int]]:
        """``(slice of the patch tokens, (h, w))`` for a sequence of ``t`` tokens."""
        h, w = self.grid_for(t, layer)
        return slice(self.prefix, self.prefix + h * w), (h, w)

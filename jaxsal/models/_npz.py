"""Committed weights as NumPy ``.npz`` files: sha256-checked, read without pickle.

Each file maps ``"a/b/c"`` (the Flax parameter path joined by ``/``) to one array.
:func:`save_params` writes it (the training script), :func:`load_params` checks the
sha256 of the file bytes against the constant in code *before* parsing, then reads
it with ``np.load(allow_pickle=False)`` and rebuilds the nested dict.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import numpy as np

from jaxsal.models._torch_pickle import ChecksumError

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """A nested dict of arrays as ``{"a/b/c": array}``."""
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if hasattr(v, "items"):
            out.update(flatten(v, name))
        else:
            out[name] = np.asarray(v)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """The inverse of :func:`flatten`."""
    tree: dict = {}
    for name, v in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def save_params(path: str, params: Any) -> str:
    """Write ``params`` (float32) to ``path`` as an uncompressed ``.npz``; return its sha256."""
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(params).items()}
    buf = io.BytesIO()
    np.savez(buf, **flat)
    data = buf.getvalue()
    with open(path, "wb") as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest()


def load_params(filename: str, sha256: str, directory: str = WEIGHTS_DIR) -> dict:
    """Read ``directory/filename``, check its sha256, and return the nested parameter dict.

    Args:
      filename: the ``.npz`` file name.
      sha256: the expected hex digest of the file bytes.
      directory: where the file lies (default: the package's ``weights/``).

    Returns:
      The parameters as a nested dict of NumPy float32 arrays.

    Raises:
      FileNotFoundError: no such file (a source checkout without the weights, or a wheel
        built without package data). ChecksumError (a ``ValueError``): the bytes differ.
    """
    path = os.path.join(directory, filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file {path!r} is missing; reinstall jaxsal, or retrain with "
            f"python -m jaxsal.models.train_transformers."
        )
    with open(path, "rb") as fh:
        data = fh.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ChecksumError(
            f"weights file {path!r} has sha256 {digest}, expected {sha256}; the file is corrupt or "
            f"was retrained without updating the constant in code."
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        flat = {k: np.asarray(npz[k]) for k in npz.files}
    return unflatten(flat)

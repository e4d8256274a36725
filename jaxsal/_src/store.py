"""The on-disk store of :func:`jaxsal.explain_dataset`: a Zarr v3 group, read lazily.

Layout (every array chunked along the example axis, one chunk = one batch of
``batch_size`` rows, so that each chunk is one file written by one process):

* ``attributions (N, ...)``: the maps, in the method's output dtype;
* ``targets (N,)`` (int32): the explained class of every example;
* ``scores (N, C)``: the model's raw scores on the clean input;
* ``pred (N,)`` (int32): the top-scoring class, ``argmax scores``;
* ``done (num_chunks,)`` (uint8, one chunk file per element): the completion
  record. Chunk ``c`` is committed by adding one to ``done[c]`` *after* its rows of
  the four data arrays are written, so a ``1`` means "written and complete" and a
  value above ``1`` would mean a completed chunk was committed twice (which
  :attr:`Store.complete` refuses to call complete).

The metadata (method name and hyper-parameters, jaxsal version, the model's
fingerprint, the key, ``N``, the example shape and dtype, the batch size) is the
group attribute ``"jaxsal"``, written once when the store is created and never
rewritten: completion lives in ``done``, not in attributes (which are rewritten
whole, so two processes updating them would lose each other's updates).

Zarr's local store writes every chunk to a temporary file and renames it, so a
process killed at any moment leaves each chunk either absent, old or complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

META_KEY = "jaxsal"
FORMAT = 1  # bump when the layout changes
DATA_ARRAYS = ("attributions", "targets", "scores", "pred")


class Batch(NamedTuple):
    """One batch of a :class:`Store`, from :meth:`Store.batches`.

    Attributes:
      index: the global example indices, ``(b,)``.
      x: the inputs read from ``source`` (``(b, ...)``), or ``None`` without a source.
      attributions: the maps, ``(b, ...)``.
      targets: the explained classes, ``(b,)``.
      scores: the raw scores, ``(b, C)``.
      pred: the top-scoring classes, ``(b,)``.
    """

    index: np.ndarray
    x: np.ndarray | None
    attributions: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    pred: np.ndarray


class Store:
    """Lazy, read-only view of an attribution store (:func:`jaxsal.explain_dataset`).

    Nothing is loaded until indexed: ``store.attributions[i]`` reads one example's
    map (one chunk file), ``store.attributions[10:20]`` a slice. Use
    :meth:`batches` to run :mod:`jaxsal.metrics` over a whole dataset batch by batch.

    Attributes:
      path: the store's folder.
      metadata: what the store was made with (method, hyper-parameters, key, model
        fingerprint, ``N``, shapes; see :func:`jaxsal.explain_dataset`), a dict.
      attributions: the maps, a Zarr array ``(N, ...)`` (index it to read NumPy).
      targets: explained classes, ``(N,)``.
      scores: raw model scores on the clean inputs, ``(N, C)``.
      pred: top-scoring classes, ``(N,)``.
      done: the completion record, one counter per chunk.

    Example::

        store = jaxsal.open_store("run.zarr")
        aucs = [jaxsal.metrics.deletion(f, b.x, b.attributions, b.targets).auc
                for b in store.batches(64, source=images)]
    """

    def __init__(self, group: Any, path: str):
        self._group = group
        self.path = path
        self.metadata: dict[str, Any] = dict(group.attrs[META_KEY])
        self.attributions = group["attributions"]
        self.targets = group["targets"]
        self.scores = group["scores"]
        self.pred = group["pred"]
        self.done = group["done"]

    def __len__(self) -> int:
        return int(self.metadata["n"])

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Store({self.path!r}, method={m['method']!r}, n={m['n']}, "
            f"{'complete' if self.complete else f'{len(self.missing_chunks())} chunks missing'})"
        )

    @property
    def batch_size(self) -> int:
        """Rows per chunk (the ``batch_size`` the store was written with)."""
        return int(self.metadata["batch_size"])

    @property
    def num_chunks(self) -> int:
        """Chunks of ``batch_size`` rows, ``ceil(N / batch_size)`` (the last one may be short)."""
        return -(-len(self) // self.batch_size)

    def missing_chunks(self) -> list[int]:
        """Indices of the chunks not yet committed."""
        return [int(c) for c in np.flatnonzero(np.asarray(self.done[:]) == 0)]

    @property
    def complete(self) -> bool:
        """Whether every chunk is committed exactly once."""
        return bool(np.all(np.asarray(self.done[:]) == 1))

    def chunk_rows(self, c: int) -> slice:
        """The rows of chunk ``c``, ``0 <= c < num_chunks``."""
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < self.num_chunks:
            raise ValueError(f"c must be a chunk index, an int with 0 <= c < {self.num_chunks}; got {c!r}.")
        b = self.batch_size
        return slice(c * b, min((c + 1) * b, len(self)))

    def batches(self, batch_size: int | None = None, *, source: Any = None) -> Iterator[Batch]:
        """The store's rows in order, ``batch_size`` at a time (default: the store's).

        Args:
          batch_size: rows per batch, at least 1.
          source: the dataset the store was computed from (same forms as
            :func:`jaxsal.explain_dataset` accepts); its inputs are then read with
            each batch, e.g. for :func:`jaxsal.metrics.deletion`.

        Returns:
          An iterator of :class:`Batch`; only one batch is in memory at a time.

        Raises:
          ValueError: the store is incomplete, ``batch_size < 1``, or ``source`` does
            not have ``N`` examples.
        """
        from jaxsal._src import dataset

        b = self.batch_size if batch_size is None else batch_size
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}.")
        if not self.complete:
            raise ValueError(
                f"the store {self.path!r} is incomplete ({len(self.missing_chunks())} chunks missing); "
                "finish it by running the same jaxsal.explain_dataset call again."
            )
        src = None if source is None else dataset.as_source(source)
        if src is not None and len(src) != len(self):
            raise ValueError(
                f"source has {len(src)} examples but the store holds {len(self)}; pass the dataset the "
                "store was computed from."
            )
        shape = tuple(self.metadata["example_shape"])
        for start in range(0, len(self), int(b)):
            stop = min(start + int(b), len(self))
            x = None if src is None else src.read(start, stop, shape)[0]
            yield Batch(
                np.arange(start, stop),
                x,
                np.asarray(self.attributions[start:stop]),
                np.asarray(self.targets[start:stop]),
                np.asarray(self.scores[start:stop]),
                np.asarray(self.pred[start:stop]),
            )


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a Zarr group (it has a ``zarr.json``)."""
    return os.path.isfile(os.path.join(os.fspath(path), "zarr.json"))


def open_store(path: str | os.PathLike) -> Store:
    """Open a store written by :func:`jaxsal.explain_dataset`, read-only and lazily.

    Args:
      path: the store's folder (e.g. ``"run.zarr"``).

    Returns:
      A :class:`Store`.

    Raises:
      FileNotFoundError: nothing is at ``path``.
      ValueError: ``path`` is not a jaxsal store.
    """
    import zarr

    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(
            f"no store at {p!r}; write one with jaxsal.explain_dataset(attr, source, {p!r})."
        )
    if not is_store(p):
        raise ValueError(
            f"{p!r} is not a jaxsal store (it has no zarr.json); pass the folder explain_dataset wrote."
        )
    group = zarr.open_group(p, mode="r")
    meta = group.attrs.get(META_KEY)
    missing = [n for n in (*DATA_ARRAYS, "done") if n not in group]
    if not isinstance(meta, dict) or missing:
        raise ValueError(
            f"{p!r} is a Zarr group but not a jaxsal store (no {META_KEY!r} metadata"
            f"{' or arrays ' + ', '.join(missing) if missing else ''}); pass the folder explain_dataset wrote."
        )
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{p!r} was written in store format {meta.get('format')!r}; this jaxsal reads format {FORMAT}. "
            "Recompute it with overwrite=True."
        )
    return Store(group, p)


def create_store(
    path: str, meta: dict[str, Any], out_shape: Sequence[int], out_dtype: Any, classes: int
) -> None:
    """Create the arrays and metadata of a new, empty store at ``path``.

    The store is built in a temporary sibling folder and renamed into place, so a
    process killed while creating it leaves no half-made store under ``path``.
    Whatever was at ``path`` (an old store being overwritten) is removed just before.
    """
    import shutil
    import tempfile

    import zarr

    n, b = int(meta["n"]), int(meta["batch_size"])
    chunks = -(-n // b)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(
        prefix=f".{os.path.basename(os.path.abspath(path))}.", suffix=".creating", dir=parent
    )
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.create_array(
            "attributions",
            shape=(n, *out_shape),
            chunks=(b, *out_shape),
            dtype=np.dtype(out_dtype),
            fill_value=0,
        )
        group.create_array("targets", shape=(n,), chunks=(b,), dtype=np.int32, fill_value=-1)
        group.create_array(
            "scores", shape=(n, classes), chunks=(b, classes), dtype=np.dtype(meta["scores_dtype"])
        )
        group.create_array("pred", shape=(n,), chunks=(b,), dtype=np.int32, fill_value=-1)
        # one file per chunk's counter: processes commit different chunks without sharing a file
        group.create_array(
            "done", shape=(chunks,), chunks=(1,), dtype=np.uint8, fill_value=0, compressors=None
        )
        group.attrs[META_KEY] = meta
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

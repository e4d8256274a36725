"""``jaxsal explain`` and ``jaxsal show``: a folder of images explained into a store, and one example drawn.

``jaxsal explain IMAGES_OR_DIR... --methods a,b --out run.zarr`` classifies the images
with the bundled EfficientNet-Lite0 and writes, for every method, a resumable store
(:func:`jaxsal.explain_dataset`) at ``run.zarr/METHOD``; ``run.zarr`` itself is a
Zarr group whose attribute ``"jaxsal_run"`` lists the image files and methods. Run
the same command again after an interruption and it finishes what is missing; the
same ``--out`` with other images is refused unless ``--overwrite``.

``jaxsal show run.zarr --index i [--out fig.png]`` draws example ``i``'s image with
each method's map over it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsal.cli import _common

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_METHODS = ("vanilla_grad", "smoothgrad", "integrated_gradients", "grad_cam")
RUN_KEY = "jaxsal_run"


def image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The image files named by ``paths``: files as given, folders expanded (sorted, not recursive).

    Raises:
      FileNotFoundError: a path does not exist. ValueError: no image at all.
    """
    files: list[str] = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            files += sorted(
                os.path.join(p, f)
                for f in os.listdir(p)
                if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
            )
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"image {p!r} does not exist (give image files or folders of images).")
    if not files:
        raise ValueError(
            f"no images found in {', '.join(map(repr, map(os.fspath, paths)))}; give image files or folders."
        )
    return files


def load_model():
    """``(module, variables, labels, gradcam_layer)``: EfficientNet-Lite0, as ``jaxsal demo`` loads it."""
    from jaxsal.cli import demo

    return demo.load_model()


def preprocess(image: np.ndarray) -> np.ndarray:
    """One uint8 RGB image -> the model's float input ``(224, 224, 3)``."""
    from jaxsal import models

    return np.asarray(models.preprocess(image))[0]


class ImageFiles:
    """A lazy source: file ``i`` is read and preprocessed when indexed."""

    def __init__(self, files: Sequence[str]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        from jaxsal.cli import demo

        return preprocess(demo.read_image(self.files[i]))


def _run_group(out: str, files: list[str], methods: list[str], overwrite: bool) -> None:
    """Create (or check) the run group at ``out`` listing the images and methods."""
    import zarr

    from jaxsal._src import store as _store

    record = {"images": [os.path.abspath(f) for f in files]}
    if os.path.lexists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out!r} is a file, not a run folder; choose another path.")
    if os.path.isdir(out) and os.listdir(out):
        if not _store.is_store(out):
            raise FileExistsError(f"--out {out!r} is a folder holding something else; choose another path.")
        group = zarr.open_group(out, mode="r")
        old = group.attrs.get(RUN_KEY)
        if not isinstance(old, dict):
            raise ValueError(
                f"--out {out!r} is a Zarr group but not a jaxsal explain run; choose another path."
            )
        if old.get("images") != record["images"] and not overwrite:
            raise ValueError(
                f"--out {out!r} was made from other images ({len(old.get('images', []))} files); "
                "pass --overwrite to replace it, or choose another --out."
            )
        record["methods"] = list(dict.fromkeys([*(old.get("methods") or []), *methods]))
        if overwrite and old.get("images") != record["images"]:
            record["methods"] = methods
        zarr.open_group(out, mode="r+").attrs[RUN_KEY] = record
        return
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out {out!r}: the folder {parent!r} does not exist.")
    record["methods"] = methods
    zarr.open_group(out, mode="w", zarr_format=3).attrs[RUN_KEY] = record


def run_explain(
    images: Sequence[str],
    out: str,
    *,
    methods: Sequence[str] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``jaxsal explain``: one store per method under ``out``; returns ``{method: Store}``."""
    names = _common.resolve_methods(methods, DEFAULT_METHODS)
    files = image_files(images)
    for name in names:  # check what is cheap before loading the model
        if os.path.isfile(os.path.join(out, name)):
            raise FileExistsError(f"--out {out!r}: {name!r} inside it is a file, not a store.")
    _run_group(out, files, names, overwrite)
    import jax

    import jaxsal
    from jaxsal._src.dataset import explain_dataset

    module, variables, _, layer = load_model()
    stores = {}
    for name in names:
        method = jaxsal.get_method(name)
        attr = _common.build_attr(method, module, variables, layer, {"batch_size": None})
        stores[name] = explain_dataset(
            attr,
            ImageFiles(files),
            os.path.join(out, name),
            batch_size=batch_size,
            key=jax.random.key(seed),
            overwrite=overwrite,
            progress=progress,
        )
    return stores


def run_show(store: str, index: int, out: str | None = None) -> str:
    """``jaxsal show``: example ``index``'s image with each method's map over it; returns the figure's path."""
    import zarr

    from jaxsal._src import store as _store

    if not os.path.isdir(store) or not _store.is_store(store):
        raise FileNotFoundError(f"{store!r} is not a run folder written by jaxsal explain.")
    record = zarr.open_group(store, mode="r").attrs.get(RUN_KEY)
    if not isinstance(record, dict):
        raise ValueError(f"{store!r} is a Zarr group but not a jaxsal explain run.")
    files, names = record["images"], record["methods"]
    if not -len(files) <= index < len(files):
        raise ValueError(
            f"--index {index} is out of range for {len(files)} images; use 0 <= index < {len(files)}."
        )
    index %= len(files)
    path, _ = _common.output_path(out or f"{os.path.splitext(os.path.basename(files[index]))[0]}-maps.png")
    stores = {}
    for n in names:
        s = _store.open_store(os.path.join(store, n))
        if int(s.done[index // s.batch_size]) == 0:
            raise ValueError(
                f"method {n!r} has not explained image {index} yet; rerun the same jaxsal explain command."
            )
        stores[n] = s
    from jaxsal import viz
    from jaxsal.cli import demo
    from jaxsal.models import deprocess

    image = deprocess(preprocess(demo.read_image(files[index]))[None])[0]
    fig = viz._figure(figsize=(2.4 * (1 + len(stores)), 2.6))
    axes = fig.subplots(1, 1 + len(stores), squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title(os.path.basename(files[index]), fontsize=8)
    viz._clean(axes[0])
    for ax, (n, s) in zip(axes[1:], stores.items(), strict=True):
        m = np.asarray(s.attributions[index])
        viz.overlay(ax, image, np.abs(m) if m.ndim == 3 else m, reduce="sum")
        ax.set_title(f"{n}\nclass {int(s.targets[index])}", fontsize=8)
    _common.write_atomically(
        path, lambda tmp: fig.savefig(tmp, format=os.path.splitext(path)[1][1:] or "png")
    )
    return path


def _explain(args) -> int:
    stores = run_explain(
        args.images,
        args.out,
        methods=_common.split_list(args.methods, "--methods"),
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for name, s in stores.items():
        print(f"{name}: {len(s)} images -> {s.path}")
    return 0


def _show(args) -> int:
    print(run_show(args.store, args.index, args.out))
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``explain`` and ``show`` to the ``jaxsal`` parser."""
    p = subparsers.add_parser("explain", help="explain a folder of images into a resumable store")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR", help="image files or folders of images")
    p.add_argument("--out", required=True, help="the run folder (a Zarr group), e.g. run.zarr")
    p.add_argument(
        "--methods",
        action="append",
        help=f"comma-separated registry names (default: {','.join(DEFAULT_METHODS)})",
    )
    p.add_argument("--batch-size", type=_common.positive_int, default=16, help="images per step (default 16)")
    p.add_argument("--seed", type=_common.seed, default=0, help="seed of the PRNG key (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a store made by a different run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_explain)
    s = subparsers.add_parser("show", help="draw one example of an explain run")
    s.add_argument("store", help="the run folder written by jaxsal explain")
    s.add_argument("--index", type=int, required=True, help="the image's index in the run")
    s.add_argument("--out", default=None, help="figure file (default: IMAGE-maps.png)")
    s.set_defaults(func=_show)

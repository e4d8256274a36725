"""``jaxsal demo``: every registered method on a pretrained ImageNet classifier.

Loads EfficientNet-Lite0 (from the ``models`` extra, offline), classifies a few
photos (scikit-image's and matplotlib's bundled photos by default), computes each
method's map for the top-1 class of every photo, writes the grid figure and prints
two tables: the predictions, and the time each method took (compilation and run
separately).

The method list comes from :mod:`jaxsal._src.registry`: a method is built with
``Method.build(model, **hyper)`` where ``model`` is the scores function ``f`` or a
layer probe, as ``Method.takes`` says; hyper-parameters are passed only to
factories that name them (``n`` and ``noise_level`` for SmoothGrad, ``steps`` for
Integrated Gradients), so a newly registered method appears here without edits.

Performance: all images go through each method in one batched call, and each method
is compiled once (ahead of time, so the table can show compile and run time apart).
The model's parameters are arguments of the compiled function, not constants baked
into it, which keeps compilation fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

# The methods of the seed's chapter (Sec. 7.2) in the order of the figure.
DEFAULT_METHODS: tuple[str, ...] = (
    "vanilla_grad",
    "smoothgrad",
    "deconvnet",
    "guided_backprop",
    "integrated_gradients",
    "grad_cam",
    "guided_grad_cam",
)
DEFAULT_IMAGES: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "grace_hopper")

# SmoothGrad: n = 50 and noise level 0.15 (sigma = 0.15 (x_max - x_min)) are the
# paper's recommendations (Smilkov et al. 2017, Sec. 3.2-3.3 and Fig. 3).
# Integrated Gradients: Sundararajan et al. (2017), Sec. 5, use "between 20 and 300
# steps"; 50 is Captum's default as well. The demo prints IG's completeness gap; on
# the five bundled photos it is ~0.11 (median relative) at 50 Gauss-Legendre steps,
# and does not shrink monotonically with fewer steps (0.45-1.2 at 8), because the path
# crosses many ReLU6 kinks. Measured on 2 CPU cores (5 photos, 7 methods): 109 s of CPU
# time in all, so the paper settings are kept; SmoothGrad and IG are ~90 % of it.
DEFAULT_SMOOTHGRAD_N = 50
DEFAULT_NOISE_LEVEL = 0.15
DEFAULT_IG_STEPS = 50
# Images per model call in SmoothGrad / IG (memory: about 60 MB each for EfficientNet-Lite0).
DEFAULT_MAX_ROWS = 50

# Methods whose sign carries meaning beyond noise: drawn with a diverging colour map.
_SIGNED = frozenset({"integrated_gradients", "grad_x_input"})


@dataclasses.dataclass
class Prediction:
    image: str
    class_index: int
    label: str
    probability: float


@dataclasses.dataclass
class Timing:
    compile_s: float
    run_s: float
    cached: bool = False
    note: str = ""


@dataclasses.dataclass
class DemoResult:
    """What :func:`run` produced: the figure, its layout, predictions and timings."""

    figure: Any
    out: str | None
    rows: int
    cols: int
    column_titles: list[str]
    row_labels: list[str]
    predictions: list[Prediction]
    timings: dict[str, Timing]
    maps: dict[str, np.ndarray]
    wall_s: float


# ----------------------------------------------------------------------------- inputs


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)``; grayscale and RGBA are converted.

    Raises:
      OSError: the file is missing or cannot be decoded, with a one-line message.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist (check the path given to --images).")
    try:
        import imageio.v3 as iio

        img = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as e:  # imageio raises many types for undecodable files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OSError(f"cannot read image {path!r} ({reason}); use a JPEG or PNG file.") from None
    return to_rgb_uint8(img, name=path)


def to_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Grayscale ``(H, W)``/``(H, W, 1)``, RGB, RGBA (alpha dropped), any int/float dtype -> uint8 RGB."""
    img = np.asarray(img)
    if img.ndim == 4 and img.shape[0] == 1:  # single-frame animations
        img = img[0]
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4) or min(img.shape[:2]) < 1:
        raise OSError(f"image {name!r} has shape {img.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")
    if img.shape[-1] in (1, 2):  # gray or gray + alpha
        img = np.repeat(img[..., :1], 3, axis=-1)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if np.issubdtype(img.dtype, np.integer):  # e.g. 16-bit PNG
        top = 65535 if img.max() > 255 else 255
        return (img.astype(np.float64) * 255 / top).round().astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating) or img.dtype == bool:
        f = img.astype(np.float64)
        if f.max() > 1.0:
            f = f / 255.0
        return (np.clip(f, 0, 1) * 255).round().astype(np.uint8)
    raise OSError(f"image {name!r} has unsupported dtype {img.dtype}.")


def resolve_methods(names: Sequence[str] | None) -> list[str]:
    """Registry names to run. ``None`` -> the defaults; ``["all"]`` -> every registered method.

    Raises:
      ValueError: an unknown name (the message lists the registered ones).
    """
    from jaxsal._src import registry

    _import_methods()
    available = registry.methods()
    if not names:
        return [m for m in DEFAULT_METHODS if m in available]
    if list(names) == ["all"]:
        return list(available)
    out: list[str] = []
    for n in names:
        registry.get_method(n)  # raises ValueError naming the choices
        if n not in out:
            out.append(n)
    return out


def _import_methods() -> None:
    """Import the package, which registers every method (core, CAMs, Flax adapter)."""
    import jaxsal  # noqa: F401


# ----------------------------------------------------------------------------- model


@functools.lru_cache(maxsize=1)
def load_model():
    """``(module, variables, labels, gradcam_layer)``, loaded once per process."""
    try:
        from jaxsal import models
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise OSError(f"the demo needs the models extra: pip install 'jaxsal[demo]' ({e}).") from None
    module, variables = models.efficientnet_lite0(pretrained=True)
    labels = list(models.imagenet_labels())
    return module, variables, labels, models.EFFICIENTNET_GRADCAM_LAYER


def sample_images(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The bundled photos (uint8 RGB), all of them or the named subset."""
    from jaxsal import models

    photos = models.sample_images()
    if names is None:
        names = [n for n in DEFAULT_IMAGES if n in photos] or list(photos)
    missing = [n for n in names if n not in photos]
    if missing:
        raise ValueError(f"unknown sample image(s) {missing}; choose from: {', '.join(photos)}.")
    return {n: to_rgb_uint8(photos[n], n) for n in names}


def _display(x: np.ndarray) -> np.ndarray:
    """The photos as the model sees them (the 224 crop), float RGB in ``[0, 1]``.

    Inverts :func:`jaxsal.models.preprocess`'s pixel scaling ``x = (u8 - 127) / 128``.
    """
    return np.clip((np.asarray(x) * 128.0 + 127.0) / 255.0, 0.0, 1.0)


def _label(labels: Sequence[str], idx: int) -> str:
    return str(labels[idx]).split(",")[0].strip()


# ----------------------------------------------------------------------------- methods


def _accepted(method, model: Any, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``hyper`` that ``method``'s factory names in its signature."""
    params = inspect.signature(method.factory).parameters
    return {k: v for k, v in hyper.items() if v is not None and k in params}


def _batch_size(method, rows: int, batch: int) -> int | None:
    """``batch_size`` hyper-parameter that keeps about ``rows`` images per model call.

    The smoothing wrappers count noisy copies of the whole batch, the path methods
    count rows (path points x examples).
    """
    if rows <= 0:
        return None
    return max(1, rows // batch) if method.family == "smoothing" else rows


def display_kind(name: str, method) -> str:
    if method.output == "layer":
        return "overlay"
    return "signed" if name in _SIGNED else "abs"


def _model_for(method, module, variables, layer) -> Any:
    """What ``method``'s factory takes: the scores function ``f`` or a layer probe."""
    if method.takes == "probe":
        from jaxsal import flax as jflax

        if layer is None:
            raise ValueError(f"method {method.name!r} needs a layer, but the model names no Grad-CAM layer.")
        return jflax.probe(module, variables, layer)
    return lambda z: module.apply(variables, z)


_CLASSIFIERS: dict[int, Callable] = {}


def _classifier(module) -> Callable:
    """Jitted ``(variables, x) -> softmax probabilities``, one per model."""
    import jax

    if id(module) not in _CLASSIFIERS:
        _CLASSIFIERS[id(module)] = jax.jit(lambda v, z: jax.nn.softmax(module.apply(v, z), axis=-1))
    return _CLASSIFIERS[id(module)]


# Compiled executables, reused by later runs in the same process (tests, notebooks).
_COMPILED: dict[tuple, Any] = {}


def _compiled(method, module, variables, layer, hyper: Mapping[str, Any], args: tuple) -> tuple[Any, bool]:
    """``(executable, cached)`` for ``(variables, x, target, key) -> map``.

    The variables are an argument (not constants captured by the trace), so XLA does
    not constant-fold 4.6 M parameters into the program.
    """
    import jax

    kwargs = _accepted(method, _model_for(method, module, variables, layer), hyper)
    spec = tuple((getattr(a, "shape", None), str(getattr(a, "dtype", ""))) for a in args[1:])
    cache_key = (method.name, id(module), layer, tuple(sorted(kwargs.items())), spec)
    if cache_key in _COMPILED:
        return _COMPILED[cache_key][0], True

    def fn(variables, x, target, key):
        attr = method.build(_model_for(method, module, variables, layer), **kwargs)
        return attr(x, target, key=key)

    exe = jax.jit(fn).lower(variables, *args[1:]).compile()
    _COMPILED[cache_key] = (exe, module)  # keep the module alive so its id stays unique
    return exe, False


# ----------------------------------------------------------------------------- run


def run(
    images: Sequence[str | os.PathLike] | Mapping[str, np.ndarray] | None = None,
    methods: Sequence[str] | None = None,
    out: str | os.PathLike | None = "jaxsal-demo.png",
    *,
    samples: Sequence[str] | None = None,
    seed: int = 0,
    smoothgrad_n: int = DEFAULT_SMOOTHGRAD_N,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    ig_steps: int = DEFAULT_IG_STEPS,
    max_rows: int = DEFAULT_MAX_ROWS,
    percentile: float = 99.0,
    dpi: int = 100,
    progress: bool = True,
    stream: TextIO | None = None,
) -> DemoResult:
    """Run the demo and return its figure, layout, predictions and timings.

    Args:
      images: file paths, or ``{name: uint8 (H, W, 3) array}``.
      samples: names of bundled photos (chelsea, coffee, astronaut, rocket,
        grace_hopper), shown before ``images``. If both are ``None``: all five.
      methods: registry names; ``None`` the seed's seven methods, ``["all"]`` every
        registered method.
      out: where to write the PNG, or ``None`` not to write it.
      seed: seed of the PRNG key ``jax.random.key(seed)`` given to stochastic methods.
      smoothgrad_n, noise_level: SmoothGrad's sample count and ``sigma / (x_max - x_min)``.
      ig_steps: Integrated Gradients' quadrature steps.
      max_rows: at most about this many images go through the model at once in the
        sampling methods (a memory bound, ~60 MB per image); 0 for no bound.
      percentile: clipping percentile of the displayed maps.
      progress: show a progress bar on stderr.
      stream: where the tables go (default ``sys.stdout``).

    Raises:
      ValueError: unknown method or bad hyper-parameter. OSError: unreadable image.
    """
    t_start = time.perf_counter()
    stream = sys.stdout if stream is None else stream
    # Validate everything cheap before loading the model or importing JAX-heavy code.
    names = resolve_methods(methods)
    if not names:
        raise ValueError("no methods to run; pass --methods with at least one registered name.")
    if samples is not None:
        unknown = [n for n in samples if n not in DEFAULT_IMAGES]
        if unknown or not samples:
            raise ValueError(f"unknown sample image(s) {unknown}; choose from: {', '.join(DEFAULT_IMAGES)}.")
    files: dict[str, np.ndarray] = {}
    if isinstance(images, Mapping):
        files = {k: to_rgb_uint8(v, k) for k, v in images.items()}
    elif images is not None:
        for p in images:
            stem = os.path.splitext(os.path.basename(os.fspath(p)))[0]
            key = stem if stem not in files else f"{stem}_{len(files)}"
            files[key] = read_image(p)
        if not files:
            raise ValueError("--images needs at least one file.")
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from jaxsal import models, viz
    from jaxsal._src import registry

    bar = tqdm(total=2 + len(names), disable=not progress, desc="jaxsal demo", unit="step", file=sys.stderr)
    try:
        bar.set_postfix_str("loading model")
        module, variables, labels, layer = load_model()
        photos = {} if (samples is None and files) else sample_images(samples)
        photos.update({k if k not in photos else f"{k} (file)": v for k, v in files.items()})
        x = jnp.concatenate([jnp.asarray(models.preprocess(img)) for img in photos.values()])
        bar.update(1)

        bar.set_postfix_str("classifying")
        probs = _classifier(module)(variables, x)
        probs = np.asarray(probs)
        top = probs.argmax(axis=1)
        predictions = [
            Prediction(name, int(c), _label(labels, int(c)), float(probs[i, c]))
            for i, (name, c) in enumerate(zip(photos, top, strict=True))
        ]
        target = jnp.asarray(top, dtype=jnp.int32)
        key = jax.random.key(seed)
        bar.update(1)

        hyper = {"n": smoothgrad_n, "noise_level": noise_level, "steps": ig_steps}
        rows = max_rows
        maps: dict[str, np.ndarray] = {}
        timings: dict[str, Timing] = {}
        kinds: dict[str, str] = {}
        titles: dict[str, str] = {}
        for name in names:
            method = registry.get_method(name)
            bar.set_postfix_str(name)
            hyper_m = {**hyper, "batch_size": _batch_size(method, rows, len(photos))}
            t0 = time.perf_counter()
            compiled, cached = _compiled(
                method, module, variables, layer, hyper_m, (variables, x, target, key)
            )
            t1 = time.perf_counter()
            m = jax.block_until_ready(compiled(variables, x, target, key))
            t2 = time.perf_counter()
            title = method.title
            maps[title] = np.asarray(m, dtype=np.float32)
            timings[name] = Timing(t1 - t0, t2 - t1, cached, _note(method, module, variables, x, target, m))
            kinds[title] = display_kind(name, method)
            titles[name] = title
            bar.update(1)
    finally:
        bar.close()

    row_labels = [f"{p.label} p={p.probability:.2f}" for p in predictions]
    fig = viz.grid(_display(np.asarray(x)), maps, row_labels, kinds=kinds, percentile=percentile)
    out_path = None
    if out is not None:
        out_path = os.fspath(out)
        fig.savefig(out_path, dpi=dpi)
    wall = time.perf_counter() - t_start
    result = DemoResult(
        figure=fig,
        out=out_path,
        rows=len(predictions),
        cols=1 + len(maps),
        column_titles=list(maps),
        row_labels=row_labels,
        predictions=predictions,
        timings=timings,
        maps=maps,
        wall_s=wall,
    )
    print_report(result, titles, stream)
    return result


def _note(method, module, variables, x, target, m) -> str:
    """A faithfulness note for the table: the completeness gap of path methods."""
    if method.family != "path":
        return ""
    import jax

    import jaxsal

    apply = jax.jit(module.apply)  # two forward passes; eager they would cost more than the compile
    gap = jaxsal.completeness_gap(lambda z: apply(variables, z), m, x, target)
    rel = np.asarray(gap.relative_gap)
    return f"completeness gap |sum R - (S(x) - S(0))| / |S(x) - S(0)|: max {rel.max():.2f}, median {np.median(rel):.2f}"


def print_report(result: DemoResult, titles: Mapping[str, str], stream: TextIO) -> None:
    """The predictions table and the per-method timing table."""
    w = max([len("image")] + [len(p.image) for p in result.predictions])
    lw = max([len("top-1 class")] + [len(p.label) for p in result.predictions])
    print(f"{'image':<{w}}  {'top-1 class':<{lw}}  {'p':>5}", file=stream)
    for p in result.predictions:
        print(f"{p.image:<{w}}  {p.label:<{lw}}  {p.probability:5.2f}", file=stream)
    print(file=stream)
    mw = max([len("method")] + [len(titles[n]) for n in result.timings])
    print(f"{'method':<{mw}}  {'compile s':>9}  {'run s':>7}", file=stream)
    for name, t in result.timings.items():
        comp = "cached" if t.cached else f"{t.compile_s:.2f}"
        print(f"{titles[name]:<{mw}}  {comp:>9}  {t.run_s:7.2f}", file=stream)
    for name, t in result.timings.items():
        if t.note:
            print(f"{titles[name]}: {t.note}", file=stream)
    print(file=stream)
    where = f"wrote {result.out} " if result.out else ""
    print(f"{where}({result.rows} rows x {result.cols} columns) in {result.wall_s:.1f} s", file=stream)

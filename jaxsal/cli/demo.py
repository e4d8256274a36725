"""``jaxsal demo``: every registered method on a pretrained classifier.

Loads EfficientNet-Lite0 (from the ``models`` extra, offline), classifies a few
photos (scikit-image's and matplotlib's bundled photos by default), computes each
method's map for the top-1 class of every photo, writes the grid figure and prints
two tables: the predictions, and the time each method took (compilation and run
separately).

``--model vit_tiny`` runs the tiny ViT of :func:`jaxsal.models.vit_tiny` on 32-px
synthetic shapes instead (one of each class by default, drawn from ``--seed``), with
the methods that suit a GELU transformer: the gradients, Grad-CAM through the patch
tokens, the attention family and AttnLRP. The shapes' true classes are known, so the
prediction table says whether each prediction is right. What differs between the
models is described once, in :mod:`jaxsal.cli._models`.

The method list comes from the registry (:func:`jaxsal.methods`): a method is built
with ``Method.build(model, **hyper)`` where ``model`` is the scores function ``f`` or
a layer probe, as ``Method.takes`` says; hyper-parameters are passed only to
factories that name them (``n`` and ``noise_level`` for SmoothGrad, ``steps`` for
Integrated Gradients, ``batch_size`` for every method that bounds its model calls),
and ``Method.signed`` picks the colour map, so a newly registered method appears
here without edits.

Performance: all images go through each method in one batched call, and each method
is compiled once (ahead of time, so the table can show compile and run time apart).
The model's parameters are arguments of the compiled function, not constants baked
into it, which keeps compilation fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from jaxsal.cli import _common, _models
from jaxsal.cli._models import DEFAULT_IMAGES, read_image, sample_images  # noqa: F401 (re-exported)

# EfficientNet-Lite0's defaults: the seven methods of the "Pixel Attribution" chapter of
# Molnar's "Interpretable Machine Learning", in the order of the figure.
DEFAULT_METHODS: tuple[str, ...] = _models.EFFICIENTNET_DEMO_METHODS
#: ``--model vit_tiny``'s defaults (no ReLU-rule methods: the ViT has none).
VIT_METHODS: tuple[str, ...] = _models.VIT_DEMO_METHODS

# SmoothGrad: n = 50 and noise level 0.15 (sigma = 0.15 (x_max - x_min)) are the
# paper's recommendations (Smilkov et al. 2017, Sec. 3.2-3.3 and Fig. 3).
# Integrated Gradients: Sundararajan et al. (2017), Sec. 5, use "between 20 and 300
# steps"; 50 is Captum's default as well. The demo prints IG's completeness gap; on
# the five bundled photos it is ~0.11 (median relative) at 50 Gauss-Legendre steps,
# and does not shrink monotonically with fewer steps (0.45-1.2 at 8), because the path
# crosses many ReLU6 kinks. The demo keeps the paper settings although SmoothGrad and IG
# take most of its run time.
DEFAULT_SMOOTHGRAD_N = 50
DEFAULT_NOISE_LEVEL = 0.15
DEFAULT_IG_STEPS = 50
# Images per model call, the ``batch_size`` of every method that takes one (memory: about
# 60 MB each for EfficientNet-Lite0).
DEFAULT_MAX_ROWS = 50


def _slic(x):
    """SLIC superpixels of the (traced) batch, the feature mask of KernelSHAP in the demo."""
    import jaxsal

    return jaxsal.segments(x, "slic", n_segments=50, max_segments=64)  # <= 41 on the bundled photos


# Per-method settings of the perturbation family (forward passes only), over the shared ones
# above: KernelSHAP on SLIC superpixels, and sample counts that keep `--methods all` to a few
# minutes on a CPU (RISE's paper uses 4000 masks).
METHOD_HYPER: dict[str, dict[str, Any]] = {
    "kernel_shap": {"feature_mask": _slic, "num_features": 64, "n": 300},
    "lime": {"n": 200},
    "shapley_sampling": {"n": 4},
    "rise": {"n": 500},
}


@dataclasses.dataclass
class Prediction:
    image: str
    class_index: int
    label: str
    probability: float
    truth: str | None = None  # the true class, where known (synthetic shapes)

    @property
    def correct(self) -> bool | None:
        """Whether the top-1 class is the true one; ``None`` when the truth is unknown."""
        return None if self.truth is None else self.label == self.truth


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
    model: str = _models.DEFAULT_MODEL


# ----------------------------------------------------------------------------- model


def load_model(model: str = _models.DEFAULT_MODEL):
    """``(module, variables, labels, gradcam_layer)`` of ``--model``, loaded once per process."""
    return _models.load(model)


def _label(labels: Sequence[str], idx: int) -> str:
    return str(labels[idx]).split(",")[0].strip()


# ----------------------------------------------------------------------------- methods


def display_kind(method) -> str:
    """How ``viz.grid`` draws ``method``'s maps: over the photo, diverging, or as ``|R|``."""
    if method.output != "input":  # a layer's resolution: stretched over the photo
        return "overlay"
    return "signed" if method.signed else "abs"


_CLASSIFIERS: dict[int, Callable] = {}


def _classifier(module) -> Callable:
    """Jitted ``(variables, x) -> softmax probabilities``, one per model."""
    import jax

    if id(module) not in _CLASSIFIERS:
        _CLASSIFIERS[id(module)] = jax.jit(lambda v, z: jax.nn.softmax(module.apply(v, z), axis=-1))
    return _CLASSIFIERS[id(module)]


# Compiled executables, reused by later runs in the same process (tests, notebooks).
_COMPILED: dict[tuple, Any] = {}


def _compiled(
    method, module, variables, layer, hyper: Mapping[str, Any], args: tuple, tokens: Any = None
) -> tuple[Any, bool]:
    """``(executable, cached)`` for ``(variables, x, target, key) -> map``.

    The variables are an argument (not constants captured by the trace), so XLA does
    not constant-fold 4.6 M parameters into the program. ``tokens``: the token layout
    of a transformer's ``layer`` (:func:`jaxsal.cli._common.build_attr`).
    """
    import jax

    kwargs = _common.hyper_for(method, hyper)
    spec = tuple((getattr(a, "shape", None), str(getattr(a, "dtype", ""))) for a in args[1:])
    cache_key = (method.name, id(module), layer, tuple(sorted(kwargs.items())), spec, tokens)
    if cache_key in _COMPILED:
        return _COMPILED[cache_key][0], True

    def fn(variables, x, target, key):
        return _common.build_attr(method, module, variables, layer, kwargs, tokens=tokens)(x, target, key=key)

    exe = jax.jit(fn).lower(variables, *args[1:]).compile()
    _COMPILED[cache_key] = (exe, module)  # keep the module alive so its id stays unique
    return exe, False


# ----------------------------------------------------------------------------- run


def run(
    images: Sequence[str | os.PathLike | int] | Mapping[str, np.ndarray] | None = None,
    methods: Sequence[str] | None = None,
    out: str | os.PathLike | None = "jaxsal-demo.png",
    *,
    model: str = _models.DEFAULT_MODEL,
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
      images: file paths, or ``{name: uint8 (H, W, 3) array}``. With
        ``model="vit_tiny"`` integers (or their strings) are indices into the
        synthetic shapes pool (:func:`jaxsal.cli._models.shapes_pool`), and files and
        arrays are resized and cropped to 32 px.
      methods: registry names; ``None`` the model's defaults (:data:`DEFAULT_METHODS`,
        the seven of Molnar's chapter, for EfficientNet-Lite0; :data:`VIT_METHODS` for
        the ViT), ``["all"]`` every registered method.
      out: where to write the figure, or ``None`` not to write it. Checked before
        anything is computed (format, folder, permission); a name without an
        extension gets ``.png``. Written to a temporary name, then renamed.
      model: ``"efficientnet_lite0"`` (ImageNet photos) or ``"vit_tiny"`` (32-px
        synthetic shapes, default one of each class), see :mod:`jaxsal.cli._models`.
      samples: names of bundled photos (chelsea, coffee, astronaut, rocket,
        grace_hopper), shown before ``images``. If both are ``None``: all five.
        EfficientNet-Lite0 only.
      seed: seed of the PRNG key ``jax.random.key(seed)`` given to stochastic methods,
        in ``[0, 2**32)``; for the ViT also the seed of the synthetic shapes.
      smoothgrad_n, noise_level: SmoothGrad's sample count and ``sigma / (x_max - x_min)``.
      ig_steps: Integrated Gradients' quadrature steps.
      max_rows: at most this many images (rows) go through the model per call: the
        ``batch_size`` of every method that takes one (a memory bound, ~60 MB per
        image); 0 for no bound.
      percentile: clipping percentile of the displayed maps.
      dpi: resolution of the written figure.
      progress: show a progress bar on stderr.
      stream: where the tables go (default ``sys.stdout``).

    Raises:
      ValueError: unknown method or model, bad hyper-parameter
        (:class:`jaxsal.cli._common.UsageError` for images the model does not take).
      OSError: unreadable image.
    """
    t_start = time.perf_counter()
    stream = sys.stdout if stream is None else stream
    # Validate everything cheap before loading the model or importing JAX-heavy code.
    spec = _models.get(model)
    names = _common.resolve_methods(methods, spec.demo_methods)
    if not names:
        raise ValueError("no methods to run; pass --methods with at least one registered name.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _common.SEED_LIMIT:
        raise ValueError(
            f"seed must be an integer in [0, 2**32); got {seed!r} (larger seeds alias smaller ones)."
        )
    out_path, out_format = (None, None) if out is None else _common.output_path(out)
    inputs = spec.demo_inputs(images, samples, seed)
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import jaxsal
    from jaxsal import viz

    bar = tqdm(total=2 + len(names), disable=not progress, desc="jaxsal demo", unit="step", file=sys.stderr)
    try:
        bar.set_postfix_str("loading model")
        module, variables, labels, layer = load_model(spec.name)
        x = inputs.x
        bar.update(1)

        bar.set_postfix_str("classifying")
        probs = _classifier(module)(variables, x)
        probs = np.asarray(probs)
        top = probs.argmax(axis=1)
        predictions = [
            Prediction(
                name,
                int(c),
                _label(labels, int(c)),
                float(probs[i, c]),
                None if t is None else _label(labels, t),
            )
            for i, (name, c, t) in enumerate(zip(inputs.names, top, inputs.truth, strict=True))
        ]
        target = jnp.asarray(top, dtype=jnp.int32)
        key = jax.random.key(seed)
        bar.update(1)

        hyper = {
            "n": smoothgrad_n,
            "noise_level": noise_level,
            "steps": ig_steps,
            "batch_size": max_rows if max_rows > 0 else None,
        }
        maps: dict[str, np.ndarray] = {}
        timings: dict[str, Timing] = {}
        kinds: dict[str, str] = {}
        titles: dict[str, str] = {}
        for name in names:
            method = jaxsal.get_method(name)
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            method_hyper = {**hyper, **METHOD_HYPER.get(name, {})}
            with _common.one_line_warnings("demo", name):
                compiled, cached = _compiled(
                    method, module, variables, layer, method_hyper, (variables, x, target, key), spec.tokens
                )
            t1 = time.perf_counter()
            m = jax.block_until_ready(compiled(variables, x, target, key))
            t2 = time.perf_counter()
            title = method.title
            maps[title] = np.asarray(m, dtype=np.float32)
            timings[name] = Timing(t1 - t0, t2 - t1, cached, _note(method, module, variables, x, target, m))
            kinds[title] = display_kind(method)
            titles[name] = title
            bar.update(1)
    finally:
        bar.close()

    row_labels = [_row_label(p) for p in predictions]
    fig = viz.grid(spec.deprocess(x), maps, row_labels, kinds=kinds, percentile=percentile)
    if out_path is not None:
        _common.write_atomically(out_path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=out_format))
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
        model=spec.name,
    )
    print_report(result, titles, stream)
    return result


def _row_label(p: Prediction) -> str:
    """The title above an image: the top-1 class and its probability (and the truth, where known)."""
    label = f"{p.label} p={p.probability:.2f}"
    if p.truth is None:
        return label
    return f"{label}\ntrue {p.truth} {'✓' if p.correct else '✗'}"


def _note(method, module, variables, x, target, m) -> str:
    """A faithfulness note for the table: the completeness gap of methods explaining S(x) - S(0).

    That is the path and propagation methods with a ``baseline`` argument, zeros by
    default (Integrated Gradients, Guided IG, DeepLIFT); not Blur IG (its baseline is
    the blurred image) nor methods with sampled baselines.
    """
    import inspect

    takes_baseline = "baseline" in inspect.signature(method.factory).parameters
    if method.family not in ("path", "propagation") or method.stochastic or not takes_baseline:
        return ""
    import jax

    import jaxsal

    apply = jax.jit(module.apply)  # two forward passes; eager they would cost more than the compile
    gap = jaxsal.completeness_gap(lambda z: apply(variables, z), m, x, target)
    rel = np.asarray(gap.relative_gap)
    return f"completeness gap |sum R - (S(x) - S(0))| / |S(x) - S(0)|: max {rel.max():.2f}, median {np.median(rel):.2f}"


def print_report(result: DemoResult, titles: Mapping[str, str], stream: TextIO) -> None:
    """The predictions table and the per-method timing table.

    Where the true classes are known (synthetic shapes), the predictions table has a
    ``true class`` and a ``correct`` column, and a line with the accuracy.
    """
    w = max([len("image")] + [len(p.image) for p in result.predictions])
    lw = max([len("top-1 class")] + [len(p.label) for p in result.predictions])
    known = [p for p in result.predictions if p.truth is not None]
    if not known:
        print(f"{'image':<{w}}  {'top-1 class':<{lw}}  {'p':>5}", file=stream)
        for p in result.predictions:
            print(f"{p.image:<{w}}  {p.label:<{lw}}  {p.probability:5.2f}", file=stream)
    else:
        tw = max([len("true class")] + [len(p.truth or "?") for p in result.predictions])
        head = f"{'image':<{w}}  {'true class':<{tw}}  {'top-1 class':<{lw}}  {'p':>5}  correct"
        print(head, file=stream)
        for p in result.predictions:
            ok = {True: "yes", False: "NO", None: "?"}[p.correct]
            print(
                f"{p.image:<{w}}  {p.truth or '?':<{tw}}  {p.label:<{lw}}  {p.probability:5.2f}  {ok}",
                file=stream,
            )
        right = sum(bool(p.correct) for p in known)
        print(f"{right} of {len(known)} correct", file=stream)
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


# ----------------------------------------------------------------------------- argparse


def _method_list() -> str:
    import jaxsal  # importing the package registers every method

    ms = jaxsal.methods()
    if not ms:
        return "  (no methods registered)"
    width = max(len(n) for n in ms)
    lines = []
    for name, m in ms.items():
        mark = "*" if name in DEFAULT_METHODS else " "
        lines.append(f" {mark}{name:<{width}}  {m.title} ({m.paper})")
    vit = ", ".join(n for n in VIT_METHODS if n in ms)
    lines.append(f"\ndefault with --model vit_tiny: {vit}")
    return "\n".join(lines)


def add_subcommands(subparsers) -> None:
    """Add ``demo`` to the ``jaxsal`` command line."""
    p = subparsers.add_parser(
        "demo",
        help="saliency maps of EfficientNet-Lite0 on bundled photos (or a tiny ViT on shapes), saved as a grid PNG",
        description=(
            "Classify photos with a pretrained EfficientNet-Lite0 (offline) and draw every "
            "method's map of the top-1 class: one row per photo, one column per method.\n"
            "With --model vit_tiny: the tiny ViT on 32-px synthetic shapes (true classes known), "
            "with the gradient, attention and AttnLRP methods."
        ),
        epilog="registered methods (* = run by default):\n" + _method_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        choices=_models.MODEL_NAMES,
        default=_models.DEFAULT_MODEL,
        help="efficientnet_lite0: ImageNet photos (default); vit_tiny: the tiny ViT on 32-px synthetic "
        "shapes, one of each class drawn from --seed unless --images is given",
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="PATH",
        help="image files to explain (JPEG, PNG, ...); default: the bundled photos "
        + ", ".join(DEFAULT_IMAGES)
        + f". With --model vit_tiny: integers are indices 0-{_models.SHAPES_POOL - 1} into the synthetic "
        "shapes drawn from --seed, other values image files (resized and cropped to 32 px)",
    )
    p.add_argument(
        "--samples",
        metavar="NAME,NAME",
        help="bundled photos to use, comma-separated (default: all five, unless --images is given); "
        "efficientnet_lite0 only",
    )
    p.add_argument(
        "--methods",
        action="append",
        metavar="M1,M2",
        help="registry names, comma-separated or repeated, or 'all'; default: the starred ones "
        "(with --model vit_tiny: the list at the end)",
    )
    p.add_argument(
        "--out",
        default="jaxsal-demo.png",
        metavar="PNG",
        help="output figure; no extension: .png is added (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=_common.seed,
        default=0,
        help="seed of the SmoothGrad key jax.random.key(SEED), in [0, 2**32), and with --model vit_tiny "
        "of the synthetic shapes (default: 0)",
    )
    p.add_argument(
        "--smoothgrad-n",
        type=_common.positive_int,
        default=DEFAULT_SMOOTHGRAD_N,
        metavar="N",
        help="SmoothGrad noisy samples (default: %(default)s, the paper's)",
    )
    p.add_argument(
        "--noise-level",
        type=float,
        default=DEFAULT_NOISE_LEVEL,
        help="SmoothGrad sigma / (x_max - x_min) (default: %(default)s, the paper's 10-20%%)",
    )
    p.add_argument(
        "--ig-steps",
        type=_common.positive_int,
        default=DEFAULT_IG_STEPS,
        metavar="N",
        help="Integrated Gradients steps (default: %(default)s)",
    )
    p.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="clip displayed maps at this percentile of |map| (default: 99)",
    )
    p.add_argument(
        "--dpi", type=_common.positive_int, default=100, help="resolution of the PNG (default: 100)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _common.add_compile_cache_flag(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    methods = _common.split_list(args.methods, "--methods")
    samples = _common.split_list(args.samples, "--samples")
    if not 0 <= args.percentile <= 100:
        raise ValueError(f"--percentile must be in [0, 100]; got {args.percentile}.")
    _common.enable_compile_cache(disabled=getattr(args, "no_compile_cache", False))
    try:
        run(
            images=args.images,
            samples=samples,
            methods=methods,
            out=args.out,
            seed=args.seed,
            smoothgrad_n=args.smoothgrad_n,
            noise_level=args.noise_level,
            ig_steps=args.ig_steps,
            percentile=args.percentile,
            dpi=args.dpi,
            progress=not args.no_progress,
            model=getattr(args, "model", _models.DEFAULT_MODEL),
        )
    except _common.UsageError as e:
        return _common.usage_error("demo", e)
    return 0

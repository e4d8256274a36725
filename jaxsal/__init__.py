"""jaxsal: pixel attribution for JAX, every method a pure function transform.

Every method is a factory ``method(f, **hyper) -> attr`` with
``attr(x, target=None, *, key=None) -> attributions``. See ``jaxsal._src.contract``.
"""

import importlib as _importlib

from jaxsal._src import config
from jaxsal._src.at_layer import AtLayer, at_layer
from jaxsal._src.cam import (
    cam,
    eigen_cam,
    grad_cam,
    grad_cam_pp,
    guided_grad_cam,
    hires_cam,
    layer_cam,
    score_cam,
    xgrad_cam,
)
from jaxsal._src.contract import Attribution, attribution, check_independent, per_example
from jaxsal._src.dataset import explain_dataset
from jaxsal._src.deeplift import deeplift, deeplift_shap
from jaxsal._src.expected_gradients import expected_gradients
from jaxsal._src.explain import explain
from jaxsal._src.gradients import deconvnet, grad_x_input, guided_backprop, vanilla_grad
from jaxsal._src.interpreter import Matcher, Unit, backward_rule, find_units, interpret
from jaxsal._src.layer import layer_grad_x_activation, layer_integrated_gradients
from jaxsal._src.pair_paths import blur_ig, guided_ig
from jaxsal._src.path import Completeness, completeness_gap, integrated_gradients, quadrature
from jaxsal._src.perturbation import feature_ablation, occlusion, shapley_sampling
from jaxsal._src.probe import Probe, probe, with_tokens
from jaxsal._src.propagation import lrp
from jaxsal._src.registry import Method, get_method, methods
from jaxsal._src.relu_rules import relu_with_rule, with_relu_rule
from jaxsal._src.resize import upsample
from jaxsal._src.rewrites import with_rewrites
from jaxsal._src.rise import rise
from jaxsal._src.segments import segments
from jaxsal._src.smoothing import noise_sigma, smoothgrad, smoothgrad_sq, vargrad
from jaxsal._src.store import Store, open_store
from jaxsal._src.surrogate import kernel_shap, lime
from jaxsal._src.tokens import Tokens
from jaxsal._src.xrai import xrai

# isort: split
# Last: registration order is the registry's (and `--methods all`'s) order.
from jaxsal._src.attention import attention_flow, attention_rollout, gradient_rollout, raw_attention

__version__ = "0.1.0"

# Subpackages load on first use (``jaxsal.metrics``, ``jaxsal.flax``, ...), so that
# ``import jaxsal`` imports no optax, matplotlib, scikit-learn or scikit-image.
_SUBMODULES = ("datasets", "flax", "matchers", "metrics", "models", "rules", "viz")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"jaxsal.{name}")
    raise AttributeError(f"module 'jaxsal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = [
    "Matcher",
    "Unit",
    "backward_rule",
    "find_units",
    "interpret",
    "AtLayer",
    "Attribution",
    "at_layer",
    "attribution",
    "cam",
    "check_independent",
    "layer_grad_x_activation",
    "layer_integrated_gradients",
    "Probe",
    "eigen_cam",
    "flax",
    "grad_cam",
    "grad_cam_pp",
    "guided_grad_cam",
    "hires_cam",
    "layer_cam",
    "probe",
    "score_cam",
    "upsample",
    "xgrad_cam",
    "Completeness",
    "Method",
    "completeness_gap",
    "deconvnet",
    "deeplift",
    "deeplift_shap",
    "lrp",
    "rules",
    "get_method",
    "grad_x_input",
    "guided_backprop",
    "integrated_gradients",
    "methods",
    "metrics",
    "noise_sigma",
    "quadrature",
    "relu_with_rule",
    "smoothgrad",
    "smoothgrad_sq",
    "vanilla_grad",
    "vargrad",
    "occlusion",
    "feature_ablation",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    "rise",
    "expected_gradients",
    "segments",
    "with_relu_rule",
    "blur_ig",
    "guided_ig",
    "xrai",
    "Store",
    "explain_dataset",
    "open_store",
    "config",
    "explain",
    "with_rewrites",
    "Tokens",
    "with_tokens",
    "per_example",
    "raw_attention",
    "attention_rollout",
    "attention_flow",
    "gradient_rollout",
]

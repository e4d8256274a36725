r"""Class activation maps: Grad-CAM and its family, on any layer through a probe.

Notation for every docstring here: the probe's layer outputs feature maps
``A`` of shape ``(B, h, w, K)`` (:math:`A^k_{ij}`, channel ``k`` at position
``(i, j)``), ``y`` is the explained score (:math:`y^c`, the raw score of class
``c = target`` before softmax, or ``target(scores)`` for a callable target) and
``G = dy/dA`` (:math:`g^k_{ij} = \partial y^c / \partial A^k_{ij}`), both from one
forward and one backward pass (:func:`jaxsal._src.probe.layer_gradient`).

The gradient-based variants differ *only* in the channel weights
:math:`w^k_{ij}` (one small function each, ``_*_weights``); the map is always

.. math:: L_{ij} = \mathrm{ReLU}\Big(\sum_k w^k_{ij} A^k_{ij}\Big)

with the ReLU switched by ``relu=`` (default on, as in the papers' figures).
Maps come out raw: shape ``(B, h, w)`` at the layer's resolution, in the input's
dtype, not min-max scaled, not resized. Use :func:`jaxsal.upsample` to bring them to
the input's resolution and the visualisation helpers to scale them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxsal._src import contract
from jaxsal._src.gradients import guided_backprop
from jaxsal._src.numerics import safe_divide
from jaxsal._src.probe import Probe, check_probe, layer_forward, layer_gradient
from jaxsal._src.registry import Method, register
from jaxsal._src.resize import upsample

Array = jax.Array
Weights = Callable[[Array, Array], Array]


def _combine(weights: Array, a: Array, relu: bool, dtype) -> Array:
    cam = jnp.sum(weights * a, axis=-1)
    return (jax.nn.relu(cam) if relu else cam).astype(dtype)


def cam(
    probe: Probe, weights_fn: Weights, *, relu: bool = True, name: str | None = None
) -> contract.Attribution:
    r"""A gradient-weighted class activation map with your own channel weights.

    .. math:: L_{ij} = \mathrm{ReLU}\Big(\sum_k w^k_{ij} A^k_{ij}\Big),
       \qquad w = \texttt{weights\_fn}(A, G)

    The recipe shared by Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM and LayerCAM,
    which differ only in ``weights_fn`` (as pytorch-grad-cam's CAM variants
    override only ``get_cam_weights``). ``A`` is the probed layer's output
    ``(B, h, w, K)`` and ``G = dy/dA`` the gradient of the explained score, both from
    one forward and one backward pass.

    Args:
      probe: where to look, from :func:`jaxsal.flax.probe` or :func:`jaxsal.probe`.
      weights_fn: ``weights_fn(A, G) -> w``, broadcasting against ``A``: ``(B, 1, 1,
        K)`` for one weight per channel, ``(B, h, w, K)`` for one per position.
      relu: apply the final ReLU.
      name: the method's name in messages and metadata.

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.

    Example (Grad-CAM, written as a user would)::

      mean_grad = lambda a, g: g.mean(axis=(1, 2), keepdims=True)
      attr = jaxsal.cam(probe, mean_grad)
    """
    check_probe(probe)
    if not callable(weights_fn):
        raise TypeError(
            f"weights_fn must be a callable (A, G) -> weights broadcasting to A; got {type(weights_fn).__name__}."
        )
    name = name or getattr(weights_fn, "__name__", "cam")

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        _, a, g = layer_gradient(probe, x, target)
        w = weights_fn(a, g)
        try:
            jnp.broadcast_shapes(jnp.shape(w), a.shape)
        except ValueError:
            raise ValueError(
                f"weights_fn returned shape {jnp.shape(w)}, which does not broadcast to the activations "
                f"{a.shape}; return (B, 1, 1, K) or (B, h, w, K)."
            ) from None
        return _combine(w, a, relu, x.dtype)

    return contract.Attribution(attr, probe.scores_fn, output="layer", name=name, hyper={"relu": relu})


# ----------------------------------------------------------------------------- channel weights


def _grad_cam_weights(a: Array, g: Array) -> Array:
    return jnp.mean(g, axis=(1, 2), keepdims=True)


def _grad_cam_pp_weights(a: Array, g: Array) -> Array:
    g2 = g * g
    alpha = safe_divide(g2, 2 * g2 + jnp.sum(a, axis=(1, 2), keepdims=True) * g2 * g)
    return jnp.sum(alpha * jax.nn.relu(g), axis=(1, 2), keepdims=True)


def _hires_cam_weights(a: Array, g: Array) -> Array:
    return g


def _xgrad_cam_weights(a: Array, g: Array) -> Array:
    return jnp.sum(safe_divide(a, jnp.sum(a, axis=(1, 2), keepdims=True)) * g, axis=(1, 2), keepdims=True)


def _layer_cam_weights(a: Array, g: Array) -> Array:
    return jax.nn.relu(g)


# ----------------------------------------------------------------------------- methods


def grad_cam(probe: Probe, *, relu: bool = True) -> contract.Attribution:
    r"""Grad-CAM (Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra 2017,
    "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", https://arxiv.org/abs/1610.02391).

    .. math::

       \alpha^c_k = \frac{1}{Z} \sum_i \sum_j \frac{\partial y^c}{\partial A^k_{ij}},
       \qquad L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    with ``A`` the probed layer's output ``(B, h, w, K)``, :math:`Z = h w`, and
    :math:`y^c` the raw score of class ``c = target`` (before softmax). For a model
    whose head is global-average-pool then dense, this is CAM (Zhou et al. 2016)
    divided by ``h * w``.

    Args:
      probe: where to look, from :func:`jaxsal.flax.probe` or :func:`jaxsal.probe`.
      relu: apply the final ReLU (the paper's definition). ``relu=False`` keeps the
        signed map, Captum's ``LayerGradCam`` default (``relu_attributions=False``).

    Returns:
      ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw (not normalised) and at
      the layer's resolution; ``jaxsal.upsample(m, x.shape[1:3])`` resizes it.

    Example::

      p = jaxsal.flax.probe(model, variables, "backbone/conv3")
      heat = jaxsal.upsample(jax.jit(jaxsal.grad_cam(p))(images), images.shape[1:3])
    """
    return cam(probe, _grad_cam_weights, relu=relu, name="grad_cam")


def grad_cam_pp(probe: Probe, *, relu: bool = True) -> contract.Attribution:
    r"""Grad-CAM++ (Chattopadhyay, Sarkar, Howlader & Balasubramanian 2018,
    "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
    https://arxiv.org/abs/1710.11063), with the paper's closed-form higher-order
    terms for an exponential score :math:`S^c = \exp(y^c)`.

    .. math::

       a^{kc}_{ij} = \frac{(g^k_{ij})^2}
                          {2 (g^k_{ij})^2 + \sum_{ab} A^k_{ab} (g^k_{ij})^3},
       \qquad w^c_k = \sum_{ij} a^{kc}_{ij} \, \mathrm{ReLU}(g^k_{ij}),
       \qquad L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big)

    with :math:`g = \partial y^c / \partial A` the gradient of the raw score, and
    :math:`a = 0` where the denominator is 0. The paper's weights carry a further
    positive factor :math:`\exp(y^c)` per example, which only rescales the map; it
    is dropped here, as in pytorch-grad-cam's ``GradCAMPlusPlus``.

    Returns: ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.
    """
    return cam(probe, _grad_cam_pp_weights, relu=relu, name="grad_cam_pp")


def hires_cam(probe: Probe, *, relu: bool = True) -> contract.Attribution:
    r"""HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for
    faithful explanations of convolutional neural networks",
    https://arxiv.org/abs/2011.08891).

    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k \frac{\partial y^c}{\partial A^k} \odot A^k\Big)

    the gradient multiplies the activations elementwise instead of being averaged
    over space first (Grad-CAM). For a model whose head is a flatten then dense
    layer, the map sums to the class score (minus the bias). ``relu=False`` keeps
    the signed map.

    Returns: ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.
    """
    return cam(probe, _hires_cam_weights, relu=relu, name="hires_cam")


def xgrad_cam(probe: Probe, *, relu: bool = True) -> contract.Attribution:
    r"""XGrad-CAM (Fu, Hu, Dong, Guo, Gao & Li 2020, "Axiom-based Grad-CAM: Towards
    Accurate Visualization and Explanation of CNNs", https://arxiv.org/abs/2008.02312).

    .. math::

       \alpha^c_k = \sum_{ij} \frac{A^k_{ij}}{\sum_{ab} A^k_{ab}}
                    \frac{\partial y^c}{\partial A^k_{ij}},
       \qquad L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    the gradient averaged with the activations as weights; a channel whose
    activations sum to 0 gets :math:`\alpha_k = 0`.

    Returns: ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.
    """
    return cam(probe, _xgrad_cam_weights, relu=relu, name="xgrad_cam")


def layer_cam(probe: Probe, *, relu: bool = True) -> contract.Attribution:
    r"""LayerCAM (Jiang, Zhang, Hou, Cheng & Wei 2021, "LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization", IEEE TIP 30,
    https://doi.org/10.1109/TIP.2021.3089943).

    .. math::

       L^c = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\Big(
             \frac{\partial y^c}{\partial A^k}\Big) \odot A^k\Big)

    each position weighted by its own positive gradient, so it also gives
    fine-grained maps at shallow layers.

    Returns: ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.
    """
    return cam(probe, _layer_cam_weights, relu=relu, name="layer_cam")


def score_cam(probe: Probe, *, batch_size: int = 32, relu: bool = True) -> contract.Attribution:
    r"""Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu 2020, "Score-CAM:
    Score-Weighted Visual Explanations for Convolutional Neural Networks",
    https://arxiv.org/abs/1910.01279). Gradient-free.

    .. math::

       H^k = s\big(\mathrm{Up}(A^k)\big), \qquad
       \alpha^c_k = \mathrm{softmax}\big(f(x \odot H^k)\big)_c, \qquad
       L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    ``Up`` is bilinear upsampling to the input's ``(H, W)`` (:func:`jaxsal.upsample`)
    and ``s`` min-max normalisation of each upsampled map to ``[0, 1]``, per example
    and channel; the mask multiplies every input channel. Choices, as in the
    authors' code: the baseline term :math:`f(x_b)` of the paper's "increase of
    confidence" (Definition 1) is left out (it is the same for every ``k``, so it
    would only shift all weights by one constant), and a channel whose upsampled
    map is constant gets :math:`\alpha_k = 0`. The map is
    returned at the layer's resolution; since bilinear upsampling is linear,
    ``upsample(score_cam(...))`` equals the paper's input-resolution map.
    ``target=None`` is resolved on the unmasked input. A callable target is applied
    to the softmax probabilities ``(B, C)``, not the raw scores.

    Cost: ``K`` extra forward passes per example: ``K * B`` masked images, at most
    ``batch_size`` of them per model call (``jax.lax.map``).

    Args:
      probe: where to look; ``x`` must be images ``(B, H, W, C)``.
      batch_size: at most this many masked images (rows) per model call, ``>= 1``
        (memory knob, like Captum's ``internal_batch_size``); the result does not
        depend on it.
      relu: apply the final ReLU.

    Returns: ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.
    """
    check_probe(probe)
    batch_size = contract.check_positive_int(batch_size, "batch_size")

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        if x.ndim != 4:
            raise ValueError(f"score_cam masks images: x must have shape (B, H, W, C); got shape {x.shape}.")
        scores, a = layer_forward(probe, x)
        target = contract.resolve_target(scores, target)
        b, k = x.shape[0], a.shape[-1]
        # Row r = c * B + e: channel c's mask on example e.
        maps = jnp.moveaxis(a, -1, 0).reshape((k * b,) + a.shape[1:3])
        examples = jnp.tile(jnp.arange(b), k)
        row_target = target
        if not callable(target):
            row_target = jnp.tile(jnp.broadcast_to(jnp.asarray(target), (b,)), k)

        def row_score(row):  # one masked image
            a_r, e, t = row
            up = upsample(a_r[None], x.shape[1:3])
            lo = jnp.min(up, axis=(1, 2), keepdims=True)
            span = jnp.max(up, axis=(1, 2), keepdims=True) - lo
            mask = safe_divide(up - lo, span)
            probs = jax.nn.softmax(probe.scores_fn(x[e][None] * mask[..., None].astype(x.dtype)), axis=-1)
            picked = contract.select(probs, target if callable(target) else t[None])
            return jnp.where(span[:, 0, 0] > 0, picked, 0)[0]

        rows = (maps, examples, row_target if not callable(target) else examples)
        weights = jax.lax.map(row_score, rows, batch_size=batch_size).reshape(k, b)  # (K, B)
        return _combine(weights.T[:, None, None, :], a, relu, x.dtype)

    return contract.Attribution(
        attr,
        probe.scores_fn,
        output="layer",
        name="score_cam",
        hyper={"batch_size": batch_size, "relu": relu},
    )


def eigen_cam(probe: Probe, *, center: bool = True, relu: bool = False) -> contract.Attribution:
    r"""Eigen-CAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using
    Principal Components", https://arxiv.org/abs/2008.00299). Class-agnostic and
    gradient-free: ``target`` is only validated.

    .. math:: L = M v_1, \qquad M = A - \bar{A} \in \mathbb{R}^{hw \times K}

    per example: the activations reshaped to ``hw`` rows of ``K`` channels, centred
    per channel (:math:`\bar{A}` the spatial mean, ``center=True``, as in
    pytorch-grad-cam's ``EigenCAM``; ``center=False`` uses ``M = A``, the paper's
    :math:`L = A V_1`), and :math:`v_1` the first right singular vector of ``M``
    (the first principal component). The projection is reshaped to ``(h, w)``.

    Sign convention: an SVD fixes :math:`v_1` only up to sign; jaxsal picks the sign
    with :math:`\sum_k v_{1,k} \ge 0`. With ``center=True`` this is the sign that
    makes ``L`` correlate non-negatively with the channel sum
    :math:`\sum_k A^k` (the covariance equals :math:`\sigma_1^2 \sum_k v_{1,k}`).

    Args:
      probe: where to look.
      center: subtract each channel's spatial mean before the SVD.
      relu: clip negative values (pytorch-grad-cam does; the paper does not, so the
        default is ``False``).

    Returns: ``attr(x, target=None, *, key=None) -> (B, h, w)``, raw.
    """
    check_probe(probe)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        scores, a = layer_forward(probe, x)
        contract.resolve_target(scores, target)  # class-agnostic: validated only
        b, h, w, k = a.shape
        m = a.reshape(b, h * w, k)
        if center:
            m = m - jnp.mean(m, axis=1, keepdims=True)
        # LAPACK has no half-precision SVD: decompose bfloat16/float16 maps in float32.
        svd_dtype = jnp.float32 if jnp.finfo(m.dtype).bits < 32 else m.dtype
        _, _, vt = jnp.linalg.svd(m.astype(svd_dtype), full_matrices=False)
        vt = vt.astype(m.dtype)
        v = vt[:, 0, :]
        v = v * jnp.where(jnp.sum(v, axis=-1, keepdims=True) >= 0, 1, -1).astype(v.dtype)
        cam = jnp.einsum("bnk,bk->bn", m, v).reshape(b, h, w)
        return (jax.nn.relu(cam) if relu else cam).astype(x.dtype)

    return contract.Attribution(
        attr, probe.scores_fn, output="layer", name="eigen_cam", hyper={"center": center, "relu": relu}
    )


def guided_grad_cam(
    probe: Probe, *, interpolation: str = "bilinear", method: str | None = None
) -> contract.Attribution:
    r"""Guided Grad-CAM (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391).

    .. math:: R^c = \mathrm{GuidedBackprop}^c(x) \odot \mathrm{Up}(L^c_{\text{Grad-CAM}})

    Guided Backprop (:func:`jaxsal.guided_backprop` on ``probe.scores_fn``) times the
    Grad-CAM map (``relu=True``) upsampled to the input's ``(H, W)`` with
    :func:`jaxsal.upsample` (bilinear, half-pixel centres) and broadcast over the
    input's channels. Both are computed in one function: under ``jax.jit`` XLA
    computes their common convolutional forward pass once (on the test CNN, 4
    convolutions instead of the 6 of two separate calls). ``target=None`` is
    resolved once, from the Grad-CAM forward pass, so both explain the same class.
    Captum's ``GuidedGradCam`` is the same product but upsamples with
    ``interpolate_mode="nearest"`` by default.

    Args:
      probe: where Grad-CAM looks; ``x`` must be images ``(B, H, W, C)``.
      interpolation: the upsampling, ``"bilinear"`` (the paper's) or ``"nearest"``
        (Captum's ``interpolate_mode`` default).
      method: deprecated name of ``interpolation`` (jaxsal 0.1.0).

    Returns: ``attr(x, target=None, *, key=None) -> (B, H, W, C)``, raw.
    """
    check_probe(probe)
    if method is not None:
        warnings.warn(
            "guided_grad_cam(method=...) is deprecated: the upsampling mode is now called "
            "`interpolation=` (`method=` means the quadrature rule in integrated_gradients).",
            DeprecationWarning,
            stacklevel=2,
        )
        interpolation = method
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest'; got {interpolation!r}.")
    guided = guided_backprop(probe.scores_fn)

    def attr(x, target=None, *, key=None):
        x = contract.check_input(x)
        if x.ndim != 4:
            raise ValueError(
                f"guided_grad_cam needs images: x must have shape (B, H, W, C); got shape {x.shape}."
            )
        scores, a, g = layer_gradient(probe, x, target)
        target = contract.resolve_target(scores, target)
        heat = _combine(_grad_cam_weights(a, g), a, True, x.dtype)
        return guided(x, target) * upsample(heat, x.shape[1:3], interpolation)[..., None]

    return contract.Attribution(
        attr, probe.scores_fn, name="guided_grad_cam", hyper={"interpolation": interpolation}
    )


# ----------------------------------------------------------------------------- registry

_FAMILY = "cam"


def _register(name, factory, title, paper, *, output="layer", captum=None):
    register(Method(name, factory, "probe", _FAMILY, title, paper, output=output, captum=captum))


_register(
    "grad_cam", grad_cam, "Grad-CAM", "Selvaraju et al. 2017", captum="LayerGradCam(relu_attributions=True)"
)
_register(
    "guided_grad_cam",
    guided_grad_cam,
    "Guided Grad-CAM",
    "Selvaraju et al. 2017",
    output="input",
    captum="GuidedGradCam(interpolate_mode='bilinear')",
)
_register("grad_cam_pp", grad_cam_pp, "Grad-CAM++", "Chattopadhyay et al. 2018")
_register("hires_cam", hires_cam, "HiResCAM", "Draelos & Carin 2020")
_register("xgrad_cam", xgrad_cam, "XGrad-CAM", "Fu et al. 2020")
_register("layer_cam", layer_cam, "LayerCAM", "Jiang et al. 2021")
_register("score_cam", score_cam, "Score-CAM", "Wang et al. 2020")
_register("eigen_cam", eigen_cam, "Eigen-CAM", "Muhammad & Yeasin 2020")

"""jaxsal.metrics: can a user tell whether an explanation is right?

Sanity checks (Adebayo et al., 2018) and evaluation metrics for attribution maps,
as pure functions returning NamedTuples, with explicit PRNG keys:

* similarity of two maps: :func:`spearman`, :func:`ssim`, :func:`hog_similarity`,
  :func:`compare_maps`;
* sanity checks: :func:`model_parameter_randomization` (cascading / independent),
  :func:`data_randomization`;
* faithfulness: :func:`deletion`, :func:`insertion` (Petsiuk et al., 2018),
  :func:`road` with :func:`noisy_linear_imputation` (Rong et al., 2022);
* localisation: :func:`pointing_game`, :func:`relevance_mass_accuracy`,
  :func:`relevance_rank_accuracy` (Arras et al., 2022), e.g. on
  :func:`jaxsal.datasets.synthetic_shapes` with :class:`jaxsal.models.ShapesCNN`;
* robustness: :func:`max_sensitivity` (Yeh et al., 2019);
* concentration: :func:`sparseness` (Gini; Chalasani et al., 2020), :func:`complexity`
  (entropy; Bhatt et al., 2020);
* fidelity: :func:`faithfulness_correlation` (Bhatt et al., 2020), :func:`infidelity`
  (Yeh et al., 2019), :func:`sensitivity_n` (Ancona et al., 2018), :func:`random_logit`
  (Sixt et al., 2020), :func:`smooth_mprt` and :func:`efficient_mprt` (Hedström et al., 2023);
* more localisation: :func:`attribution_localisation` (Kohlbrenner et al., 2020),
  :func:`top_k_intersection`;
* the seed's critiques as tests: :func:`input_invariance` (Kindermans et al., 2019),
  :func:`fragility_attack` (Ghorbani, Abid & Zou, 2019);
* ground truth with suppressors: :func:`tris` (XAI-TRIS, Clark et al., 2024);
* the reliability of the metrics themselves (Tomsett et al., 2020):
  :func:`krippendorff_alpha`, :func:`cronbach_alpha`, :func:`metric_reliability`.

The ``jaxsal sanity`` and ``jaxsal evaluate`` commands are in :mod:`jaxsal.cli`.
The synthetic shapes set, the digits, the small CNN and its trainer, exported here in
0.1, moved to :mod:`jaxsal.datasets` and :mod:`jaxsal.models`; the old names warn.
"""

from jaxsal._src.moved import moved
from jaxsal.metrics._common import reduce_channels
from jaxsal.metrics.concentration import MapStatistic, complexity, sparseness
from jaxsal.metrics.data_randomization import DataRandomizationResult, data_randomization
from jaxsal.metrics.faithfulness import (
    PerturbationCurve,
    deletion,
    gaussian_blur,
    insertion,
    make_baseline,
    noisy_linear_imputation,
    road,
    trapezoid_auc,
)
from jaxsal.metrics.fidelity import (
    EfficientMPRT,
    Infidelity,
    RandomLogit,
    SensitivityN,
    SubsetCorrelation,
    draw_subsets,
    efficient_mprt,
    faithfulness_correlation,
    histogram_entropy,
    infidelity,
    random_logit,
    sensitivity_n,
    smooth_mprt,
)
from jaxsal.metrics.fragility import Fragility, fragility_attack, plot_fragility, softplus_surrogate
from jaxsal.metrics.invariance import Invariance, input_invariance, shifted_model
from jaxsal.metrics.localization import (
    Localization,
    PointingGame,
    attribution_localisation,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from jaxsal.metrics.randomization import (
    RandomizationResult,
    layer_names,
    model_parameter_randomization,
    randomize_layers,
)
from jaxsal.metrics.reliability import (
    MetricReliability,
    cronbach_alpha,
    krippendorff_alpha,
    metric_reliability,
)
from jaxsal.metrics.robustness import Sensitivity, max_sensitivity
from jaxsal.metrics.similarity import (
    MapSimilarity,
    compare_maps,
    hog_features,
    hog_similarity,
    normalize_abs,
    pearson,
    rankdata,
    spearman,
    ssim,
)
from jaxsal.metrics.tris import TRIS, sobel_edges, tris

__all__ = [
    "DataRandomizationResult",
    "Localization",
    "MapSimilarity",
    "PerturbationCurve",
    "PointingGame",
    "RandomizationResult",
    "Sensitivity",
    "compare_maps",
    "data_randomization",
    "deletion",
    "gaussian_blur",
    "hog_features",
    "hog_similarity",
    "insertion",
    "layer_names",
    "make_baseline",
    "max_sensitivity",
    "model_parameter_randomization",
    "noisy_linear_imputation",
    "normalize_abs",
    "pearson",
    "pointing_game",
    "randomize_layers",
    "rankdata",
    "reduce_channels",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "road",
    "spearman",
    "ssim",
    "trapezoid_auc",
    "EfficientMPRT",
    "Infidelity",
    "MapStatistic",
    "MetricReliability",
    "RandomLogit",
    "SensitivityN",
    "SubsetCorrelation",
    "attribution_localisation",
    "complexity",
    "cronbach_alpha",
    "draw_subsets",
    "efficient_mprt",
    "faithfulness_correlation",
    "histogram_entropy",
    "infidelity",
    "krippendorff_alpha",
    "metric_reliability",
    "random_logit",
    "sensitivity_n",
    "smooth_mprt",
    "sparseness",
    "top_k_intersection",
    "Fragility",
    "Invariance",
    "TRIS",
    "fragility_attack",
    "input_invariance",
    "plot_fragility",
    "shifted_model",
    "sobel_edges",
    "softplus_surrogate",
    "tris",
]

# Moved in 0.2; the old names warn with their new home.
__getattr__ = moved(
    __name__,
    {
        "SHAPES": "jaxsal.datasets:SHAPES",
        "ShapesDataset": "jaxsal.datasets:ShapesDataset",
        "synthetic_shapes": "jaxsal.datasets:synthetic_shapes",
        "load_digits": "jaxsal.datasets:load_digits",
        "SmallCNN": "jaxsal.models:ShapesCNN",
        "Trained": "jaxsal.models:Trained",
        "train_classifier": "jaxsal.models:train_classifier",
    },
)

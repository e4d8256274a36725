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
  :func:`relevance_rank_accuracy` (Arras et al., 2022), on :func:`synthetic_shapes`
  with :class:`SmallCNN` and :func:`train_classifier`;
* robustness: :func:`max_sensitivity` (Yeh et al., 2019).

The ``jaxsal sanity`` and ``jaxsal evaluate`` commands are in :mod:`jaxsal.metrics._cli`.
"""

from jaxsal.metrics._common import reduce_channels
from jaxsal.metrics.data_randomization import DataRandomizationResult, data_randomization, load_digits
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
from jaxsal.metrics.localization import (
    Localization,
    PointingGame,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from jaxsal.metrics.randomization import (
    RandomizationResult,
    layer_names,
    model_parameter_randomization,
    randomize_layers,
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
from jaxsal.metrics.synthetic import (
    SHAPES,
    ShapesDataset,
    SmallCNN,
    Trained,
    synthetic_shapes,
    train_classifier,
)

__all__ = [
    "SHAPES",
    "DataRandomizationResult",
    "Localization",
    "MapSimilarity",
    "PerturbationCurve",
    "PointingGame",
    "RandomizationResult",
    "Sensitivity",
    "ShapesDataset",
    "SmallCNN",
    "Trained",
    "compare_maps",
    "data_randomization",
    "deletion",
    "gaussian_blur",
    "hog_features",
    "hog_similarity",
    "insertion",
    "layer_names",
    "load_digits",
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
    "synthetic_shapes",
    "train_classifier",
    "trapezoid_auc",
]

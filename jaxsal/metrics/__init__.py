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
* robustness: :func:`max_sensitivity` (Yeh et al., 2019).

The ``jaxsal sanity`` and ``jaxsal evaluate`` commands are in :mod:`jaxsal.cli`.
The synthetic shapes set, the digits, the small CNN and its trainer, exported here in
0.1, moved to :mod:`jaxsal.datasets` and :mod:`jaxsal.models`; the old names warn.
"""

from jaxsal._src.moved import moved
from jaxsal.metrics._common import reduce_channels
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

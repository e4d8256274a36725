"""Moved in 0.2: the synthetic shapes set is in :mod:`jaxsal.datasets`, its CNN and trainer in :mod:`jaxsal.models`.

The old names still work here and warn with their new home.
"""

from jaxsal._src.moved import moved

__getattr__ = moved(
    __name__,
    {
        "SHAPES": "jaxsal.datasets:SHAPES",
        "ShapesDataset": "jaxsal.datasets:ShapesDataset",
        "synthetic_shapes": "jaxsal.datasets:synthetic_shapes",
        "SmallCNN": "jaxsal.models:ShapesCNN",
        "Trained": "jaxsal.models:Trained",
        "train_classifier": "jaxsal.models:train_classifier",
        "accuracy": "jaxsal.models:accuracy",
    },
)

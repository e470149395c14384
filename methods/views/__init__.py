"""Views: what the data pipeline produces per image, declared as data (see ``base.View``).

One class per view type (``image.py``, ``jigsaw.py``, ...); ``apply_views`` runs any list of
them on a uint8 batch with one random generator.
"""

from sslab.methods.views.base import CIFAR10, Augmented, Normalization, Uint8Pixels, View, apply_views
from sslab.methods.views.image import ImageView
from sslab.methods.views.jigsaw import JigsawView

__all__ = ["Augmented", "CIFAR10", "ImageView", "JigsawView", "Normalization", "Uint8Pixels", "View", "apply_views"]

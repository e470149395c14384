"""Views: what the data pipeline produces per image, declared as data (see ``base.View``).

One class per view type; ``apply_views`` runs any list of them on a uint8 batch with one random
generator. The view types, by the methods that introduced them:

- ``ImageView``: random resized crop, flip, colour jitter, grayscale, blur, solarisation (PIRL's
  v_I, SimCLR and the Siamese family, SupCon);
- ``JigsawView``: a grid of jittered patches shuffled by a permutation (PIRL's v_I^t, Jigsaw);
- ``RotationView``: quarter turns, all four or one (RotNet, PIRL with rotation);
- ``PatchPairView``: the centre patch and one of its 8 neighbours (relative patch location);
- ``ExemplarView``: a seed patch under heavy augmentation (Exemplar-CNN);
- ``CorruptedView``: masking or Gaussian noise, or a masked centre (denoising autoencoder,
  context encoder);
- ``LabView``: the grey image and its Lab targets (colourisation, split-brain autoencoder);
- ``TilesView``: the downsampled image and its 2 x 2 tiles (counting);
- ``Prefixed``: any view with its keys prefixed (multi-task), and ``Augmented``: any view with its
  training augmentation drawn in evaluation too (invariance of the Siamese family).
"""

from sslab.methods.views.base import CIFAR10, Augmented, Normalization, Uint8Pixels, View, apply_views
from sslab.methods.views.corrupted import CorruptedView
from sslab.methods.views.exemplar import ExemplarView
from sslab.methods.views.image import ImageView
from sslab.methods.views.jigsaw import JigsawView
from sslab.methods.views.lab import LabView
from sslab.methods.views.patch_pair import PatchPairView
from sslab.methods.views.prefixed import Prefixed
from sslab.methods.views.rotation import RotationView
from sslab.methods.views.tiles import TilesView

__all__ = ["Augmented", "CIFAR10", "CorruptedView", "ExemplarView", "ImageView", "JigsawView", "LabView",
           "Normalization", "PatchPairView", "Prefixed", "RotationView", "TilesView", "Uint8Pixels", "View",
           "apply_views"]

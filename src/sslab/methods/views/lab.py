"""The Lab view: a cropped image in CIE Lab, for colourisation (Zhang, Isola & Efros, ECCV 2016) and
the split-brain autoencoder (Zhang, Isola & Efros, CVPR 2017).

Colour conversion is sRGB (D65) → CIE XYZ → CIE Lab with the constants of scikit-image's
``rgb2lab``/``lab2rgb``, which the official colourisation code (richzhang/colorization) uses:
the sRGB transfer curve (threshold 0.04045, exponent 2.4), the sRGB→XYZ matrix of
``skimage.color.xyz_from_rgb``, the D65 2° white (0.95047, 1, 1.08883) and Lab's f(t) = t^(1/3)
above 0.008856, 7.787 t + 16/116 below. L lies in [0, 100], a and b in about [-86, 98] and
[-108, 95] over the sRGB gamut.

**What the network sees.** The backbone is a 3-channel RGB network and the platform evaluates
the frozen backbone on ordinary (normalised) RGB images. So the network input is not the raw L
channel but the image *rendered back to sRGB with its colour removed*: Lab (L, 0, 0) → sRGB, the
achromatic grey of the same lightness in all three channels, normalised with the dataset's
statistics like any image (``stats.apply``, so it travels as uint8 like other pixels). This keeps
exactly the information Zhang's network gets (L alone) in the pixel space the evaluation uses.
The remaining shift is the one the method is built on: trained on grey images, the backbone is
probed on colour ones (the invariance pair of both methods measures exactly that distance).
For the split-brain's ab → L task the view can also render the *chroma image*: Lab
(``chroma_lightness``, a, b) → sRGB (clipped to the gamut), i.e. the colours at one constant
lightness, L removed.

Outputs (``name`` = "lab"):

- ``lab``: float32 (or uint8, see ``Uint8Pixels``) N x 3 x S x S, the grey rendering, normalised;
- ``lab_ab``: float32 N x 2 x S x S, the target a and b (Lab units);
- ``lab_l``: float32 N x 1 x S x S, the target L in [0, 100];
- ``lab_chroma`` (``chroma=True``): like ``lab``, the chroma image.

Training draws a square random crop (area fraction in ``scale``) resized to ``size`` and a
horizontal flip, through ``ImageView`` (one ``grid_sample``); Zhang crops 176 x 176 from
256-pixel ImageNet images (about half the area, no resize) and flips. Evaluation is the whole
image resized to ``size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.image import ImageView

#: sRGB (linear) → XYZ, scikit-image's ``xyz_from_rgb`` (sRGB primaries, D65).
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
#: the D65 reference white (2° observer), scikit-image's.
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: the identity normalisation: ``ImageView`` then returns plain [0, 1] pixels.
_PIXELS = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE Lab of sRGB values in [0, 1], channel axis -3 (N x 3 x H x W or 3 x ...), float64."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.einsum("ij,...jhw->...ihw", XYZ_FROM_RGB, _at_least_chw(linear))
    t = xyz / WHITE_D65.reshape(3, 1, 1)
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)
    fx, fy, fz = f[..., 0, :, :], f[..., 1, :, :], f[..., 2, :, :]
    lab = np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-3)
    return lab.reshape(rgb.shape)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (out-of-gamut colours clipped) of CIE Lab values, channel axis -3, float64."""
    lab = np.asarray(lab, dtype=np.float64)
    chw = _at_least_chw(lab)
    fy = (chw[..., 0, :, :] + 16.0) / 116.0
    f = np.stack([fy + chw[..., 1, :, :] / 500.0, fy, np.maximum(fy - chw[..., 2, :, :] / 200.0, 0.0)], axis=-3)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * WHITE_D65.reshape(3, 1, 1)
    linear = np.einsum("ij,...jhw->...ihw", RGB_FROM_XYZ, xyz)
    rgb = np.where(linear > 0.0031308, 1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.clip(rgb, 0.0, 1.0).reshape(lab.shape)


def _at_least_chw(x: np.ndarray) -> np.ndarray:
    """``x`` with two trailing spatial axes (a bare 3-vector becomes 3 x 1 x 1)."""
    return x.reshape(*x.shape, 1, 1) if x.ndim == 1 else x


@dataclass(frozen=True)
class LabView:
    """A randomly cropped and flipped image as its grey rendering (the network input) and its Lab
    targets; see the module docstring for the keys."""

    name: str = "lab"
    size: int = 32
    scale: tuple[float, float] = (0.5, 1.0)  # area fraction of the square crop (Zhang: 176² of 256²)
    flip: bool = True
    chroma: bool = False  # also render the chroma image (split-brain's ab → L input)
    chroma_lightness: float = 50.0  # the constant L at which the chroma image is rendered

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.size) and self.size >= 1, "size", self.size, "an integer >= 1")
        check(is_range(self.scale) and 0 < self.scale[0] <= self.scale[1] <= 1, "scale", self.scale,
              "(lo, hi) with 0 < lo <= hi <= 1")
        check(isinstance(self.flip, bool), "flip", self.flip, "true or false")
        check(isinstance(self.chroma, bool), "chroma", self.chroma, "true or false")
        check(is_number(self.chroma_lightness) and 0 < self.chroma_lightness < 100, "chroma_lightness",
              self.chroma_lightness, "a lightness in (0, 100)")

    def keys(self) -> tuple[str, ...]:
        return (self.name, self.name + "_ab", self.name + "_l") + ((self.name + "_chroma",) if self.chroma else ())

    def empty(self, n: int) -> dict[str, np.ndarray]:
        s = self.size
        out = {self.name: np.zeros((n, 3, s, s), np.float32), self.name + "_ab": np.zeros((n, 2, s, s), np.float32),
               self.name + "_l": np.zeros((n, 1, s, s), np.float32)}
        if self.chroma:
            out[self.name + "_chroma"] = np.zeros((n, 3, s, s), np.float32)
        return out

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        crop = ImageView(name=self.name, size=self.size, scale=self.scale, ratio=(1.0, 1.0), flip=self.flip,
                         jitter=0.0, grayscale=0.0)
        rgb = crop.apply(images, rng, train=train, stats=_PIXELS)[self.name]  # [0, 1], not normalised
        lab = srgb_to_lab(rgb)
        grey = lab.copy()
        grey[:, 1:] = 0.0
        out = {self.name: stats.apply(lab_to_srgb(grey).astype(np.float32)),
               self.name + "_ab": np.ascontiguousarray(lab[:, 1:], dtype=np.float32),
               self.name + "_l": np.ascontiguousarray(lab[:, :1], dtype=np.float32)}
        if self.chroma:
            chroma = lab.copy()
            chroma[:, 0] = self.chroma_lightness
            out[self.name + "_chroma"] = stats.apply(lab_to_srgb(chroma).astype(np.float32))
        return out

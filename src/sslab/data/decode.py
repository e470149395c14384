"""Decoding images into one uint8 array per split.

JPEG goes through torchvision's libjpeg-turbo decoder, which gives the same pixels as Pillow at
~2.5x the speed, anything else through Pillow.

Every image becomes three-channel RGB: grayscale (8- or 16-bit), palette, grey+alpha, RGBA and
CMYK images are converted (alpha dropped; 16-bit grey scaled to 8 bits, not clipped). All images
of a split must have one size, unless ``image_size`` is given: then every image is resized at
decode time (shorter side to ``image_size``, bilinear with Pillow's antialiasing) and
centre-cropped to a square, as torchvision's ``Resize(s)`` + ``CenterCrop(s)``: the aspect ratio
is kept (no squashing) at the price of the longer side's borders. Without ``image_size``, images
of different sizes raise one ``ValueError`` naming two of them and the fix (pass an image size).
Unreadable images are skipped and listed in ``_Decoded.skipped`` (``sslab.data.cache`` counts
them, warns and refuses a split with no readable image).

The images' shorter side as stored, before resizing, is recorded at decode time
(``_Decoded.sides``; its median becomes ``Split.source_side`` and its smallest
``Split.source_side_min``, kept in the cache metadata).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class _Decoded:
    images: np.ndarray
    labels: np.ndarray | None  # None: data without labels (no classes)
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    sides: np.ndarray | None = None  # int N: each decoded image's shorter side before resizing

    def side_stats(self) -> tuple[int | None, int | None]:
        """(median, smallest) shorter side before resizing; the median is the lower middle value
        (an actual image's side). (None, None) when unknown or empty."""
        if self.sides is None or len(self.sides) == 0:
            return None, None
        ordered = np.sort(np.asarray(self.sides, dtype=np.int64))
        return int(ordered[(len(ordered) - 1) // 2]), int(ordered[0])


def _decode_items(items: list[tuple[str, bytes | Path | None, int | None]], classes: list[str],
                  image_size: int | None, where: str) -> _Decoded:
    """Decode (name, bytes-or-path, label) items into one uint8 array; unreadable ones are listed.
    With no ``classes`` the data has no labels: the items' labels are None, and so are the result's.

    Sequential on purpose: a CIFAR image decodes in ~50 µs, and on 2 cores a process pool (fork,
    spawn or forkserver) or threads measured slower than one loop over libjpeg-turbo.
    """
    jpeg = _jpeg_decoder()
    images: np.ndarray | None = None
    labels = np.empty(len(items), dtype=np.int64)
    sides = np.empty(len(items), dtype=np.int64)
    skipped: list[str] = []
    first_name = ""
    count = 0
    for name, payload, label in items:
        try:
            array = _decode_one(payload, jpeg)
        except Exception:
            skipped.append(name)
            continue
        sides[count] = min(array.shape[0], array.shape[1])
        if image_size is not None and array.shape[:2] != (image_size, image_size):
            array = _fit(array, image_size)
        if images is None:
            images = np.empty((len(items), *array.shape), dtype=np.uint8)
            first_name = name
        elif array.shape != images.shape[1:]:
            raise ValueError(
                f"images in {where} differ in size: {name} is {array.shape[1]}x{array.shape[0]} but {first_name} is "
                f"{images.shape[2]}x{images.shape[1]}; pass an image size (load_split(..., image_size=<side>), "
                "a profile's image_size) to resize and centre-crop every image to one square size")
        images[count] = array
        labels[count] = -1 if label is None else label
        count += 1
    labelled = bool(classes)
    if images is None:
        return _Decoded(np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.int64) if labelled else None, classes,
                        skipped, np.zeros(0, np.int64))
    return _Decoded(images[:count], labels[:count] if labelled else None, classes, skipped, sides[:count])


def _jpeg_decoder() -> Callable[[bytes], np.ndarray] | None:
    """torchvision's libjpeg-turbo JPEG decoder as bytes -> H x W x 3, or None without torchvision."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(data: bytes) -> np.ndarray:
        tensor = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return tensor.permute(1, 2, 0).numpy()

    return decode


def _decode_one(payload: bytes | Path | None, jpeg: Callable[[bytes], np.ndarray] | None) -> np.ndarray:
    from PIL import Image

    if payload is None:
        raise ValueError("no image data")
    data = payload.read_bytes() if isinstance(payload, Path) else bytes(payload)
    if jpeg is not None and data[:3] == b"\xff\xd8\xff":
        try:
            return jpeg(data)
        except Exception:
            pass  # e.g. CMYK or damaged: let Pillow try and decide
    with Image.open(io.BytesIO(data)) as image:
        array = _to_rgb(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ValueError(f"decoded to shape {array.shape}")
    return array


def _to_rgb(image: Any) -> np.ndarray:
    """A Pillow image as uint8 H x W x 3. Pillow's own conversion covers 8-bit grey, palette,
    grey+alpha, RGBA (alpha dropped) and CMYK; 16- and 32-bit integer grey it would clip at 255
    (a mostly white picture), so those are scaled from 0..65535 to 0..255 here instead."""
    if image.mode.startswith("I"):  # "I;16", "I;16B", ... (16-bit PNG/TIFF grey) and "I" (32-bit int)
        grey = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or grey.max(initial=0) > 255:
            grey = np.clip(grey, 0, 65535) / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _fit(array: np.ndarray, side: int) -> np.ndarray:
    """Resize so the shorter side is ``side`` (bilinear, Pillow, antialiased when shrinking) and
    centre-crop to side x side: torchvision's ``Resize(side)`` + ``CenterCrop(side)``. The aspect
    ratio is kept rather than squashed; a non-square image loses the ends of its longer side."""
    from PIL import Image

    h, w = array.shape[:2]
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    image = Image.fromarray(array).resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)))

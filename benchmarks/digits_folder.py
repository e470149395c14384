"""A second small real dataset for the ``local`` profile: scikit-learn's handwritten digits
(1,797 8 x 8 grey images of 10 classes, shipped inside the package, so no download) written as
an ImageFolder of 28 x 28 grey PNGs, split 80/20 by class (1,437 train / 360 test, seed 0).

The ``local`` profile was chosen on CIFAR-10; this checks that its settings are not fitted to
CIFAR's 5,000-image subset (issue 14: "sslab will be run on datasets nobody tuned it for"):

    pip install scikit-learn
    python benchmarks/digits_folder.py /tmp/digits
    python studies/pirl_lambda.py --dataset imagefolder:/tmp/digits --seeds 3

The study uses the whole folder (it is smaller than the profile's subsets, and says so),
resizes it to the profile's 32 px and converts it to RGB, as any ImageFolder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 28  # the size of MNIST-like data, as a user's folder of small grey images would be


def write_digits(folder: Path, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[int, int]:
    """``folder/{train,test}/<digit>/<index>.png``; returns the (train, test) image counts."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("this script reads scikit-learn's bundled digits: pip install scikit-learn") from None
    digits = load_digits()
    order = np.arange(len(digits.target))
    train, test = train_test_split(order, test_size=test_fraction, stratify=digits.target, random_state=seed)
    for split, indices in (("train", train), ("test", test)):
        for i in indices:
            grey = (digits.images[i] * (255 / 16)).round().astype(np.uint8)  # 0..16 ink levels
            path = folder / split / str(digits.target[i]) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grey).resize((SIDE, SIDE), Image.BILINEAR).save(path)
    return len(train), len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the ImageFolder (created)")
    args = parser.parse_args()
    n_train, n_test = write_digits(args.folder)
    print(f"{n_train} train and {n_test} test images in {args.folder}; "
          f"python studies/pirl_lambda.py --dataset imagefolder:{args.folder}")


if __name__ == "__main__":
    main()

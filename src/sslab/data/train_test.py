"""The two splits a run trains and evaluates on (``load_train_test``), checked before anything
is trained, and the arrays the evaluation reads (``evaluation_arrays``).

``load_train_test`` needs an ImageFolder laid out as ``<path>/train/<class>/<image>`` and
``<path>/test/<class>/<image>`` and refuses any other layout with one line saying so. It notes,
in one line, a split whose images are upscaled 2x or more to ``image_size`` (their shorter side
before resizing, ``Split.source_side``): a folder of 1 x 1 px images blown up to 32 px gives
every method the same meaningless (perfect) kNN score.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslab.data.catalog import _resolve_path, load_split
from sslab.data.locations import data_dir
from sslab.data.sources import IMAGE_SUFFIXES, _class_dirs
from sslab.data.split import Split, take_subset


def load_train_test(dataset: str, *, image_size: int | None, train_subset: int | None,
                    test_subset: int | None, root: Path | None = None,
                    note: Callable[[str], None] = print) -> tuple[Split, Split]:
    """The train and test splits a run trains and evaluates on: each capped at its subset
    (class-balanced, seed 0), or whole when the dataset is smaller than the subset (the profiles'
    sizes are CIFAR's; a small ImageFolder is used whole, and ``note`` says so, as it says how
    many unreadable images were skipped).

    ``note`` also gets one line when a split's images are upscaled by 2x or more to
    ``image_size`` (their median shorter side before resizing, ``Split.source_side``, is at most
    half of it): such images carry little for the features to learn from.

    Raises ``ValueError`` when an ImageFolder is not laid out as ``<path>/train/<class>/<image>``
    and ``<path>/test/<class>/<image>``, when a split is empty or the dataset has fewer than 2
    classes (kNN and the linear probes need 2), before anything is trained.
    """
    if isinstance(dataset, str) and dataset.startswith("imagefolder:"):
        _check_train_test_layout(dataset.removeprefix("imagefolder:"), root)
    splits, notes = [], []  # the notes are said once the data is known to be usable: a refusal is one line
    for name, subset in (("train", train_subset), ("test", test_subset)):
        whole = load_split(dataset, name, root=root, seed=0, image_size=image_size)
        if subset is not None and subset > len(whole.labels):
            notes.append(f"the {name} split of {dataset} has {len(whole.labels)} images (fewer than the profile's "
                         f"{subset}): using all of them")
        split = whole if subset is None or subset >= len(whole.labels) else take_subset(
            whole, subset, seed=0, what=f"{dataset} {name}")
        if split.skipped:
            notes.append(f"{split.skipped} unreadable image(s) skipped in the {name} split")
        if len(split.labels) == 0:
            raise ValueError(f"the {name} split of {dataset!r} is empty; check the dataset at {root or data_dir()}")
        splits.append(split)
    train, test = splits
    if train.num_classes < 2:
        named = f" (found {', '.join(map(repr, train.classes))})" if train.classes else ""
        raise ValueError(f"{dataset!r} has {train.num_classes} class(es); kNN and linear probes need at least "
                         f"2{named}: give the dataset at least two classes (an ImageFolder needs one sub-folder per "
                         "class, e.g. <path>/train/<class>/<image> and <path>/test/<class>/<image>)")
    notes.append(_upscaling_note(dataset, {"train": train, "test": test}, image_size))
    for line in filter(None, notes):
        note(line)
    return train, test


#: ``load_train_test`` notes images whose shorter side is upscaled by this factor or more.
UPSCALE_NOTE_FACTOR = 2.0


def _upscaling_note(dataset: str, splits: dict[str, Split], image_size: int | None) -> str | None:
    """One line when some splits' images are upscaled ``UPSCALE_NOTE_FACTOR``x or more to ``image_size``."""
    if image_size is None:
        return None
    small = {name: s for name, s in splits.items()
             if s.source_side is not None and s.source_side > 0 and image_size / s.source_side >= UPSCALE_NOTE_FACTOR}
    if not small:
        return None
    parts = []
    for name, s in small.items():
        assert s.source_side is not None
        smallest = f", smallest {s.source_side_min} px" if s.source_side_min not in (None, s.source_side) else ""
        parts.append(f"the {name} split's images are {s.source_side}x{s.source_side} px (median shorter side"
                     f"{smallest}), upscaled {image_size / s.source_side:.3g}x")
    return (f"{dataset}: {'; '.join(parts)} to the profile's image_size of {image_size} px: features of such "
            f"images say little (kNN and linear-probe scores on them are no measure of a method); pass images of "
            f"at least {image_size} px")


def _check_train_test_layout(spec: str, root: Path | None) -> None:
    """An ImageFolder given to ``load_train_test`` must hold ``train/`` and ``test/``, each with one
    sub-folder per class: refuse anything else with one line saying what is expected and what is there."""
    path = _resolve_path(spec, root, "imagefolder")
    if not path.is_dir():
        return  # load_split says it is a file
    has_train, has_test = (path / "train").is_dir(), (path / "test").is_dir()
    if has_train and has_test:
        return
    expected = (f"imagefolder:{spec} needs a train and a test split, laid out as {path}/train/<class>/<image> and "
                f"{path}/test/<class>/<image> (one sub-folder per class in each)")
    folders = _class_dirs(path)
    if has_train:
        others = [f for f in folders if f != "train"]
        found = "train/ but no test/" + (f" (other sub-folders: {_some(others)})" if others else "")
        raise ValueError(f"{expected}; found {found} under {path}: put the held-out images in {path}/test/<class>/"
                         + (f" (or rename the folder that holds them, e.g. {others[0]}/, to test/)" if others else ""))
    if has_test:
        raise ValueError(f"{expected}; found test/ but no train/ under {path}: put the training images in "
                         f"{path}/train/<class>/")
    loose = [f.name for f in path.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES]
    if folders:
        found = (f"class folders {_some(folders)} directly under {path}: move them into {path}/train/ and hold out "
                 f"some images of every class in {path}/test/<class>/")
    elif loose:
        found = (f"{len(loose)} image file(s) (e.g. {sorted(loose)[0]}) directly under {path} and no sub-folder: put "
                 f"each class's images in {path}/train/<class>/ and {path}/test/<class>/")
    else:
        found = f"no sub-folder and no image in {path}: check the path"
    raise ValueError(f"{expected}; found {found}")


def _some(names: list[str], shown: int = 4) -> str:
    """``a, b, c, d, ... (12 in all)``: the first few of a list, for one-line messages."""
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", ... ({len(names)} in all)"


def evaluation_arrays(train: Split, test: Split) -> dict[str, Any]:
    """What ``sslab.evaluation.evaluate`` reads: both splits' images and labels, and the train
    split's statistics, with which both are normalised."""
    return {"train_images": train.images, "train_labels": train.labels, "test_images": test.images,
            "test_labels": test.labels, "stats": train.normalization}

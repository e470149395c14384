"""The two splits a run trains and evaluates on (``load_train_test``), checked before anything
is trained, the labelled dataset a run may evaluate on instead (``load_evaluation``), and the
arrays the evaluation reads (``evaluation_arrays``).

``load_train_test`` needs an ImageFolder laid out as ``<path>/train/<class>/<image>`` and
``<path>/test/<class>/<image>``, or for data without labels ``<path>/train/<image>`` and
``<path>/test/<image>``, and refuses any other layout with one line saying so. ``labelled=False``
reads a labelled dataset blind (``Split.without_labels``): what a study that chooses without
labels trains on, so that no label of its data is read. It notes,
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
                    note: Callable[[str], None] = print, labelled: bool = True) -> tuple[Split, Split]:
    """The train and test splits a run trains and evaluates on: each capped at its subset
    (class-balanced, seed 0; drawn uniformly with seed 0 for data without labels), or whole when the dataset is smaller than the subset (the profiles'
    sizes are CIFAR's; a small ImageFolder is used whole, and ``note`` says so, as it says how
    many unreadable images were skipped).

    ``note`` also gets one line when a split's images are upscaled by 2x or more to
    ``image_size`` (their median shorter side before resizing, ``Split.source_side``, is at most
    half of it): such images carry little for the features to learn from.

    ``labelled=False``: every split without its labels and class names (``Split.without_labels``,
    which reads neither), before any subset is drawn.

    Raises ``ValueError`` when an ImageFolder is not laid out as ``<path>/train/<class>/<image>``
    and ``<path>/test/<class>/<image>`` (or both without classes), when a split is empty, or a
    labelled dataset has fewer than 2 classes (kNN and the linear probes need 2), before anything
    is trained. Data without labels has none to check.
    """
    if isinstance(dataset, str) and dataset.startswith("imagefolder:"):
        _check_train_test_layout(dataset.removeprefix("imagefolder:"), root)
    splits, notes = [], []  # the notes are said once the data is known to be usable: a refusal is one line
    for name, subset in (("train", train_subset), ("test", test_subset)):
        whole = load_split(dataset, name, root=root, seed=0, image_size=image_size)
        if not labelled:
            whole = whole.without_labels()
        if subset is not None and subset > len(whole):
            notes.append(f"the {name} split of {dataset} has {len(whole)} images (fewer than the profile's "
                         f"{subset}): using all of them")
        split = whole if subset is None or subset >= len(whole) else take_subset(
            whole, subset, seed=0, what=f"{dataset} {name}")
        if split.skipped:
            notes.append(f"{split.skipped} unreadable image(s) skipped in the {name} split")
        if len(split) == 0:
            raise ValueError(f"the {name} split of {dataset!r} is empty; check the dataset at {root or data_dir()}")
        splits.append(split)
    train, test = splits
    if train.labelled != test.labelled:
        with_labels = "train" if train.labelled else "test"
        raise ValueError(f"the {with_labels} split of {dataset!r} has labels and the other has none: give both splits "
                         "labels (one sub-folder per class) or neither (the images directly in each split's folder)")
    if train.labelled and train.num_classes < 2:
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
                f"{path}/test/<class>/<image> (one sub-folder per class in each; for images without labels, "
                f"{path}/train/<image> and {path}/test/<image>)")
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
                 f"each class's images in {path}/train/<class>/ and {path}/test/<class>/, or, without labels, "
                 f"move them into {path}/train/ and hold out some in {path}/test/")
    else:
        found = f"no sub-folder and no image in {path}: check the path"
    raise ValueError(f"{expected}; found {found}")


def _some(names: list[str], shown: int = 4) -> str:
    """``a, b, c, d, ... (12 in all)``: the first few of a list, for one-line messages."""
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", ... ({len(names)} in all)"


def load_evaluation(dataset: str, *, image_size: int | None, train_subset: int | None, test_subset: int | None,
                    root: Path | None = None, note: Callable[[str], None] = print) -> tuple[Split, Split]:
    """The labelled dataset a run evaluates on instead of its training data (``--eval-dataset``):
    its train split is the kNN bank and the probes' training set, its test split the queries;
    ``load_train_test``'s subsets and checks, and data without labels refused."""
    train, test = load_train_test(dataset, image_size=image_size, train_subset=train_subset,
                                  test_subset=test_subset, root=root, note=note)
    if not train.labelled:
        raise ValueError(f"--eval-dataset {dataset} has no labels; the evaluation dataset is what kNN and the linear "
                         "probes read: give a labelled one (one sub-folder per class, or a 'label' column)")
    return train, test


def evaluation_arrays(train: Split, test: Split, evaluation: tuple[Split, Split] | None = None) -> dict[str, Any]:
    """What ``sslab.evaluation.evaluate`` reads: both splits' images and labels (None for data
    without labels, or read blind), the train split's statistics, with which every image is
    normalised, and ``eval_dataset``: None, or the images and labels of the labelled dataset the
    run evaluates on instead (``load_evaluation``), under the same four names."""
    labelled = None
    if evaluation is not None:
        labelled = {"train_images": evaluation[0].images, "train_labels": evaluation[0].labels,
                    "test_images": evaluation[1].images, "test_labels": evaluation[1].labels}
    return {"train_images": train.images, "train_labels": train.labels, "test_images": test.images,
            "test_labels": test.labels, "stats": train.normalization, "eval_dataset": labelled}

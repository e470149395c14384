"""A study that chooses without labels: what it refuses before any work, and what a run says once
about the labels it reads."""

from __future__ import annotations

import pytest
from optuna.distributions import FloatDistribution

from small import SMALL
from sslab.plan.spec import data_identity
from sslab.plan.study import Search, Study

IDENTITY = {"num_images": 10, "num_classes": 0, "classes": [], "classes_sha1": "x", "image_shape": [32, 32],
            "content_sha256": "abc"}


def test_an_embedding_metric_needs_every_method_to_have_an_embedding():
    Study(name="e", methods={"simclr": {}, "pirl": {}}, metric="embedding/lidar").validate(SMALL)
    with pytest.raises(ValueError, match=r"chooses by embedding/rankme, but rotation has no embedding .* choose by "
                                         "rankme"):
        Study(name="e", methods={"simclr": {}, "rotation": {}}, metric="embedding/rankme").validate(SMALL)


def test_a_study_without_labels_refuses_a_method_that_trains_on_them():
    Study(name="s", method="supervised").validate(SMALL)  # kNN reads labels: it may
    with pytest.raises(ValueError, match="chooses by rankme without reading a label, but supervised trains on labels"):
        Study(name="s", method="supervised", metric="rankme").validate(SMALL)
    with pytest.raises(ValueError, match="but multitask trains on labels"):
        Study(name="s", method="multitask", metric="lidar", base={"tasks": ("rotation", "supervised")}).validate(SMALL)
    Study(name="s", method="multitask", metric="lidar", base={"tasks": ("rotation", "jigsaw")}).validate(SMALL)


def test_a_run_says_once_which_labels_it_reads_and_refuses_what_it_cannot_do():
    knn, free = Study(name="k", method="simclr"), Study(name="f", method="simclr", metric="uniformity")
    unlabelled = SMALL.with_overrides(dataset="imagefolder:/x")
    assert knn.labels_note(SMALL, labelled=True, searching=False) is None  # the usual case: nothing to say
    assert "no label of cifar10 is read; kNN and the linear probes are skipped" in free.labels_note(
        SMALL, labelled=True, searching=True)
    evaluated = unlabelled.with_overrides(eval_dataset="cifar10")
    assert "kNN and the linear probes read cifar10's labels" in free.labels_note(evaluated, False, True)
    assert "imagefolder:/x has no labels: kNN and the linear probes read cifar10's" in knn.labels_note(
        evaluated, False, True)
    assert "the summary ranks by rankme" in knn.labels_note(unlabelled, labelled=False, searching=False)
    search = Study(name="k", method="simclr", search=Search(space={"temperature": FloatDistribution(0.1, 1.0)}))
    with pytest.raises(ValueError, match=r"has no labels, and study 'k' searches on knn_top1.*--eval-dataset NAME"):
        search.labels_note(unlabelled, labelled=False, searching=True)
    with pytest.raises(ValueError, match="has no labels, and supcon trains on labels"):
        Study(name="c", method="supcon").labels_note(unlabelled, labelled=False, searching=False)


def test_the_evaluation_dataset_and_its_splits_are_part_of_the_data_identity():
    plain = data_identity(SMALL, IDENTITY, IDENTITY)
    assert "eval_dataset" not in plain and not [k for k in plain if k.startswith("eval_")]
    other = {**IDENTITY, "content_sha256": "def", "num_classes": 2}
    evaluated = data_identity(SMALL.with_overrides(eval_dataset="cifar10"), IDENTITY, IDENTITY, (other, IDENTITY))
    assert evaluated["eval_dataset"] == "cifar10" and evaluated["eval_train_content_sha256"] == "def"
    assert evaluated["eval_test_content_sha256"] == "abc" and evaluated["eval_train_num_classes"] == 2
    with pytest.raises(ValueError, match="the identity of its splits is needed"):
        data_identity(SMALL.with_overrides(eval_dataset="cifar10"), IDENTITY, IDENTITY)

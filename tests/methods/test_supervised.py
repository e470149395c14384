"""Supervised (cross-entropy baseline): its loss and accuracy written out by hand, its view,
classifier, optimiser and configuration checks."""

from __future__ import annotations

import math

import pytest
import torch
from host_syncs import count_host_syncs
from method_testing import CTX, build_method, view_batch

from sslab.methods.base import DataInfo
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.supervised import Supervised, SupervisedConfig
from sslab.methods.views import Augmented, ImageView

CLASSES = 5


def _supervised(**config) -> Supervised:
    return build_method(Supervised, arch="resnet18", data=DataInfo(num_samples=100, num_classes=CLASSES, image_size=32),
                        **config)


def test_loss_is_cross_entropy_written_out_and_accuracy_counts_the_argmax_hits():
    method = _supervised()
    batch = view_batch(Supervised.views(method.config, 32), 8)
    with torch.no_grad():  # train mode, as the step: BatchNorm on this batch's statistics
        logits = method.classifier(method.backbone(batch["image"])).double()
    predicted = logits.argmax(dim=1)
    # the first half labelled with the predicted class, the second half with another one
    labels = torch.cat([predicted[:4], (predicted[4:] + 1) % CLASSES])
    out = method.training_step(batch | {"label": labels}, CTX)
    loss, metrics = out.loss, out.metrics
    by_hand = [-logits[i, labels[i]].item() + math.log(sum(math.exp(v) for v in logits[i].tolist()))
               for i in range(len(labels))]
    assert loss.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    assert set(metrics) == {"loss", "accuracy"}
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad for v in metrics.values())
    assert metrics["accuracy"].item() == 0.5 and metrics["loss"].item() == pytest.approx(loss.item())


def test_a_training_step_needs_labels_and_asks_the_device_nothing():
    method = _supervised()
    batch = view_batch(Supervised.views(method.config, 32), 8)
    with pytest.raises(KeyError, match="label"):
        method.training_step(batch, CTX)
    with count_host_syncs() as syncs:
        loss = method.training_step(batch | {"label": torch.arange(8) % CLASSES}, CTX).loss
        loss.backward()
    assert sum(syncs.values()) == 0, dict(syncs)
    assert all(p.grad is not None for p in method.parameters())


def test_one_view_with_supcons_augmentation_or_main_ce_crop_and_flip():
    (view,) = Supervised.views(SupervisedConfig(), 32)
    assert view.keys() == ("image",)
    assert (view.scale, view.flip, view.jitter, view.jitter_prob, view.grayscale) == (
        (0.2, 1.0), True, (0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
    (plain,) = Supervised.views(SupervisedConfig(color_augmentation=False), 32)
    assert (plain.scale, plain.flip, plain.jitter_prob, plain.grayscale) == ((0.2, 1.0), True, 0.0, 0.0)


def test_invariance_compares_normalised_backbone_features_of_the_image_and_one_augmentation():
    method = _supervised().eval()
    views = Supervised.invariance_views(method.config, 32)
    assert isinstance(views[0], ImageView) and isinstance(views[1], Augmented)
    a, b = method.invariance_pair(view_batch(views, 8))
    assert a.shape == (8, method.backbone.out_dim)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    assert (a - b).norm(dim=1).min() > 0


def test_classifier_optimiser_and_configuration():
    method = _supervised()
    assert (method.classifier.in_features, method.classifier.out_features) == (method.backbone.out_dim, CLASSES)
    assert Supervised.needs == ("num_classes",)
    config = SupervisedConfig()
    assert (config.optim.optimizer, config.optim.momentum, config.optim.weight_decay, config.optim.exclude_norm_and_bias) == (
        "sgd", 0.9, 1e-4, False)
    assert config.optim.learning_rate(1024) == pytest.approx(0.8)  # main_ce README: lr 0.8 at batch 1024
    with pytest.raises(ValueError, match="num_classes"):
        Supervised(config, Backbone(width=4), num_classes=1)
    for bad in ({"crop_min_scale": 1.5}, {"color_augmentation": "yes"}, {"base_lr": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SupervisedConfig.from_flat(bad)

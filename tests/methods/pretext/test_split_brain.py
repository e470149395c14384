"""The split-brain autoencoder (Zhang et al. 2017), sslab's shared-backbone variant: the L bins of
hand-picked lightnesses, the two-term loss against a hand-written formula, views and configuration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from method_testing import build_method, step_context, view_batch

from sslab.methods.blocks.colour_bins import soft_encode
from sslab.methods.pretext.split_brain import SplitBrain, SplitBrainConfig, lightness_bins

CTX = step_context(0, total=10)


def _method(**config) -> SplitBrain:
    return build_method(SplitBrain, **config)


def test_lightness_bins():
    lightness = torch.tensor([0.0, 1.99, 2.0, 37.5, 99.9, 100.0])
    assert lightness_bins(lightness, 50).tolist() == [0, 0, 1, 18, 49, 49]  # width 2
    assert lightness_bins(lightness, 100).tolist() == [0, 1, 2, 37, 99, 99]  # width 1
    assert lightness_bins(lightness, 100).dtype == torch.int64


def test_views_carry_both_inputs_and_both_targets():
    keys = [k for v in SplitBrain.views(SplitBrainConfig(), 32) for k in v.keys()]
    assert keys == ["lab", "lab_ab", "lab_l", "lab_chroma"]


def test_loss_is_both_cross_channel_cross_entropies():
    method = _method()
    batch = view_batch(method.views(method.config, 32), idx="arange")
    batch["lab_ab"][2] = 1.0  # a grey image: no L -> ab term
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics

    features = method.backbone.features(torch.cat([batch["lab"], batch["lab_chroma"]]), ("res5",))["res5"]
    ab = batch["lab_ab"][..., ::4, ::4]
    z = soft_encode(ab, method.bins, 10, 5.0)
    log_p = F.log_softmax(method.ab_head(features[:6], (8, 8)), dim=1)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]).reshape(6, 1, 1)
    loss_ab = (mask * -(z * log_p).sum(1)).mean()
    labels = (batch["lab_l"][:, 0, ::4, ::4] / 2).floor().clamp(0, 49).long()
    log_q = F.log_softmax(method.l_head(features[6:], (8, 8)), dim=1)
    loss_l = -log_q.gather(1, labels[:, None]).mean()
    assert metrics["loss_ab"].item() == pytest.approx(loss_ab.item(), rel=1e-5)
    assert metrics["loss_l"].item() == pytest.approx(loss_l.item(), rel=1e-5)
    assert loss.item() == pytest.approx((loss_ab + loss_l).item(), rel=1e-5)


def test_the_invariance_pair_compares_an_image_with_its_grey_version():
    method = _method().eval()
    keys = [k for v in SplitBrain.invariance_views(method.config, 32) for k in v.keys()]
    assert {"clean", "grey"} <= set(keys)
    batch = view_batch(SplitBrain.invariance_views(method.config, 32), 3, train=False)
    a, b = method.invariance_pair(batch)
    torch.testing.assert_close(b, F.normalize(method.backbone(batch["grey"]), dim=1))
    assert a.shape == b.shape == (3, method.backbone.out_dim)


@pytest.mark.parametrize("field, value", [("l_bins", 1), ("l_bins", 101), ("chroma_lightness", 100.0),
                                          ("neighbours", 0), ("target_stride", 0), ("sigma", 0.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SplitBrainConfig.from_flat({field: value})

"""Heads (the MLP builder) and momentum encoders (frozen copy, EMA update, cosine schedule)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sslab.methods.blocks.heads import mlp
from sslab.methods.blocks.momentum import MomentumTarget, cosine_momentum, ema_update_, frozen_copy


def layer_types(head: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in head]


def linears(head: nn.Sequential) -> list[nn.Linear]:
    return [layer for layer in head if isinstance(layer, nn.Linear)]


def batch_norms(head: nn.Sequential) -> list[nn.BatchNorm1d]:
    return [layer for layer in head if isinstance(layer, nn.BatchNorm1d)]


# --- heads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("last_bn", [False, True])
def test_mlp_output_shape_in_train_and_eval_mode(num_layers, last_bn):
    head = mlp(16, 32, 8, num_layers, last_bn=last_bn)
    x = torch.randn(5, 16)
    assert head(x).shape == (5, 8)
    head.eval()
    assert head(x).shape == (5, 8)


def test_mlp_default_is_linear_bn_relu_linear():
    head = mlp(16, 32, 8)
    assert layer_types(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [(l.in_features, l.out_features) for l in linears(head)] == [(16, 32), (32, 8)]
    assert batch_norms(head)[0].num_features == 32 and batch_norms(head)[0].affine


def test_mlp_three_layers_with_output_bn():
    head = mlp(16, 32, 8, num_layers=3, last_bn=True, last_bn_affine=False)
    assert layer_types(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                                 "Linear", "BatchNorm1d"]
    assert [(l.in_features, l.out_features) for l in linears(head)] == [(16, 32), (32, 32), (32, 8)]
    hidden_a, hidden_b, out = batch_norms(head)
    assert hidden_a.affine and hidden_b.affine
    assert not out.affine and out.weight is None and out.bias is None and out.num_features == 8


def test_mlp_without_hidden_bn():
    head = mlp(16, 32, 8, hidden_bn=False)
    assert layer_types(head) == ["Linear", "ReLU", "Linear"]
    assert all(l.bias is not None for l in linears(head))  # no BN follows either Linear


def test_mlp_one_layer_is_a_linear_map():
    assert layer_types(mlp(16, 999, 8, num_layers=1)) == ["Linear"]
    head = mlp(16, 999, 8, num_layers=1, last_bn=True)
    assert layer_types(head) == ["Linear", "BatchNorm1d"]
    assert linears(head)[0].in_features == 16 and linears(head)[0].out_features == 8


def test_mlp_bias_default_is_on_exactly_where_no_bn_follows():
    head = mlp(16, 32, 8, num_layers=3)
    assert [l.bias is not None for l in linears(head)] == [False, False, True]
    head = mlp(16, 32, 8, num_layers=3, last_bn=True)
    assert [l.bias is not None for l in linears(head)] == [False, False, False]
    assert all(l.bias is None for l in linears(mlp(16, 32, 8, num_layers=3, bias=False)))
    assert all(l.bias is not None for l in linears(mlp(16, 32, 8, num_layers=3, last_bn=True, bias=True)))


def test_mlp_bias_before_bn_is_cancelled_by_it():
    """Why the default drops it: BN(Wx + b) = BN(Wx) in train mode."""
    torch.manual_seed(0)
    with_bias = mlp(6, 10, 4, bias=True)
    without = mlp(6, 10, 4)
    with torch.no_grad():
        without[0].weight.copy_(with_bias[0].weight)
        without[3].weight.copy_(with_bias[3].weight)
        without[3].bias.copy_(with_bias[3].bias)
    x = torch.randn(7, 6)
    torch.testing.assert_close(with_bias(x), without(x))


def test_mlp_paper_heads_from_the_docstring():
    byol_projector = mlp(2048, 4096, 256, bias=False)
    assert layer_types(byol_projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert linears(byol_projector)[-1].bias is None and linears(byol_projector)[-1].out_features == 256
    byol_predictor = mlp(256, 4096, 256, bias=False)
    assert [(l.in_features, l.out_features) for l in linears(byol_predictor)] == [(256, 4096), (4096, 256)]

    simsiam_projector = mlp(2048, 2048, 2048, num_layers=3, last_bn=True, last_bn_affine=False)
    assert [bn.affine for bn in batch_norms(simsiam_projector)] == [True, True, False]
    assert all(l.bias is None for l in linears(simsiam_projector))
    simsiam_predictor = mlp(2048, 512, 2048)
    assert [(l.in_features, l.out_features, l.bias is not None) for l in linears(simsiam_predictor)] == [
        (2048, 512, False), (512, 2048, True)]

    moco_v2 = mlp(2048, 2048, 128, hidden_bn=False)
    assert layer_types(moco_v2) == ["Linear", "ReLU", "Linear"]

    barlow_like = mlp(64, 128, 128, num_layers=3, bias=False)  # Barlow Twins' 8192-8192-8192, scaled down
    assert layer_types(barlow_like) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    assert all(l.bias is None for l in linears(barlow_like))


@pytest.mark.parametrize("kwargs", [{"num_layers": 0}, {"in_dim": 0}, {"out_dim": 2.5}, {"hidden_dim": True}])
def test_mlp_bad_sizes_are_clear_errors(kwargs):
    args = {"in_dim": 4, "hidden_dim": 8, "out_dim": 2} | kwargs
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        mlp(**args)


# --- momentum encoders ------------------------------------------------------------------------


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_frozen_copy_equals_the_online_net_takes_no_gradient_and_shares_no_storage():
    online = small_net()
    online.eval()
    target = frozen_copy(online)
    assert not target.training
    for (name, p), q in zip(online.named_parameters(), target.parameters()):
        assert p.requires_grad and not q.requires_grad, name
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    for b, c in zip(online.buffers(), target.buffers()):
        assert torch.equal(b, c) and b.data_ptr() != c.data_ptr()


def test_ema_update_is_the_closed_form_on_parameters():
    online, target = small_net(), small_net()
    target.requires_grad_(False)
    before = {n: p.clone() for n, p in target.named_parameters()}
    ema_update_(target, online, 0.9)
    for name, p in target.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(online.named_parameters())[name]
        torch.testing.assert_close(p, expected)
        assert p.grad_fn is None and not p.requires_grad


def test_ema_update_on_known_tensors():
    online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
        online.bias.fill_(-4.0)
        target.weight.copy_(torch.tensor([[3.0, -2.0]]))
        target.bias.fill_(0.0)
    ema_update_(target, online, 0.75)  # 0.75·t + 0.25·o
    torch.testing.assert_close(target.weight, torch.tensor([[2.5, -1.0]]))
    torch.testing.assert_close(target.bias, torch.tensor([-1.0]))


def test_repeated_ema_updates_follow_the_geometric_closed_form():
    online, target = small_net(), small_net()
    start = {n: p.clone() for n, p in target.named_parameters()}
    m, steps = 0.8, 5
    for _ in range(steps):
        ema_update_(target, online, m)
    for name, p in target.named_parameters():
        o = dict(online.named_parameters())[name]
        torch.testing.assert_close(p, o + m ** steps * (start[name] - o))


def test_ema_update_endpoints_are_exact():
    online, target = small_net(), small_net()
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 1.0)
    assert all(torch.equal(p, b) for p, b in zip(target.parameters(), before))
    ema_update_(target, online, 0.0)
    assert all(torch.equal(p, q) for p, q in zip(target.parameters(), online.parameters()))


def test_ema_update_leaves_the_targets_buffers_to_its_own_forward_passes():
    online, target = small_net(), small_net()
    online.train()
    online(torch.randn(8, 3) * 5 + 3)  # moves the online BN running statistics
    target_stats = [b.clone() for b in target.buffers()]
    ema_update_(target, online, 0.5)
    assert all(torch.equal(b, s) for b, s in zip(target.buffers(), target_stats))
    assert not torch.equal(online[1].running_mean, target[1].running_mean)


def test_ema_update_refuses_mismatched_modules_and_bad_momentum():
    with pytest.raises(ValueError, match="differ"):
        ema_update_(nn.Linear(3, 2), small_net(), 0.9)
    with pytest.raises(ValueError, match="shape"):
        ema_update_(nn.Linear(3, 2), nn.Linear(3, 4), 0.9)
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="momentum"):
            ema_update_(nn.Linear(3, 2), nn.Linear(3, 2), bad)


@pytest.mark.parametrize("base", [0.9, 0.99, 0.996])
def test_cosine_momentum_endpoints_midpoint_and_quarter(base):
    assert cosine_momentum(base, 0.0) == pytest.approx(base, abs=1e-15)
    assert cosine_momentum(base, 1.0) == pytest.approx(1.0, abs=1e-15)
    assert cosine_momentum(base, 0.5) == pytest.approx((1 + base) / 2, abs=1e-15)
    quarter = 1 - (1 - base) * (math.sqrt(0.5) + 1) / 2  # cos(π/4) = √½
    assert cosine_momentum(base, 0.25) == pytest.approx(quarter, abs=1e-15)
    values = [cosine_momentum(base, k / 100) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # τ rises monotonically to 1


def test_cosine_momentum_refuses_out_of_range_arguments():
    for base, progress in [(0.99, -0.01), (0.99, 1.01), (1.2, 0.5), (-0.1, 0.5), (0.99, math.nan)]:
        with pytest.raises(ValueError):
            cosine_momentum(base, progress)


# --- MomentumTarget: the target branch with and without a momentum encoder ------------------------
def _online_and_target(momentum, schedule="cosine"):
    torch.manual_seed(0)
    backbone, head = nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    owner = nn.Module()
    owner.backbone, owner.head = backbone, head
    owner.target = MomentumTarget(backbone, head, momentum=momentum, schedule=schedule)
    return owner


def test_momentum_zero_means_no_momentum_encoder_at_all():
    """m = 0 builds no MomentumTarget (the method holds None; its target branch is then the online
    network under stop-gradient: ``TwoViewMethod.target_projection``, tested with SimSiam)."""
    for schedule in ("cosine", "constant"):
        config = SimpleNamespace(encoder_momentum=0.0, encoder_momentum_schedule=schedule)
        assert MomentumTarget.from_config(config, nn.Linear(3, 4)) is None
    config = SimpleNamespace(encoder_momentum=0.9, encoder_momentum_schedule="cosine")
    assert isinstance(MomentumTarget.from_config(config, nn.Linear(3, 4)), MomentumTarget)
    with pytest.raises(ValueError, match="from_config"):  # the constructor always builds an EMA copy
        MomentumTarget(nn.Linear(3, 4), momentum=0.0)


def test_a_momentum_encoder_is_an_ema_copy_in_the_state_dict_moved_by_its_schedule():
    owner = _online_and_target(0.9, "cosine")
    names = list(owner.state_dict())
    assert "target.ema.0.weight" in names and names.count("backbone.weight") == 1
    assert owner.target.momentum(0.0) == pytest.approx(0.9) and owner.target.momentum(1.0) == 1.0
    assert owner.target.momentum(0.5) == pytest.approx(0.95)
    assert _online_and_target(0.99, "constant").target.momentum(0.7) == 0.99
    before = owner.target.ema[0].weight.clone()
    with torch.no_grad():
        owner.backbone.weight.add_(1.0)
    owner.target.update(0.0)  # m = 0.9: 0.1 of the way to the online weights
    assert torch.allclose(owner.target.ema[0].weight, before + 0.1)
    assert not any(p.requires_grad for p in owner.target.parameters())
    copied = copy.deepcopy(owner)  # a replica's target follows the replica's online modules
    assert copied.target._online[0][0] is copied.backbone


@pytest.mark.parametrize("momentum, schedule", [(1.0, "cosine"), (-0.1, "cosine"), (0.5, "linear")])
def test_momentum_target_refuses_bad_settings(momentum, schedule):
    with pytest.raises(ValueError, match="momentum"):
        MomentumTarget(nn.Linear(2, 2), momentum=momentum, schedule=schedule)

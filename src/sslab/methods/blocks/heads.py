"""Projection and prediction heads: one MLP builder that every joint-embedding method shares.

The heads of SimCLR, MoCo v2, BYOL, SimSiam, Barlow Twins and VICReg differ only in depth,
width, where BatchNorm sits and which Linear layers carry a bias, so one builder in the
style of moco-v3's ``_build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn)``
covers them all; a method's file then says which paper head it uses in one line.
"""

from __future__ import annotations

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    *,
    hidden_bn: bool = True,
    last_bn: bool = False,
    last_bn_affine: bool = True,
    bias: bool | None = None,
) -> nn.Sequential:
    """An MLP of ``num_layers`` Linear layers: [Linear → BN → ReLU] × (num_layers − 1) → Linear [→ BN].

    Args:
        in_dim: input features (e.g. 2048 for a ResNet-50, 512 for a ResNet-18).
        hidden_dim: width of every hidden layer (unused when ``num_layers`` is 1).
        out_dim: output features.
        num_layers: Linear layers, at least 1 (moco-v3 counts the same way).
        hidden_bn: BatchNorm1d after every hidden Linear (before its ReLU).
        last_bn: BatchNorm1d after the final Linear.
        last_bn_affine: whether that final BatchNorm has a learnt scale and shift; SimSiam's
            projector and Barlow Twins' embedding normalisation use ``affine=False``.
        bias: ``None`` (default) gives a Linear a bias exactly when no BatchNorm follows it,
            since the BatchNorm's mean subtraction cancels a bias (in train and eval mode
            alike) and its β plays that role; ``True`` / ``False`` force it on every Linear.

    Layer order inside the returned ``nn.Sequential``: for each hidden layer ``Linear``,
    then ``BatchNorm1d`` if ``hidden_bn``, then ``ReLU``; then the output ``Linear`` and the
    optional ``BatchNorm1d``. No ReLU follows the output.

    The paper heads (ResNet-50 features, 2048-d; a ResNet-18 gives 512):

    - SimCLR v1 (Chen et al. 2020, sec. 2.1, g(h) = W⁽²⁾σ(W⁽¹⁾h), 128-d output):
      ``mlp(2048, 2048, 128)``. The official TF code (``ProjectionHead``) also puts a BN
      after the output Linear, with a scale but no shift: ``last_bn=True`` is the nearest
      (it adds the shift). SimCLR v2's deeper head: ``num_layers=3``.
    - SimCLR on CIFAR as solo-learn configures it (no BN): ``mlp(512, 2048, 256, hidden_bn=False)``.
    - MoCo v2 (``--mlp``): ``mlp(2048, 2048, 128, hidden_bn=False)``.
    - BYOL (Grill et al. 2020, sec. 3.3) projector ``mlp(2048, 4096, 256, bias=False)`` and
      predictor ``mlp(256, 4096, 256, bias=False)``: Linear-BN-ReLU-Linear, output without
      bias as in the official ``networks.MLP`` (its hidden bias is cancelled by the BN).
    - SimSiam (Chen & He 2021) projector
      ``mlp(2048, 2048, 2048, num_layers=3, last_bn=True, last_bn_affine=False)`` and
      predictor ``mlp(2048, 512, 2048)`` (bottleneck, output with bias). The official code
      keeps a frozen bias before the output BN, which that BN cancels: same function.
    - Barlow Twins (Zbontar et al. 2021): ``mlp(2048, 8192, 8192, num_layers=3,
      bias=False)``; its BN(affine=False) on the embeddings belongs to the loss, not here.
    - VICReg (Bardes et al. 2022) expander: the same shape as Barlow Twins.
    """
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim),
                        ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"mlp: {name} = {value!r} must be an integer >= 1")

    def linear(dim_in: int, dim_out: int, followed_by_bn: bool) -> nn.Linear:
        return nn.Linear(dim_in, dim_out, bias=(not followed_by_bn) if bias is None else bias)

    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(linear(dim, hidden_dim, hidden_bn))
        if hidden_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(linear(dim, out_dim, last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
    return nn.Sequential(*layers)

"""BatchNorm folding: a BatchNorm in eval form after a convolution, merged into its weight and bias.

    y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta
      = conv'(x) + b',  W' = W * f (per output channel),  b' = (b - mean) * f + beta,
    f = gamma / sqrt(var + eps)

Exact up to float rounding; computed in float64 so the folded layer matches the pair to ~1e-7.
"""

import torch
from torch import nn

FOLDABLE_CONVS: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCH_NORMS: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def can_fold(layer: nn.Module, norm: nn.Module) -> bool:
    """Whether `norm` (after `layer`) folds: a BatchNorm with running statistics over layer's outputs."""
    return (
        isinstance(layer, FOLDABLE_CONVS)
        and isinstance(norm, BATCH_NORMS)
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.num_features == layer.weight.shape[0]
    )


@torch.no_grad()
def fold_batch_norm(layer: nn.Module, norm: nn.Module) -> None:
    """Merge `norm` into `layer` in place (the layer gains a bias if it had none)."""
    weight = layer.weight.double()
    std = (norm.running_var.double() + norm.eps).sqrt()
    gamma = norm.weight.double() if norm.affine else torch.ones_like(std)
    beta = norm.bias.double() if norm.affine else torch.zeros_like(std)
    factor = gamma / std
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(std)
    layer.weight.copy_((weight * factor.reshape(-1, *([1] * (weight.dim() - 1)))).to(layer.weight.dtype))
    folded = ((bias - norm.running_mean.double()) * factor + beta).to(layer.weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(folded)
    else:
        layer.bias.copy_(folded)

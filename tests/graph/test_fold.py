"""quantframe.graph.fold: a conv/linear followed by a BatchNorm equals the folded layer (float rounding)."""

import pytest
import torch
from torch import nn

from quantframe.graph.fold import can_fold, fold_batch_norm


def _randomised(norm: nn.Module, generator: torch.Generator) -> nn.Module:
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.1)
        if norm.affine:
            norm.weight.copy_(torch.randn(norm.num_features, generator=generator))
            norm.bias.copy_(torch.randn(norm.num_features, generator=generator))
    return norm.eval()


@pytest.mark.parametrize(
    "layer, norm, shape",
    [
        (nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6), (2, 3, 7, 7)),
        (nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6, affine=False), (2, 4, 7, 7)),
        (nn.Conv1d(3, 5, 2), nn.BatchNorm1d(5), (2, 3, 9)),
        (nn.Linear(7, 5), nn.BatchNorm1d(5), (4, 7)),
    ],
)
def test_folded_layer_equals_layer_then_norm(layer, norm, shape):
    generator = torch.Generator().manual_seed(0)
    norm = _randomised(norm, generator)
    x = torch.randn(shape, generator=generator)
    with torch.no_grad():
        expected = norm(layer(x))
        assert can_fold(layer, norm)
        fold_batch_norm(layer, norm)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer.bias is not None


def test_what_cannot_fold():
    assert not can_fold(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(4))  # other channels
    assert not can_fold(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6, track_running_stats=False))
    assert not can_fold(nn.ConvTranspose2d(3, 6, 3), nn.BatchNorm2d(6))  # channels on axis 1

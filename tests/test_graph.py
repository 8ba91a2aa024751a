"""quantize_model swaps supported modules for quantized twins, keeps weights, lists what it left float."""

import pytest
import torch
from torch import nn

from quantframe.graph import quantize_model
from quantframe.layers import QuantConv2d, QuantConvTranspose2d, QuantLinear, QuantReLU, QuantTanh


def float_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, groups=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.ConvTranspose2d(4, 4, 2, stride=2), nn.Tanh()),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 5),
    )


def test_supported_modules_are_swapped_and_weights_kept():
    source = float_model()
    with pytest.warns(UserWarning, match=r"4 \(GELU\)"):
        model = quantize_model(source, weight_bit_width=4, act_bit_width=6)
    assert isinstance(model[0], QuantConv2d) and isinstance(model[6], QuantLinear)
    assert isinstance(model[2], QuantReLU) and isinstance(model[3][0], QuantConvTranspose2d)
    assert isinstance(model[3][1], QuantTanh)
    assert model.unquantized_modules == ["4 (GELU)"]
    assert torch.equal(model[0].weight, source[0].weight) and torch.equal(model[6].bias, source[6].bias)
    assert model[0].quant_weight_bit_width().item() == 4
    assert isinstance(source[0], nn.Conv2d)  # the original is untouched


def test_quantized_copy_stays_close_to_float_at_8_bits():
    source = float_model().eval()
    with pytest.warns(UserWarning):
        model = quantize_model(source).train()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        model(x)  # one statistics step
    model.eval()
    with torch.no_grad():
        error = (model(x) - source(x)).abs().max() / source(x).abs().max()
    assert error < 0.05

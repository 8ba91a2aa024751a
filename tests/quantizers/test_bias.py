"""Bias quantizers (quantframe.quantizers.bias): on the accumulator grid, or with their own scale."""

import math

import pytest
import torch

from quantframe.proxy.bias import BiasQuantProxy
from quantframe.quantizers import (
    Int8Bias,
    Int8BiasPerTensorFixedPointInternalScaling,
    Int8BiasPerTensorFloatInternalScaling,
    Int16Bias,
    Int24Bias,
    Int32Bias,
)


@pytest.mark.parametrize("quant, bits", [(Int8Bias, 8), (Int16Bias, 16), (Int24Bias, 24), (Int32Bias, 32)])
def test_accumulator_grid_bias(quant, bits):
    assert quant.requires_input_scale
    proxy = BiasQuantProxy(quant, {}, "test")
    bias = torch.tensor([0.5, -0.25, 3.0, -1000.0])
    input_scale = torch.tensor(0.02)
    weight_scale = torch.tensor([0.01, 0.001, 0.005, 0.002]).reshape(4, 1, 1, 1)
    qt = proxy(bias, input_scale, weight_scale)
    scale = (0.02 * weight_scale).flatten()
    assert torch.allclose(qt.scale, scale)
    ints = torch.clamp(torch.round(bias / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert torch.allclose(qt.value, ints * scale)
    assert qt.bit_width.item() == bits and qt.signed and qt.is_valid


def test_accumulator_grid_bias_per_tensor_scale():
    proxy = BiasQuantProxy(Int32Bias, {}, "test")
    qt = proxy(torch.tensor([0.123, -0.456]), torch.tensor(0.1), torch.tensor(0.01))
    assert qt.scale.shape == () and qt.scale.item() == pytest.approx(1e-3)
    assert qt.int().tolist() == [123, -456]


def test_internal_scaling_biases():
    bias = torch.tensor([0.3, -1.27, 0.05])
    qt = BiasQuantProxy(Int8BiasPerTensorFloatInternalScaling, {}, "test")(bias)
    assert qt.scale.item() == pytest.approx(1.27 / 127)
    assert qt.int().tolist() == [30, -127, 5]
    qt = BiasQuantProxy(Int8BiasPerTensorFixedPointInternalScaling, {}, "test")(bias)
    assert qt.scale.item() == 2.0 ** math.ceil(math.log2(1.27 / 127))
    assert qt.is_valid and qt.int().abs().max() <= 127

"""quantframe.proxy.bias: BiasQuantProxy on the accumulator grid or with its own scale."""

import pytest
import torch

from quantframe.proxy.bias import BiasQuantProxy, bias_proxy
from quantframe.quantizers import Int8BiasPerTensorFloatInternalScaling, Int8WeightPerTensorFloat, Int32Bias


def test_requires_input_scale_flag():
    assert BiasQuantProxy(Int32Bias, {}, "L").requires_input_scale
    assert not BiasQuantProxy(Int8BiasPerTensorFloatInternalScaling, {}, "L").requires_input_scale
    assert not BiasQuantProxy(None, {}, "L").requires_input_scale


def test_missing_input_scale_raises_with_advice():
    proxy = BiasQuantProxy(Int32Bias, {}, "MyConv")
    with pytest.raises(RuntimeError, match="Input scale required") as info:
        proxy(torch.randn(3), None, torch.tensor(0.1))
    assert (
        "MyConv" in str(info.value) and "input_quant" in str(info.value) and "QuantTensor" in str(info.value)
    )
    with pytest.raises(RuntimeError, match="Input scale required"):
        proxy(torch.randn(3), torch.tensor(0.1), None)


def test_accumulator_scale_per_channel():
    proxy = BiasQuantProxy(Int32Bias, {}, "MyConv")
    weight_scale = torch.tensor([0.1, 0.2, 0.4]).reshape(3, 1, 1, 1)
    qt = proxy(torch.tensor([1.0, 1.0, 1.0]), torch.tensor(0.01), weight_scale)
    assert torch.allclose(qt.scale, torch.tensor([0.001, 0.002, 0.004]))
    assert qt.int().tolist() == [1000, 500, 250]


def test_own_scale_ignores_given_scales():
    proxy = BiasQuantProxy(Int8BiasPerTensorFloatInternalScaling, {}, "MyConv")
    bias = torch.tensor([0.5, -1.27])
    assert torch.equal(proxy(bias).value, proxy(bias, torch.tensor(3.0), torch.tensor(3.0)).value)


def test_disabled_and_sharing():
    proxy = BiasQuantProxy(None, {}, "MyConv")
    bias = torch.randn(3)
    out = proxy(bias)
    assert out.value is bias and out.scale is None
    shared = bias_proxy(Int32Bias, {}, "First")
    assert bias_proxy(shared, {}, "Second") is shared
    with pytest.raises(TypeError, match="Second"):
        bias_proxy(shared, {"bit_width": 16}, "Second")
    with pytest.raises(TypeError, match="bias_quant=Int8WeightPerTensorFloat is a weight quantizer"):
        bias_proxy(Int8WeightPerTensorFloat, {}, "MyConv")

"""quantframe.layers.act: activation layers = float activation, then an activation quantizer."""

import math

import pytest
import torch
from torch import nn

from quantframe import QuantTensor
from quantframe.layers.act import QuantHardTanh, QuantIdentity, QuantReLU, QuantReLU6, QuantSigmoid, QuantTanh
from quantframe.quantizers import Int8ActPerTensorFloat, Int8ActPerTensorFloatMinMaxInit


class Int4Act(Int8ActPerTensorFloat):
    bit_width = 4


def _x(seed=0, shape=(4, 3, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def _percentile(values, q=99.999):
    k = min(max(int(math.floor(0.01 * q * values.numel() + 0.5)), 1), values.numel())
    return values.flatten().kthvalue(k).values


def test_relu_bit_width_override_without_prefix():
    layer = QuantReLU(bit_width=4, return_quant_tensor=True)
    x = _x()
    qt = layer(x)
    assert qt.bit_width.item() == 4 and not qt.signed and qt.is_valid
    relu = torch.relu(x)
    scale = _percentile(relu) / 15
    assert torch.allclose(qt.scale, scale)
    assert torch.allclose(qt.value, torch.clamp(torch.round(relu / scale), 0, 15) * scale)


def test_identity_bit_width_override_with_prefix():
    qt = QuantIdentity(act_bit_width=3, return_quant_tensor=True)(_x())
    assert qt.bit_width.item() == 3 and qt.signed and qt.is_valid
    assert set(qt.int().unique().tolist()) <= set(range(-4, 4))


def test_subclassed_quantizer():
    qt = QuantIdentity(act_quant=Int4Act, return_quant_tensor=True)(_x())
    assert qt.bit_width.item() == 4 and qt.is_valid


def test_typo_raises_type_error_with_suggestion():
    with pytest.raises(TypeError, match="act_bitwidth.*did you mean act_bit_width"):
        QuantIdentity(act_bitwidth=3)


@pytest.mark.parametrize(
    "kwargs, attribute, shown, allowed",
    [
        ({"bit_width": 0}, "bit_width", "0", "an integer in [1, 32]"),
        ({"act_bit_width": 2.5}, "bit_width", "2.5", "an integer in [1, 32]"),
        (
            {"restrict_scaling_type": "POWER_OF_3"},
            "restrict_scaling_type",
            "'POWER_OF_3'",
            "FP, LOG_FP, POWER_OF_TWO",
        ),
    ],
)
def test_bad_values_fail_at_construction(kwargs, attribute, shown, allowed):
    with pytest.raises(ValueError) as info:
        QuantIdentity(**kwargs)
    message = str(info.value)
    for part in ("QuantIdentity", "Int8ActPerTensorFloat", attribute, shown, allowed):
        assert part in message


@pytest.mark.parametrize(
    "layer, fn",
    [
        (QuantIdentity, lambda x: x),
        (QuantReLU, torch.relu),
        (QuantReLU6, nn.functional.relu6),
        (QuantHardTanh, nn.functional.hardtanh),
        (QuantSigmoid, torch.sigmoid),
        (QuantTanh, torch.tanh),
    ],
)
def test_disabled_quantizer_computes_the_float_activation(layer, fn):
    x = _x()
    out = layer(act_quant=None)(x)
    assert type(out) is torch.Tensor and torch.equal(out, fn(x))


@pytest.mark.parametrize(
    "layer, fn, signed",
    [
        (QuantReLU6, nn.functional.relu6, False),
        (QuantHardTanh, nn.functional.hardtanh, True),
        (QuantSigmoid, torch.sigmoid, False),
        (QuantTanh, torch.tanh, True),
    ],
)
def test_activation_then_quantizer(layer, fn, signed):
    x = _x()
    module = layer(return_quant_tensor=True)
    qt = module(x)
    y = fn(x)
    scale = _percentile(y.abs() if signed else y) / (128 if signed else 255)
    assert qt.signed is signed and qt.is_valid
    assert torch.allclose(qt.scale, scale)
    assert torch.allclose(
        qt.value, torch.round(y / scale).clamp(-128 if signed else 0, 127 if signed else 255) * scale
    )
    plain = layer()(x)
    assert type(plain) is torch.Tensor and torch.equal(plain, qt.value)


def test_hardtanh_range_initialises_a_min_max_quantizer():
    qt = QuantHardTanh(
        act_quant=Int8ActPerTensorFloatMinMaxInit, min_val=-2.0, max_val=2.0, return_quant_tensor=True
    )(_x())
    assert qt.scale.item() == 2.0 / 128
    assert qt.value.abs().max().item() <= 2.0


def test_input_quant_and_quant_tensor_input():
    layer = QuantReLU(input_quant=Int8ActPerTensorFloat, return_quant_tensor=True, input_bit_width=6)
    assert layer.is_input_quant_enabled and layer.is_act_quant_enabled and not layer.is_output_quant_enabled
    assert layer.input_quant.bit_width().item() == 6
    qt = layer(_x())
    assert qt.bit_width.item() == 8 and qt.is_valid
    again = QuantIdentity(return_quant_tensor=True)(qt)
    assert isinstance(again, QuantTensor) and again.signed


def test_gradients_flow_through_the_layer():
    layer = QuantReLU(collect_stats_steps=1)
    x = _x().requires_grad_()
    layer(x).sum().backward()
    assert x.grad is not None and (x.grad[x > 0] == 1).float().mean() > 0.99
    layer(x).sum().backward()  # the switch to the learned scale
    scale = layer.act_quant.tensor_quant.scaling_impl.value
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_inference_relu_folded_into_the_unsigned_grid_gives_the_same_output():
    torch.manual_seed(0)
    layer = QuantReLU(collect_stats_steps=2)
    x = torch.randn(4, 3, 5, 5)
    layer.train()
    for _ in range(3):
        layer(x)
    layer.eval()
    with torch.no_grad():
        folded = layer(x)
    assert layer._relu_folds_into_quant
    explicit = layer.act_quant(torch.relu(x)).value
    assert torch.equal(folded, explicit)
    assert (folded >= 0).all()

"""QuantConv1d/2d/3d: torch parity, the accumulator grid, bias quantization, weight quantizers, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantframe.layers import QuantConv1d, QuantConv2d, QuantConv3d
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8Bias,
    Int8BiasPerTensorFloatInternalScaling,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Int16Bias,
)
from quantframe.tensor import QuantTensor

NO_QUANT = {"weight_quant": None, "bias_quant": None, "input_quant": None, "output_quant": None}


def assert_on_grid(qt: QuantTensor, atol: float = 0.1) -> None:
    """value / scale + zero_point is an integer inside the signed/unsigned range of bit_width (float64)."""
    ints = qt.value.double() / qt.scale.double() + qt.zero_point.double()
    assert torch.allclose(ints, ints.round(), rtol=0, atol=atol)
    bits = qt.bit_width.double()
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if qt.signed else (0 * bits, 2**bits - 1)
    assert bool((ints.round() >= low).all()) and bool((ints.round() <= high).all())


def twin(torch_cls, quant_cls, *args, **kwargs):
    """A float torch layer and the quantized layer (all quantizers None) holding the same weights."""
    torch.manual_seed(0)
    ref = torch_cls(*args, **kwargs)
    layer = quant_cls(*args, **kwargs, **NO_QUANT)
    layer.load_state_dict(ref.state_dict())
    return ref, layer


CONV_CASES = [
    (nn.Conv1d, QuantConv1d, (3, 4, 3), {}, (2, 3, 11)),
    (nn.Conv1d, QuantConv1d, (4, 6, 3), {"stride": 2, "dilation": 2, "groups": 2, "padding": 2}, (2, 4, 13)),
    (nn.Conv1d, QuantConv1d, (3, 4, 3), {"padding": 1, "padding_mode": "reflect"}, (2, 3, 9)),
    (nn.Conv2d, QuantConv2d, (2, 3, 3), {}, (2, 2, 8, 8)),
    (
        nn.Conv2d,
        QuantConv2d,
        (4, 6, (3, 2)),
        {"stride": (2, 1), "groups": 2, "dilation": (1, 2)},
        (1, 4, 9, 9),
    ),
    (nn.Conv2d, QuantConv2d, (3, 5, 3), {"padding": "same", "dilation": 2}, (2, 3, 7, 8)),
    (nn.Conv2d, QuantConv2d, (3, 5, 3), {"padding": 2, "padding_mode": "circular"}, (2, 3, 7, 8)),
    (
        nn.Conv2d,
        QuantConv2d,
        (3, 5, 3),
        {"padding": 1, "padding_mode": "reflect", "bias": False},
        (2, 3, 6, 6),
    ),
    (nn.Conv2d, QuantConv2d, (3, 5, 3), {"padding": (1, 2), "padding_mode": "replicate"}, (3, 6, 6)),
    (nn.Conv3d, QuantConv3d, (2, 4, 3), {"padding": "same"}, (1, 2, 5, 5, 5)),
    (
        nn.Conv3d,
        QuantConv3d,
        (4, 4, 2),
        {"stride": 2, "groups": 4, "padding_mode": "circular", "padding": 1},
        (2, 4, 6, 6, 6),
    ),
]


@pytest.mark.parametrize("torch_cls,quant_cls,args,kwargs,shape", CONV_CASES)
def test_without_quantizers_equals_torch_exactly(torch_cls, quant_cls, args, kwargs, shape):
    ref, layer = twin(torch_cls, quant_cls, *args, **kwargs)
    x = torch.randn(shape)
    assert torch.equal(layer(x), ref(x))
    assert isinstance(layer, torch_cls)


@pytest.mark.parametrize("torch_cls,quant_cls,args,kwargs,shape", CONV_CASES[:6])
def test_default_weight_quant_convolves_the_quantized_weight(torch_cls, quant_cls, args, kwargs, shape):
    torch.manual_seed(0)
    layer = quant_cls(*args, **kwargs)
    x = torch.randn(shape)
    w = layer.weight.detach()
    scale = w.abs().max() / 127
    w_q = torch.clamp(torch.round(w / scale), -127, 127) * scale
    ref = torch_cls(*args, **kwargs)
    ref.load_state_dict({"weight": w_q, "bias": layer.bias.detach()})
    assert torch.allclose(layer(x), ref(x), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- QuantConv2d(2, 3, 3): the checks


@pytest.fixture
def x():
    return torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(1))


def quant_conv(**kwargs) -> QuantConv2d:
    torch.manual_seed(0)
    return QuantConv2d(2, 3, 3, **kwargs)


def test_quantized_input_gives_a_valid_21_bit_accumulator(x):
    out = quant_conv(input_quant=Int8ActPerTensorFloat, bias=False, return_quant_tensor=True)(x)
    assert isinstance(out, QuantTensor)
    assert out.bit_width.item() == math.ceil(math.log2(255 * 255 * 2 * 3 * 3)) == 21
    assert out.signed is True
    assert_on_grid(out)
    assert out.is_valid


def test_accumulator_scale_is_input_scale_times_weight_scale(x):
    layer = quant_conv(input_quant=Int8ActPerTensorFloat, return_quant_tensor=True)
    layer.eval()
    out = layer(x)
    expected = layer.input_quant.scale() * layer.quant_weight_scale()
    assert torch.allclose(out.scale, expected, rtol=1e-6, atol=0)


def test_per_channel_weight_scale_is_laid_out_over_output_channels(x):
    layer = quant_conv(
        input_quant=Int8ActPerTensorFloat, weight_quant=Int8WeightPerChannelFloat, return_quant_tensor=True
    )
    out = layer(x)
    assert out.scale.shape == (3, 1, 1)
    expected = layer.weight.detach().abs().amax(dim=(1, 2, 3)) / 127
    input_scale = layer.input_quant(x).scale
    assert torch.allclose(out.scale.flatten(), input_scale * expected, rtol=1e-6, atol=0)
    assert_on_grid(out)


def test_int8_bias_adds_one_bit(x):
    out = quant_conv(input_quant=Int8ActPerTensorFloat, bias_quant=Int8Bias, return_quant_tensor=True)(x)
    assert out.bit_width.item() == max(21, 8) + 1 == 22
    assert out.zero_point.abs().max().item() == 0
    assert_on_grid(out)


def test_wider_bias_sets_the_bit_width(x):
    out = quant_conv(input_quant=Int8ActPerTensorFloat, bias_quant=Int16Bias, return_quant_tensor=True)(x)
    assert out.bit_width.item() == max(21, 16) + 1
    assert_on_grid(out)


def test_int8_bias_scale_is_input_scale_times_weight_scale(x):
    layer = quant_conv(input_quant=Int8ActPerTensorFloat, bias_quant=Int8Bias)
    layer.train()
    layer(x)  # statistics for the input scale
    layer.eval()
    input_scale = layer.input_quant.scale()
    expected = input_scale * layer.quant_weight_scale()
    assert torch.allclose(layer.quant_bias_scale(), expected, rtol=1e-6, atol=0)
    bias = layer.quant_bias()
    assert torch.allclose(layer.int_bias() * bias.scale, bias.value, rtol=1e-6, atol=0)
    # The bias in the output lies on the accumulator grid: out - conv(x, w) is a multiple of s_x * s_w
    with torch.no_grad():
        out = layer(x)
        no_bias = F.conv2d(layer.input_quant(x).value, layer.quant_weight().value)
    steps = (out - no_bias) / expected
    assert torch.allclose(steps, steps.round(), atol=1e-2, rtol=0)


def test_output_quant_gives_8_bits(x):
    out = quant_conv(
        input_quant=Int8ActPerTensorFloat, output_quant=Int8ActPerTensorFloat, return_quant_tensor=True
    )(x)
    assert out.bit_width.item() == 8
    assert_on_grid(out, atol=1e-3)


def test_internal_scaling_bias_needs_no_quantized_input(x):
    layer = quant_conv(bias_quant=Int8BiasPerTensorFloatInternalScaling)
    out = layer(x)
    bias = layer.bias.detach()
    bias_scale = bias.abs().max() / 127
    b_q = torch.round(bias / bias_scale) * bias_scale
    expected = F.conv2d(x, layer.quant_weight().value, b_q)
    assert torch.allclose(out, expected, rtol=0, atol=1e-6)


def test_internal_scaling_bias_on_quantized_accumulator_moves_the_zero_point(x):
    out = quant_conv(
        input_quant=Int8ActPerTensorFloat,
        bias_quant=Int8BiasPerTensorFloatInternalScaling,
        return_quant_tensor=True,
    )(x)
    assert out.zero_point.shape == (3, 1, 1)
    assert_on_grid(out)


def test_float_bias_moves_the_zero_point_per_channel(x):
    layer = quant_conv(input_quant=Int8ActPerTensorFloat, return_quant_tensor=True)
    out = layer(x)
    assert out.zero_point.shape == (3, 1, 1)
    assert bool((out.zero_point != 0).all())
    expected = -layer.bias.detach().reshape(3, 1, 1) / out.scale
    assert torch.allclose(out.zero_point, expected)
    assert_on_grid(out)
    assert out.is_valid


def test_return_quant_tensor_false_returns_a_plain_tensor(x):
    out = quant_conv(input_quant=Int8ActPerTensorFloat, bias_quant=Int8Bias)(x)
    assert type(out) is torch.Tensor
    out = quant_conv(input_quant=Int8ActPerTensorFloat, output_quant=Int8ActPerTensorFloat)(x)
    assert type(out) is torch.Tensor


def test_max_pool_keeps_the_grid_and_tanh_decays(x):
    out = quant_conv(input_quant=Int8ActPerTensorFloat, return_quant_tensor=True)(x)
    pooled = F.max_pool2d(out, 2)
    assert isinstance(pooled, QuantTensor)
    assert torch.equal(pooled.value, F.max_pool2d(out.value, 2))
    assert_on_grid(pooled)
    assert pooled.is_valid
    decayed = torch.tanh(out)
    assert type(decayed) is torch.Tensor
    assert torch.equal(decayed, torch.tanh(out.value))


def test_unquantized_input_gives_no_grid(x):
    out = quant_conv(return_quant_tensor=True)(x)
    assert isinstance(out, QuantTensor)
    assert out.scale is None and out.bit_width is None
    assert not out.is_valid


def test_quant_tensor_input_provides_the_input_grid(x):
    scale, zero_point, bit_width = torch.tensor(1 / 16), torch.tensor(0.0), torch.tensor(8.0)
    x_q = QuantTensor(torch.round(x * 16) / 16, scale, zero_point, bit_width, True)
    out = quant_conv(bias_quant=Int8Bias, return_quant_tensor=True)(x_q)
    assert out.bit_width.item() == 22
    assert_on_grid(out)


def test_accumulator_bias_without_quantized_input_raises(x):
    layer = quant_conv(bias_quant=Int8Bias)
    with pytest.raises(RuntimeError, match="Input scale required.*input_quant"):
        layer(x)


def test_fixed_point_weights_have_power_of_two_scale():
    layer = quant_conv(weight_quant=Int8WeightPerTensorFixedPoint)
    scale = layer.quant_weight_scale()
    assert float(torch.log2(scale)).is_integer()
    assert torch.equal(layer.int_weight() * scale, layer.quant_weight().value)
    assert int(layer.int_weight().abs().max()) <= 127


def test_shared_weight_quantizer_scales_from_both_weights():
    torch.manual_seed(0)
    conv1 = QuantConv2d(2, 3, 3)
    conv2 = QuantConv2d(2, 3, 3, weight_quant=conv1.weight_quant)
    with torch.no_grad():
        conv2.weight.mul_(5)  # conv2 now holds the largest magnitude
    assert conv2.weight_quant is conv1.weight_quant
    expected = torch.maximum(conv1.weight.abs().max(), conv2.weight.abs().max()) / 127
    for conv in (conv1, conv2):
        assert torch.allclose(conv.quant_weight().scale, expected, rtol=1e-6, atol=0)


def test_load_state_dict_copies_behaviour_exactly(x):
    source = quant_conv(input_quant=Int8ActPerTensorFloat, bias_quant=Int8Bias, return_quant_tensor=True)
    for _ in range(3):
        source(x * 3)  # move the input statistics away from a fresh layer's
    torch.manual_seed(5)
    target = QuantConv2d(
        2, 3, 3, input_quant=Int8ActPerTensorFloat, bias_quant=Int8Bias, return_quant_tensor=True
    )
    target.load_state_dict(source.state_dict())
    source.eval()
    target.eval()
    with torch.no_grad():
        a, b = source(x), target(x)
    assert torch.equal(a.value, b.value)
    assert torch.equal(a.scale, b.scale) and torch.equal(a.bit_width, b.bit_width)


# ---------------------------------------------------------------- construction errors


def test_groups_not_dividing_in_channels_names_the_layer():
    with pytest.raises(ValueError, match="QuantConv2d: in_channels must be divisible by groups"):
        QuantConv2d(3, 4, 3, groups=2)


def test_negative_channels_name_the_argument():
    with pytest.raises(ValueError, match="QuantConv1d: in_channels=-1; expected a non-negative int"):
        QuantConv1d(-1, 4, 3)


def test_same_padding_with_stride_names_the_layer():
    with pytest.raises(ValueError, match="QuantConv2d: padding='same' is not supported"):
        QuantConv2d(3, 4, 3, stride=2, padding="same")


def test_bias_quantizer_given_as_weight_quant():
    with pytest.raises(TypeError, match="QuantConv2d: weight_quant=Int8Bias is a bias quantizer"):
        QuantConv2d(2, 3, 3, weight_quant=Int8Bias)


def test_weight_quantizer_given_as_input_quant():
    with pytest.raises(TypeError, match="QuantConv2d: input_quant=Int8WeightPerTensorFloat is a weight"):
        QuantConv2d(2, 3, 3, input_quant=Int8WeightPerTensorFloat)


@pytest.mark.parametrize("bad", [nn.ReLU, nn.ReLU(), "Int8WeightPerTensorFloat", 8])
def test_a_non_quantizer_is_refused(bad):
    with pytest.raises(TypeError, match="QuantConv2d: weight_quant=.* is not a quantizer"):
        QuantConv2d(2, 3, 3, weight_quant=bad)


def test_wrong_quantizer_is_reported_before_its_keywords():
    with pytest.raises(TypeError, match="weight_quant=Int8Bias is a bias quantizer"):
        QuantConv2d(2, 3, 3, weight_quant=Int8Bias, weight_bit_width=4)


def test_misspelt_override_suggests_the_key():
    with pytest.raises(TypeError, match="QuantConv2d: .*weight_bit_widht.*did you mean weight_bit_width"):
        QuantConv2d(2, 3, 3, weight_bit_widht=4)


def test_override_reaches_the_weight_quantizer():
    layer = quant_conv(weight_bit_width=4)
    assert layer.quant_weight_bit_width().item() == 4
    assert int(layer.int_weight().abs().max()) == 7


def test_accumulator_bias_without_weight_quant_fails_at_construction():
    with pytest.raises(ValueError, match="QuantConv2d: bias_quant=Int8Bias .* weight_quant is None"):
        QuantConv2d(2, 3, 3, weight_quant=None, bias_quant=Int8Bias)


# ---------------------------------------------------------------- brevitas


def test_same_int_weights_and_scale_as_brevitas():
    bnn = pytest.importorskip("brevitas.nn")
    torch.manual_seed(0)
    reference = bnn.QuantConv2d(2, 3, 3)
    layer = QuantConv2d(2, 3, 3)
    layer.load_state_dict(reference.state_dict())
    expected = reference.quant_weight()
    assert torch.equal(layer.int_weight().long(), expected.int().long())
    assert torch.allclose(layer.quant_weight_scale(), expected.scale.detach(), rtol=1e-6, atol=0)

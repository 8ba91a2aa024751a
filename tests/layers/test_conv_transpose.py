"""QuantConvTranspose1d/2d/3d: torch parity, output_size, accumulator K, per-channel weights, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantframe.layers import QuantConv2d, QuantConvTranspose1d, QuantConvTranspose2d, QuantConvTranspose3d
from quantframe.quantizers import Int8ActPerTensorFloat, Int8Bias, Int8WeightPerChannelFloat
from quantframe.tensor import QuantTensor

NO_QUANT = {"weight_quant": None, "bias_quant": None, "input_quant": None, "output_quant": None}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def assert_on_grid(qt: QuantTensor, atol: float = 0.1) -> None:
    """value / scale + zero_point is an integer inside the signed/unsigned range of bit_width (float64)."""
    ints = qt.value.double() / qt.scale.double() + qt.zero_point.double()
    assert torch.allclose(ints, ints.round(), rtol=0, atol=atol)
    bits = qt.bit_width.double()
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if qt.signed else (0 * bits, 2**bits - 1)
    assert bool((ints.round() >= low).all()) and bool((ints.round() <= high).all())


CASES = [
    (nn.ConvTranspose1d, QuantConvTranspose1d, (3, 4, 3), {}, (2, 3, 7)),
    (
        nn.ConvTranspose1d,
        QuantConvTranspose1d,
        (4, 6, 3),
        {"stride": 2, "groups": 2, "dilation": 2},
        (2, 4, 9),
    ),
    (
        nn.ConvTranspose2d,
        QuantConvTranspose2d,
        (2, 3, 3),
        {"stride": 2, "padding": 1, "output_padding": 1},
        (2, 2, 5, 5),
    ),
    (
        nn.ConvTranspose2d,
        QuantConvTranspose2d,
        (4, 2, (3, 2)),
        {"stride": (2, 3), "groups": 2, "bias": False},
        (1, 4, 4, 6),
    ),
    (nn.ConvTranspose2d, QuantConvTranspose2d, (3, 5, 3), {}, (3, 4, 4)),
    (
        nn.ConvTranspose3d,
        QuantConvTranspose3d,
        (2, 4, 3),
        {"stride": 2, "dilation": (1, 2, 1)},
        (1, 2, 3, 4, 3),
    ),
]


def twin(torch_cls, quant_cls, args, kwargs):
    torch.manual_seed(0)
    ref = torch_cls(*args, **kwargs)
    layer = quant_cls(*args, **kwargs, **NO_QUANT)
    layer.load_state_dict(ref.state_dict())
    return ref, layer


@pytest.mark.parametrize("torch_cls,quant_cls,args,kwargs,shape", CASES)
def test_without_quantizers_equals_torch(torch_cls, quant_cls, args, kwargs, shape):
    ref, layer = twin(torch_cls, quant_cls, args, kwargs)
    x = torch.randn(shape)
    assert torch.allclose(layer(x), ref(x), rtol=0, atol=1e-6)
    assert isinstance(layer, torch_cls)


def test_output_size_behaves_as_torch():
    ref, layer = twin(nn.ConvTranspose2d, QuantConvTranspose2d, (3, 2, 3), {"stride": 2, "padding": 1})
    x = torch.randn(1, 3, 5, 5)
    for size in ([9, 9], [10, 10], [1, 2, 10, 9]):
        out = layer(x, output_size=size)
        assert out.shape == ref(x, output_size=size).shape
        assert torch.allclose(out, ref(x, output_size=size), rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        layer(x, output_size=[20, 20])


@pytest.mark.parametrize(
    "dims,in_channels,out_channels,kernel,stride,groups",
    [
        (1, 3, 5, 3, 1, 1),
        (1, 8, 2, 3, 2, 1),
        (2, 6, 4, 3, 2, 2),
        (2, 2, 3, 4, 3, 1),
        (3, 2, 2, 3, 2, 1),
    ],
)
def test_accumulator_bit_width_follows_the_contract(dims, in_channels, out_channels, kernel, stride, groups):
    # K = weight.shape[1] * prod(max(ceil(k_d / s_d), 1)); bits = ceil(log2(255 * 255 * K))
    k = (out_channels // groups) * max(math.ceil(kernel / stride), 1) ** dims
    cls = {1: QuantConvTranspose1d, 2: QuantConvTranspose2d, 3: QuantConvTranspose3d}[dims]
    layer = cls(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        groups=groups,
        input_quant=Int8ActPerTensorFloat,
        return_quant_tensor=True,
    )
    out = layer(torch.randn(2, in_channels, *([4] * dims)))
    assert out.bit_width.item() == math.ceil(math.log2(255 * 255 * k))
    assert_on_grid(out)


def test_per_channel_weights_scale_along_output_channels():
    torch.manual_seed(0)
    layer = QuantConvTranspose2d(
        4,
        3,
        3,
        stride=2,
        weight_quant=Int8WeightPerChannelFloat,
        input_quant=Int8ActPerTensorFloat,
        bias_quant=Int8Bias,
        return_quant_tensor=True,
    )
    scale = layer.quant_weight_scale()
    assert scale.shape == (1, 3, 1, 1)
    expected = layer.weight.detach().abs().amax(dim=(0, 2, 3)) / 127
    assert torch.allclose(scale.flatten(), expected, rtol=1e-6, atol=0)
    out = layer(torch.randn(2, 4, 5, 5))
    assert out.scale.shape == (3, 1, 1)
    assert_on_grid(out)


def test_per_channel_weights_with_groups_are_refused():
    with pytest.raises(ValueError, match="QuantConvTranspose2d: .*per output channel.*groups=1.*groups=2"):
        QuantConvTranspose2d(4, 4, 3, groups=2, weight_quant=Int8WeightPerChannelFloat)


def test_shared_per_channel_weight_quantizer_is_refused():
    conv = QuantConv2d(4, 4, 3, weight_quant=Int8WeightPerChannelFloat)
    with pytest.raises(ValueError, match="QuantConvTranspose2d: weight_quant is a shared per-channel"):
        QuantConvTranspose2d(4, 4, 3, weight_quant=conv.weight_quant)
    transposed = QuantConvTranspose2d(4, 4, 3, weight_quant=Int8WeightPerChannelFloat)
    with pytest.raises(ValueError, match="QuantConv2d: weight_quant is a shared per-channel"):
        QuantConv2d(4, 4, 3, weight_quant=transposed.weight_quant)


def test_non_zero_padding_mode_names_the_layer():
    with pytest.raises(ValueError, match="QuantConvTranspose2d: .*zeros"):
        QuantConvTranspose2d(2, 3, 3, padding_mode="reflect")


def test_groups_not_dividing_out_channels_names_the_layer():
    with pytest.raises(ValueError, match="QuantConvTranspose1d: out_channels must be divisible by groups"):
        QuantConvTranspose1d(4, 3, 3, groups=2)

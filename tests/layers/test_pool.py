"""Pooling layers: max pooling keeps the grid; truncated average pooling re-quantizes by a right shift."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from quantframe.layers import (
    QuantAdaptiveAvgPool2d,
    QuantMaxPool1d,
    QuantMaxPool2d,
    TruncAdaptiveAvgPool2d,
    TruncAvgPool2d,
)
from quantframe.quantizers import Int8ActPerTensorFloat
from quantframe.tensor import QuantTensor


def grid_tensor(shape, bit_width=8, signed=True, scale=0.05, zero_point=0.0, seed=0) -> QuantTensor:
    """A QuantTensor built from random integers: value = (int - zero_point) * scale."""
    gen = torch.Generator().manual_seed(seed)
    low, high = (-(2 ** (bit_width - 1)), 2 ** (bit_width - 1)) if signed else (0, 2**bit_width)
    ints = torch.randint(low, high, shape, generator=gen).float()
    if signed and bit_width == 1:
        ints = ints * 2 + 1  # bipolar {-1, +1}
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zp = torch.tensor(float(zero_point))
    return QuantTensor((ints - zp) * scale, scale, zp, torch.tensor(float(bit_width)), signed, False)


def window_int_sums(x: QuantTensor, kernel, stride, padding=0) -> torch.Tensor:
    """Exact int64 sums of the window integers (padding counts as real zero, i.e. the zero point)."""
    ints = torch.round(x.value.double() / x.scale.double()).long()  # int - zero_point
    n, c, h, w = ints.shape
    cols = F.unfold(ints.double(), kernel, padding=padding, stride=stride).round().long()
    count = cols.shape[1] // c
    sums = cols.view(n, c, count, -1).sum(2) + count * int(x.zero_point.item())
    out_h = (h + 2 * padding - kernel[0]) // stride[0] + 1
    return sums.view(n, c, out_h, -1)


# ------------------------------------------------------------------ max pooling


@pytest.mark.parametrize("kwargs", [{}, {"stride": 1, "padding": 1}, {"dilation": 2, "ceil_mode": True}])
def test_max_pool_plain_equals_torch(kwargs):
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    close = dict(atol=1e-6, rtol=0)
    torch.testing.assert_close(QuantMaxPool2d(3, **kwargs)(x), nn.MaxPool2d(3, **kwargs)(x), **close)
    x1 = x.flatten(2)
    torch.testing.assert_close(QuantMaxPool1d(3, **kwargs)(x1), nn.MaxPool1d(3, **kwargs)(x1), **close)


def test_max_pool_keeps_a_valid_quant_tensor():
    x = grid_tensor((2, 3, 8, 8), scale=torch.tensor([0.1, 0.02, 0.3]).view(1, 3, 1, 1))
    out = QuantMaxPool2d(2)(x)
    assert isinstance(out, QuantTensor) and out.is_valid
    torch.testing.assert_close(out.value, F.max_pool2d(x.value, 2))
    assert torch.equal(out.scale, x.scale) and torch.equal(out.bit_width, x.bit_width) and out.signed
    out1 = QuantMaxPool1d(4, stride=2)(x.flatten(2))
    assert isinstance(out1, QuantTensor) and out1.is_valid
    torch.testing.assert_close(out1.value, F.max_pool1d(x.value.flatten(2), 4, 2))


def test_max_pool_return_indices_and_plain_output():
    x = grid_tensor((1, 2, 6, 6))
    out, idx = QuantMaxPool2d(2, return_indices=True)(x)
    ref, ref_idx = F.max_pool2d(x.value, 2, return_indices=True)
    assert out.is_valid and torch.equal(idx, ref_idx) and torch.equal(out.value, ref)
    plain, idx = QuantMaxPool2d(2, return_indices=True, return_quant_tensor=False)(x)
    assert type(plain) is torch.Tensor and torch.equal(plain, ref)
    assert type(QuantMaxPool2d(2, return_quant_tensor=False)(x)) is torch.Tensor


# ------------------------------------------------------------------ truncated average pooling


@pytest.mark.parametrize(
    "kwargs", [{}, {"stride": 1, "padding": 1}, {"ceil_mode": True, "count_include_pad": False}]
)
def test_trunc_avg_pool_disabled_equals_torch(kwargs):
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    layer = TruncAvgPool2d(3, trunc_quant=None, **kwargs)
    torch.testing.assert_close(layer(x), nn.AvgPool2d(3, **kwargs)(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("bit_width", "expected_bits", "shift"),
    [(None, 8, 4), (4, 4, 8), (10, 10, 2), (16, 12, 0)],  # k = 9: accumulator 8 + ceil(log2 9) = 12 bits
)
def test_trunc_avg_pool_grid_and_integers(bit_width, expected_bits, shift):
    x = grid_tensor((2, 3, 9, 9), scale=0.05)
    out = TruncAvgPool2d(3, stride=2, padding=1, bit_width=bit_width)(x)
    assert isinstance(out, QuantTensor) and out.is_valid and out.signed
    assert out.bit_width.item() == expected_bits
    torch.testing.assert_close(out.scale, torch.tensor(0.05 * 2**shift / 9))
    sums = window_int_sums(x, (3, 3), (2, 2), 1)
    assert torch.equal(out.int().long(), torch.div(sums, 2**shift, rounding_mode="floor"))
    # value is the float average rounded down to a multiple of the output step
    error = (F.avg_pool2d(x.value, 3, 2, 1) - out.value) / out.scale
    assert error.min() >= -1e-4 and error.max() < 1 + 1e-4


def test_trunc_avg_pool_per_channel_scale_and_divisor_override():
    scale = torch.tensor([0.1, 0.02]).view(1, 2, 1, 1)
    x = grid_tensor((1, 2, 8, 8), scale=scale)
    out = TruncAvgPool2d(2, divisor_override=3)(x)
    assert out.is_valid
    torch.testing.assert_close(out.scale, scale * 4 / 3)  # k = 4: shift 2, divided by 3
    error = (F.avg_pool2d(x.value, 2, divisor_override=3) - out.value) / out.scale
    assert error.min() >= -1e-4 and error.max() < 1 + 1e-4


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
    in_bits=st.integers(1, 8),
    signed=st.booleans(),
    out_bits=st.one_of(st.none(), st.integers(2, 16)),
    zero_point=st.integers(0, 3),
    seed=st.integers(0, 100),
)
def test_trunc_avg_pool_property(kernel, stride, in_bits, signed, out_bits, zero_point, seed):
    zero_point = 0 if signed else min(zero_point, 2**in_bits - 1)
    x = grid_tensor((1, 2, 7, 7), in_bits, signed, 0.125, zero_point, seed)
    out = TruncAvgPool2d(kernel, stride, bit_width=out_bits)(x)
    assert out.is_valid
    in_eff = 2 if signed and in_bits == 1 else in_bits
    acc = in_eff + math.ceil(math.log2(kernel * kernel)) if kernel > 1 else in_eff
    assert out.bit_width.item() == (in_eff if out_bits is None else min(out_bits, acc))
    error = (F.avg_pool2d(x.value, kernel, stride) - out.value) / out.scale
    assert error.min() >= -1e-4 and error.max() < 1 + 1e-4


def test_trunc_avg_pool_gradient_is_the_float_average_gradient():
    x = grid_tensor((1, 2, 6, 6))
    x.value.requires_grad_(True)
    TruncAvgPool2d(3, stride=3)(x).value.sum().backward()
    torch.testing.assert_close(x.value.grad, torch.full((1, 2, 6, 6), 1 / 9))


def test_trunc_avg_pool_input_quant_and_overrides():
    layer = TruncAvgPool2d(2, input_quant=Int8ActPerTensorFloat, input_bit_width=4)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    layer(x)
    layer.eval()
    out = layer(x)
    assert out.is_valid and out.bit_width.item() == 4
    plain = TruncAvgPool2d(2, input_quant=Int8ActPerTensorFloat, return_quant_tensor=False)
    assert type(plain(x)) is torch.Tensor


def test_trunc_avg_pool_errors():
    with pytest.raises(TypeError, match="QuantTensor.*input_quant"):
        TruncAvgPool2d(2)(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="ceil_mode"):
        TruncAvgPool2d(2, ceil_mode=True)
    with pytest.raises(ValueError, match="count_include_pad"):
        TruncAvgPool2d(3, padding=1, count_include_pad=False)
    with pytest.raises(ValueError, match="bit_width=0.*1..32"):
        TruncAvgPool2d(2, bit_width=0)
    with pytest.raises(TypeError, match="trunc_quant"):
        TruncAvgPool2d(2, trunc_quant=Int8ActPerTensorFloat)
    with pytest.raises(TypeError, match="did you mean input_bit_width"):
        TruncAvgPool2d(2, input_quant=Int8ActPerTensorFloat, input_bit_widht=4)
    with pytest.raises(TypeError, match="input_quant is None"):
        TruncAvgPool2d(2, input_bit_width=4)


# ------------------------------------------------------------------ adaptive average pooling


@pytest.mark.parametrize("output_size", [(2, 2), 3, (None, 1)])
def test_adaptive_avg_pool_disabled_equals_torch(output_size):
    x = torch.randn(2, 3, 7, 8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        QuantAdaptiveAvgPool2d(output_size, trunc_quant=None)(x),
        nn.AdaptiveAvgPool2d(output_size)(x),
        atol=1e-6,
        rtol=0,
    )


def test_adaptive_avg_pool_truncates_like_the_fixed_window():
    x = grid_tensor((2, 3, 8, 8))
    out = QuantAdaptiveAvgPool2d((2, 4))(x)
    ref = TruncAvgPool2d((4, 2))(x)
    assert out.is_valid and out.bit_width.item() == 8
    assert torch.equal(out.value, ref.value) and torch.equal(out.scale, ref.scale)
    glob = TruncAdaptiveAvgPool2d(1)(x)
    torch.testing.assert_close(glob.scale, torch.tensor(0.05 * 2**6 / 64))
    error = (x.value.mean((2, 3), keepdim=True) - glob.value) / glob.scale
    assert glob.is_valid and error.min() >= -1e-4 and error.max() < 1 + 1e-4
    kept = QuantAdaptiveAvgPool2d((None, 2))(x)
    assert kept.shape == (2, 3, 8, 2) and kept.is_valid


def test_adaptive_avg_pool_uneven_sizes_raise():
    with pytest.raises(ValueError, match=r"\(7, 7\).*\(2, 2\)"):
        QuantAdaptiveAvgPool2d(2)(grid_tensor((1, 1, 7, 7)))


def test_state_dict_round_trip():
    torch.manual_seed(5)
    first = TruncAvgPool2d(2, input_quant=Int8ActPerTensorFloat)
    for _ in range(3):
        first(torch.randn(2, 3, 8, 8))
    second = TruncAvgPool2d(2, input_quant=Int8ActPerTensorFloat)
    second.load_state_dict(first.state_dict(), strict=True)
    first.eval()
    second.eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(first(x).value, second(x).value)
    adaptive = QuantAdaptiveAvgPool2d(1, input_quant=Int8ActPerTensorFloat)
    QuantAdaptiveAvgPool2d(1, input_quant=Int8ActPerTensorFloat).load_state_dict(adaptive.state_dict())
    QuantMaxPool2d(2).load_state_dict(nn.MaxPool2d(2).state_dict(), strict=True)

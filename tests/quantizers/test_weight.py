"""Weight quantizers (quantframe.quantizers.weight) on random weights, against hand formulas.

Each quantizer is resolved with `WeightQuantProxy(Q, {}, "test", weight)`, as a layer would.
"""

import math

import pytest
import torch
from torch import nn

from quantframe.enums import QuantType
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.quantizers import (
    WEIGHT_QUANTIZERS,
    Int4WeightPerTensorFloat,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerChannelFloat,
    Int8WeightPerGroupFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Int8WeightPerTensorFloatMSE,
    ShiftedUint8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryWeightPerTensorConst,
)


def _weight(*shape, seed=0, std=0.1):
    return nn.Parameter(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std)


def _quantize(quant, weight, **overrides):
    proxy = WeightQuantProxy(quant, overrides, "test", weight)
    return proxy(weight)


@pytest.mark.parametrize("seed", range(3))
def test_int8_per_tensor_float(seed):
    w = _weight(16, 8, 3, 3, seed=seed)
    qt = _quantize(Int8WeightPerTensorFloat, w)
    expected_scale = w.detach().abs().max() / 127
    assert qt.scale.shape == ()
    assert torch.allclose(qt.scale, expected_scale, rtol=1e-6)
    ints = qt.int()
    assert ints.min() >= -127 and ints.max() <= 127
    assert ints.abs().max() == 127
    assert torch.equal(ints, torch.round(w.detach() / qt.scale.detach()).to(torch.int32))
    assert qt.bit_width.item() == 8 and qt.signed and qt.zero_point.item() == 0


@pytest.mark.parametrize("seed", range(3))
def test_int8_per_tensor_fixed_point(seed):
    w = _weight(16, 8, 3, 3, seed=seed)
    qt = _quantize(Int8WeightPerTensorFixedPoint, w)
    top = w.detach().abs().max().item()
    expected = 2.0 ** math.ceil(math.log2(top / 127))
    assert qt.scale.item() == expected
    # nothing is clipped: every quantized weight equals the rounded float weight
    ints = torch.round(w.detach() / expected)
    assert ints.abs().max() <= 127
    assert torch.equal(qt.value.detach(), ints * expected)


def test_int8_per_channel_float():
    w = _weight(6, 4, 3, 3)
    qt = _quantize(Int8WeightPerChannelFloat, w)
    assert qt.scale.shape == (6, 1, 1, 1)
    for o in range(6):
        assert torch.allclose(qt.scale[o].flatten(), w.detach()[o].abs().max() / 127, rtol=1e-6)
    ints = qt.int()
    assert ints.abs().amax(dim=(1, 2, 3)).tolist() == [127] * 6


def test_int8_per_channel_fixed_point():
    w = _weight(5, 7, seed=1)
    qt = _quantize(Int8WeightPerChannelFixedPoint, w)
    expected = [2.0 ** math.ceil(math.log2(m / 127)) for m in w.detach().abs().amax(1).tolist()]
    assert qt.scale.flatten().tolist() == expected
    assert qt.int().abs().max() <= 127


@pytest.mark.parametrize("group_size", [4, 8, None])
def test_int8_per_group(group_size):
    w = _weight(3, 64, 2, seed=2)
    overrides = {} if group_size is None else {"group_size": group_size}
    size = group_size or Int8WeightPerGroupFloat.group_size
    qt = _quantize(Int8WeightPerGroupFloat, w, **overrides)
    # one scale per block of `size` input channels of each output, broadcast over the block
    assert qt.scale.shape == (3, 64, 1)
    blocks = w.detach().reshape(3, 64 // size, size, 2)
    expected = (blocks.abs().amax(dim=(2, 3)) / 127).repeat_interleave(size, dim=1)
    assert torch.allclose(qt.scale[..., 0], expected, rtol=1e-6)
    assert qt.scale[..., 0].unique().numel() == 3 * 64 // size
    assert qt.is_valid and qt.int().abs().max() <= 127


def test_per_group_indivisible_channels_fail_at_construction():
    with pytest.raises(ValueError, match="group_size = 5") as info:
        WeightQuantProxy(Int8WeightPerGroupFloat, {"group_size": 5}, "MyConv", _weight(3, 64))
    assert "MyConv" in str(info.value) and "Int8WeightPerGroupFloat" in str(info.value)


def test_int4_per_tensor_float():
    w = _weight(8, 8)
    qt = _quantize(Int4WeightPerTensorFloat, w)
    assert torch.allclose(qt.scale, w.detach().abs().max() / 7, rtol=1e-6)
    assert qt.bit_width.item() == 4
    assert set(qt.int().unique().tolist()) <= set(range(-7, 8))


def test_shifted_uint8_asymmetric():
    w = _weight(8, 16, seed=3) + 0.05
    qt = _quantize(ShiftedUint8WeightPerTensorFloat, w)
    lo, hi = w.detach().min(), w.detach().max()
    scale = (hi - lo) / 255
    assert torch.allclose(qt.scale, scale, rtol=1e-6)
    assert qt.zero_point.item() == torch.round(-lo / scale).item()
    ints = qt.int()
    assert ints.min() >= 0 and ints.max() <= 255 and not qt.signed
    assert torch.allclose(qt.value, (ints - qt.zero_point) * qt.scale)


@pytest.mark.parametrize("const", [1.0, 0.1])
def test_binary_and_ternary_const(const):
    w = _weight(4, 9, seed=4)
    binary = _quantize(SignedBinaryWeightPerTensorConst, w, scaling_const=const)
    assert torch.equal(binary.value.detach(), torch.where(w.detach() >= 0, const, -const))
    assert binary.bit_width.item() == 1 and binary.is_valid
    ternary = _quantize(SignedTernaryWeightPerTensorConst, w, scaling_const=const)
    d = w.detach()
    expected = const * ((d > 0.5 * const).float() - (d < -0.5 * const).float())
    assert torch.equal(ternary.value.detach(), expected)
    assert ternary.bit_width.item() == 2 and ternary.is_valid


def test_mse_quantizer_never_worse_than_max():
    w = _weight(16, 64, seed=5, std=1.0)
    with torch.no_grad():
        w[0, 0] = 12.0  # an outlier that max scaling must cover: at 4 bits, clipping it pays
    mse = _quantize(Int8WeightPerTensorFloatMSE, w, bit_width=4)
    plain = _quantize(Int8WeightPerTensorFloat, w, bit_width=4)
    err_mse = ((mse.value - w) ** 2).mean()
    err_max = ((plain.value - w) ** 2).mean()
    assert mse.scale < plain.scale and err_mse < err_max
    assert mse.is_valid


def test_gradients_reach_the_weight_through_the_scale():
    w = _weight(4, 4, seed=6)
    qt = _quantize(Int8WeightPerTensorFloat, w)
    qt.value.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize(
    "quant",
    [q for q in WEIGHT_QUANTIZERS if q.quant_type == QuantType.INT],
    ids=lambda q: q.__name__,
)
def test_all_zero_weight_gives_the_scale_floor_without_nan(quant):
    w = nn.Parameter(torch.zeros(4, 32, 3))
    # 2^-20 is a power of two, so the floor is the same for float and fixed-point scales
    qt = _quantize(quant, w, scaling_min_val=2**-20)
    assert bool((qt.scale == 2**-20).all())
    assert torch.equal(qt.value, torch.zeros_like(w)) and qt.is_valid
    qt.value.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_all_zero_weight_default_floor():
    w = nn.Parameter(torch.zeros(4, 4))
    assert _quantize(Int8WeightPerTensorFloat, w).scale.item() == torch.tensor(1e-8).item()

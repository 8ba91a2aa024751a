"""quantframe.core.tensor_quant: composed quantization of one tensor, checked against hand formulas."""

import pytest
import torch

from quantframe.core.bit_width import ConstBitWidth, ParameterBitWidth
from quantframe.core.restrict_value import FloatRestrict
from quantframe.core.rounding import FloatToInt
from quantframe.core.scaling import ConstScaling, StatsScaling
from quantframe.core.stats import AbsMaxStats, MinMaxStats, NegativeMinStats
from quantframe.core.tensor_quant import (
    BinaryTensorQuant,
    ExternalScaleIntTensorQuant,
    IntTensorQuant,
    TernaryTensorQuant,
)
from quantframe.core.zero_point import StatsZeroPoint, ZeroZeroPoint
from quantframe.enums import FloatToIntImplType


def _int_quant(bits=8, signed=True, narrow=True, keep_dims=(), rounding="ROUND", group_size=None, zp=None):
    return IntTensorQuant(
        StatsScaling(AbsMaxStats(keep_dims), FloatRestrict(), 1e-8),
        zp or ZeroZeroPoint(),
        ConstBitWidth(bits),
        FloatToInt(FloatToIntImplType(rounding)),
        signed,
        narrow,
        group_size,
    )


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_int_quant_per_tensor_matches_formula():
    x = _randn(6, 5)
    value, scale, zero_point, bit_width = _int_quant()(x)
    expected_scale = x.abs().max() / 127
    assert torch.allclose(scale, expected_scale)
    assert zero_point.item() == 0 and bit_width.item() == 8
    ints = torch.round(x / scale)
    assert torch.allclose(value, ints * scale)
    assert ints.abs().max().item() == 127


@pytest.mark.parametrize(
    "rounding, fn", [("FLOOR", torch.floor), ("CEIL", torch.ceil), ("ROUND_TO_ZERO", torch.trunc)]
)
def test_int_quant_other_rounding_rules(rounding, fn):
    x = _randn(50)
    value, scale, _, _ = _int_quant(bits=4, rounding=rounding)(x)
    expected = torch.clamp(fn(x / scale), -7, 7) * scale
    assert torch.allclose(value, expected)


def test_int_quant_asymmetric():
    x = _randn(40, seed=1)
    tq = IntTensorQuant(
        StatsScaling(MinMaxStats(), FloatRestrict(), 1e-8),
        StatsZeroPoint(NegativeMinStats()),
        ConstBitWidth(8),
        FloatToInt(),
        False,
        False,
    )
    value, scale, zero_point, _ = tq(x)
    expected_scale = (x.max() - x.min()) / 255
    assert torch.allclose(scale, expected_scale)
    assert zero_point.item() == torch.round(-x.min() / expected_scale).item()
    ints = torch.clamp(torch.round(x / scale + zero_point), 0, 255)
    assert torch.allclose(value, (ints - zero_point) * scale)


def test_int_quant_per_group():
    w = _randn(3, 8, 2)
    value, scale, _, _ = _int_quant(keep_dims=(0, 1), group_size=4)(w)
    assert scale.shape == (3, 8, 1)
    for o in range(3):
        for g in range(2):
            block = w[o, 4 * g : 4 * g + 4]
            s = block.abs().max() / 127
            assert torch.allclose(scale[o, 4 * g : 4 * g + 4], s.expand(4, 1))
            assert torch.allclose(value[o, 4 * g : 4 * g + 4], torch.round(block / s) * s)


def test_int_quant_per_group_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="group_size=4"):
        _int_quant(keep_dims=(0, 1), group_size=4)(_randn(3, 6))


def test_int_quant_fused_and_reference_paths_agree():
    x = _randn(8, 16, seed=2).requires_grad_()
    fused = _int_quant(keep_dims=(0,))
    reference = _int_quant(keep_dims=(0,))
    reference.fusable_rounding = False
    a = fused(x)[0]
    b = reference(x)[0]
    assert torch.equal(a, b)
    ga = torch.autograd.grad(a.sum(), x)[0]
    gb = torch.autograd.grad(b.sum(), x)[0]
    assert torch.allclose(ga, gb, atol=1e-5)


def test_int_quant_learned_bit_width():
    tq = IntTensorQuant(
        ConstScaling(1.0, FloatRestrict(), 1e-8),
        ZeroZeroPoint(),
        ParameterBitWidth(4),
        FloatToInt(),
        True,
        False,
    )
    x = torch.linspace(-1.5, 1.5, 31)
    value, scale, _, bit_width = tq(x)
    assert bit_width.item() == 4 and scale.item() == 1 / 8
    assert torch.allclose(value, torch.clamp(torch.round(x * 8), -8, 7) / 8)
    value.sum().backward()
    assert tq.bit_width_impl.offset.grad is not None


def test_external_scale_int_quant():
    tq = ExternalScaleIntTensorQuant(ConstBitWidth(8), FloatToInt(), True, False)
    bias = torch.tensor([0.013, -5.0, 0.3])
    scale = torch.tensor([0.001, 0.01, 0.1])
    value, out_scale, zero_point, bit_width = tq(bias, scale)
    assert torch.equal(out_scale, scale) and zero_point.item() == 0 and bit_width.item() == 8
    assert torch.allclose(value, torch.tensor([13.0, -128.0, 3.0]) * scale)


def test_binary_and_ternary_quant():
    x = torch.tensor([-0.7, -0.2, 0.0, 0.3, 0.9])
    value, scale, zero_point, bit_width = BinaryTensorQuant(ConstScaling(0.5, FloatRestrict(), 1e-8))(x)
    assert torch.equal(value, torch.tensor([-0.5, -0.5, 0.5, 0.5, 0.5]))
    assert scale.item() == 0.5 and bit_width.item() == 1 and zero_point.item() == 0
    value, scale, _, bit_width = TernaryTensorQuant(ConstScaling(0.5, FloatRestrict(), 1e-8), 0.5)(x)
    assert torch.equal(value, torch.tensor([-0.5, 0.0, 0.0, 0.5, 0.5]))
    assert bit_width.item() == 2

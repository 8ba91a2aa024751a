"""Weight quantizers (scale from the weights themselves unless stated)."""

from quantframe.enums import QuantType
from quantframe.quantizers.base import (
    ConstScalingOne,
    MaxStatsScaling,
    MinMaxStatsScaling,
    MSEStatsScaling,
    NarrowIntQuant,
    PerChannelFloatScaling8bit,
    PerChannelPoTScaling8bit,
    PerGroupFloatScaling8bit,
    PerTensorFloatScaling8bit,
    PerTensorPoTScaling8bit,
    ShiftedMinUintQuant,
    WeightQuantSolver,
)


class Int8WeightPerTensorFloat(NarrowIntQuant, MaxStatsScaling, PerTensorFloatScaling8bit, WeightQuantSolver):
    """8-bit narrow signed weights, scale = max|w| / 127."""


class Int8WeightPerChannelFloat(
    NarrowIntQuant, MaxStatsScaling, PerChannelFloatScaling8bit, WeightQuantSolver
):
    """8-bit narrow signed weights, one scale max|w_c| / 127 per output channel."""


class Int8WeightPerTensorFixedPoint(
    NarrowIntQuant, MaxStatsScaling, PerTensorPoTScaling8bit, WeightQuantSolver
):
    """8-bit narrow signed weights, scale = 2^ceil(log2(max|w| / 127)) (nothing clips)."""


class Int8WeightPerChannelFixedPoint(
    NarrowIntQuant, MaxStatsScaling, PerChannelPoTScaling8bit, WeightQuantSolver
):
    """8-bit narrow signed weights, a power-of-two scale per output channel."""


class Int4WeightPerTensorFloat(Int8WeightPerTensorFloat):
    """4-bit narrow signed weights, scale = max|w| / 7."""

    bit_width = 4


class Int8WeightPerGroupFloat(NarrowIntQuant, MaxStatsScaling, PerGroupFloatScaling8bit, WeightQuantSolver):
    """8-bit narrow signed weights, one scale per block of `group_size` input channels of each output."""


class ShiftedUint8WeightPerTensorFloat(
    ShiftedMinUintQuant, MinMaxStatsScaling, PerTensorFloatScaling8bit, WeightQuantSolver
):
    """8-bit asymmetric weights: scale = (max - min) / 255, zero point = round(-min / scale)."""


class SignedBinaryWeightPerTensorConst(ConstScalingOne, WeightQuantSolver):
    """Bipolar weights {-1, +1} x `scaling_const`."""

    quant_type = QuantType.BINARY
    bit_width = 1
    signed = True
    narrow_range = False


class SignedTernaryWeightPerTensorConst(ConstScalingOne, WeightQuantSolver):
    """Ternary weights {-1, 0, +1} x `scaling_const`; zero where |w| <= threshold x scale."""

    quant_type = QuantType.TERNARY
    bit_width = 2
    signed = True
    narrow_range = True
    threshold = 0.5


class Int8WeightPerTensorFloatMSE(
    NarrowIntQuant, MSEStatsScaling, PerTensorFloatScaling8bit, WeightQuantSolver
):
    """8-bit narrow signed weights with the threshold that minimises the MSE of the quantized weights."""

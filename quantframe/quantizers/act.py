"""Activation quantizers: statistics collected in training, then a learned scale."""

from quantframe.enums import QuantType
from quantframe.quantizers.base import (
    ActQuantSolver,
    ConstScalingOne,
    IntQuant,
    ParamFromRuntimePercentileIntervalScaling,
    ParamFromRuntimePercentileScaling,
    ParamMinMaxInitScaling,
    PerTensorFloatScaling8bit,
    PerTensorPoTScaling8bit,
    UintQuant,
)


class Int8ActPerTensorFloat(
    IntQuant, ParamFromRuntimePercentileScaling, PerTensorFloatScaling8bit, ActQuantSolver
):
    """8-bit signed activations: threshold = 99.999th percentile of |x|, scale = threshold / 128."""


class Uint8ActPerTensorFloat(
    UintQuant, ParamFromRuntimePercentileScaling, PerTensorFloatScaling8bit, ActQuantSolver
):
    """8-bit unsigned activations: threshold = 99.999th percentile of x, scale = threshold / 255."""


class Int8ActPerTensorFixedPoint(
    IntQuant, ParamFromRuntimePercentileScaling, PerTensorPoTScaling8bit, ActQuantSolver
):
    """8-bit signed activations with a power-of-two scale."""


class Uint8ActPerTensorFixedPoint(
    UintQuant, ParamFromRuntimePercentileScaling, PerTensorPoTScaling8bit, ActQuantSolver
):
    """8-bit unsigned activations with a power-of-two scale."""


class ShiftedUint8ActPerTensorFloat(
    UintQuant, ParamFromRuntimePercentileIntervalScaling, PerTensorFloatScaling8bit, ActQuantSolver
):
    """Asymmetric uint8: scale over the [0.001, 99.999] percentile interval; learned zero point."""


class Int8ActPerTensorFloatMinMaxInit(
    IntQuant, ParamMinMaxInitScaling, PerTensorFloatScaling8bit, ActQuantSolver
):
    """8-bit signed activations, a learned scale initialised from `min_val`/`max_val` (set them)."""


class SignedBinaryActPerTensorConst(ConstScalingOne, ActQuantSolver):
    """Bipolar activations {-1, +1} x `scaling_const`."""

    quant_type = QuantType.BINARY
    bit_width = 1
    signed = True
    narrow_range = False


class SignedTernaryActPerTensorConst(ConstScalingOne, ActQuantSolver):
    """Ternary activations {-1, 0, +1} x `scaling_const`."""

    quant_type = QuantType.TERNARY
    bit_width = 2
    signed = True
    narrow_range = True
    threshold = 0.5

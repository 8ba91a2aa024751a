"""Bias quantizers: scale = input scale x weight scale, or a scale of their own."""

from quantframe.quantizers.base import (
    BiasQuantSolver,
    IntQuant,
    MaxStatsScaling,
    NarrowIntQuant,
    PerTensorFloatScaling8bit,
    PerTensorPoTScaling8bit,
)


class Int8Bias(IntQuant, BiasQuantSolver):
    """8-bit bias on the accumulator grid: scale = input scale x weight scale (needs a quantized input)."""

    bit_width = 8
    requires_input_scale = True
    requires_input_bit_width = False


class Int16Bias(Int8Bias):
    """16-bit bias on the accumulator grid."""

    bit_width = 16


class Int24Bias(Int8Bias):
    """24-bit bias on the accumulator grid."""

    bit_width = 24


class Int32Bias(Int8Bias):
    """32-bit bias on the accumulator grid."""

    bit_width = 32


class Int8BiasPerTensorFloatInternalScaling(
    NarrowIntQuant, MaxStatsScaling, PerTensorFloatScaling8bit, BiasQuantSolver
):
    """8-bit bias with its own scale max|b| / 127 (no quantized input needed)."""


class Int8BiasPerTensorFixedPointInternalScaling(
    NarrowIntQuant, MaxStatsScaling, PerTensorPoTScaling8bit, BiasQuantSolver
):
    """8-bit bias with its own power-of-two scale (no quantized input needed)."""

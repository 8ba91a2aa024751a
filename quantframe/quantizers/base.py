"""Mixins that quantizers are composed from: one fragment of configuration each.

`QuantBase` carries the solvers and the defaults every quantizer shares; the fragments below
set a grid (`IntQuant`, `NarrowIntQuant`, `UintQuant`), a source of scale (`MaxStatsScaling`,
`ParamFromRuntimePercentileScaling`, ...), a domain and granularity (`PerTensorFloatScaling8bit`,
`PerChannelPoTScaling8bit`, ...) and a role (`WeightQuantSolver`, `ActQuantSolver`,
`BiasQuantSolver`).
"""

from quantframe.core.rounding import FloatToInt
from quantframe.enums import (
    BitWidthImplType,
    FloatToIntImplType,
    QuantType,
    RestrictValueType,
    ScalingImplType,
    StatsOp,
    ZeroPointImplType,
)
from quantframe.inject import QuantInjector
from quantframe.quantizers import solvers


class QuantBase(QuantInjector):
    """Defaults and enum-to-component solvers shared by every quantizer."""

    quant_type = QuantType.INT
    bit_width_impl_type = BitWidthImplType.CONST
    float_to_int_impl_type = FloatToIntImplType.ROUND
    restrict_scaling_type = RestrictValueType.FP
    zero_point_impl_type = ZeroPointImplType.ZERO
    scaling_per_output_channel = False
    scaling_per_group = False
    scaling_min_val = 1e-8
    requires_input_scale = False
    requires_input_bit_width = False

    tensor_quant = solvers.solve_tensor_quant
    scaling_impl = solvers.solve_scaling_impl
    stats_impl = solvers.solve_stats_impl
    restrict_impl = solvers.solve_restrict_impl
    bit_width_impl = solvers.solve_bit_width_impl
    zero_point_impl = solvers.solve_zero_point_impl
    zero_point_stats_impl = solvers.solve_zero_point_stats_impl
    float_to_int_impl = FloatToInt
    stats_keep_dims = solvers.stats_keep_dims
    scaling_shape = solvers.scaling_shape
    effective_group_size = solvers.effective_group_size


# Grids
class IntQuant(QuantBase):
    """Signed integers, full range (-2^(b-1) .. 2^(b-1) - 1)."""

    quant_type = QuantType.INT
    signed = True
    narrow_range = False


class NarrowIntQuant(IntQuant):
    """Signed integers without the most negative level (-127 .. 127 at 8 bits)."""

    narrow_range = True


class UintQuant(QuantBase):
    """Unsigned integers (0 .. 2^b - 1)."""

    quant_type = QuantType.INT
    signed = False
    narrow_range = False


class ShiftedMinUintQuant(UintQuant):
    """Unsigned integers with a zero point, so the grid covers [min, max] of a signed tensor."""

    zero_point_impl_type = ZeroPointImplType.STATS


# Sources of scale
class MaxStatsScaling(QuantBase):
    """Scale from max |x| of the tensor, every call."""

    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.MAX


class MinMaxStatsScaling(QuantBase):
    """Scale from max(x) - min(x) (zero included), every call."""

    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.MIN_MAX


class MSEStatsScaling(QuantBase):
    """Scale from the threshold minimising the mean squared quantization error, every call."""

    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.MSE


class ParamFromRuntimePercentileScaling(QuantBase):
    """Collect the 99.999th percentile for 300 training steps (EMA 0.1), then learn the scale."""

    scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
    scaling_stats_op = StatsOp.PERCENTILE
    high_percentile_q = 99.999
    collect_stats_steps = 300
    scaling_stats_momentum = 0.1


class ParamFromRuntimePercentileIntervalScaling(ParamFromRuntimePercentileScaling):
    """Like the percentile scaling, over the interval between the 0.001th and 99.999th percentiles."""

    low_percentile_q = 0.001
    zero_point_impl_type = ZeroPointImplType.PARAMETER_FROM_STATS


class ParamMinMaxInitScaling(QuantBase):
    """A learned scale initialised from the user's `min_val`/`max_val` range."""

    scaling_impl_type = ScalingImplType.PARAMETER
    scaling_init = solvers.min_max_scaling_init


class ConstScalingOne(QuantBase):
    """A constant scale of `scaling_const` (1.0)."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 1.0


# Domains and granularity
class PerTensorFloatScaling8bit(QuantBase):
    bit_width = 8
    restrict_scaling_type = RestrictValueType.FP
    scaling_per_output_channel = False


class PerChannelFloatScaling8bit(PerTensorFloatScaling8bit):
    scaling_per_output_channel = True


class PerGroupFloatScaling8bit(PerTensorFloatScaling8bit):
    scaling_per_group = True
    group_size = 32


class PerTensorPoTScaling8bit(QuantBase):
    bit_width = 8
    restrict_scaling_type = RestrictValueType.POWER_OF_TWO
    scaling_per_output_channel = False


class PerChannelPoTScaling8bit(PerTensorPoTScaling8bit):
    scaling_per_output_channel = True


# Roles
class WeightQuantSolver(QuantBase):
    """Quantizes a layer's weight (per-channel axis 0)."""

    quant_role = "weight"


class ActQuantSolver(QuantBase):
    """Quantizes activations (per-channel axis 1); statistics collected in training."""

    quant_role = "act"


class BiasQuantSolver(QuantBase):
    """Quantizes a layer's bias."""

    quant_role = "bias"

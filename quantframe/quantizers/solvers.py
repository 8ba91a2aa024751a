"""Enum-to-component rules and derived attributes shared by every quantizer.

Each `@solver` maps the user's vocabulary (enums, flags) to the core component class that
implements it; each `@value` derives a setting (reduction dims, parameter shape) from others.
"""

from quantframe.core import bit_width, scaling, stats, tensor_quant, zero_point
from quantframe.core.restrict_value import RESTRICT_IMPLS
from quantframe.enums import (
    BitWidthImplType,
    QuantType,
    RestrictValueType,
    ScalingImplType,
    StatsOp,
    ZeroPointImplType,
)
from quantframe.inject import solver, value


@solver
def solve_tensor_quant(quant_type, requires_input_scale=False):  # noqa: ANN001, ANN201
    if requires_input_scale:
        return tensor_quant.ExternalScaleIntTensorQuant
    return {
        QuantType.INT: tensor_quant.IntTensorQuant,
        QuantType.BINARY: tensor_quant.BinaryTensorQuant,
        QuantType.TERNARY: tensor_quant.TernaryTensorQuant,
    }[QuantType(quant_type)]


@solver
def solve_scaling_impl(scaling_impl_type):  # noqa: ANN001, ANN201
    return {
        ScalingImplType.STATS: scaling.StatsScaling,
        ScalingImplType.PARAMETER: scaling.ParameterScaling,
        ScalingImplType.PARAMETER_FROM_STATS: scaling.ParameterFromStatsScaling,
        ScalingImplType.CONST: scaling.ConstScaling,
    }[ScalingImplType(scaling_impl_type)]


@solver
def solve_stats_impl(scaling_stats_op):  # noqa: ANN001, ANN201
    return {
        StatsOp.MAX: stats.AbsMaxStats,
        StatsOp.MIN_MAX: stats.MinMaxStats,
        StatsOp.PERCENTILE: stats.PercentileStats,
        StatsOp.AVE: stats.AbsAveStats,
        StatsOp.MSE: stats.MSEStats,
    }[StatsOp(scaling_stats_op)]


@solver
def solve_restrict_impl(restrict_scaling_type):  # noqa: ANN001, ANN201
    return RESTRICT_IMPLS[RestrictValueType(restrict_scaling_type)]


@solver
def solve_bit_width_impl(bit_width_impl_type):  # noqa: ANN001, ANN201
    return {
        BitWidthImplType.CONST: bit_width.ConstBitWidth,
        BitWidthImplType.PARAMETER: bit_width.ParameterBitWidth,
    }[BitWidthImplType(bit_width_impl_type)]


@solver
def solve_zero_point_impl(zero_point_impl_type):  # noqa: ANN001, ANN201
    return {
        ZeroPointImplType.ZERO: zero_point.ZeroZeroPoint,
        ZeroPointImplType.STATS: zero_point.StatsZeroPoint,
        ZeroPointImplType.PARAMETER_FROM_STATS: zero_point.ParameterFromStatsZeroPoint,
    }[ZeroPointImplType(zero_point_impl_type)]


@solver
def solve_zero_point_stats_impl(zero_point_impl_type):  # noqa: ANN001, ANN201
    if ZeroPointImplType(zero_point_impl_type) == ZeroPointImplType.PARAMETER_FROM_STATS:
        return stats.NegativePercentileStats
    return stats.NegativeMinStats


@value
def stats_keep_dims(quant_role, scaling_per_output_channel=False, scaling_per_group=False):  # noqa: ANN001, ANN201
    """Kept dims: none per tensor; the channel axis (0 weight, 1 activation); (0, 1) per group."""
    if scaling_per_group:
        return (0, 1)
    if scaling_per_output_channel:
        return (0,) if quant_role == "weight" else (1,)
    return ()


@value
def scaling_shape(  # noqa: ANN201
    quant_role,  # noqa: ANN001
    scaling_per_output_channel=False,  # noqa: ANN001
    scaling_per_group=False,  # noqa: ANN001
    tracked_shape=None,  # noqa: ANN001
    per_channel_broadcastable_shape=None,  # noqa: ANN001
    group_size=None,  # noqa: ANN001
):
    """Shape of a learned or collected scale: () per tensor, broadcastable per channel or group."""
    if scaling_per_group:
        return (tracked_shape[0], tracked_shape[1] // group_size, 1, *(1 for _ in tracked_shape[2:]))
    if not scaling_per_output_channel:
        return ()
    if per_channel_broadcastable_shape is not None:
        return tuple(per_channel_broadcastable_shape)
    if quant_role == "weight" and tracked_shape is not None:
        return (tracked_shape[0], *(1 for _ in tracked_shape[1:]))
    raise ValueError(
        "per-channel scaling of an activation needs per_channel_broadcastable_shape, e.g. (1, C, 1, 1)"
    )


@value
def effective_group_size(scaling_per_group=False, group_size=None):  # noqa: ANN001, ANN201
    return group_size if scaling_per_group else None


@value
def min_max_scaling_init(min_val, max_val):  # noqa: ANN001, ANN201
    """Threshold of a range [min_val, max_val]: its largest magnitude."""
    return max(abs(float(min_val)), abs(float(max_val)))

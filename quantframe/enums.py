"""The user's vocabulary for configuring quantizers (Brevitas-compatible names)."""

from enum import Enum


class _NamedEnum(str, Enum):
    """String-valued enum: `X.MAX == "MAX"`, so specs serialise to plain JSON strings."""

    def __str__(self) -> str:
        return self.value


class QuantType(_NamedEnum):
    """Kind of grid a quantizer maps onto."""

    INT = "INT"
    BINARY = "BINARY"
    TERNARY = "TERNARY"
    FP = "FP"


class ScalingImplType(_NamedEnum):
    """Where the scale comes from."""

    STATS = "STATS"
    PARAMETER = "PARAMETER"
    PARAMETER_FROM_STATS = "PARAMETER_FROM_STATS"
    CONST = "CONST"


class StatsOp(_NamedEnum):
    """Statistic reduced from a tensor to choose its scale (threshold)."""

    MAX = "MAX"
    MIN_MAX = "MIN_MAX"
    PERCENTILE = "PERCENTILE"
    AVE = "AVE"
    MSE = "MSE"


class RestrictValueType(_NamedEnum):
    """Domain the scale lives in: any float, learned in log2, or an exact power of two."""

    FP = "FP"
    LOG_FP = "LOG_FP"
    POWER_OF_TWO = "POWER_OF_TWO"


class FloatToIntImplType(_NamedEnum):
    """Rounding rule from the scaled float value to the integer grid."""

    ROUND = "ROUND"
    FLOOR = "FLOOR"
    CEIL = "CEIL"
    ROUND_TO_ZERO = "ROUND_TO_ZERO"
    STOCHASTIC_ROUND = "STOCHASTIC_ROUND"


class BitWidthImplType(_NamedEnum):
    """Whether the bit width is a constant or a learned parameter."""

    CONST = "CONST"
    PARAMETER = "PARAMETER"


class ZeroPointImplType(_NamedEnum):
    """Where the zero point comes from: symmetric (zero), statistics, or a learned parameter."""

    ZERO = "ZERO"
    STATS = "STATS"
    PARAMETER_FROM_STATS = "PARAMETER_FROM_STATS"

"""Restrict-value components: the domain a scale is stored and learned in.

`to_domain` maps a positive threshold into the stored domain (identity for FP, log2 for
LOG_FP and POWER_OF_TWO); `to_scale` maps a stored value back and divides by the grid's
largest magnitude. POWER_OF_TWO rounds log2(threshold / divisor) up (straight-through) so
the scale is 2^k with k an integer and nothing clips.
"""

import math

import torch
from torch import Tensor, nn

from quantframe.core.ste import ceil_ste
from quantframe.enums import RestrictValueType


def log2_positive(threshold: Tensor) -> Tensor:
    """log2 of a threshold floored at the dtype's smallest normal number.

    An all-zero tensor has threshold 0: log2(0) = -inf would make a learned scale -inf for good
    and its gradient NaN (0 * inf); the floor keeps both finite (the scale floor applies later).
    """
    return torch.log2(torch.clamp_min(threshold, torch.finfo(threshold.dtype).tiny))


class _Restrict(nn.Module):
    def __init__(self):  # an explicit signature, so constructor injection can build it
        super().__init__()


class FloatRestrict(_Restrict):
    """Any positive float: scale = threshold / divisor."""

    def to_domain(self, threshold: Tensor) -> Tensor:
        return threshold

    def to_scale(self, stored: Tensor, divisor: Tensor | int, min_scale: float) -> Tensor:
        return torch.clamp_min(stored / divisor, min_scale)


class LogFloatRestrict(_Restrict):
    """Stored as log2(threshold), so a learned scale stays positive: scale = 2^stored / divisor."""

    def to_domain(self, threshold: Tensor) -> Tensor:
        return log2_positive(threshold)

    def to_scale(self, stored: Tensor, divisor: Tensor | int, min_scale: float) -> Tensor:
        return torch.clamp_min(torch.exp2(stored) / divisor, min_scale)


class PowerOfTwoRestrict(_Restrict):
    """Fixed point: scale = 2^ceil(log2(threshold / divisor)), stored as log2(threshold)."""

    def to_domain(self, threshold: Tensor) -> Tensor:
        return log2_positive(threshold)

    def to_scale(self, stored: Tensor, divisor: Tensor | int, min_scale: float) -> Tensor:
        log_divisor = torch.log2(divisor) if isinstance(divisor, Tensor) else math.log2(divisor)
        log_scale = torch.clamp_min(stored - log_divisor, math.log2(min_scale))
        return torch.exp2(ceil_ste(log_scale))


RESTRICT_IMPLS: dict[RestrictValueType, type[nn.Module]] = {
    RestrictValueType.FP: FloatRestrict,
    RestrictValueType.LOG_FP: LogFloatRestrict,
    RestrictValueType.POWER_OF_TWO: PowerOfTwoRestrict,
}


def restrict_impl_for(restrict_scaling_type: RestrictValueType) -> nn.Module:
    """The restrict component for an enum value."""
    return RESTRICT_IMPLS[RestrictValueType(restrict_scaling_type)]()

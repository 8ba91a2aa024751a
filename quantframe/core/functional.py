"""Binary and ternary quantization: grids without a round-clamp, each with a straight-through gradient."""

import torch
from torch import Tensor


def binary_quant(x: Tensor, scale: Tensor) -> Tensor:
    """Bipolar quantization: scale * sign(x), sign(0) = +1; straight-through gradient inside |x| <= scale."""
    sign = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    return _straight_through(torch.clamp(x, -scale, scale), sign * scale)


def ternary_quant(x: Tensor, scale: Tensor, threshold: float) -> Tensor:
    """Ternary quantization: scale * {-1, 0, +1} with |x| > threshold * scale; straight-through gradient."""
    levels = (x > threshold * scale).to(x.dtype) - (x < -threshold * scale).to(x.dtype)
    return _straight_through(torch.clamp(x, -scale, scale), levels * scale)


def _straight_through(surrogate: Tensor, exact: Tensor) -> Tensor:
    """`exact`'s values with `surrogate`'s gradient.

    Written as (surrogate - surrogate) + exact rather than surrogate + (exact - surrogate): the
    first is exactly `exact` in floating point, the second can miss it by a rounding.
    """
    return (surrogate - surrogate.detach()) + exact.detach()


__all__ = ["binary_quant", "ternary_quant"]

"""Plain functions on tensors: binary and ternary quantization, and the integer range by bit width.

The integer range functions are thin wrappers over `quantframe.core.grid.IntGrid` (kept for
callers that pass bit width, sign and narrow range separately); the round-clamp kernels live in
`quantframe.core.fake_quant` and are re-exported here under their former home.
"""

import torch
from torch import Tensor

from quantframe.core.fake_quant import can_fuse, fused_axis, fused_fake_quant, reference_fake_quant
from quantframe.core.grid import BitWidth, IntGrid


def max_int(bit_width: BitWidth, signed: bool, narrow_range: bool) -> BitWidth:
    """Largest integer of the grid: 2^(b-1) - 1 signed, 2^b - 1 unsigned (2^b - 2 narrow unsigned)."""
    return IntGrid(bit_width, signed, narrow_range).max_int


def min_int(bit_width: BitWidth, signed: bool, narrow_range: bool) -> BitWidth:
    """Smallest integer of the grid: -2^(b-1) signed (+1 when narrow), 0 unsigned."""
    return IntGrid(bit_width, signed, narrow_range).min_int


def threshold_divisor(bit_width: BitWidth, signed: bool, narrow_range: bool) -> BitWidth:
    """What a threshold is divided by to give the scale: 127 for narrow int8, 128 int8, 255 uint8."""
    return IntGrid(bit_width, signed, narrow_range).divisor


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


__all__ = [
    "binary_quant",
    "can_fuse",
    "fused_axis",
    "fused_fake_quant",
    "max_int",
    "min_int",
    "reference_fake_quant",
    "ternary_quant",
    "threshold_divisor",
]

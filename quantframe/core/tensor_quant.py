"""Tensor quantizers: the composed quantization of one tensor, returning value and metadata.

`IntTensorQuant` wires scaling, zero point, bit width and rounding components into one call; the
grid is a `quantframe.core.grid.IntGrid` and the math is `quantframe.core.fake_quant` (binary and
ternary: `quantframe.core.functional`). Each returns `(value, scale, zero_point, bit_width)`.
"""

import torch
from torch import Tensor, nn

from quantframe.core.fake_quant import fake_quant, reference_fake_quant
from quantframe.core.functional import binary_quant, ternary_quant
from quantframe.core.grid import IntGrid
from quantframe.core.scaling import StatsScaling
from quantframe.core.stats import AbsMaxStats
from quantframe.enums import FloatToIntImplType

QuantOutput = tuple[Tensor, Tensor, Tensor, Tensor]


class IntTensorQuant(nn.Module):
    """Integer fake quantization: value = (clamp(round(x / s + z), lo, hi) - z) * s.

    With `group_size` the tensor is viewed as (O, I / group_size, group_size, ...) so that each
    block of `group_size` input channels gets its own scale; the returned scale is expanded back
    to (O, I, 1, ...) so that it broadcasts against the original tensor.
    """

    def __init__(
        self,
        scaling_impl: nn.Module,
        zero_point_impl: nn.Module,
        bit_width_impl: nn.Module,
        float_to_int_impl: nn.Module,
        signed: bool,
        narrow_range: bool,
        effective_group_size: int | None = None,
    ):
        super().__init__()
        self.scaling_impl = scaling_impl
        self.zero_point_impl = zero_point_impl
        self.bit_width_impl = bit_width_impl
        self.float_to_int_impl = float_to_int_impl
        self.signed = bool(signed)
        self.narrow_range = bool(narrow_range)
        self.group_size = effective_group_size
        self.grid = IntGrid(bit_width_impl.int_value, self.signed, self.narrow_range)
        self.min_value, self.max_value, self.divisor = self.grid.min_int, self.grid.max_int, self.grid.divisor
        rounds_half_even = float_to_int_impl.impl_type == FloatToIntImplType.ROUND
        self.fusable_rounding = rounds_half_even and bit_width_impl.is_const
        # max |x| / divisor on a symmetric grid whose magnitude reaches the divisor: nothing clips.
        self.never_clips = (
            isinstance(scaling_impl, StatsScaling)
            and isinstance(scaling_impl.stats, AbsMaxStats)
            and getattr(zero_point_impl, "is_zero", False)
            and self.divisor <= min(-self.min_value, self.max_value)
        )

    def forward(self, x: Tensor, stats_input: Tensor | None = None) -> QuantOutput:
        bit_width = self.bit_width_impl()
        if self.bit_width_impl.is_const:
            lo, hi, divisor = self.min_value, self.max_value, self.divisor
        else:
            grid = IntGrid(bit_width, self.signed, self.narrow_range)
            lo, hi, divisor = grid.min_int, grid.max_int, grid.divisor
        shape = x.shape
        if self.group_size is not None:
            x = self._grouped(x)
            stats_input = None if stats_input is None else self._grouped(stats_input)
        scale = self.scaling_impl(x if stats_input is None else stats_input, divisor)
        zero_point = self.zero_point_impl(x, scale, hi)
        round_fn = None if self.fusable_rounding else self.float_to_int_impl
        value = fake_quant(
            x, scale, zero_point, lo, hi, round_fn, self.zero_point_impl.is_zero, self.never_clips
        )
        if self.group_size is not None:
            value = value.reshape(shape)
            scale = self._ungrouped(scale, shape)
            zero_point = self._ungrouped(zero_point, shape) if zero_point.numel() > 1 else zero_point
        return value, scale, zero_point, bit_width

    def _grouped(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels % self.group_size:
            raise ValueError(
                f"per-group quantization: {channels} input channels are not a multiple of "
                f"group_size={self.group_size}"
            )
        return x.reshape(x.shape[0], channels // self.group_size, self.group_size, *x.shape[2:])

    def _ungrouped(self, t: Tensor, shape: torch.Size) -> Tensor:
        expanded = t.expand(t.shape[0], t.shape[1], self.group_size, *t.shape[3:])
        return expanded.reshape(shape[0], shape[1], *t.shape[3:])


class ExternalScaleIntTensorQuant(nn.Module):
    """Integer fake quantization with a scale given by the caller (bias: input scale x weight scale)."""

    def __init__(
        self, bit_width_impl: nn.Module, float_to_int_impl: nn.Module, signed: bool, narrow_range: bool
    ):
        super().__init__()
        self.bit_width_impl = bit_width_impl
        self.float_to_int_impl = float_to_int_impl
        self.signed = bool(signed)
        self.narrow_range = bool(narrow_range)
        self.register_buffer("zero_point", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor, scale: Tensor) -> QuantOutput:
        bit_width = self.bit_width_impl()
        grid = IntGrid(bit_width, self.signed, self.narrow_range)
        lo, hi = grid.min_int, grid.max_int
        value = reference_fake_quant(x, scale, self.zero_point, lo, hi, self.float_to_int_impl)
        return value, scale, self.zero_point, bit_width


class BinaryTensorQuant(nn.Module):
    """Bipolar quantization to {-scale, +scale}: 1 signed bit."""

    signed = True
    narrow_range = False
    grid = IntGrid.binary()

    def __init__(self, scaling_impl: nn.Module):
        super().__init__()
        self.scaling_impl = scaling_impl
        self.register_buffer("bit_width", torch.tensor(1.0), persistent=False)
        self.register_buffer("zero_point", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor, stats_input: Tensor | None = None) -> QuantOutput:
        scale = self.scaling_impl(x if stats_input is None else stats_input, self.grid.divisor)
        return binary_quant(x, scale), scale, self.zero_point, self.bit_width


class TernaryTensorQuant(nn.Module):
    """Ternary quantization to {-scale, 0, +scale}, zero below `threshold * scale`: 2 signed bits, narrow."""

    signed = True
    narrow_range = True
    grid = IntGrid.ternary()

    def __init__(self, scaling_impl: nn.Module, threshold: float = 0.5):
        super().__init__()
        self.scaling_impl = scaling_impl
        self.threshold = float(threshold)
        self.register_buffer("bit_width", torch.tensor(2.0), persistent=False)
        self.register_buffer("zero_point", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor, stats_input: Tensor | None = None) -> QuantOutput:
        scale = self.scaling_impl(x if stats_input is None else stats_input, self.grid.divisor)
        return ternary_quant(x, scale, self.threshold), scale, self.zero_point, self.bit_width

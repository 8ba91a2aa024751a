"""Quantization grids as value objects: which levels a quantized tensor may take, in units of its scale.

    value = (level - zero_point) * scale,   level one of the grid's levels

Every range question of the package is answered here: the integer range of a grid, what a
threshold is divided by to give the scale, whether 0 is a level, and how many bits its integers
count as where they are summed or multiplied. The rest of the package asks a `Grid`, never writes
`2 ** (b - 1)` itself.

`Grid` is the protocol every kind of grid answers (`divisor`, `lowest`, `highest`,
`zero_is_level`, `contains`); `IntGrid` is the integer kind (plain integers, bipolar, ternary).
A minifloat format is meant to be a second implementation of `Grid`, not a parallel world: a
`MinifloatGrid(exponent_bits, mantissa_bits, exponent_bias, inf/nan codes)` answers `divisor` and
`highest` with its largest finite value, `lowest` with its negation, `zero_is_level` with True,
and `contains` with "is a representable value"; an MX block format is such an element grid plus a
block size whose shared scale is restricted to powers of two. Only the integer-specific questions
(`min_int`, `max_int`, the bit widths of sums) stay on `IntGrid`.

Bit widths may be Python ints or float tensors (learned bit widths, a QuantTensor's metadata):
every answer is then a tensor computed elementwise, without a device sync.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

BitWidth = Tensor | int


class GridKind(enum.Enum):
    """The level sets an `IntGrid` can describe."""

    INTEGER = "integer"
    """min_int..max_int from bit width, sign and narrow range (1 signed bit: {-1, 0})."""
    BINARY = "binary"
    """Bipolar {-1, +1}: 1 signed bit, no 0 level."""
    TERNARY = "ternary"
    """{-1, 0, +1}: 2 signed narrow bits."""
    METADATA = "metadata"
    """What a QuantTensor's (bit_width, signed) pair says: INTEGER at full range, except that 1 signed
    bit is bipolar (decided elementwise for a tensor bit width)."""


@runtime_checkable
class Grid(Protocol):
    """The questions every kind of quantization grid answers (levels in units of the scale)."""

    @property
    def signed(self) -> bool:
        """Whether the grid has negative levels."""

    @property
    def divisor(self) -> BitWidth | float:
        """What a threshold (max |x|) is divided by to give the scale: the grid's largest magnitude."""

    @property
    def lowest(self) -> BitWidth | float:
        """The smallest level (0 for an unsigned grid)."""

    @property
    def highest(self) -> BitWidth | float:
        """The largest level."""

    @property
    def zero_is_level(self) -> bool | Tensor:
        """Whether 0 is a level (so zero padding, ReLU and dropout stay on the grid)."""

    def contains(self, levels: Tensor) -> Tensor:
        """Elementwise: whether each of `levels` (already rounded to the grid's kind) is a level."""


class IntGrid(NamedTuple):
    """An integer grid: `bit_width` bits, `signed` or not, `narrow_range` dropping the extreme level.

    Signed: [-2^(b-1) (+1 narrow), 2^(b-1) - 1]; unsigned: [0, 2^b - 1 (-1 narrow)]; BINARY: {-1, +1};
    TERNARY: {-1, 0, +1}. Immutable (a named tuple: cheap enough to build on every quantized op).
    """

    bit_width: BitWidth
    signed: bool
    narrow_range: bool = False
    kind: GridKind = GridKind.INTEGER

    @classmethod
    def of_metadata(cls, bit_width: BitWidth, signed: bool) -> IntGrid:
        """The grid a QuantTensor's bit width and sign describe (full range; 1 signed bit is bipolar)."""
        return cls(bit_width, bool(signed), False, GridKind.METADATA)

    @classmethod
    def binary(cls) -> IntGrid:
        """The bipolar grid {-1, +1}."""
        return cls(1, True, False, GridKind.BINARY)

    @classmethod
    def ternary(cls) -> IntGrid:
        """The ternary grid {-1, 0, +1}."""
        return cls(2, True, True, GridKind.TERNARY)

    # ------------------------------------------------------------ levels

    @property
    def bipolar(self) -> bool | Tensor:
        """Whether the grid is {-1, +1} (a bool tensor for a METADATA grid with a tensor bit width)."""
        if self.kind is GridKind.BINARY:
            return True
        if self.kind is not GridKind.METADATA or not self.signed:
            return False
        return self.bit_width == 1

    @property
    def min_int(self) -> BitWidth:
        """Smallest integer: -2^(b-1) signed (+1 when narrow), 0 unsigned, -1 bipolar."""
        if self.kind is GridKind.BINARY:
            return -1
        if not self.signed:
            return self.bit_width * 0
        return -(2 ** (self.bit_width - 1)) + int(self.narrow_range)

    @property
    def max_int(self) -> BitWidth:
        """Largest integer: 2^(b-1) - 1 signed, 2^b - 1 unsigned (2^b - 2 narrow), +1 bipolar."""
        if self.kind is GridKind.BINARY:
            return 1
        if not self.signed:
            return 2**self.bit_width - 1 - int(self.narrow_range)
        high = 2 ** (self.bit_width - 1) - 1
        if self.kind is GridKind.METADATA and isinstance(high, Tensor):
            return torch.where(self.bit_width == 1, 1.0, high)
        return 1 if self.kind is GridKind.METADATA and self.bit_width == 1 else high

    lowest = min_int
    highest = max_int

    @property
    def divisor(self) -> BitWidth:
        """The largest magnitude: 127 for narrow int8, 128 for int8, 255 for uint8, 1 binary/ternary."""
        if self.kind is GridKind.BINARY:
            return 1
        if self.signed:
            return 2 ** (self.bit_width - 1) - int(self.narrow_range)
        return self.max_int

    @property
    def zero_is_level(self) -> bool | Tensor:
        """0 is a level of every integer grid but the bipolar one."""
        bipolar = self.bipolar
        return ~bipolar if isinstance(bipolar, Tensor) else not bipolar

    def contains(self, levels: Tensor) -> Tensor:
        """Elementwise: min_int <= level <= max_int, and |level| == 1 where the grid is bipolar."""
        in_range = (levels >= self.min_int) & (levels <= self.max_int)
        bipolar = self.bipolar
        if isinstance(bipolar, Tensor):
            return torch.where(bipolar, levels.abs() == 1, in_range)
        return levels.abs() == 1 if bipolar else in_range

    # ------------------------------------------------------------ bit widths of derived integers

    def _bipolar_as_two(self) -> BitWidth:
        """The bit width, a bipolar grid counted as 2 signed bits ({-1, 0, +1} needs them)."""
        bipolar = self.bipolar
        if isinstance(bipolar, Tensor):
            return torch.where(bipolar, self.bit_width + 1, self.bit_width)
        return 2 if bipolar else self.bit_width

    def bit_width_in(self, signed: bool) -> BitWidth:
        """Bits this grid's integers need in a grid of signedness `signed` (unsigned b bits: b + 1 signed)."""
        return self.bit_width + 1 if signed and not self.signed else self.bit_width

    def summand_bit_width(self, signed: bool) -> BitWidth:
        """Bits this grid's integers count as where they are summed into a grid of signedness `signed`.

        As `bit_width_in`, and a bipolar grid counts as 2 bits: 1 + (-1) = 0 is not a bipolar level.
        """
        if not self.signed:
            return self.bit_width_in(signed)
        return self._bipolar_as_two()

    def bit_width_with_zero(self) -> BitWidth:
        """Bits of the smallest grid of the same signedness that also holds 0 (bipolar: 2 signed bits)."""
        return self._bipolar_as_two() if self.signed else self.bit_width

    def product_bit_width(self, partner_signed: bool) -> BitWidth:
        """Bits this operand counts as in the accumulator rule of a product with a `partner_signed` operand.

        A bipolar operand times an unsigned one has sums reaching +-(2^b - 1) * K, which the rule
        ceil(log2((2^b1 - 1)(2^b2 - 1) K)) only covers with the bipolar side counted as 2 bits.
        """
        if self.signed and not partner_signed:
            return self._bipolar_as_two()
        return self.bit_width


__all__ = ["BitWidth", "Grid", "GridKind", "IntGrid"]

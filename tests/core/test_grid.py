"""quantframe.core.grid: integer ranges, divisors and the bit widths of derived integers, by hand."""

import pytest
import torch

from quantframe.core.grid import Grid, GridKind, IntGrid

# (bit_width, signed, narrow) -> (min, max, divisor), written out by hand.
RANGES = [
    (8, True, True, -127, 127, 127),
    (8, True, False, -128, 127, 128),
    (8, False, False, 0, 255, 255),
    (8, False, True, 0, 254, 254),
    (4, True, False, -8, 7, 8),
    (2, True, True, -1, 1, 1),
    (1, True, False, -1, 0, 1),
    (16, False, False, 0, 65535, 65535),
    (32, True, False, -(2**31), 2**31 - 1, 2**31),
]


@pytest.mark.parametrize("bits, signed, narrow, lo, hi, divisor", RANGES)
def test_integer_range_and_divisor(bits, signed, narrow, lo, hi, divisor):
    grid = IntGrid(bits, signed, narrow)
    assert (grid.min_int, grid.max_int, grid.divisor) == (lo, hi, divisor)
    assert (grid.lowest, grid.highest) == (lo, hi)
    if bits > 24:
        return  # beyond float32's exact integers
    tensor_grid = IntGrid(torch.tensor(float(bits)), signed, narrow)
    assert (float(tensor_grid.min_int), float(tensor_grid.max_int)) == (lo, hi)
    assert float(tensor_grid.divisor) == divisor


def test_binary_and_ternary():
    binary, ternary = IntGrid.binary(), IntGrid.ternary()
    assert (binary.min_int, binary.max_int, binary.divisor, binary.zero_is_level) == (-1, 1, 1, False)
    assert (ternary.min_int, ternary.max_int, ternary.divisor, ternary.zero_is_level) == (-1, 1, 1, True)
    assert binary.kind is GridKind.BINARY and ternary.kind is GridKind.TERNARY
    assert torch.equal(binary.contains(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([True, False, True]))
    assert torch.equal(ternary.contains(torch.tensor([-2.0, 0.0, 1.0])), torch.tensor([False, True, True]))


def test_metadata_grid_is_bipolar_at_one_signed_bit_elementwise():
    bits = torch.tensor([1.0, 2.0, 8.0])
    grid = IntGrid.of_metadata(bits, True)
    assert torch.equal(grid.bipolar, torch.tensor([True, False, False]))
    assert torch.equal(grid.min_int, torch.tensor([-1.0, -2.0, -128.0]))
    assert torch.equal(grid.max_int, torch.tensor([1.0, 1.0, 127.0]))
    assert torch.equal(grid.zero_is_level, torch.tensor([False, True, True]))
    levels = torch.tensor([0.0, -2.0, 127.0])
    assert torch.equal(grid.contains(levels), torch.tensor([False, True, True]))
    assert IntGrid.of_metadata(1, True).max_int == 1 and IntGrid.of_metadata(1, False).max_int == 1
    assert IntGrid.of_metadata(torch.tensor(1.0), False).zero_is_level is True


def test_bit_widths_of_sums_products_and_widened_grids():
    bipolar, int8, uint8 = (
        IntGrid.of_metadata(torch.tensor(b), s) for b, s in ((1.0, True), (8.0, True), (8.0, False))
    )
    assert bipolar.summand_bit_width(True).item() == 2  # 1 + (-1) = 0 is not a bipolar level
    assert int8.summand_bit_width(True).item() == 8
    assert uint8.summand_bit_width(True).item() == 9 and uint8.summand_bit_width(False).item() == 8
    assert bipolar.bit_width_in(True).item() == 1 and uint8.bit_width_in(True).item() == 9
    assert bipolar.bit_width_with_zero().item() == 2 and uint8.bit_width_with_zero().item() == 8
    assert bipolar.product_bit_width(False).item() == 2 and bipolar.product_bit_width(True).item() == 1
    assert uint8.product_bit_width(True).item() == 8


def test_value_object():
    grid = IntGrid(8, True, True)
    assert isinstance(grid, Grid)
    assert grid == IntGrid(8, True, True) and hash(grid) == hash(IntGrid(8, True, True))
    with pytest.raises(AttributeError):
        grid.bit_width = 4

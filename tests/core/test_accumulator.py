"""accumulator_bit_width: ceil(log2((2^b_in - 1) * (2^b_w - 1) * K)), checked against exact integers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantframe.core.accumulator import accumulator_bit_width


def exact_bits(b_in: int, b_w: int, k: int) -> int:
    """ceil(log2(n)) of the exact integer product: the bit length of n - 1."""
    n = (2**b_in - 1) * (2**b_w - 1) * k
    return (n - 1).bit_length()


def test_design_example_conv2d_2_3_3():
    # QuantConv2d(2, 3, 3), 8-bit input and weights: K = 2 * 3 * 3 = 18
    assert accumulator_bit_width(8, 8, 18).item() == 21


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.integers(1, 32), st.integers(1, 32), st.integers(1, 2**24))
def test_matches_exact_integer_math(b_in, b_w, k):
    out = accumulator_bit_width(torch.tensor(float(b_in)), torch.tensor(float(b_w)), k)
    assert out.item() == exact_bits(b_in, b_w, k)


@pytest.mark.parametrize("power", [1, 10, 30, 52, 53, 54, 60])
def test_products_next_to_a_power_of_two(power):
    # 1-bit x 1-bit: the product is K itself, so K = 2^p needs p bits and 2^p + 1 needs p + 1
    assert accumulator_bit_width(1, 1, 2**power).item() == power
    assert accumulator_bit_width(1, 1, 2**power + 1).item() == power + 1
    assert accumulator_bit_width(1, 1, 2**power - 1).item() == exact_bits(1, 1, 2**power - 1)


def test_float64_rounding_cases():
    # (2^32 - 1)^2 * K is not exact in float64; the int64 check must still give the exact answer
    for b_in, b_w, k in [(31, 31, 1), (30, 30, 4), (26, 26, 2**10 + 1), (20, 20, 2**21 - 1)]:
        assert accumulator_bit_width(b_in, b_w, k).item() == exact_bits(b_in, b_w, k)


def test_beyond_int64_uses_float_estimate():
    assert accumulator_bit_width(32, 32, 2**20).item() == exact_bits(32, 32, 2**20)


def test_tensors_broadcast_and_result_is_float32():
    b_in = torch.tensor([2.0, 3.0, 8.0])
    k = torch.tensor([1, 2, 3])
    out = accumulator_bit_width(b_in, torch.tensor(8.0), k)
    assert out.dtype == torch.float32
    assert out.tolist() == [exact_bits(2, 8, 1), exact_bits(3, 8, 2), exact_bits(8, 8, 3)]


def test_learned_bit_width_with_grad_is_accepted():
    bit_width = torch.tensor(4.0, requires_grad=True)
    out = accumulator_bit_width(bit_width, 4, 7)
    assert out.item() == exact_bits(4, 4, 7)
    assert not out.requires_grad


@pytest.mark.parametrize("args", [(0, 8, 3), (8, 0, 3), (8, 8, 0)])
def test_numbers_below_one_are_refused(args):
    with pytest.raises(ValueError, match="accumulator_bit_width"):
        accumulator_bit_width(*args)

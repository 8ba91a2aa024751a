"""quantframe.core.fake_quant: every path equals the reference formula, in values and gradients."""

import pytest
import torch

from quantframe.core.fake_quant import (
    fake_quant,
    fake_quant_into,
    fast_fake_quant,
    quantize,
    reference_fake_quant,
)
from quantframe.core.ste import floor_ste, round_ste

CASES = [
    ((), 0.0, -128, 127),
    ((1, 4, 1, 1), 0.0, -127, 127),
    ((), 3.0, 0, 255),
    ((1, 4, 1, 1), 2.0, 0, 15),
    ((4, 1, 1, 1), 0.0, -8, 7),
]


@pytest.mark.parametrize("scale_shape,zero_point,lo,hi", CASES)
def test_values_and_gradients_equal_the_reference(scale_shape, zero_point, lo, hi):
    torch.manual_seed(0)
    x = (torch.randn(4, 4, 5, 5) * 3).requires_grad_(True)
    scale = (torch.rand(scale_shape) * 0.05 + 0.02).requires_grad_(True)
    zp = torch.full(scale_shape, zero_point).requires_grad_(True)
    fast = fast_fake_quant(x, scale, zp, lo, hi, zero_point_is_zero=zero_point == 0)
    ref = reference_fake_quant(x, scale, zp, lo, hi)
    assert torch.equal(fast, ref)
    grad = torch.randn_like(ref)
    for got, want in zip(
        torch.autograd.grad(fast, (x, scale, zp), grad),
        torch.autograd.grad(ref, (x, scale, zp), grad),
        strict=True,
    ):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)


def test_no_grad_path_is_the_same_math():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 4) * 2
    scale = torch.tensor(0.03)
    with torch.no_grad():
        fast = fast_fake_quant(x, scale, torch.zeros(()), -128, 127, zero_point_is_zero=True)
    assert torch.equal(fast, reference_fake_quant(x, scale, torch.zeros(()), -128, 127))
    assert torch.equal(fast, torch.clamp(torch.round(x / scale), -128, 127) * scale)


def _hand_formula(x, scale, zero_point, lo, hi):
    return (torch.clamp(torch.round(x / scale + zero_point), lo, hi) - zero_point) * scale


@pytest.mark.parametrize("scale_shape,zero_point,lo,hi", CASES)
def test_fake_quant_into_and_quantize_equal_the_formula(scale_shape, zero_point, lo, hi):
    torch.manual_seed(2)
    x = torch.randn(4, 4, 5, 5) * 3
    scale = torch.rand(scale_shape) * 0.05 + 0.02
    zp = torch.full(scale_shape, zero_point)
    expected = _hand_formula(x, scale, zp, lo, hi)
    out = torch.empty_like(x)
    assert fake_quant_into(out, x, scale, zp, lo, hi) is out
    assert torch.equal(out, expected)
    if zero_point == 0:
        assert torch.equal(fake_quant_into(torch.empty_like(x), x, scale, None, lo, hi), expected)
    in_place = x.clone()
    assert torch.equal(fake_quant_into(in_place, in_place, scale, zp, lo, hi), expected)
    ints = torch.clamp(torch.round(x / scale + zp), lo, hi)
    assert torch.equal(quantize(x, scale, zp, lo, hi), ints)
    buffer = torch.empty_like(x)
    assert quantize(x, scale, zp, lo, hi, out=buffer) is buffer and torch.equal(buffer, ints)


def test_fake_quant_into_records_the_straight_through_mask():
    x = torch.tensor([-3.0, -0.26, 0.0, 0.74, 10.0])
    scale, zp = torch.tensor(0.5), torch.tensor(1.0)
    scaled, levels, mask = torch.empty_like(x), torch.empty_like(x), torch.empty(5, dtype=torch.bool)
    out = fake_quant_into(torch.empty_like(x), x, scale, zp, -4, 3, (scaled, levels, mask))
    assert torch.equal(out, _hand_formula(x, scale, zp, -4, 3))
    assert torch.equal(scaled, x / scale + zp)
    assert torch.equal(levels, torch.clamp(torch.round(x / scale + zp), -4, 3) - zp)
    assert torch.equal(mask, torch.tensor([False, True, True, True, False]))


def test_dispatcher_takes_the_reference_for_other_rounding():
    torch.manual_seed(3)
    x = (torch.randn(3, 7) * 2).requires_grad_(True)
    scale, zp = torch.tensor(0.1), torch.zeros(())
    assert torch.equal(fake_quant(x, scale, zp, -8, 7), reference_fake_quant(x, scale, zp, -8, 7))
    floor = fake_quant(x, scale, zp, -8, 7, floor_ste)
    assert torch.equal(floor, (torch.clamp(torch.floor(x / scale), -8, 7) * scale).detach())
    lo, hi = torch.tensor(-8.0), torch.tensor(7.0)  # a learned bit width's tensor bounds
    assert torch.equal(fake_quant(x, scale, zp, lo, hi, round_ste), reference_fake_quant(x, scale, zp, -8, 7))

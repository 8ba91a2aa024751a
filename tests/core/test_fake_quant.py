"""quantframe.core.fake_quant: every path equals the reference formula, in values and gradients."""

import pytest
import torch

from quantframe.core.fake_quant import (
    can_fuse,
    fake_quant,
    fake_quant_into,
    fast_fake_quant,
    fused_axis,
    fused_fake_quant,
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


# ---------------------------------------------------------------- the reference and the fused torch kernels
# The fused kernels equal the reference in forward values exactly and in gradients to float rounding
# (the reference's x-gradient is g * scale / scale, one rounding away from g).


def test_reference_fake_quant_matches_hand_formula():
    x = torch.tensor([-3.0, -0.26, -0.25, 0.0, 0.25, 0.74, 0.75, 10.0])
    scale = torch.tensor(0.5)
    zero_point = torch.tensor(0.0)
    out = reference_fake_quant(x, scale, zero_point, -4, 3)
    # x / 0.5 = -6, -0.52, -0.5, 0, 0.5, 1.48, 1.5, 20 -> round half to even, clamp to [-4, 3]
    expected = torch.tensor([-4.0, -1.0, -0.0, 0.0, 0.0, 1.0, 2.0, 3.0]) * 0.5
    assert torch.equal(out, expected)


def test_reference_fake_quant_zero_point_and_gradients():
    x = torch.tensor([-1.0, 0.0, 0.3, 2.0, 50.0], requires_grad=True)
    scale = torch.tensor(0.1, requires_grad=True)
    zero_point = torch.tensor(10.0)
    out = reference_fake_quant(x, scale, zero_point, 0, 255)
    ints = torch.clamp(torch.round(x.detach() / 0.1 + 10), 0, 255)
    assert torch.allclose(out, (ints - 10) * 0.1)
    out.sum().backward()
    # straight-through inside the range, zero where clamped (-1.0 -> -10 + 10 = 0 is inside, 50 clamps)
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]))
    # d/ds of (q - z) * s with STE: round(x/s + z) - z - x/s inside, (q - z) outside
    inside = torch.round(x.detach()[:4] / 0.1 + 10) - 10 - x.detach()[:4] / 0.1
    expected = inside.sum() + (255 - 10)
    assert torch.allclose(scale.grad, expected, atol=1e-4)


FUSED_CASES = [
    # (axis, scale shape, signed)
    (None, (), True),
    (None, (), False),
    (1, (1, 6, 1), True),
    (1, (1, 6, 1), False),
    (0, (4, 1, 1), True),
]


def _operands(axis, shape, signed, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, 5, generator=generator) * 3
    scale = torch.rand(shape, generator=generator) * 0.05 + 0.01
    lo, hi = (-128, 127) if signed else (0, 255)
    zero_point = torch.zeros(shape) if signed else torch.full(shape, 10.0)
    return x, scale, zero_point, lo, hi


@pytest.mark.parametrize("axis, shape, signed", FUSED_CASES)
def test_fused_equals_reference_forward_and_x_gradient(axis, shape, signed):
    x, scale, zero_point, lo, hi = _operands(axis, shape, signed)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = fused_fake_quant(xa, scale, zero_point, lo, hi, axis)
    reference = reference_fake_quant(xb, scale, zero_point, lo, hi)
    assert torch.equal(fused, reference)
    (fused * grad_out).sum().backward()
    (reference * grad_out).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=0)
    assert torch.equal(xa.grad != 0, xb.grad != 0)


@pytest.mark.parametrize("axis, shape, signed", FUSED_CASES)
def test_fused_learnable_equals_reference_scale_gradient(axis, shape, signed):
    x, scale, zero_point, lo, hi = _operands(axis, shape, signed, seed=3)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    sa, sb = scale.clone().requires_grad_(), scale.clone().requires_grad_()
    fused = fused_fake_quant(xa, sa, zero_point, lo, hi, axis)
    reference = reference_fake_quant(xb, sb, zero_point, lo, hi)
    assert torch.equal(fused, reference)
    (fused * grad_out).sum().backward()
    (reference * grad_out).sum().backward()
    assert sa.grad.shape == sb.grad.shape == scale.shape
    assert torch.allclose(sa.grad, sb.grad, rtol=1e-5, atol=1e-4)
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=0)


def test_fused_without_grad_equals_reference():
    x, scale, zero_point, lo, hi = _operands(1, (1, 6, 1), False)
    with torch.no_grad():
        assert torch.equal(
            fused_fake_quant(x, scale, zero_point, lo, hi, 1),
            reference_fake_quant(x, scale, zero_point, lo, hi),
        )


def test_fused_axis_and_can_fuse():
    x = torch.zeros(4, 6, 5)
    assert fused_axis(x, torch.ones(())) is None
    assert fused_axis(x, torch.ones(1, 6, 1)) == 1
    assert fused_axis(x, torch.ones(4, 1, 1)) == 0
    assert fused_axis(x, torch.ones(4, 6, 1)) is False
    assert fused_axis(x, torch.ones(6)) is False
    assert can_fuse(x, torch.ones(()), -128, 127)
    assert not can_fuse(x.double(), torch.ones((), dtype=torch.float64), -128, 127)
    assert not can_fuse(x, torch.ones(()), -(2**31), 2**31 - 1)

"""quantframe.core.functional: integer ranges, the reference formula and the fused torch kernels.

Expected ranges are written out by hand; the fused kernels are compared with the reference formula
in forward values (exactly) and gradients (to float rounding: the reference's x-gradient is
g * scale / scale, one rounding away from g).
"""

import pytest
import torch

from quantframe.core.functional import (
    binary_quant,
    can_fuse,
    fused_axis,
    fused_fake_quant,
    max_int,
    min_int,
    reference_fake_quant,
    ternary_quant,
    threshold_divisor,
)

# (bit_width, signed, narrow) -> (min, max, divisor), written out by hand from the grid definitions.
RANGES = [
    (8, True, True, -127, 127, 127),
    (8, True, False, -128, 127, 128),
    (8, False, False, 0, 255, 255),
    (8, False, True, 0, 254, 254),
    (4, True, True, -7, 7, 7),
    (4, True, False, -8, 7, 8),
    (2, True, True, -1, 1, 1),
    (16, False, False, 0, 65535, 65535),
    (32, True, False, -(2**31), 2**31 - 1, 2**31),
]


@pytest.mark.parametrize("bits, signed, narrow, lo, hi, divisor", RANGES)
def test_integer_range_python_ints(bits, signed, narrow, lo, hi, divisor):
    assert min_int(bits, signed, narrow) == lo
    assert max_int(bits, signed, narrow) == hi
    assert threshold_divisor(bits, signed, narrow) == divisor


@pytest.mark.parametrize("bits, signed, narrow, lo, hi, divisor", RANGES[:8])
def test_integer_range_tensor_bit_width(bits, signed, narrow, lo, hi, divisor):
    b = torch.tensor(float(bits))
    assert float(min_int(b, signed, narrow)) == lo
    assert float(max_int(b, signed, narrow)) == hi
    assert float(threshold_divisor(b, signed, narrow)) == divisor


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


CASES = [
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


@pytest.mark.parametrize("axis, shape, signed", CASES)
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


@pytest.mark.parametrize("axis, shape, signed", CASES)
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


def test_binary_quant_values_and_gradient():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 1.5], requires_grad=True)
    scale = torch.tensor(0.5)
    out = binary_quant(x, scale)
    assert torch.equal(out, torch.tensor([-0.5, -0.5, 0.5, 0.5, 0.5]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_ternary_quant_values_and_gradient():
    x = torch.tensor([-2.0, -0.6, -0.4, 0.0, 0.5, 0.51, 3.0], requires_grad=True)
    scale = torch.tensor(1.0)
    out = ternary_quant(x, scale, 0.5)
    assert torch.equal(out, torch.tensor([-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]))

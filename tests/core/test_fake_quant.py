"""The in-place fake-quant function equals the reference formula in values and in every gradient."""

import pytest
import torch

from quantframe.core.fake_quant import fast_fake_quant
from quantframe.core.functional import reference_fake_quant

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

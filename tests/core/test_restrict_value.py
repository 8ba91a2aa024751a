"""quantframe.core.restrict_value: the domain a scale is stored in, and the scale it maps back to."""

import math

import pytest
import torch

from quantframe.core.restrict_value import (
    FloatRestrict,
    LogFloatRestrict,
    PowerOfTwoRestrict,
    restrict_impl_for,
)
from quantframe.enums import RestrictValueType


def test_float_restrict_divides_and_floors():
    r = FloatRestrict()
    t = torch.tensor([2.54, 0.0])
    assert torch.equal(r.to_domain(t), t)
    assert torch.allclose(r.to_scale(r.to_domain(t), 127, 1e-8), torch.tensor([0.02, 1e-8]))


def test_log_float_restrict_round_trips_through_log2():
    r = LogFloatRestrict()
    t = torch.tensor([3.0, 0.01])
    stored = r.to_domain(t)
    assert torch.allclose(stored, torch.tensor([math.log2(3.0), math.log2(0.01)]))
    assert torch.allclose(r.to_scale(stored, 128, 1e-8), t / 128)


@pytest.mark.parametrize("threshold", [1.0, 0.3, 2.54, 127.0 * 2**-5, 100.0, 1e-3])
def test_power_of_two_rounds_log2_up(threshold):
    r = PowerOfTwoRestrict()
    scale = r.to_scale(r.to_domain(torch.tensor(threshold)), 127, 1e-8).item()
    expected = 2.0 ** math.ceil(math.log2(threshold / 127))
    assert scale == expected
    assert threshold / scale <= 127  # nothing clips
    assert threshold / scale > 63.5  # and it is the smallest such power of two


def test_power_of_two_floor_and_tensor_divisor():
    r = PowerOfTwoRestrict()
    scale = r.to_scale(r.to_domain(torch.tensor(1e-12)), torch.tensor(255.0), 2**-20)
    assert scale.item() == 2**-20
    scale = r.to_scale(r.to_domain(torch.tensor(4.0)), torch.tensor(128.0), 1e-8)
    assert scale.item() == 2**-5


@pytest.mark.parametrize("restrict", [FloatRestrict(), LogFloatRestrict(), PowerOfTwoRestrict()])
def test_zero_threshold_gives_floor_and_finite_gradient(restrict):
    threshold = torch.zeros((), requires_grad=True)
    stored = restrict.to_domain(threshold)
    assert torch.isfinite(stored)
    scale = restrict.to_scale(stored, 127, 2**-20)
    assert scale.item() == 2**-20
    scale.backward()
    assert torch.isfinite(threshold.grad)


def test_log_domain_gradient_reaches_threshold():
    for restrict in (LogFloatRestrict(), PowerOfTwoRestrict()):
        stored = torch.tensor(1.0, requires_grad=True)
        restrict.to_scale(stored, 127, 1e-8).backward()
        assert stored.grad.item() > 0


def test_restrict_impl_for_enum_and_name():
    assert isinstance(restrict_impl_for(RestrictValueType.FP), FloatRestrict)
    assert isinstance(restrict_impl_for("LOG_FP"), LogFloatRestrict)
    assert isinstance(restrict_impl_for(RestrictValueType.POWER_OF_TWO), PowerOfTwoRestrict)

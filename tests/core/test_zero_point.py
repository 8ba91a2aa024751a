"""quantframe.core.zero_point: symmetric, statistics-based and learned-after-statistics zero points."""

import pytest
import torch

from quantframe.core.stats import NegativeMinStats
from quantframe.core.zero_point import ParameterFromStatsZeroPoint, StatsZeroPoint, ZeroZeroPoint


def test_zero_zero_point():
    zp = ZeroZeroPoint()
    out = zp(torch.randn(3), torch.tensor(0.1), 255)
    assert out.shape == () and out.item() == 0.0 and zp.is_zero
    assert len(zp.state_dict()) == 0


def test_stats_zero_point_is_rounded_offset_over_scale():
    zp = StatsZeroPoint(NegativeMinStats())
    x = torch.tensor([-1.03, 0.5, 2.0])
    scale = torch.tensor(0.1)
    assert zp(x, scale, 255).item() == 10.0  # round(1.03 / 0.1)
    assert zp(x.abs(), scale, 255).item() == 0.0
    assert zp(torch.tensor([-100.0]), scale, 255).item() == 255.0  # clamped to the grid


def test_stats_zero_point_gradient_is_straight_through():
    zp = StatsZeroPoint(NegativeMinStats())
    x = torch.tensor([-1.03, 0.5], requires_grad=True)
    zp(x, torch.tensor(0.1), 255).backward()
    assert torch.allclose(x.grad, torch.tensor([-10.0, 0.0]))


def test_parameter_from_stats_zero_point_collects_then_learns():
    zp = ParameterFromStatsZeroPoint(NegativeMinStats(), 2, 0.1, (), "Q")
    scale = torch.tensor(0.1)
    assert zp(torch.tensor([-1.0, 1.0]), scale, 255).item() == 10.0  # step 1: this batch's offset
    assert zp(torch.tensor([-2.0, 1.0]), scale, 255).item() == 20.0  # step 2: still this batch's
    buffer = 0.9 * 1.0 + 0.1 * 2.0
    assert zp.collector.value.item() == pytest.approx(buffer)
    zp.eval()
    assert zp(torch.tensor([-50.0]), scale, 255).item() == round(buffer / 0.1)
    zp.train()
    out = zp(torch.tensor([-50.0]), scale, 255)  # the switch: the parameter takes the buffer
    assert zp.learning
    assert zp.value.item() == pytest.approx(buffer / 0.1)
    assert out.item() == round(buffer / 0.1)
    zp(torch.tensor([-50.0]), scale, 255).backward()
    assert zp.value.grad.item() == 1.0


def test_parameter_from_stats_zero_point_init_from_statistics():
    zp = ParameterFromStatsZeroPoint(NegativeMinStats(), 100, None, (), "Q")
    zp(torch.tensor([-1.0]), torch.tensor(0.5), 255)
    zp(torch.tensor([-3.0]), torch.tensor(0.5), 255)
    assert zp.collector.value.item() == 2.0  # running mean
    zp.init_from_statistics(torch.tensor(0.5))
    assert zp.learning and zp.value.item() == 4.0

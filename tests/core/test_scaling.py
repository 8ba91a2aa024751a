"""quantframe.core.scaling: where a scale comes from (statistics, constant, parameter, both in turn)."""

import math

import pytest
import torch

from quantframe.core.restrict_value import FloatRestrict, PowerOfTwoRestrict
from quantframe.core.scaling import ConstScaling, ParameterFromStatsScaling, ParameterScaling, StatsScaling
from quantframe.core.stats import AbsMaxStats, PercentileStats


def test_stats_scaling_is_max_over_divisor_every_call():
    scaling = StatsScaling(AbsMaxStats(), FloatRestrict(), 1e-8)
    x = torch.tensor([0.5, -2.54, 1.0])
    assert scaling(x, 127).item() == pytest.approx(2.54 / 127)
    assert scaling(x * 2, 127).item() == pytest.approx(5.08 / 127)
    with pytest.raises(RuntimeError):
        scaling.current_scale(127)


def test_stats_scaling_power_of_two():
    scaling = StatsScaling(AbsMaxStats((0,)), PowerOfTwoRestrict(), 1e-8)
    x = torch.tensor([[0.3, -0.1], [5.0, 1.0]])
    expected = [2.0 ** math.ceil(math.log2(0.3 / 127)), 2.0 ** math.ceil(math.log2(5.0 / 127))]
    assert scaling(x, 127).flatten().tolist() == expected


def test_const_scaling():
    scaling = ConstScaling(0.5, FloatRestrict(), 1e-8)
    assert scaling(None, 1).item() == 0.5
    assert scaling.current_scale(2).item() == 0.25
    assert len(scaling.state_dict()) == 0


def test_parameter_scaling_learns():
    scaling = ParameterScaling(2.0, (3, 1), FloatRestrict(), 1e-8)
    assert set(scaling.state_dict()) == {"value"}
    scale = scaling(None, 4)
    assert torch.equal(scale, torch.full((3, 1), 0.5))
    scale.sum().backward()
    assert torch.equal(scaling.value.grad, torch.full((3, 1), 0.25))


def _collector(steps=3, momentum=0.1):
    return ParameterFromStatsScaling(
        PercentileStats(100.0), FloatRestrict(), 1e-8, steps, momentum, (), "MyQuant"
    )


def test_parameter_from_stats_collects_with_ema_then_switches():
    scaling = _collector()
    maxima = [2.0, 4.0, 1.0]
    buffer = None
    for m in maxima:
        scale = scaling(torch.tensor([m, -m / 2]), 128)
        assert scale.item() == pytest.approx(m / 128)  # training uses this batch's statistic
        assert not scale.requires_grad
        buffer = m if buffer is None else 0.9 * buffer + 0.1 * m
        assert scaling.collector.value.item() == pytest.approx(buffer)
    assert not scaling.learning
    scale = scaling(torch.tensor([100.0]), 128)  # the switch step
    assert scaling.learning
    assert scaling.value.item() == scaling.collector.value.item()
    assert scale.item() == pytest.approx(buffer / 128)
    assert scale.requires_grad
    assert scaling(torch.tensor([100.0]), 128).item() == pytest.approx(buffer / 128)


def test_parameter_from_stats_eval_uses_statistics_so_far():
    scaling = _collector(steps=10)
    scaling.eval()
    assert scaling(torch.tensor([50.0]), 128).item() == pytest.approx(1.0 / 128)  # nothing yet: the init
    scaling.train()
    scaling(torch.tensor([3.0]), 128)
    scaling.eval()
    assert scaling(torch.tensor([50.0]), 128).item() == pytest.approx(3.0 / 128)
    assert scaling.current_scale(128).item() == pytest.approx(3.0 / 128)
    assert scaling.collector.steps.item() == 1  # eval forwards do not count


def test_parameter_from_stats_init_from_statistics():
    scaling = _collector(steps=10)
    scaling(torch.tensor([3.0]), 255)
    scaling.init_from_statistics()
    assert scaling.learning and scaling.value.item() == 3.0
    assert scaling(torch.tensor([50.0]), 255).item() == pytest.approx(3.0 / 255)


def test_parameter_from_stats_non_finite_raises_and_keeps_state():
    scaling = _collector()
    scaling(torch.tensor([2.0]), 128)
    with pytest.raises(ValueError, match="MyQuant"):
        scaling(torch.tensor([1.0, float("nan")]), 128)
    assert scaling.collector.value.item() == 2.0 and scaling.collector.steps.item() == 1

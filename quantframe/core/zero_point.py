"""Zero-point components: symmetric (zero), from statistics, or learned after collecting statistics.

The zero point is an integer on the grid: `zero_point = round(offset / scale)` with the offset
`-min(x, 0)`, clamped into [0, max_int] so that zero itself is exactly representable.
"""

import torch
from torch import Tensor, nn

from quantframe.core.running_stats import RunningStatistic
from quantframe.core.ste import round_ste


class ZeroZeroPoint(nn.Module):
    """Symmetric quantization: zero point 0."""

    is_zero = True

    def __init__(self):
        super().__init__()
        self.register_buffer("zero", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor, scale: Tensor, max_value: Tensor | int) -> Tensor:
        return self.zero


class StatsZeroPoint(nn.Module):
    """Zero point from the tensor's own offset statistic each call (asymmetric weights)."""

    is_zero = False

    def __init__(self, zero_point_stats_impl: nn.Module):
        super().__init__()
        self.stats = zero_point_stats_impl

    def forward(self, x: Tensor, scale: Tensor, max_value: Tensor | int) -> Tensor:
        return round_ste(torch.clamp(self.stats(x) / scale, 0, max_value))


class ParameterFromStatsZeroPoint(nn.Module):
    """Collect the offset statistic for `collect_stats_steps` training steps, then learn the zero point.

    The learned parameter is the zero point in integer units (rounded straight-through when used).
    """

    is_zero = False

    def __init__(
        self,
        zero_point_stats_impl: nn.Module,
        collect_stats_steps: int,
        scaling_stats_momentum: float | None,
        scaling_shape: tuple[int, ...],
        quant_name: str,
    ):
        super().__init__()
        self.stats = zero_point_stats_impl
        self.collector = RunningStatistic(
            tuple(scaling_shape), collect_stats_steps, scaling_stats_momentum, 0.0, quant_name
        )
        self.value = nn.Parameter(torch.zeros(tuple(scaling_shape)))

    @property
    def learning(self) -> bool:
        return self.collector.steps_seen > self.collector.collect_stats_steps

    def forward(self, x: Tensor, scale: Tensor, max_value: Tensor | int) -> Tensor:
        collector = self.collector
        if self.learning:
            return round_ste(torch.clamp(self.value, 0, max_value))
        if not self.training:
            return torch.round(torch.clamp(collector.value / scale, 0, max_value))
        if collector.collecting:
            with torch.no_grad():
                offset = self.stats(x)
                collector.update(offset)
                return torch.round(torch.clamp(offset / scale, 0, max_value))
        with torch.no_grad():
            self.value.copy_(torch.clamp(collector.value / scale, 0, max_value))
        collector.mark_step()
        return round_ste(torch.clamp(self.value, 0, max_value))

    def current_zero_point(self, scale: Tensor, max_value: Tensor | int) -> Tensor:
        """The zero point an eval forward uses now: the learned one, or the offsets collected so far."""
        offset = self.value if self.learning else self.collector.value / scale
        return torch.round(torch.clamp(offset, 0, max_value))

    def init_from_statistics(self, scale: Tensor) -> None:
        """Finish collection now: the parameter takes the collected offset divided by `scale`."""
        with torch.no_grad():
            self.value.copy_(self.collector.value / scale)
        self.collector.finish()

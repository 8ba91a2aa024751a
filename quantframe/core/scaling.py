"""Scaling components: where a quantizer's scale comes from.

All return `scale = restrict.to_scale(stored_threshold, divisor, scaling_min_val)`, where the
divisor is the grid's largest magnitude (127 for narrow int8) and `restrict` the domain
(float, log2, power of two). Thresholds broadcast against the tensor (0-dim per tensor).
"""

import torch
from torch import Tensor, nn

from quantframe.core.running_stats import RunningStatistic


class StatsScaling(nn.Module):
    """Scale from a statistic of the tensor itself, recomputed every call (weights).

    The statistic is a measurement, not a learned quantity: no gradient flows through it (as
    with torch.ao observers), which spares the backward pass a reduction over every weight.
    """

    def __init__(self, stats_impl: nn.Module, restrict_impl: nn.Module, scaling_min_val: float):
        super().__init__()
        self.stats = stats_impl
        self.restrict = restrict_impl
        self.min_val = float(scaling_min_val)

    def forward(self, x: Tensor, divisor: Tensor | int) -> Tensor:
        with torch.no_grad():
            threshold = self.stats(x)
        return self.restrict.to_scale(self.restrict.to_domain(threshold), divisor, self.min_val)

    def current_scale(self, divisor: Tensor | int) -> Tensor:
        raise RuntimeError("a statistics-based scale depends on the tensor; quantize a tensor to read it")


class ConstScaling(nn.Module):
    """A fixed threshold `scaling_const`: scale = restrict(scaling_const) / divisor."""

    def __init__(self, scaling_const: float, restrict_impl: nn.Module, scaling_min_val: float):
        super().__init__()
        self.restrict = restrict_impl
        self.min_val = float(scaling_min_val)
        stored = restrict_impl.to_domain(torch.tensor(float(scaling_const)))
        self.register_buffer("stored", stored, persistent=False)

    def forward(self, x: Tensor | None, divisor: Tensor | int) -> Tensor:
        return self.restrict.to_scale(self.stored, divisor, self.min_val)

    def current_scale(self, divisor: Tensor | int) -> Tensor:
        return self.forward(None, divisor)


class ParameterScaling(nn.Module):
    """A learned threshold initialised to `scaling_init` (stored in the restrict domain)."""

    def __init__(
        self,
        scaling_init: float,
        scaling_shape: tuple[int, ...],
        restrict_impl: nn.Module,
        scaling_min_val: float,
    ):
        super().__init__()
        self.restrict = restrict_impl
        self.min_val = float(scaling_min_val)
        init = torch.full(tuple(scaling_shape), float(scaling_init))
        self.value = nn.Parameter(restrict_impl.to_domain(init))

    def forward(self, x: Tensor | None, divisor: Tensor | int) -> Tensor:
        return self.restrict.to_scale(self.value, divisor, self.min_val)

    def current_scale(self, divisor: Tensor | int) -> Tensor:
        return self.forward(None, divisor)


class ParameterFromStatsScaling(nn.Module):
    """Collect a statistic for `collect_stats_steps` training steps, then learn a scale from it.

    While collecting, a training forward uses the current batch's statistic (detached: it is an
    estimate, not a learned quantity); the first training step after collection initialises the
    learned parameter from the collected value. In eval mode the collected value is used until
    the parameter has been initialised, the parameter afterwards.
    """

    def __init__(
        self,
        stats_impl: nn.Module,
        restrict_impl: nn.Module,
        scaling_min_val: float,
        collect_stats_steps: int,
        scaling_stats_momentum: float | None,
        scaling_shape: tuple[int, ...],
        quant_name: str,
        scaling_init: float = 1.0,
    ):
        super().__init__()
        self.stats = stats_impl
        self.restrict = restrict_impl
        self.min_val = float(scaling_min_val)
        self.collector = RunningStatistic(
            tuple(scaling_shape), collect_stats_steps, scaling_stats_momentum, scaling_init, quant_name
        )
        init = torch.full(tuple(scaling_shape), float(scaling_init))
        self.value = nn.Parameter(restrict_impl.to_domain(init))

    @property
    def learning(self) -> bool:
        """Whether the learned parameter has taken over from the statistics."""
        return self.collector.steps_seen > self.collector.collect_stats_steps

    def forward(self, x: Tensor, divisor: Tensor | int) -> Tensor:
        collector = self.collector
        if self.learning:
            return self.restrict.to_scale(self.value, divisor, self.min_val)
        if not self.training:
            stored = self.restrict.to_domain(collector.value)
            return self.restrict.to_scale(stored, divisor, self.min_val)
        if collector.collecting:
            with torch.no_grad():
                threshold = self.stats(x)
                collector.update(threshold)
                return self.restrict.to_scale(self.restrict.to_domain(threshold), divisor, self.min_val)
        with torch.no_grad():
            self.value.copy_(self.restrict.to_domain(collector.value))
        collector.mark_step()
        return self.restrict.to_scale(self.value, divisor, self.min_val)

    def current_scale(self, divisor: Tensor | int) -> Tensor:
        """The scale an eval forward uses now: the learned one, or the statistics collected so far."""
        stored = self.value if self.learning else self.restrict.to_domain(self.collector.value)
        return self.restrict.to_scale(stored, divisor, self.min_val)

    def init_from_statistics(self) -> None:
        """Finish collection now: the parameter takes the collected value (used by calibration)."""
        with torch.no_grad():
            self.value.copy_(self.restrict.to_domain(self.collector.value))
        self.collector.finish()

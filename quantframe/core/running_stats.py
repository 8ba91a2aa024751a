"""Collection of a statistic over training (or calibration) steps, kept entirely in buffers."""

import torch
from torch import Tensor, nn


class RunningStatistic(nn.Module):
    """A statistic accumulated over `collect_stats_steps` steps.

    The first step initialises `value`; later steps update it by EMA,
    `value = (1 - momentum) * value + momentum * new`, or by a true running mean when
    `momentum` is None. `steps` counts the collected steps. Both are buffers, so they are
    saved, loaded and broadcast by DDP; a Python mirror of `steps` spares the hot path a
    device sync and is re-read after a state_dict load.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        collect_stats_steps: int,
        momentum: float | None,
        init: float,
        owner: str,
    ):
        super().__init__()
        self.collect_stats_steps = int(collect_stats_steps)
        self.momentum = momentum
        self.owner = owner
        self.register_buffer("value", torch.full(shape, float(init)))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self._steps_mirror: int | None = 0

    @property
    def steps_seen(self) -> int:
        """Steps collected so far (no device sync after the first read)."""
        if self._steps_mirror is None:
            self._steps_mirror = int(self.steps)
        return self._steps_mirror

    @property
    def collecting(self) -> bool:
        return self.steps_seen < self.collect_stats_steps

    def update(self, stat: Tensor) -> None:
        """Fold one step's statistic in; a non-finite statistic raises and leaves the state untouched."""
        stat = stat.detach()
        if not bool(torch.isfinite(stat).all()):
            raise ValueError(
                f"{self.owner}: non-finite statistic {stat.flatten()[:4].tolist()} collected at step "
                f"{self.steps_seen}; the input holds NaN or Inf. Stored statistics were left unchanged."
            )
        seen = self.steps_seen
        stat = stat.to(self.value.dtype).reshape(self.value.shape)
        if seen == 0:
            self.value.copy_(stat)
        elif self.momentum is None:
            self.value.add_((stat - self.value) / (seen + 1))
        else:
            self.value.mul_(1.0 - self.momentum).add_(stat, alpha=self.momentum)
        self.steps.add_(1)
        self._steps_mirror = seen + 1

    def update_many(self, stats: Tensor, checked: bool = False) -> None:
        """Fold in the statistics of `len(stats)` consecutive steps at once (`stats`: (steps, *shape)).

        Equal to that many `update` calls up to float rounding (the EMA as one weighted sum); a
        non-finite statistic raises and leaves the state untouched. For callers that gather a
        sequence's statistics and fold them after it (a recurrent layer's timesteps); `checked`: the
        caller has verified that every statistic is finite.
        """
        stats = stats.detach().to(self.value.dtype).reshape(stats.shape[0], *self.value.shape)
        if not checked and not bool(torch.isfinite(stats).all()):
            bad = int(torch.isfinite(stats.reshape(stats.shape[0], -1)).all(dim=1).logical_not().nonzero()[0])
            raise ValueError(
                f"{self.owner}: non-finite statistic {stats[bad].flatten()[:4].tolist()} collected at step "
                f"{self.steps_seen + bad}; the input holds NaN or Inf. Stored statistics were left unchanged."
            )
        seen, count = self.steps_seen, stats.shape[0]
        start, rest = (stats[0], stats[1:]) if seen == 0 else (self.value, stats)
        if self.momentum is None:
            before = max(seen, 1)
            value = (start * before + rest.sum(dim=0)) / (before + rest.shape[0])
        else:
            decay = 1.0 - self.momentum
            powers = torch.arange(rest.shape[0] - 1, -1, -1, dtype=stats.dtype, device=stats.device)
            weights = torch.pow(decay, powers).mul_(self.momentum)
            value = start * decay ** rest.shape[0] + torch.tensordot(weights, rest, dims=1)
        self.value.copy_(value)
        self.steps.add_(count)
        self._steps_mirror = seen + count

    def mark_step(self) -> None:
        """Count one step without collecting (the switch from statistics to the learned value)."""
        seen = self.steps_seen
        self.steps.add_(1)
        self._steps_mirror = seen + 1

    def restart(self) -> None:
        """Forget the collected steps: the next update initialises the value again."""
        self.steps.zero_()
        self._steps_mirror = 0

    def finish(self) -> None:
        """End collection now: the next use switches to the learned value."""
        self.steps.fill_(self.collect_stats_steps + 1)
        self._steps_mirror = self.collect_stats_steps + 1

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003
        super()._load_from_state_dict(*args, **kwargs)
        self._steps_mirror = None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._steps_mirror = None

    def extra_repr(self) -> str:
        return f"collect_stats_steps={self.collect_stats_steps}, momentum={self.momentum}"

"""Statistics collection of a recurrence's quantizers, all chunks in one pass, folded in per sequence.

While an activation quantizer collects statistics, every timestep is one statistics step: its scale
is the statistic of that step's tensor, and the step is folded into the running statistic. Called
per chunk and per step, a quantizer runs its components (~25 small tensor ops and a device sync for
the finiteness check); a 32-step LSTM layer has 11 quantizers, so Python dominates. Here the G
quantizers of a `(batch, G * chunk)` tensor compute their statistics, scales and fake quantization
on a `(batch, G, chunk)` view in ~10 ops per step, and the steps' statistics are folded into the
running statistics once after the sequence (`RunningStatistic.update_many`: one finiteness check,
the EMA as a weighted sum). The values are those of the per-step path; only the running statistic
differs, by float rounding.

Covered: integer quantizers with round-to-nearest, a constant bit width, a zero zero point and a
collecting `ParameterFromStatsScaling` whose statistic is a per-tensor percentile or absolute
maximum, one quantizer for the whole tensor or one per chunk. A sequence that would cross the end of
collection is left to the per-step path, so that the switch to learned scales happens at its step.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from quantframe.core.restrict_value import FloatRestrict
from quantframe.core.scaling import ParameterFromStatsScaling
from quantframe.core.stats import AbsMaxStats, PercentileStats
from quantframe.core.zero_point import ZeroZeroPoint
from quantframe.proxy.act import ActQuantProxy


def _statistic(scaling: object) -> tuple[float, bool] | None:
    """(percentile q, over |x|) of a per-tensor percentile / abs-max statistic, else None."""
    stats = scaling.stats
    if type(stats) is AbsMaxStats and not stats.keep_dims:
        return 100.0, True
    if type(stats) is PercentileStats and stats.low_q is None and not stats.keep_dims:
        return stats.high_q, stats.absolute
    return None


def _collecting(proxy: ActQuantProxy) -> bool:
    """Whether the scale of `proxy` (a plain integer quantizer, see `StepQuant.plain`) is a statistic of
    each step right now, with a zero zero point."""
    tq = proxy.tensor_quant
    scaling = tq.scaling_impl
    return (
        type(tq.zero_point_impl) is ZeroZeroPoint
        and type(scaling) is ParameterFromStatsScaling
        and scaling.training
        and scaling.collector.collecting
        and _statistic(scaling) is not None
    )


def divide_and_quantize_into(
    x: Tensor,
    scale: Tensor,
    lo: int | Tensor,
    hi: int | Tensor,
    out: Tensor,
    scratch: tuple[Tensor, Tensor, Tensor] | None = None,
    shift: Tensor | None = None,
) -> Tensor:
    """out = (clamp(round(x / scale + shift), lo, hi) - shift) * scale, as IntQuant's CPU path divides.

    With `scratch` = (scaled, levels, mask) buffers shaped like `x`, `mask` also receives the
    straight-through mask (1 inside the clamp range). For scales computed from the step's tensor.
    """
    if scratch is None:
        levels = torch.div(x, scale, out=out)
        if shift is not None:
            levels.add_(shift)
        levels.round_().clamp_(lo, hi)
    else:
        scaled, levels, mask = scratch
        torch.div(x, scale, out=scaled)
        if shift is not None:
            scaled.add_(shift)
        torch.round(scaled, out=out)
        torch.clamp(out, lo, hi, out=levels)
        torch.eq(out, levels, out=mask)
    if shift is not None:
        levels.sub_(shift)
    return torch.mul(levels, scale, out=out)


class BatchedCollection:
    """The statistics steps of one `StepQuant`'s quantizers over a sequence (see the module docstring).

    `start(steps)` says whether the next `steps` timesteps can run here; `step(x, out, record, t)`
    quantizes one timestep; `finish()` folds the gathered statistics into the running statistics.
    """

    def __init__(self, proxies: list[ActQuantProxy], chunk: int, dtype: torch.dtype):
        self.groups = len(proxies)
        self.chunk = chunk
        tqs = [p.tensor_quant for p in proxies]
        scalings = [tq.scaling_impl for tq in tqs]
        self.q = _statistic(scalings[0])[0]
        self.restrict, self.min_val = scalings[0].restrict, scalings[0].min_val
        self.collectors = [s.collector for s in scalings]
        device = self.collectors[0].value.device
        options = dict(dtype=dtype, device=device)
        absolute = [_statistic(s)[1] for s in scalings]  # signed: of |x|; unsigned: of x
        self.absolute: bool | Tensor = absolute[0]
        if len(set(absolute)) > 1:
            self.absolute = torch.tensor(absolute, device=device).reshape(1, -1, 1)
        divisors = [float(tq.divisor) for tq in tqs]
        self.divisor = (
            divisors[0] if self.groups == 1 else torch.tensor(divisors, **options).reshape(1, -1, 1)
        )
        self.float_restrict = type(self.restrict) is FloatRestrict
        self._viewed: tuple | None = None
        lows, highs = [tq.min_value for tq in tqs], [tq.max_value for tq in tqs]
        if len(set(lows)) == 1 and len(set(highs)) == 1:
            self.lo, self.hi = lows[0], highs[0]
        else:
            self.lo = torch.tensor(lows, **options).reshape(1, -1, 1)
            self.hi = torch.tensor(highs, **options).reshape(1, -1, 1)
        self.bit_width, self.signed = tqs[0].bit_width_impl(), proxies[0].signed
        self.zero = tqs[0].zero_point_impl.zero
        self.gathered: list[Tensor] = []
        self.last_scale: Tensor | None = None

    @classmethod
    def build(
        cls, proxies: Sequence[ActQuantProxy], chunk: int, dtype: torch.dtype
    ) -> "BatchedCollection | None":
        """The collection of plain integer `proxies` (one, or one per chunk) on `dtype` tensors, or None
        where the per-step path must run."""
        proxies = list(proxies)
        distinct = list({id(p): p for p in proxies}.values())
        if len(distinct) == 1:
            proxies, chunk = distinct, chunk * len(proxies)
        elif len(distinct) != len(proxies):
            return None  # a quantizer on some chunks but not all
        if not all(p.is_quant_enabled and _collecting(p) for p in proxies):
            return None
        first = proxies[0].tensor_quant.scaling_impl
        for proxy in proxies[1:]:
            scaling = proxy.tensor_quant.scaling_impl
            if (
                _statistic(scaling)[0] != _statistic(first)[0]
                or type(scaling.restrict) is not type(first.restrict)
                or scaling.min_val != first.min_val
            ):
                return None
        return cls(proxies, chunk, dtype)

    def start(self, steps: int) -> bool:
        """Whether `steps` timesteps stay within every quantizer's collection (else: the per-step path)."""
        self.gathered = []
        return all(c.collect_stats_steps - c.steps_seen >= steps for c in self.collectors)

    def _threshold(self, x: Tensor, view: Tensor | None) -> Tensor:
        """The statistic, a percentile (by rank) of |x| or x: 0-dim for one quantizer, else (1, G, 1)
        per group of `view`, x as `(batch, G, chunk)`."""
        absolute, grouped = self.absolute, view is not None
        count = x.numel() // self.groups
        k = min(max(int(math.floor(0.01 * self.q * count + 0.5)), 1), count)
        if k == count and isinstance(absolute, Tensor):  # signed and unsigned groups: both maxima
            high = view.amax(dim=(0, 2), keepdim=True)
            return torch.where(
                absolute, torch.maximum(high, view.amin(dim=(0, 2), keepdim=True).neg_()), high
            )
        source = view if grouped else x
        if isinstance(absolute, Tensor):  # (only with groups)
            values = source.abs().where(absolute, source)
        else:
            values = source.abs() if absolute else source
        if k == count:  # the maximum: no copy, one reduction
            return values.amax(dim=(0, 2), keepdim=True) if grouped else values.amax()
        rows = values.transpose(0, 1).reshape(self.groups, -1) if grouped else values.reshape(1, -1)
        if count - k + 1 <= k:
            picked = rows.topk(count - k + 1, dim=1, sorted=False).values.amin(dim=1)
        else:
            picked = rows.topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1)
        return picked.reshape(1, -1, 1) if grouped else picked.reshape(())

    def _scale(self, threshold: Tensor) -> Tensor:
        """The scale of `threshold`, as `ParameterFromStatsScaling` computes it while collecting."""
        if self.float_restrict:  # FloatRestrict.to_scale: clamp_min(threshold / divisor, min)
            return torch.div(threshold, self.divisor).clamp_min_(self.min_val)
        return self.restrict.to_scale(self.restrict.to_domain(threshold), self.divisor, self.min_val)

    def _views(self, record: object, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """`record`'s scratch and per-step masks as `shape` views, made once per record."""
        if self._viewed is None or self._viewed[0] is not record:
            masks = tuple(m.view(shape) for m in record.mask_at)
            self._viewed = (record, record.scaled.view(shape), record.levels.view(shape), masks)
        return self._viewed[1:]

    def step(self, x: Tensor, out: Tensor, record: object, t: int) -> Tensor:
        """Quantize timestep `t` of `x` into `out` with this step's statistics; fill `record[t]` if given.

        One quantizer works on `x` itself, G on a `(batch, G, chunk)` view with a column of scales.
        """
        shape = (x.shape[0], self.groups, self.chunk)
        view = None if self.groups == 1 else x.view(shape)
        threshold = self._threshold(x, view)
        self.gathered.append(threshold)
        scale = self.last_scale = self._scale(threshold)  # 0-dim, or (1, G, 1) like the threshold
        source, target = (x, out) if view is None else (view, out.view(shape))
        scratch = None
        if record is not None and self.groups == 1:
            scratch = (record.scaled, record.levels, record.mask_at[t])
        elif record is not None:
            scaled, levels, masks = self._views(record, shape)
            scratch = (scaled, levels, masks[t])
        divide_and_quantize_into(source, scale, self.lo, self.hi, target, scratch)
        return out

    def finish(self) -> None:
        """Fold the gathered steps into each quantizer's running statistic (raises on NaN/Inf)."""
        gathered, self.gathered = self.gathered, []
        if not gathered:
            return
        stats = torch.stack(gathered).reshape(len(gathered), self.groups)
        if not bool(torch.isfinite(stats).all()):  # the first quantizer with NaN/Inf raises, naming itself
            bad = int(torch.isfinite(stats).all(dim=0).logical_not().nonzero()[0])
            self.collectors[bad].update_many(stats[:, bad])
        for j, collector in enumerate(self.collectors):
            collector.update_many(stats[:, j], checked=True)

    def meta(self) -> tuple:
        """(scale, zero point, bit width, signed) of the last step, for a single quantizer."""
        return self.last_scale.reshape(()), self.zero, self.bit_width, self.signed

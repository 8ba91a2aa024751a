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

from collections.abc import Sequence

import torch
from torch import Tensor

from quantframe.core.fake_quant import fake_quant_into
from quantframe.core.stats import percentile_rank
from quantframe.proxy.act import ActQuantProxy


def _collecting(proxy: ActQuantProxy) -> bool:
    """Whether the scale of `proxy` (a plain integer quantizer, see `StepQuant.plain`) is a per-tensor
    percentile statistic of each step right now, with a zero zero point."""
    return proxy.zero_point_is_zero and proxy.is_collecting and proxy.scale_statistic is not None


class BatchedCollection:
    """The statistics steps of one `StepQuant`'s quantizers over a sequence (see the module docstring).

    `start(steps)` says whether the next `steps` timesteps can run here; `step(x, out, record, t)`
    quantizes one timestep; `finish()` folds the gathered statistics into the running statistics.
    """

    def __init__(self, proxies: list[ActQuantProxy], chunk: int, dtype: torch.dtype):
        self.groups = len(proxies)
        self.chunk = chunk
        self.proxies = proxies
        statistics = [p.scale_statistic for p in proxies]
        self.q = statistics[0][0]
        self.zero = proxies[0].zero_point()
        device = self.zero.device
        options = dict(dtype=dtype, device=device)
        absolute = [s[1] for s in statistics]  # signed: of |x|; unsigned: of x
        self.absolute: bool | Tensor = absolute[0]
        if len(set(absolute)) > 1:
            self.absolute = torch.tensor(absolute, device=device).reshape(1, -1, 1)
        divisors = [float(p.divisor) for p in proxies]
        self.divisor = (
            divisors[0] if self.groups == 1 else torch.tensor(divisors, **options).reshape(1, -1, 1)
        )
        self._viewed: tuple | None = None
        lows, highs = [p.min_int for p in proxies], [p.max_int for p in proxies]
        if len(set(lows)) == 1 and len(set(highs)) == 1:
            self.lo, self.hi = lows[0], highs[0]
        else:
            self.lo = torch.tensor(lows, **options).reshape(1, -1, 1)
            self.hi = torch.tensor(highs, **options).reshape(1, -1, 1)
        self.bit_width, self.signed = proxies[0].bit_width(), proxies[0].signed
        self.to_scale = proxies[0].threshold_to_scale(self.divisor)  # 0-dim, or (1, G, 1) like the threshold
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
        first = proxies[0]
        for proxy in proxies[1:]:
            if proxy.scale_statistic[0] != first.scale_statistic[0] or proxy.scale_rule != first.scale_rule:
                return None
        return cls(proxies, chunk, dtype)

    def start(self, steps: int) -> bool:
        """Whether `steps` timesteps stay within every quantizer's collection (else: the per-step path)."""
        self.gathered = []
        return all(p.collect_stats_steps - p.steps_seen >= steps for p in self.proxies)

    def _threshold(self, x: Tensor, view: Tensor | None) -> Tensor:
        """The statistic, a percentile (by rank) of |x| or x: 0-dim for one quantizer, else (1, G, 1)
        per group of `view`, x as `(batch, G, chunk)`."""
        absolute, grouped = self.absolute, view is not None
        count = x.numel() // self.groups
        k = percentile_rank(self.q, count)
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
        scale = self.last_scale = self.to_scale(threshold)
        source, target = (x, out) if view is None else (view, out.view(shape))
        scratch = None
        if record is not None and self.groups == 1:
            scratch = (record.scaled, record.levels, record.mask_at[t])
        elif record is not None:
            scaled, levels, masks = self._views(record, shape)
            scratch = (scaled, levels, masks[t])
        fake_quant_into(target, source, scale, None, self.lo, self.hi, scratch)
        return out

    def finish(self) -> None:
        """Fold the gathered steps into each quantizer's running statistic (raises on NaN/Inf)."""
        gathered, self.gathered = self.gathered, []
        if not gathered:
            return
        stats = torch.stack(gathered).reshape(len(gathered), self.groups)
        if not bool(torch.isfinite(stats).all()):  # the first quantizer with NaN/Inf raises, naming itself
            bad = int(torch.isfinite(stats).all(dim=0).logical_not().nonzero()[0])
            self.proxies[bad].collect_statistics(stats[:, bad])
        for j, proxy in enumerate(self.proxies):
            proxy.collect_statistics(stats[:, j], checked=True)

    def meta(self) -> tuple:
        """(scale, zero point, bit width, signed) of the last step, for a single quantizer."""
        return self.last_scale.reshape(()), self.zero, self.bit_width, self.signed

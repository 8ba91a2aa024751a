"""Statistics components: reduce a tensor to the threshold its scale is chosen from.

Each reduces over every dimension except `keep_dims` (empty: per tensor, `(0,)`: per output
channel of a weight, `(1,)`: per channel of an activation, `(0, 1)`: per group of a grouped
weight view) and returns a tensor that broadcasts against the input (0-dim when per tensor).
"""

import math

import torch
from torch import Tensor, nn

from quantframe.core.fake_quant import fake_quant_into
from quantframe.core.grid import IntGrid


def _keep_view(x: Tensor, keep_dims: tuple[int, ...]) -> Tensor:
    """x as (prod(kept), rest): the kept dims first, everything reduced flattened last."""
    others = [d for d in range(x.dim()) if d not in keep_dims]
    moved = x.permute(*keep_dims, *others) if list(keep_dims) != list(range(len(keep_dims))) else x
    return moved.reshape(math.prod(x.shape[d] for d in keep_dims), -1)


def _broadcast(stat: Tensor, x: Tensor, keep_dims: tuple[int, ...]) -> Tensor:
    shape = [x.shape[d] if d in keep_dims else 1 for d in range(x.dim())]
    return stat.reshape(shape)


def abs_max(x: Tensor, keep_dims: tuple[int, ...] = ()) -> Tensor:
    """max |x| as max(max x, -min x): one parallel min/max pass (the inf-norm kernel is ~10x slower)."""
    if not keep_dims:
        lo, hi = torch.aminmax(x)
        return torch.maximum(hi, -lo)
    lo, hi = torch.aminmax(_keep_view(x, keep_dims), dim=1)
    return _broadcast(torch.maximum(hi, -lo), x, keep_dims)


def abs_mean(x: Tensor, keep_dims: tuple[int, ...] = ()) -> Tensor:
    """mean |x|."""
    if not keep_dims:
        return x.abs().mean()
    return _broadcast(_keep_view(x, keep_dims).abs().mean(dim=1), x, keep_dims)


def min_max_range(x: Tensor, keep_dims: tuple[int, ...] = ()) -> Tensor:
    """max(x, 0) - min(x, 0): the width of the smallest range that holds x and zero."""
    flat = x.reshape(1, -1) if not keep_dims else _keep_view(x, keep_dims)
    lo, hi = torch.aminmax(flat, dim=1)
    width = hi.clamp_min(0) - lo.clamp_max(0)
    return width.reshape(()) if not keep_dims else _broadcast(width, x, keep_dims)


def negative_min(x: Tensor, keep_dims: tuple[int, ...] = ()) -> Tensor:
    """-min(x, 0): how far below zero the tensor reaches (the asymmetric offset)."""
    flat = x.reshape(1, -1) if not keep_dims else _keep_view(x, keep_dims)
    low = -flat.amin(dim=1).clamp_max(0)
    return low.reshape(()) if not keep_dims else _broadcast(low, x, keep_dims)


def percentile_rank(q: float, n: int) -> int:
    """The rank k (1 = smallest) of the q-th percentile of n values: floor(q/100 * n + 0.5) in [1, n]."""
    return min(max(int(math.floor(0.01 * q * n + 0.5)), 1), n)


def _kth_largest(flat: Tensor, q: float) -> Tensor:
    """The q-th percentile of each row, by rank (`percentile_rank`).

    The top (or bottom) of a distribution is found with `topk` of the few values beyond it,
    not a full sort: the 99.999th percentile of 2M values is the 21st largest.
    """
    n = flat.shape[1]
    k = percentile_rank(q, n)
    from_top = n - k + 1
    if from_top <= k:
        return flat.topk(from_top, dim=1, sorted=False).values.amin(dim=1)
    return flat.topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1)


def _kth_largest_of_tensor(x: Tensor, q: float) -> Tensor:
    """Per-tensor `_kth_largest`, parallel over the leading dimension.

    The m largest values of a tensor are among the m largest of each of its rows, so a topk
    per row (rows run in parallel) followed by a topk of the survivors gives the exact answer.
    """
    n = x.numel()
    k = percentile_rank(q, n)
    m, largest = (n - k + 1, True) if n - k + 1 <= k else (k, False)
    rows = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    if rows.shape[0] > 1 and rows.shape[1] > 4 * m:
        survivors = rows.topk(m, dim=1, largest=largest, sorted=False).values.reshape(1, -1)
    else:
        survivors = rows.reshape(1, -1)
    picked = survivors.topk(m, dim=1, largest=largest, sorted=False).values
    return picked.amin() if largest else picked.amax()


def percentile(x: Tensor, q: float, keep_dims: tuple[int, ...] = (), absolute: bool = True) -> Tensor:
    """The q-th percentile of |x| (or of x when `absolute` is False)."""
    if absolute:
        x = x.abs()
    if not keep_dims:
        return _kth_largest_of_tensor(x, q)
    return _broadcast(_kth_largest(_keep_view(x, keep_dims), q), x, keep_dims)


class AbsMaxStats(nn.Module):
    """Threshold = max |x|."""

    def __init__(self, stats_keep_dims: tuple[int, ...] = ()):
        super().__init__()
        self.keep_dims = tuple(stats_keep_dims)

    def forward(self, x: Tensor) -> Tensor:
        return abs_max(x, self.keep_dims)


class AbsAveStats(nn.Module):
    """Threshold = mean |x|."""

    def __init__(self, stats_keep_dims: tuple[int, ...] = ()):
        super().__init__()
        self.keep_dims = tuple(stats_keep_dims)

    def forward(self, x: Tensor) -> Tensor:
        return abs_mean(x, self.keep_dims)


class MinMaxStats(nn.Module):
    """Threshold = max(x, 0) - min(x, 0), the asymmetric range including zero."""

    def __init__(self, stats_keep_dims: tuple[int, ...] = ()):
        super().__init__()
        self.keep_dims = tuple(stats_keep_dims)

    def forward(self, x: Tensor) -> Tensor:
        return min_max_range(x, self.keep_dims)


class PercentileStats(nn.Module):
    """Threshold = the `high_percentile_q`-th percentile of |x| (signed) or x (unsigned).

    With `low_percentile_q` set the threshold is the interval between the two percentiles
    (zero included), for asymmetric quantizers.
    """

    def __init__(
        self,
        high_percentile_q: float = 99.999,
        low_percentile_q: float | None = None,
        signed: bool = True,
        stats_keep_dims: tuple[int, ...] = (),
    ):
        super().__init__()
        self.high_q = float(high_percentile_q)
        self.low_q = None if low_percentile_q is None else float(low_percentile_q)
        self.absolute = bool(signed) and self.low_q is None
        self.keep_dims = tuple(stats_keep_dims)

    def forward(self, x: Tensor) -> Tensor:
        high = percentile(x, self.high_q, self.keep_dims, absolute=self.absolute)
        if self.low_q is None:
            return high
        low = percentile(x, self.low_q, self.keep_dims, absolute=False)
        return high.clamp_min(0) - low.clamp_max(0)

    def extra_repr(self) -> str:
        return f"high_q={self.high_q}, low_q={self.low_q}"


class NegativePercentileStats(nn.Module):
    """-min(low percentile of x, 0): the offset of an asymmetric activation quantizer."""

    def __init__(self, low_percentile_q: float = 0.001, stats_keep_dims: tuple[int, ...] = ()):
        super().__init__()
        self.low_q = float(low_percentile_q)
        self.keep_dims = tuple(stats_keep_dims)

    def forward(self, x: Tensor) -> Tensor:
        return -percentile(x, self.low_q, self.keep_dims, absolute=False).clamp_max(0)


class NegativeMinStats(nn.Module):
    """-min(x, 0): the offset of an asymmetric weight quantizer."""

    def __init__(self, stats_keep_dims: tuple[int, ...] = ()):
        super().__init__()
        self.keep_dims = tuple(stats_keep_dims)

    def forward(self, x: Tensor) -> Tensor:
        return negative_min(x, self.keep_dims)


class MSEStats(nn.Module):
    """Threshold among fractions of max |x| that minimises the mean squared quantization error.

    A grid search over `mse_search_steps` candidates in [`mse_search_min`, 1] x max|x|, each
    scored with the quantizer's own grid (`divisor` levels per threshold, range
    [`min_value`, `max_value`]); run without gradients, the pick is a constant per call.
    """

    def __init__(
        self,
        bit_width: int,
        signed: bool,
        narrow_range: bool,
        stats_keep_dims: tuple[int, ...] = (),
        mse_search_steps: int = 40,
        mse_search_min: float = 0.3,
    ):
        super().__init__()
        self.keep_dims = tuple(stats_keep_dims)
        grid = IntGrid(bit_width, signed, narrow_range)
        self.min_value, self.max_value, self.divisor = grid.min_int, grid.max_int, grid.divisor
        self.register_buffer(
            "fractions", torch.linspace(mse_search_min, 1.0, int(mse_search_steps)), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            top = abs_max(x, self.keep_dims)
            # One buffer for every candidate's squared error: the search allocates once.
            diff = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, top.dtype), device=x.device)
            best_err, best = None, top
            for fraction in self.fractions:
                threshold = top * fraction
                scale = torch.clamp_min(threshold / self.divisor, 1e-12)
                fake_quant_into(diff, x, scale, None, self.min_value, self.max_value).sub_(x).square_()
                err = (
                    diff.mean()
                    if not self.keep_dims
                    else _broadcast(_keep_view(diff, self.keep_dims).mean(dim=1), x, self.keep_dims)
                )
                if best_err is None:
                    best_err, best = err, threshold
                else:
                    better = err < best_err
                    best = torch.where(better, threshold, best)
                    best_err = torch.where(better, err, best_err)
            return best

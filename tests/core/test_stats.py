"""quantframe.core.stats: the statistics a threshold is chosen from.

Expected values come from plain torch reductions (amax, kthvalue, quantile) or hand loops.
"""

import math

import pytest
import torch

from quantframe.core.stats import (
    AbsAveStats,
    AbsMaxStats,
    MinMaxStats,
    MSEStats,
    NegativeMinStats,
    NegativePercentileStats,
    PercentileStats,
    abs_max,
    abs_mean,
    min_max_range,
    negative_min,
    percentile,
    percentile_rank,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_abs_max_per_tensor_and_per_channel():
    x = _randn(5, 3, 2, 2)
    assert abs_max(x).shape == ()
    assert torch.equal(abs_max(x), x.abs().max())
    per_out = abs_max(x, (0,))
    assert per_out.shape == (5, 1, 1, 1)
    assert torch.equal(per_out.flatten(), torch.stack([x[i].abs().max() for i in range(5)]))
    per_act = abs_max(x, (1,))
    assert per_act.shape == (1, 3, 1, 1)
    assert torch.equal(per_act.flatten(), torch.stack([x[:, c].abs().max() for c in range(3)]))


def test_abs_max_of_groups_keeps_two_dims():
    x = _randn(4, 3, 8)  # (out, groups, group_size)
    out = abs_max(x, (0, 1))
    assert out.shape == (4, 3, 1)
    assert torch.equal(out[..., 0], x.abs().amax(dim=2))


def test_abs_mean_min_max_range_negative_min():
    x = torch.tensor([[-3.0, 1.0, 2.0], [0.5, 4.0, 1.0]])
    assert torch.allclose(abs_mean(x), torch.tensor(11.5 / 6))
    assert torch.allclose(abs_mean(x, (0,)).flatten(), torch.tensor([2.0, 5.5 / 3]))
    assert min_max_range(x) == 7.0
    # row 1 is all positive: the range reaches down to zero
    assert torch.equal(min_max_range(x, (0,)).flatten(), torch.tensor([5.0, 4.0]))
    assert negative_min(x) == 3.0
    assert torch.equal(negative_min(x, (0,)).flatten(), torch.tensor([3.0, 0.0]))


def _rank_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-th percentile by rank k = floor(q/100 * n + 0.5), written with kthvalue."""
    n = values.numel()
    k = min(max(int(math.floor(0.01 * q * n + 0.5)), 1), n)
    return values.flatten().kthvalue(k).values


@pytest.mark.parametrize("n", [7, 100, 1000, 12345])
@pytest.mark.parametrize("q", [99.999, 99.0, 50.0, 0.001, 10.0])
def test_percentile_matches_kthvalue_rank(n, q):
    x = _randn(n, seed=n)
    assert torch.equal(percentile(x, q), _rank_percentile(x.abs(), q))
    assert torch.equal(percentile(x, q, absolute=False), _rank_percentile(x, q))


def test_percentile_lies_between_torch_quantile_neighbours():
    x = _randn(200_000, seed=1).abs()
    ours = percentile(x, 99.999)
    lower = torch.quantile(x, 0.99999, interpolation="lower")
    higher = torch.quantile(x, 0.99999, interpolation="higher")
    assert lower <= ours <= higher
    # 200000 values: rank k = floor(199998 + 0.5) = 199998, the 3rd largest
    assert ours == x.topk(3).values[2]


def test_percentile_per_channel():
    x = _randn(4, 3, 50)
    out = percentile(x, 90.0, (1,))
    assert out.shape == (1, 3, 1)
    for c in range(3):
        assert out[0, c, 0] == _rank_percentile(x[:, c].abs(), 90.0)


def test_percentile_stats_signed_unsigned_and_interval():
    x = _randn(1000, seed=2)
    assert torch.equal(PercentileStats(99.0, signed=True)(x), _rank_percentile(x.abs(), 99.0))
    assert torch.equal(PercentileStats(99.0, signed=False)(x), _rank_percentile(x, 99.0))
    interval = PercentileStats(99.0, low_percentile_q=1.0)(x)
    expected = _rank_percentile(x, 99.0).clamp_min(0) - _rank_percentile(x, 1.0).clamp_max(0)
    assert torch.equal(interval, expected)
    positive = x.abs() + 1.0  # the interval always includes zero
    assert torch.equal(
        PercentileStats(99.0, low_percentile_q=1.0)(positive), _rank_percentile(positive, 99.0)
    )


def test_negative_stats_modules():
    x = _randn(1000, seed=3)
    assert torch.equal(NegativeMinStats()(x), -x.min())
    assert NegativeMinStats()(x.abs()) == 0
    assert torch.equal(NegativePercentileStats(1.0)(x), -_rank_percentile(x, 1.0))


def test_module_wrappers_match_functions():
    x = _randn(6, 4, 3)
    assert torch.equal(AbsMaxStats((0,))(x), abs_max(x, (0,)))
    assert torch.equal(AbsAveStats()(x), abs_mean(x))
    assert torch.equal(MinMaxStats((1,))(x), min_max_range(x, (1,)))


def _mse_brute_force(x, bits, steps, lowest):
    """Search written independently: threshold t = f * max|x|, grid -(2^(b-1)-1)..2^(b-1)-1."""
    top = x.abs().max().item()
    q_max = 2 ** (bits - 1) - 1
    best, best_err = None, math.inf
    for i in range(steps):
        t = top * (lowest + (1.0 - lowest) * i / (steps - 1))
        s = t / q_max
        err = ((torch.clamp(torch.round(x / s), -q_max, q_max) * s - x) ** 2).mean().item()
        if err < best_err - 1e-12:
            best, best_err = t, err
    return best


def test_mse_stats_picks_the_lowest_error_threshold():
    x = torch.cat([_randn(2000, seed=4), torch.tensor([25.0])])  # one outlier: clipping it pays
    stats = MSEStats(bit_width=4, signed=True, narrow_range=True, mse_search_steps=40, mse_search_min=0.1)
    ours = stats(x).item()
    assert ours < 25.0
    assert ours == pytest.approx(_mse_brute_force(x, 4, 40, 0.1), rel=1e-5)


def test_mse_stats_per_channel_shape_and_no_grad():
    x = _randn(3, 50, seed=5).requires_grad_()
    out = MSEStats(8, True, True, stats_keep_dims=(0,))(x)
    assert out.shape == (3, 1)
    assert not out.requires_grad
    assert bool((out <= x.detach().abs().amax(1, keepdim=True) + 1e-6).all())


@pytest.mark.parametrize("q", [99.999, 99.9, 0.001, 0.1])
def test_percentile_of_a_many_row_tensor(q):
    x = _randn(64, 5000, seed=6)
    x[7, :40] += 10.0  # the top values crowd into one row
    x[9, :40] -= 10.0  # and the bottom ones into another
    assert torch.equal(percentile(x, q), _rank_percentile(x.abs(), q))
    assert torch.equal(percentile(x, q, absolute=False), _rank_percentile(x, q))


@pytest.mark.parametrize(
    "q, n, k", [(50.0, 10, 5), (99.999, 2_000_000, 1_999_980), (0.0, 7, 1), (100.0, 7, 7), (0.001, 10, 1)]
)
def test_percentile_rank(q, n, k):
    assert percentile_rank(q, n) == k


def test_mse_stats_scores_with_the_quantizer_grid():
    x = _randn(64, seed=5)
    stats = MSEStats(4, True, True, mse_search_steps=5, mse_search_min=0.5)
    top = x.abs().max()
    errors = []
    for fraction in torch.linspace(0.5, 1.0, 5):
        scale = top * fraction / 7
        errors.append(((torch.clamp(torch.round(x / scale), -7, 7) * scale - x) ** 2).mean())
    best = int(torch.stack(errors).argmin())
    assert torch.equal(stats(x), top * torch.linspace(0.5, 1.0, 5)[best])

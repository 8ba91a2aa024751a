"""quantframe.core.running_stats: statistics over steps, held in buffers."""

import copy
import io
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantframe.core.running_stats import RunningStatistic


def test_first_step_initialises_then_ema():
    rs = RunningStatistic((), 10, 0.1, 1.0, "Q")
    rs.update(torch.tensor(4.0))
    assert rs.value.item() == 4.0  # not 0.9 * 1.0 + 0.1 * 4.0
    rs.update(torch.tensor(2.0))
    assert rs.value.item() == pytest.approx(0.9 * 4.0 + 0.1 * 2.0)
    rs.update(torch.tensor(10.0))
    assert rs.value.item() == pytest.approx(0.9 * (0.9 * 4.0 + 0.1 * 2.0) + 0.1 * 10.0)
    assert rs.steps.item() == 3 and rs.steps_seen == 3 and rs.collecting


def test_momentum_none_is_a_true_running_mean():
    rs = RunningStatistic((2,), 10, None, 0.0, "Q")
    batches = [torch.tensor([1.0, 5.0]), torch.tensor([3.0, 1.0]), torch.tensor([8.0, 0.0])]
    for b in batches:
        rs.update(b)
    assert torch.allclose(rs.value, torch.stack(batches).mean(0))


def test_collecting_ends_after_collect_stats_steps_and_finish():
    rs = RunningStatistic((), 2, 0.1, 1.0, "Q")
    rs.update(torch.tensor(1.0))
    rs.update(torch.tensor(1.0))
    assert not rs.collecting
    rs.mark_step()
    assert rs.steps.item() == 3
    fresh = RunningStatistic((), 5, 0.1, 1.0, "Q")
    fresh.finish()
    assert fresh.steps.item() == 6 and fresh.steps_seen == 6


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_statistic_raises_and_leaves_state(bad):
    rs = RunningStatistic((), 10, 0.1, 1.0, "MyQuant")
    rs.update(torch.tensor(3.0))
    with pytest.raises(ValueError, match="MyQuant"):
        rs.update(torch.tensor(bad))
    assert rs.value.item() == 3.0 and rs.steps.item() == 1 and rs.steps_seen == 1


def test_state_lives_in_buffers_and_reloads():
    rs = RunningStatistic((), 3, 0.1, 1.0, "Q")
    rs.update(torch.tensor(2.0))
    rs.update(torch.tensor(2.0))
    assert set(rs.state_dict()) == {"value", "steps"}
    buffer = io.BytesIO()
    torch.save(rs.state_dict(), buffer)
    buffer.seek(0)
    other = RunningStatistic((), 3, 0.1, 1.0, "Q")
    assert other.steps_seen == 0  # the mirror has been read: a load must refresh it
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert other.steps_seen == 2 and other.collecting
    other.update(torch.tensor(2.0))
    assert not other.collecting


def test_copies_keep_the_step_count():
    rs = RunningStatistic((), 3, 0.1, 1.0, "Q")
    rs.update(torch.tensor(2.0))
    for clone in (copy.deepcopy(rs), pickle.loads(pickle.dumps(rs))):
        assert clone.steps_seen == 1 and clone.value.item() == 2.0


@given(
    momentum=st.one_of(st.none(), st.floats(0.01, 0.9)),
    before=st.integers(0, 4),
    steps=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_update_many_equals_one_update_per_step(momentum, before, steps, seed):
    stats = torch.rand(before + steps, 3, generator=torch.Generator().manual_seed(seed)) * 4
    one_by_one = RunningStatistic((3,), 1000, momentum, 1.0, "q")
    batched = RunningStatistic((3,), 1000, momentum, 1.0, "q")
    for stat in stats[:before]:
        one_by_one.update(stat)
        batched.update(stat)
    for stat in stats[before:]:
        one_by_one.update(stat)
    batched.update_many(stats[before:])
    torch.testing.assert_close(batched.value, one_by_one.value, rtol=1e-5, atol=1e-6)
    assert batched.steps_seen == one_by_one.steps_seen == int(batched.steps) == before + steps


def test_update_many_with_a_non_finite_step_raises_naming_it_and_leaves_state():
    stat = RunningStatistic((), 100, 0.1, 1.0, "layer.io_quant")
    stat.update(torch.tensor(2.0))
    with pytest.raises(ValueError, match=r"layer.io_quant: non-finite statistic \[inf\] collected at step 3"):
        stat.update_many(torch.tensor([1.0, 3.0, float("inf")]))
    assert stat.value.item() == 2.0 and stat.steps_seen == 1 and int(stat.steps) == 1

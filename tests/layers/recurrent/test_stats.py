"""quantframe.layers.recurrent.stats: a sequence's statistics steps in one pass per timestep."""

import pytest
import torch

from quantframe.layers import QuantLSTM, QuantRNN
from quantframe.layers.recurrent import stats as recurrent_stats
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.proxy.act import act_proxy
from quantframe.quantizers import Int8ActPerTensorFloat, Uint8ActPerTensorFloat


def _x(shape, seed=0, spread=2.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * spread


def _proxies(q=None):
    """Signed and unsigned quantizers, one per chunk; `q`: their percentile (None: the default)."""
    overrides = {} if q is None else {"high_percentile_q": q}
    quants = [Int8ActPerTensorFloat, Uint8ActPerTensorFloat, Uint8ActPerTensorFloat, Int8ActPerTensorFloat]
    return [act_proxy(quant, overrides, "test", f"q{n}") for n, quant in enumerate(quants)]


def _collectors(proxies):
    return [p.tensor_quant.scaling_impl.collector for p in proxies]


@pytest.mark.parametrize("q", [None, 80.0], ids=["maximum", "percentile-80"])
def test_steps_equal_each_quantizers_own_forward_and_fold_in_at_the_end(q):
    fast, reference = _proxies(q), _proxies(q)
    steps, x = 5, _x((6, 32))
    x[:, 8:24] = x[:, 8:24].abs()  # the unsigned chunks
    quant = StepQuant(fast, 8)
    record = quant.record(steps, (6, 32), x)
    quant.begin(steps)
    assert quant.batched is not None
    for t in range(steps):
        value = quant.apply(x * (t + 1), torch.empty_like(x), record, t)
        chunks = (x * (t + 1)).split(8, dim=1)
        expected = [p(c) for p, c in zip(reference, chunks, strict=True)]
        assert torch.equal(value, torch.cat([e.value for e in expected], dim=1))
        inside = [
            (c / e.scale).round().clamp(e.int().min(), e.int().max()) == (c / e.scale).round()
            for c, e in zip(chunks, expected, strict=True)
        ]
        assert torch.equal(record.mask_at[t].bool(), torch.cat(inside, dim=1))
    assert all(c.steps_seen == 0 for c in _collectors(fast))  # folded in by end()
    quant.end()
    for ours, theirs in zip(_collectors(fast), _collectors(reference), strict=True):
        assert ours.steps_seen == theirs.steps_seen == steps
        torch.testing.assert_close(ours.value, theirs.value, rtol=1e-6, atol=0)


def test_a_sequence_crossing_the_end_of_collection_runs_step_by_step():
    proxy = act_proxy(Int8ActPerTensorFloat, {"collect_stats_steps": 7}, "test", "io")
    quant = StepQuant([proxy], 8)
    x = _x((2, 8))
    quant.begin(5)
    assert quant.batched is not None
    for t in range(5):
        quant.apply(x, torch.empty_like(x), None, t)
    quant.end()
    quant = StepQuant([proxy], 8)
    quant.begin(5)  # 2 steps of collection left: the switch to the learned scale falls inside
    assert quant.batched is None


def test_shared_quantizer_on_some_chunks_only_is_not_batched():
    a, b = _proxies()[:2]
    quant = StepQuant([a, b, a], 8)
    quant.begin(3)
    assert quant.batched is None


def _unbatched(monkeypatch):
    monkeypatch.setattr(recurrent_stats.BatchedCollection, "build", classmethod(lambda cls, *a: None))


@pytest.mark.parametrize(
    "build",
    [
        lambda **k: QuantLSTM(4, 6, num_layers=2, bidirectional=True, **k),
        lambda **k: QuantLSTM(4, 6, coupled_input_forget_gates=True, **k),
        lambda **k: QuantRNN(4, 6, nonlinearity="relu", bidirectional=True, **k),
    ],
    ids=["lstm-2-layer-bidirectional", "lstm-cifg", "rnn-relu-bidirectional"],
)
def test_layers_train_as_with_one_statistics_step_per_call(monkeypatch, build):
    """Outputs and gradients equal the per-step path's while collecting; the running statistics (and so
    the learned scales they initialise) to float rounding, which may move a value by one step after
    the switch. Collection ends inside the third forward (7 steps per forward, 17 to collect)."""
    overrides = {f"{p}_collect_stats_steps": 17 for p in ("io", "gate_acc")}

    def train(batched):
        torch.manual_seed(0)
        model = build(**overrides)
        if not batched:
            _unbatched(monkeypatch)
        results, states = [], []
        for seed in range(4):
            model.zero_grad()
            out = model(_x((7, 3, 4), seed))[0]
            out.square().sum().backward()
            results.append((out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
            states.append({k: v.clone() for k, v in model.state_dict().items()})
        monkeypatch.undo()
        return results, states

    (fast, fast_states), (slow, slow_states) = train(True), train(False)
    for (out_a, grads_a), (out_b, grads_b) in zip(fast[:2], slow[:2], strict=True):
        torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)
        for a, b in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for name, value in fast_states[1].items():  # before the switch: the statistics to float rounding
        torch.testing.assert_close(value, slow_states[1][name], atol=1e-6, rtol=1e-5)
    steps = [k for k in fast_states[3] if k.endswith("collector.steps")]
    assert steps and all(torch.equal(fast_states[3][k], slow_states[3][k]) for k in steps)


def test_non_finite_input_raises_naming_the_quantizer_and_keeps_the_statistics():
    lstm = QuantLSTM(4, 6)
    x = _x((5, 2, 4))
    lstm(x)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    x[3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"Int8ActPerTensorFloat: non-finite statistic \[nan\]"):
        lstm(x)
    after = lstm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "collector" in k)

"""Copies, pickles and state_dicts of models built from activation layers preserve behaviour exactly.

Checked on a fresh model, while statistics are being collected, and after the switch to learned
scales: the receiving model must then give identical outputs in eval, in a training forward, and
after an identical optimiser step.
"""

import copy
import io

import pytest
import torch
from torch import nn

from quantframe.layers.act import QuantHardTanh, QuantIdentity, QuantReLU, QuantSigmoid, QuantTanh
from quantframe.quantizers import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    ShiftedUint8ActPerTensorFloat,
    from_spec,
    to_spec,
)

STEPS = 3


class Int4Act(Int8ActPerTensorFloat):
    bit_width = 4


def make_model() -> nn.Module:
    return nn.Sequential(
        QuantIdentity(collect_stats_steps=STEPS),
        nn.Conv2d(3, 4, 3),
        QuantReLU(bit_width=4, collect_stats_steps=STEPS),
        nn.Conv2d(4, 4, 1),
        QuantHardTanh(act_quant=Int8ActPerTensorFixedPoint, collect_stats_steps=STEPS),
        QuantTanh(act_quant=ShiftedUint8ActPerTensorFloat, collect_stats_steps=STEPS),
        nn.Conv2d(4, 2, 1),
        QuantSigmoid(),  # 300 collection steps: still collecting throughout
        QuantIdentity(act_quant=Int4Act, collect_stats_steps=STEPS),
    )


def _batch(seed):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _train(model, steps, seed=0):
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(steps):
        optimiser.zero_grad()
        model(_batch(seed + step)).pow(2).mean().backward()
        optimiser.step()


def _assert_same_behaviour(a, b):
    """Identical eval outputs, training outputs and parameters after one identical SGD step."""
    x = _batch(123)
    a.eval()
    b.eval()
    assert torch.equal(a(x), b(x))
    _train(a, 1, seed=77)
    _train(b, 1, seed=77)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    a.train()
    b.train()
    assert torch.equal(a(x), b(x))
    a.eval()
    b.eval()
    assert torch.equal(a(x), b(x))


def _fresh_with_state_of(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = make_model()
    fresh.load_state_dict(state, strict=True)
    return fresh


@pytest.fixture(params=[0, 2, STEPS + 2], ids=["fresh", "collecting", "learning"])
def trained(request):
    torch.manual_seed(0)
    model = make_model()
    _train(model, request.param)
    return model, request.param


def test_switch_happened_when_expected(trained):
    model, steps = trained
    scaling = model[0].act_quant.tensor_quant.scaling_impl
    assert scaling.collector.steps.item() == min(steps, STEPS + 1)
    assert scaling.learning == (steps > STEPS)
    assert not model[7].act_quant.tensor_quant.scaling_impl.learning


def test_state_dict_round_trip_into_a_fresh_model(trained):
    model, _ = trained
    _assert_same_behaviour(model, _fresh_with_state_of(model))


def test_deepcopy(trained):
    model, _ = trained
    _assert_same_behaviour(model, copy.deepcopy(model))


def test_torch_save_whole_model(trained):
    model, _ = trained
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    _assert_same_behaviour(model, torch.load(buffer, weights_only=False))


def test_fresh_models_load_each_other_strictly():
    a, b = make_model(), make_model()
    result = b.load_state_dict(a.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    _assert_same_behaviour(a, b)


def test_state_dict_holds_only_tensors_with_the_step_counters():
    state = make_model().state_dict()
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    steps = [k for k in state if k.endswith("collector.steps")]
    assert len(steps) == 7 and all(state[k].dtype == torch.int64 for k in steps)


def test_quantizers_made_at_run_time_survive_pickling():
    # `let` and `from_spec` classes live in no module: the proxies pickle them as recipes
    made = [Int8ActPerTensorFloat.let(bit_width=5).let(narrow_range=True), from_spec(to_spec(Int4Act))]
    model = nn.Sequential(
        QuantIdentity(act_quant=made[0], collect_stats_steps=1),
        nn.Conv2d(3, 3, 1),
        QuantIdentity(act_quant=made[1], collect_stats_steps=1),
    )
    _train(model, 3)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded[0].act_quant.quant_class.bit_width == 5 and loaded[0].act_quant.quant_class.narrow_range
    _assert_same_behaviour(model, loaded)
    _assert_same_behaviour(model, copy.deepcopy(model))

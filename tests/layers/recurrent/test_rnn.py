"""quantframe.layers.recurrent: QuantRNN and what it shares with QuantLSTM (arguments, states, loading)."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from quantframe import QuantTensor, config
from quantframe.core.scaling import ParameterFromStatsScaling
from quantframe.layers import QuantLSTM, QuantRNN
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8BiasPerTensorFloatInternalScaling,
    SignedBinaryWeightPerTensorConst,
)

NONE = dict(weight_quant=None, bias_quant=None, io_quant=None, gate_acc_quant=None)


def finish_statistics(model: nn.Module) -> None:
    """Switch every activation quantizer from collecting statistics to its learned scale."""
    for module in model.modules():
        if isinstance(module, ParameterFromStatsScaling):
            module.init_from_statistics()


def _x(shape=(5, 3, 4), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _weight_count(model):
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith("_weight.weight"))


def _trained(model, seed=0):
    """A model whose activation quantizers saw one batch of statistics and then switched to learned scales."""
    torch.manual_seed(seed)
    model.train()
    model(_x((5, 3, model.input_size), seed))
    finish_statistics(model)
    return model.eval()


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, 600),
        ({"bidirectional": True}, 1200),
        ({"bidirectional": True, "shared_input_hidden_weights": True}, 1000),
    ],
)
def test_weight_counts(kwargs, expected):
    assert _weight_count(QuantRNN(10, 20, **kwargs)) == expected


def test_layers_directions_and_quantizer_instances():
    rnn = QuantRNN(4, 6, num_layers=2, bidirectional=True)
    assert isinstance(rnn.layers, nn.ModuleList) and all(isinstance(d, nn.ModuleList) for d in rnn.layers)
    cells = [layer for directions in rnn.layers for layer in directions]
    assert len(cells) == 4
    assert all(layer.io_quant is rnn.io_quant for layer in cells)
    for get in (
        lambda layer: layer.gate_params.input_weight.weight_quant,
        lambda layer: layer.gate_params.hidden_weight.weight_quant,
        lambda layer: layer.gate_params.bias_quant,
        lambda layer: layer.cell.gate_acc_quant,
    ):
        assert len({id(get(layer)) for layer in cells}) == 4  # one instance per layer and direction
    weight = cells[0].gate_params.input_weight
    assert weight.weight.shape == (6, 4) and cells[2].gate_params.input_weight.weight.shape == (6, 12)
    assert isinstance(weight.quant_weight(), QuantTensor) and weight.quant_weight().bit_width.item() == 8


def test_torch_argument_order_and_checks():
    rnn = QuantRNN(3, 5, 2, "relu", False, True, 0.25, True)
    assert (rnn.num_layers, rnn.nonlinearity, rnn.bias, rnn.batch_first, rnn.dropout, rnn.bidirectional) == (
        2,
        "relu",
        False,
        True,
        0.25,
        True,
    )
    assert all(layer.gate_params.bias is None for d in rnn.layers for layer in d)
    with pytest.raises(ValueError, match="nonlinearity='sigmoid'.*'tanh' or 'relu'"):
        QuantRNN(3, 5, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size=0"):
        QuantRNN(3, 0)
    with pytest.raises(ValueError, match="dropout=1.5"):
        QuantRNN(3, 5, dropout=1.5)
    with pytest.warns(UserWarning, match="num_layers=1"):
        QuantRNN(3, 5, dropout=0.5)


def test_overrides_route_by_prefix_and_typos_fail():
    rnn = QuantRNN(4, 6, weight_bit_width=4, io_bit_width=6, gate_acc_bit_width=5, bias_bit_width=16)
    layer = rnn.layers[0][0]
    assert layer.gate_params.input_weight.weight_quant.bit_width().item() == 4
    assert layer.gate_params.hidden_weight.weight_quant.bit_width().item() == 4
    assert rnn.io_quant.bit_width().item() == 6
    assert layer.cell.gate_acc_quant.bit_width().item() == 5
    assert layer.gate_params.bias_quant.bit_width().item() == 16
    with pytest.raises(TypeError, match="weight_bitwidth.*did you mean weight_bit_width"):
        QuantRNN(4, 6, weight_bitwidth=4)
    with pytest.raises(TypeError, match="gate_acc_quant is None"):
        QuantRNN(4, 6, gate_acc_quant=None, gate_acc_bit_width=4)


def test_four_bit_per_channel_weights_and_six_bit_io():
    rnn = QuantRNN(
        10,
        20,
        weight_bit_width=4,
        weight_scaling_per_output_channel=True,
        io_bit_width=6,
        return_quant_tensor=True,
    )
    params = rnn.layers[0][0].gate_params
    both = torch.cat([params.input_weight.weight, params.hidden_weight.weight], dim=1).detach()
    # one quantizer serves both weights: each channel's scale is its max |w| over both, / 7 (narrow 4-bit)
    expected = both.abs().amax(dim=1, keepdim=True) / 7
    for weight in (params.input_weight, params.hidden_weight):
        qw = weight.quant_weight()
        assert qw.bit_width.item() == 4 and qw.scale.numel() == 20 and qw.is_valid
        assert torch.allclose(qw.scale.reshape(20, 1), expected)
        assert qw.int().abs().max() <= 7
    _trained(rnn)
    out, h = rnn(_x((5, 3, 10)))
    assert out.bit_width.item() == 6 and h.bit_width.item() == 6 and out.is_valid and h.is_valid


def test_signed_binary_weights():
    rnn = QuantRNN(4, 6, weight_quant=SignedBinaryWeightPerTensorConst, bias_quant=None)
    qw = rnn.layers[0][0].gate_params.input_weight.quant_weight()
    assert set(qw.value.unique().tolist()) <= {-1.0, 1.0} and qw.bit_width.item() == 1
    out, h = rnn(_x())
    assert out.shape == (5, 3, 6) and torch.isfinite(out).all()
    out.sum().backward()
    assert rnn.layers[0][0].gate_params.input_weight.weight.grad is not None


# ---------------------------------------------------------------- float parity and loading


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_equals_torch_rnn_when_quantizers_are_none(num_layers, bidirectional, batch_first, nonlinearity):
    torch.manual_seed(0)
    kwargs = dict(
        num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, nonlinearity=nonlinearity
    )
    ref = nn.RNN(4, 6, **kwargs)
    rnn = QuantRNN(4, 6, **kwargs, **NONE)
    rnn.load_state_dict(ref.state_dict())
    x = _x((3, 5, 4) if batch_first else (5, 3, 4))
    h0 = _x((num_layers * (2 if bidirectional else 1), 3, 6), seed=1)
    for hx in (None, h0):
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                out, h = rnn(x, hx)
                ref_out, ref_h = ref(x, hx)
            torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
            torch.testing.assert_close(h, ref_h, atol=1e-6, rtol=0)


def test_gradients_equal_torch_rnn_when_quantizers_are_none():
    torch.manual_seed(0)
    ref = nn.RNN(4, 6, num_layers=2, bidirectional=True)
    rnn = QuantRNN(4, 6, num_layers=2, bidirectional=True, **NONE)
    rnn.load_state_dict(ref.state_dict())
    x = _x().requires_grad_()
    rx = x.detach().clone().requires_grad_()
    (rnn(x)[0].sin().sum() + rnn(x)[1].sum()).backward()
    (ref(rx)[0].sin().sum() + ref(rx)[1].sum()).backward()
    torch.testing.assert_close(x.grad, rx.grad, atol=1e-6, rtol=1e-5)
    hidden_grad = rnn.layers[1][1].gate_params.hidden_weight.weight.grad
    torch.testing.assert_close(hidden_grad, ref.weight_hh_l1_reverse.grad, atol=1e-6, rtol=1e-5)
    bias_grad = rnn.layers[0][0].gate_params.bias.grad
    torch.testing.assert_close(bias_grad, ref.bias_ih_l0.grad, atol=1e-6, rtol=1e-5)


def test_torch_state_dict_keys_map_onto_layers():
    ref = nn.RNN(4, 6, bidirectional=True)
    rnn = QuantRNN(4, 6, bidirectional=True, **NONE)
    assert not rnn.load_state_dict(ref.state_dict()).missing_keys
    params = rnn.layers[0][1].gate_params
    assert torch.equal(params.input_weight.weight, ref.weight_ih_l0_reverse)
    assert torch.equal(params.bias, ref.bias_ih_l0_reverse + ref.bias_hh_l0_reverse)
    # the reverse direction cannot hold a second input-hidden weight when it shares the forward one
    shared = QuantRNN(4, 6, bidirectional=True, shared_input_hidden_weights=True, **NONE)
    with pytest.raises(RuntimeError, match="weight_ih_l0_reverse"):
        shared.load_state_dict(ref.state_dict())
    shared.load_state_dict(ref.state_dict(), strict=False)
    assert torch.equal(shared.layers[0][1].gate_params.input_weight.weight, ref.weight_ih_l0)


def test_float_state_dict_into_quantized_model_needs_ignore_missing_keys(monkeypatch):
    ref = nn.RNN(4, 6)
    with pytest.raises(RuntimeError, match="Missing key"):
        QuantRNN(4, 6).load_state_dict(ref.state_dict())
    monkeypatch.setattr(config, "IGNORE_MISSING_KEYS", True)
    rnn = QuantRNN(4, 6)
    rnn.load_state_dict(ref.state_dict())
    assert torch.equal(rnn.layers[0][0].gate_params.hidden_weight.weight, ref.weight_hh_l0)


# ---------------------------------------------------------------- inputs, states, outputs


def test_unbatched_input_equals_batch_of_one():
    rnn = _trained(QuantRNN(4, 6, num_layers=2))
    x, h0 = _x((5, 4)), _x((2, 6), seed=1)
    out, h = rnn(x, h0)
    ref_out, ref_h = rnn(x.unsqueeze(1), h0.unsqueeze(1))
    assert out.shape == (5, 6) and h.shape == (2, 6)
    torch.testing.assert_close(out, ref_out.squeeze(1), atol=0, rtol=0)
    torch.testing.assert_close(h, ref_h.squeeze(1), atol=0, rtol=0)


def test_packed_sequence_and_bad_shapes_are_rejected():
    rnn = QuantRNN(4, 6)
    packed = pack_padded_sequence(_x(), torch.tensor([5, 4, 2]))
    with pytest.raises(ValueError, match="PackedSequence inputs are not supported; pass a padded tensor"):
        rnn(packed)
    with pytest.raises(RuntimeError, match="Expected hidden size \\(1, 3, 6\\), got \\[1, 2, 6\\]"):
        rnn(_x(), torch.zeros(1, 2, 6))
    with pytest.raises(RuntimeError, match="input_size. Expected 4, got 3"):
        rnn(_x((5, 3, 3)))


def test_return_quant_tensor_outputs_share_the_io_grid():
    rnn = _trained(QuantRNN(4, 6, num_layers=2, bidirectional=True, return_quant_tensor=True))
    out, h = rnn(_x())
    assert isinstance(out, QuantTensor) and isinstance(h, QuantTensor)
    assert out.is_valid and h.is_valid and out.signed and out.bit_width.item() == 8
    assert torch.equal(out.scale, rnn.io_quant.scale()) and torch.equal(h.scale, rnn.io_quant.scale())
    with pytest.raises(RuntimeError, match="return_quant_tensor=True needs io_quant.*set io_quant"):
        QuantRNN(4, 6, io_quant=None, bias_quant=None, return_quant_tensor=True)


def test_quant_tensor_input_is_requantized_by_io_quant():
    rnn = _trained(QuantRNN(4, 6))
    x = _x()
    third = torch.tensor(1 / 3)
    coarse = QuantTensor(torch.round(x / third) * third, third, torch.tensor(0.0), torch.tensor(8.0), True)
    assert torch.equal(rnn(coarse)[0], rnn(coarse.value)[0])
    # the io grid is applied to the input: values that round to the same io level give the same output
    scale = rnn.io_quant.scale()
    on_grid = torch.round(x / scale) * scale
    assert torch.equal(rnn(x)[0], rnn(on_grid + 0.2 * scale)[0])


def test_bias_on_accumulator_grid_needs_io_and_weight_quant():
    with pytest.raises(RuntimeError, match="Input scale required.*io_quant=None"):
        QuantRNN(4, 6, io_quant=None)
    with pytest.raises(RuntimeError, match="Input scale required.*weight_quant=None"):
        QuantRNN(4, 6, weight_quant=None)
    rnn = QuantRNN(4, 6, io_quant=None, bias_quant=Int8BiasPerTensorFloatInternalScaling)
    assert rnn(_x())[0].shape == (5, 3, 6)


def test_int32_bias_is_on_io_times_weight_grid():
    rnn = _trained(QuantRNN(4, 6))
    params = rnn.layers[0][0].gate_params
    grid = rnn.io_quant.scale() * params.input_weight.quant_weight().scale
    bias = params.quant_bias(rnn.io_quant.scale(), params.input_weight.quant_weight().scale)
    torch.testing.assert_close(bias, torch.round(params.bias / grid) * grid, atol=0, rtol=0)


def test_dropout_between_layers_only_in_training():
    rnn = QuantRNN(4, 6, num_layers=2, dropout=0.5, **NONE)
    torch.manual_seed(0)
    a = rnn(_x())[0]
    b = rnn(_x())[0]
    assert not torch.equal(a, b)
    rnn.eval()
    assert torch.equal(rnn(_x())[0], rnn(_x())[0])


# ---------------------------------------------------------------- quantized behaviour


def test_hidden_states_lie_on_the_io_grid():
    rnn = _trained(QuantRNN(4, 6, num_layers=2, bidirectional=True))
    out, h = rnn(_x(), _x((4, 3, 6), seed=2))
    scale = rnn.io_quant.scale()
    for t in (out, h):
        levels = t / scale
        assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 128


def test_eval_paths_agree_and_training_collects_statistics():
    rnn = QuantRNN(4, 6, num_layers=2, bidirectional=True)
    collector = rnn.layers[0][0].cell.gate_acc_quant.tensor_quant.scaling_impl.collector
    rnn(_x())
    assert collector.steps_seen == 5  # one statistics step per timestep
    _trained(rnn)
    with torch.no_grad():
        fast = rnn(_x())
    slow = rnn(_x())  # eval with autograd: the recorded loop
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b)


def test_training_backward_reaches_every_parameter():
    rnn = QuantRNN(
        4, 6, num_layers=2, bidirectional=True, io_collect_stats_steps=1, gate_acc_collect_stats_steps=1
    )
    rnn(_x())
    rnn.train()
    out, h = rnn(_x(seed=3))
    (out.sum() + h.sum()).backward()
    learned = [n for n, p in rnn.named_parameters() if p.grad is None]
    assert learned == []


def test_eval_cache_follows_parameter_changes():
    rnn = _trained(QuantRNN(4, 6))
    x = _x()
    with torch.no_grad():
        before = rnn(x)[0]
        scaling = rnn.layers[0][0].cell.gate_acc_quant.tensor_quant.scaling_impl
        scaling.value.mul_(0.5)
        changed = rnn(x)[0]
        rnn.layers[0][0].gate_params.hidden_weight.weight.mul_(-1)
        flipped = rnn(x)[0]
    assert not torch.equal(before, changed) and not torch.equal(changed, flipped)
    fresh = copy.deepcopy(rnn)
    assert torch.equal(fresh(x)[0], rnn(x)[0])


def test_copies_pickles_and_state_dicts_preserve_outputs():
    rnn = _trained(QuantRNN(4, 6, num_layers=2, bidirectional=True))
    x = _x()
    with torch.no_grad():
        expected = rnn(x)[0]
    buffer = io.BytesIO()
    torch.save(rnn.state_dict(), buffer)
    buffer.seek(0)
    loaded = QuantRNN(4, 6, num_layers=2, bidirectional=True)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    for other in (copy.deepcopy(rnn), pickle.loads(pickle.dumps(rnn)), loaded.eval()):
        with torch.no_grad():
            assert torch.equal(other(x)[0], expected)


def test_shared_io_quant_instance_across_models():
    first = QuantRNN(4, 6)
    second = QuantRNN(6, 6, io_quant=first.io_quant)
    assert second.io_quant is first.io_quant
    with pytest.raises(TypeError, match="io_bit_width"):  # a shared quantizer takes no overrides
        QuantRNN(6, 6, io_quant=first.io_quant, io_bit_width=4)


def test_lstm_is_exported_next_to_rnn():
    assert issubclass(QuantLSTM, nn.Module) and QuantLSTM(4, 6)(_x())[0].shape == (5, 3, 6)


def test_io_quantizer_can_be_a_custom_class():
    class Int6Io(Int8ActPerTensorFloat):
        bit_width = 6

    rnn = QuantRNN(4, 6, io_quant=Int6Io)
    assert rnn.io_quant.bit_width().item() == 6


@pytest.mark.parametrize("per_channel", [False, True])
def test_input_and_hidden_weights_share_one_quantizer(per_channel):
    rnn = QuantRNN(10, 20, num_layers=2, bidirectional=True, weight_scaling_per_output_channel=per_channel)
    for directions in rnn.layers:
        for layer in directions:
            params = layer.gate_params
            assert params.input_weight.weight_quant is params.hidden_weight.weight_quant
            w_ih, w_hh = params.input_weight.quant_weight(), params.hidden_weight.quant_weight()
            torch.testing.assert_close(w_ih.scale, w_hh.scale, rtol=0, atol=0)
            both = torch.cat([params.input_weight.weight, params.hidden_weight.weight], dim=1).detach().abs()
            expected = both.amax(dim=1, keepdim=True) / 127 if per_channel else both.max() / 127
            torch.testing.assert_close(w_ih.scale.reshape(expected.shape), expected)

"""quantframe.layers.recurrent.lstm: QuantLSTM (gate structure, float parity, cell states, sharing flags)."""

import pytest
import torch
from torch import nn

from quantframe import QuantTensor
from quantframe.core.scaling import ParameterFromStatsScaling
from quantframe.layers import QuantLSTM
from tests.helpers import NONE

GATE_PARAMS = ("input_gate_params", "forget_gate_params", "cell_gate_params", "output_gate_params")


def finish_statistics(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, ParameterFromStatsScaling):
            module.init_from_statistics()


def _x(shape=(5, 3, 4), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _trained(model, seed=0, dtype=torch.float32):
    model.train()
    model(_x((5, 3, model.input_size), seed).to(dtype))
    finish_statistics(model)
    return model.eval()


def test_gates_weights_and_quantizer_instances():
    lstm = QuantLSTM(10, 20, num_layers=2, bidirectional=True)
    layers = [layer for directions in lstm.layers for layer in directions]
    weights = sum(p.numel() for n, p in lstm.named_parameters() if n.endswith("_weight.weight"))
    assert weights == 4 * 2 * (20 * 10 + 20 * 20) + 4 * 2 * (20 * 40 + 20 * 20)
    assert all(layer.io_quant is lstm.io_quant for layer in layers)
    assert len({id(layer.cell.cell_state_quant) for layer in layers}) == 1  # shared_cell_state_quant=True
    for layer in layers:
        gates = [getattr(layer, name) for name in GATE_PARAMS]
        assert len({id(g.input_weight.weight_quant) for g in gates}) == 4
        assert len({id(g.bias_quant) for g in gates}) == 1  # one bias quantizer per layer and direction
        accs = [
            layer.cell.input_acc_quant,
            layer.cell.forget_acc_quant,
            layer.cell.cell_acc_quant,
            layer.cell.output_acc_quant,
        ]
        assert len({id(a) for a in accs}) == 4
    assert len({id(layer.input_gate_params.bias_quant) for layer in layers}) == 4


def test_sharing_flags():
    lstm = QuantLSTM(
        4,
        6,
        num_layers=2,
        shared_intra_layer_weight_quant=True,
        shared_intra_layer_gate_acc_quant=True,
        shared_cell_state_quant=False,
        cat_output_cell_states=False,
    )
    layer = lstm.layers[0][0]
    gates = [getattr(layer, name) for name in GATE_PARAMS]
    assert len({id(g.input_weight.weight_quant) for g in gates}) == 1
    assert len({id(g.hidden_weight.weight_quant) for g in gates}) == 1
    # one quantizer for every weight of the layer and direction, input-hidden and hidden-hidden alike
    assert gates[0].input_weight.weight_quant is gates[0].hidden_weight.weight_quant
    cell = layer.cell
    assert cell.input_acc_quant is cell.forget_acc_quant is cell.cell_acc_quant is cell.output_acc_quant
    assert lstm.layers[0][0].cell.cell_state_quant is not lstm.layers[1][0].cell.cell_state_quant
    # a shared per-tensor weight quantizer takes its scale from all four gates' weights, both kinds
    weights = torch.cat(
        [w.weight.detach().flatten() for g in gates for w in (g.input_weight, g.hidden_weight)]
    )
    for gate in gates:
        for weight in (gate.input_weight, gate.hidden_weight):
            torch.testing.assert_close(weight.quant_weight().scale, weights.abs().max() / 127)


@pytest.mark.parametrize("cifg", [False, True])
def test_one_weight_quantizer_per_gate_serves_both_weights(cifg):
    lstm = QuantLSTM(5, 7, num_layers=2, bidirectional=True, coupled_input_forget_gates=cifg)
    for directions in lstm.layers:
        for layer in directions:
            gates = [g for g in (getattr(layer, name) for name in GATE_PARAMS) if g is not None]
            proxies = {id(w.weight_quant) for g in gates for w in (g.input_weight, g.hidden_weight)}
            assert len(proxies) == (3 if cifg else 4)
            for gate in gates:
                assert gate.input_weight.weight_quant is gate.hidden_weight.weight_quant
                both = torch.cat([gate.input_weight.weight.flatten(), gate.hidden_weight.weight.flatten()])
                expected = both.detach().abs().max() / 127  # narrow int8: max |w| over both weights / 127
                for weight in (gate.input_weight, gate.hidden_weight):
                    torch.testing.assert_close(weight.quant_weight().scale, expected)


def test_coupled_input_forget_gates():
    lstm = QuantLSTM(4, 6, coupled_input_forget_gates=True, **NONE)
    layer = lstm.layers[0][0]
    assert layer.forget_gate_params is None and layer.cell.forget_acc_quant is None
    weights = sum(p.numel() for n, p in lstm.named_parameters() if n.endswith("_weight.weight"))
    assert weights == 3 * (6 * 4 + 6 * 6)
    # f = 1 - i: the same as a float LSTM whose forget gate pre-activation is minus the input gate's
    ref = nn.LSTM(4, 6)
    with torch.no_grad():
        for name, ours in (("weight_ih_l0", "input_weight.weight"), ("weight_hh_l0", "hidden_weight.weight")):
            i, f, g, o = getattr(ref, name).chunk(4)
            i.copy_(layer.input_gate_params.get_parameter(ours))
            f.copy_(-i)
            g.copy_(layer.cell_gate_params.get_parameter(ours))
            o.copy_(layer.output_gate_params.get_parameter(ours))
        i, f, g, o = ref.bias_ih_l0.chunk(4)
        for chunk, gate in ((i, "input"), (g, "cell"), (o, "output")):
            chunk.copy_(getattr(layer, f"{gate}_gate_params").bias)
        f.copy_(-i)
        ref.bias_hh_l0.zero_()
    x = _x()
    torch.testing.assert_close(lstm(x)[0], ref(x)[0], atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match='Unexpected key.*"weight_ih_l0", "weight_hh_l0", "bias_ih_l0"'):
        QuantLSTM(4, 6, coupled_input_forget_gates=True, **NONE).load_state_dict(nn.LSTM(4, 6).state_dict())
    QuantLSTM(4, 6, coupled_input_forget_gates=True, **NONE).load_state_dict(
        nn.LSTM(4, 6).state_dict(), strict=False
    )


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_equals_torch_lstm_when_quantizers_are_none(num_layers, bidirectional, batch_first):
    torch.manual_seed(0)
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    ref = nn.LSTM(4, 6, **kwargs)
    lstm = QuantLSTM(4, 6, **kwargs, **NONE)
    lstm.load_state_dict(ref.state_dict())
    x = _x((3, 5, 4) if batch_first else (5, 3, 4))
    count = num_layers * (2 if bidirectional else 1)
    for hx in (None, (_x((count, 3, 6), seed=1), _x((count, 3, 6), seed=2))):
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                out, (h, c) = lstm(x, hx)
                ref_out, (ref_h, ref_c) = ref(x, hx)
            for ours, theirs in ((out, ref_out), (h, ref_h), (c, ref_c)):
                torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_gradients_equal_torch_lstm_when_quantizers_are_none():
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True)
    lstm = QuantLSTM(4, 6, num_layers=2, bidirectional=True, **NONE)
    lstm.load_state_dict(ref.state_dict())
    x, rx = _x().requires_grad_(), _x().requires_grad_()
    hx = (_x((4, 3, 6), seed=1).requires_grad_(), _x((4, 3, 6), seed=2).requires_grad_())
    rhx = tuple(s.detach().clone().requires_grad_() for s in hx)

    def loss(out, states):
        return out.sin().sum() + states[0].pow(2).sum() + states[1].cos().sum()

    loss(*lstm(x, hx)).backward()
    loss(*ref(rx, rhx)).backward()
    for ours, theirs in ((x, rx), (hx[0], rhx[0]), (hx[1], rhx[1])):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-5)
    forget_rows = ref.weight_hh_l1_reverse.grad.chunk(4)[1]
    torch.testing.assert_close(
        lstm.layers[1][1].forget_gate_params.hidden_weight.weight.grad, forget_rows, atol=1e-5, rtol=1e-5
    )


def test_torch_gate_order_is_i_f_g_o():
    ref = nn.LSTM(4, 6)
    lstm = QuantLSTM(4, 6, **NONE)
    lstm.load_state_dict(ref.state_dict())
    layer = lstm.layers[0][0]
    for chunk, name in zip(ref.weight_ih_l0.chunk(4), GATE_PARAMS, strict=True):
        assert torch.equal(getattr(layer, name).input_weight.weight, chunk)
    for chunk, hh, name in zip(ref.bias_ih_l0.chunk(4), ref.bias_hh_l0.chunk(4), GATE_PARAMS, strict=True):
        assert torch.equal(getattr(layer, name).bias, chunk + hh)


def test_per_channel_four_bit_weights_have_hidden_size_scales_per_gate():
    lstm = QuantLSTM(
        10,
        20,
        weight_bit_width=4,
        weight_scaling_per_output_channel=True,
        io_bit_width=6,
        return_quant_tensor=True,
    )
    layer = lstm.layers[0][0]
    for name in GATE_PARAMS:
        for weight in (getattr(layer, name).input_weight, getattr(layer, name).hidden_weight):
            qw = weight.quant_weight()
            assert qw.bit_width.item() == 4 and qw.scale.numel() == 20 and qw.is_valid
    _trained(lstm)
    out, (h, c) = lstm(_x((5, 3, 10)))
    assert out.bit_width.item() == 6 and h.bit_width.item() == 6 and out.is_valid and h.is_valid
    assert c.bit_width.item() == 8 and c.is_valid


def test_cell_state_errors_name_the_argument_to_change():
    with pytest.raises(RuntimeError, match="shared_cell_state_quant=True or cat_output_cell_states=False"):
        QuantLSTM(4, 6, shared_cell_state_quant=False)
    with pytest.raises(RuntimeError, match="set cell_state_quant .* or return_quant_tensor=False"):
        QuantLSTM(4, 6, cell_state_quant=None, return_quant_tensor=True)
    with pytest.raises(ValueError, match="proj_size=3 is not supported"):
        QuantLSTM(4, 6, proj_size=3)


def test_return_quant_tensor_states():
    lstm = _trained(QuantLSTM(4, 6, num_layers=2, bidirectional=True, return_quant_tensor=True))
    out, (h, c) = lstm(_x())
    assert all(isinstance(t, QuantTensor) and t.is_valid for t in (out, h, c))
    assert c.shape == (4, 3, 6) and torch.equal(c.scale, lstm.layers[0][0].cell.cell_state_quant.scale())
    assert torch.equal(h.scale, lstm.io_quant.scale())


def test_cell_states_as_a_list():
    lstm = _trained(
        QuantLSTM(
            4,
            6,
            num_layers=2,
            cat_output_cell_states=False,
            shared_cell_state_quant=False,
            return_quant_tensor=True,
        )
    )
    out, (h, c) = lstm(_x())
    assert isinstance(c, list) and len(c) == 2
    for layer, state in zip(lstm.layers, c, strict=True):
        assert isinstance(state, QuantTensor) and state.shape == (3, 6) and state.is_valid
        assert torch.equal(state.scale, layer[0].cell.cell_state_quant.scale())


def test_unbatched_input_and_initial_state():
    lstm = _trained(QuantLSTM(4, 6, bidirectional=True))
    x, hx = _x((5, 4)), (_x((2, 6), seed=1), _x((2, 6), seed=2))
    out, (h, c) = lstm(x, hx)
    ref_out, (ref_h, ref_c) = lstm(x.unsqueeze(1), tuple(s.unsqueeze(1) for s in hx))
    assert out.shape == (5, 12) and h.shape == (2, 6) and c.shape == (2, 6)
    for ours, theirs in ((out, ref_out.squeeze(1)), (h, ref_h.squeeze(1)), (c, ref_c.squeeze(1))):
        assert torch.equal(ours, theirs)


def test_states_lie_on_their_grids():
    lstm = _trained(QuantLSTM(4, 6, num_layers=2))
    out, (h, c) = lstm(_x(), (_x((2, 3, 6), seed=1), _x((2, 3, 6), seed=2)))
    for values, scale in (
        (out, lstm.io_quant.scale()),
        (h, lstm.io_quant.scale()),
        (c, lstm.layers[0][0].cell.cell_state_quant.scale()),
    ):
        levels = values / scale
        assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 128


def test_eval_paths_agree():
    lstm = _trained(QuantLSTM(4, 6, num_layers=2, bidirectional=True))
    x = _x()
    with torch.no_grad():
        fast = lstm(x)
    slow = lstm(x)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1][0], slow[1][0])
    assert torch.equal(fast[1][1], slow[1][1])


def test_training_backward_reaches_every_parameter():
    prefixes = ("io", "gate_acc", "sigmoid", "tanh", "cell_state")
    overrides = {f"{p}_collect_stats_steps": 1 for p in prefixes}
    lstm = QuantLSTM(4, 6, num_layers=2, bidirectional=True, **overrides)
    lstm(_x())
    out, (h, c) = lstm(_x(seed=3))
    (out.sum() + h.sum() + c.sum()).backward()
    assert [n for n, p in lstm.named_parameters() if p.grad is None] == []


def test_bfloat16_and_float64_inputs():
    for dtype in (torch.bfloat16, torch.float64):
        lstm = _trained(QuantLSTM(4, 6, dtype=dtype), dtype=dtype)
        with torch.no_grad():
            out, (h, c) = lstm(_x().to(dtype))
        assert out.dtype == dtype and torch.isfinite(out.float()).all()


def test_copies_and_state_dicts_preserve_outputs():
    import copy
    import io
    import pickle

    lstm = _trained(QuantLSTM(4, 6, num_layers=2, bidirectional=True, coupled_input_forget_gates=True))
    x = _x()
    with torch.no_grad():
        expected = lstm(x)
    buffer = io.BytesIO()
    torch.save(lstm.state_dict(), buffer)
    buffer.seek(0)
    loaded = QuantLSTM(4, 6, num_layers=2, bidirectional=True, coupled_input_forget_gates=True)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    for other in (copy.deepcopy(lstm), pickle.loads(pickle.dumps(lstm)), loaded.eval()):
        with torch.no_grad():
            out, (h, c) = other(x)
        assert torch.equal(out, expected[0]) and torch.equal(h, expected[1][0])
        assert torch.equal(c, expected[1][1])


def test_inference_mode_then_training():
    lstm = _trained(QuantLSTM(4, 6))
    x = _x()
    with torch.inference_mode():
        inferred = lstm(x)[0]
    with torch.no_grad():
        assert torch.equal(lstm(x)[0], inferred)
    lstm.train()
    lstm(x)[0].sum().backward()
    assert lstm.layers[0][0].cell_gate_params.hidden_weight.weight.grad is not None


@pytest.mark.slow
def test_torch_compile_in_eval_and_training():
    lstm = _trained(QuantLSTM(4, 6))
    compiled = torch.compile(lstm, backend="aot_eager")  # dynamo + AOT autograd, no C++ build
    x = _x((2, 3, 4))  # two timesteps: dynamo unrolls the loop
    with torch.no_grad():
        assert torch.equal(compiled(x)[0], lstm(x)[0])
    lstm.train()
    out = compiled(x)[0]
    torch.testing.assert_close(out, lstm(x)[0], atol=0, rtol=0)
    out.sum().backward()
    assert lstm.layers[0][0].input_gate_params.input_weight.weight.grad is not None

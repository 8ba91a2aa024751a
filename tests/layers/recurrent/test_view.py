"""quantframe.layers.recurrent.view: the `gate_params` view of a QuantLSTM layer and direction."""

import torch
from torch import nn

from quantframe.layers import QuantLSTM
from tests.helpers import NONE


def test_per_channel_4bit_weights_stack_to_80_row_scales():
    lstm = QuantLSTM(10, 20, weight_bit_width=4, weight_scaling_per_output_channel=True, io_bit_width=6)
    layer = lstm.layers[0][0]
    params = layer.gate_params
    assert int(layer.io_quant.bit_width()) == 6
    for stacked, features in ((params.input_weight, 10), (params.hidden_weight, 20)):
        qw = stacked.quant_weight()
        assert qw.shape == (80, features) and qw.is_valid
        assert int(qw.bit_width) == 4 and qw.signed
        assert qw.scale.shape == (80, 1) and qw.zero_point.numel() in (1, 80)
        assert qw.int().abs().max() <= 7
    # rows are the gates' own quantized weights in torch's order i, f, g, o, each with its own scales
    gates = [
        layer.input_gate_params,
        layer.forget_gate_params,
        layer.cell_gate_params,
        layer.output_gate_params,
    ]
    qw = params.input_weight.quant_weight()
    for n, gate in enumerate(gates):
        own = gate.input_weight.quant_weight()
        rows = slice(20 * n, 20 * (n + 1))
        assert torch.equal(qw.value[rows], own.value)
        assert torch.equal(qw.scale[rows], own.scale.reshape(20, 1))
    assert params.input_weight.weight_quant is layer.input_gate_params.input_weight.weight_quant
    assert params.bias_quant is layer.input_gate_params.bias_quant


def test_stacked_layout_is_torchs_weight_ih_and_summed_bias():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4)
    lstm = QuantLSTM(3, 4, **NONE)
    lstm.load_state_dict(ref.state_dict())
    params = lstm.layers[0][0].gate_params
    assert torch.equal(params.input_weight.quant_weight().value, ref.weight_ih_l0)
    assert torch.equal(params.hidden_weight.weight, ref.weight_hh_l0)
    torch.testing.assert_close(params.bias, ref.bias_ih_l0 + ref.bias_hh_l0, rtol=0, atol=1e-7)
    assert params.input_weight.quant_weight().scale is None  # weight_quant=None: no metadata


def test_shared_quantizer_gives_one_per_tensor_scale():
    lstm = QuantLSTM(6, 5, shared_intra_layer_weight_quant=True)
    layer = lstm.layers[0][0]
    qw = layer.gate_params.hidden_weight.quant_weight()
    assert qw.scale.numel() == 1 and qw.is_valid and qw.shape == (20, 5)
    # the shared scale covers every gate: max |w| over all four gates / 127 (narrow 8-bit)
    expected = torch.cat([g.hidden_weight.weight for g in layer.stacked_gates()]).abs().max() / 127
    torch.testing.assert_close(qw.scale.reshape(()), expected.detach(), rtol=1e-6, atol=0)
    assert all(
        g.hidden_weight.weight_quant is layer.gate_params.hidden_weight.weight_quant
        for g in layer.stacked_gates()
    )


def test_view_owns_nothing_and_passes_gradients():
    lstm = QuantLSTM(4, 3, coupled_input_forget_gates=True, bias=False)
    keys = set(lstm.state_dict())
    modules = len(list(lstm.modules()))
    params = lstm.layers[0][0].gate_params
    assert params.input_weight.quant_weight().shape == (9, 4)  # CIFG: i, g, o
    assert params.bias is None
    params.input_weight.quant_weight().value.sum().backward()
    assert set(lstm.state_dict()) == keys and len(list(lstm.modules())) == modules
    layer = lstm.layers[0][0]
    assert all(g.input_weight.weight.grad is not None for g in layer.stacked_gates())

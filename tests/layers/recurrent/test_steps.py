"""quantframe.layers.recurrent.steps: the one step function per cell, and the loops held to it."""

import pytest
import torch

from quantframe.layers import QuantLSTM, QuantRNN
from quantframe.layers.recurrent.bptt import lstm_loop, rnn_loop
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.layers.recurrent.steps import GATES, lstm_sequence, rnn_sequence, stacking_order
from tests.helpers import calibrate


def _x(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_gate_orders():
    assert GATES == ("input", "forget", "cell", "output")  # torch's i, f, g, o
    assert stacking_order(False) == ["input", "forget", "output", "cell"]
    assert stacking_order(True) == ["input", "output", "cell"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cifg", [False, True])
def test_in_place_lstm_loop_equals_the_step_function(cifg, reverse):
    torch.manual_seed(0)
    lstm = calibrate(QuantLSTM(4, 6, coupled_input_forget_gates=cifg), (5, 3, 4))
    cell, io = lstm.layers[0][0].cell, lstm.io_quant
    gates = 3 if cifg else 4

    def quants():
        return (
            StepQuant(cell.acc_quants(), 6),
            StepQuant(cell.activation_quants(), 6),
            StepQuant([cell.cell_state_quant], 6),
            StepQuant([cell.hidden_state_tanh_quant], 6),
            StepQuant([io], 6),
        )

    xw, h, c, w_hh = _x((5, 3, gates * 6), 1), _x((3, 6), 2), _x((3, 6), 3), _x((gates * 6, 6), 4) * 0.3
    with torch.no_grad():
        fast = lstm_loop(xw, h, c, w_hh.t().contiguous(), quants(), cifg, reverse)
        reference = lstm_sequence(xw, h, c, w_hh.t(), quants(), cifg, reverse)
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("relu", [False, True])
def test_in_place_rnn_loop_equals_the_step_function(relu):
    torch.manual_seed(0)
    rnn = calibrate(QuantRNN(4, 6, nonlinearity="relu" if relu else "tanh"), (5, 3, 4))
    acc, io = rnn.layers[0][0].cell.gate_acc_quant, rnn.io_quant
    xw, h, w_hh = _x((5, 3, 6), 1), _x((3, 6), 2), _x((6, 6), 4) * 0.3
    with torch.no_grad():
        fast = rnn_loop(xw, h, w_hh.t().contiguous(), StepQuant([acc], 6), StepQuant([io], 6), relu, False)
        reference = rnn_sequence(xw, h, w_hh.t(), StepQuant([acc], 6), StepQuant([io], 6), relu, False)
    for a, b in zip(fast, reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

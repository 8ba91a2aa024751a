"""Each recurrent cell's timestep, written once, and the gate order.

    RNN:   h_t = io(act(acc(xw_t + h_{t-1} @ W_hh^T))),  act = tanh or relu
    LSTM:  pre = acc(xw_t + h_{t-1} @ W_hh^T), stacked i, (f,) o, g (the sigmoid gates first)
           i, f, o = act(sigmoid(pre)),  g = act(tanh(pre_g))   (coupled input and forget gates: f = 1 - i)
           c_t = cell(f * c_{t-1} + i * g),  h_t = io(o * tanh_h(tanh(c_t)))

`xw_t` is the input-hidden projection of timestep t with the bias (all timesteps are projected in
one matmul before the loop). Quantizers are objects with `quant(x) -> Tensor` (`StepQuant`). The
layers' autograd path and the unrolled export run `rnn_sequence` / `lstm_sequence`; the in-place
loops and the hand-written backward of `bptt.py` compute the same steps faster, and the tests hold
them to these functions.
"""

from typing import Protocol

import torch
from torch import Tensor

GATES = ("input", "forget", "cell", "output")  # torch's chunk order of weight_ih / bias_ih: i, f, g, o
SIGMOID_GATES = ("input", "forget", "output")


class Quantizer(Protocol):
    """What a step needs of a quantizer."""

    def quant(self, x: Tensor) -> Tensor: ...


def stacking_order(cifg: bool) -> list[str]:
    """The gates in the order the cells stack their pre-activations: sigmoid gates i, (f,) o, then g."""
    return [name for name in (*SIGMOID_GATES, "cell") if not (cifg and name == "forget")]


def order(length: int, reverse: bool) -> range:
    """Timesteps in processing order."""
    return range(length - 1, -1, -1) if reverse else range(length)


def rnn_step(xw_t: Tensor, h: Tensor, w_hh_t: Tensor, acc: Quantizer, io: Quantizer, relu: bool) -> Tensor:
    """The next hidden state of the Elman recurrence (`w_hh_t`: W_hh transposed)."""
    pre = acc.quant(torch.addmm(xw_t, h, w_hh_t))
    return io.quant(torch.relu(pre) if relu else torch.tanh(pre))


def lstm_step(
    xw_t: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor, quants: tuple, cifg: bool
) -> tuple[Tensor, Tensor]:
    """The next (hidden, cell) state of the LSTM; `quants` = (acc, act, cell, tanh_h, io)."""
    acc, act, cell, tanh_h, io = quants
    hidden = h.shape[-1]
    pre = acc.quant(torch.addmm(xw_t, h, w_hh_t))
    pre_sigmoid, pre_tanh = pre.split([pre.shape[-1] - hidden, hidden], dim=-1)
    gates = act.quant(torch.cat([torch.sigmoid(pre_sigmoid), torch.tanh(pre_tanh)], dim=-1))
    split = gates.split(hidden, dim=-1)
    i, o, g = split[0], split[-2], split[-1]
    f = torch.rsub(i, 1) if cifg else split[1]
    c = cell.quant(torch.addcmul(f * c, i, g))
    return io.quant(o * tanh_h.quant(torch.tanh(c))), c


def rnn_sequence(
    xw: Tensor, h: Tensor, w_hh_t: Tensor, acc: Quantizer, io: Quantizer, relu: bool, reverse: bool
) -> tuple[Tensor, Tensor]:
    """Outputs (seq, batch, hidden) and the last hidden state: `rnn_step` over every timestep."""
    steps = xw.unbind(0)  # one backward node for all timesteps (indexing would zero-fill per step)
    outs = list(steps)
    for t in order(len(steps), reverse):
        h = outs[t] = rnn_step(steps[t], h, w_hh_t, acc, io, relu)
    return torch.stack(outs), h


def lstm_sequence(
    xw: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor, quants: tuple, cifg: bool, reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs (seq, batch, hidden), last hidden and last cell state: `lstm_step` over every timestep."""
    steps = xw.unbind(0)
    outs = list(steps)
    for t in order(len(steps), reverse):
        h, c = lstm_step(steps[t], h, c, w_hh_t, quants, cifg)
        outs[t] = h
    return torch.stack(outs), h, c

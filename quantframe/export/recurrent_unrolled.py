"""The recurrence of a QuantRNN / QuantLSTM written out step by step, every quantizer called as a proxy.

The layers' own forward reads the activation quantizers' scales once and runs a fused loop
(`quantframe.layers.recurrent.bptt`), so no proxy sees the per-step tensors and an export handler
would have nothing to emit. This forward runs the cells' one step function
(`quantframe.layers.recurrent.steps`) with step quantizers that call each proxy on its gate's chunk,
and calls the weight and bias proxies once per gate:

    x, h_0 -> io_quant;  c_0 -> cell_state_quant;  W -> weight_quant;  b -> bias_quant
    per step and gate:  gate_acc_quant(x_t W_ih^T + b + h W_hh^T)
    LSTM:  i, f, o = sigmoid_quant(sigmoid(.)),  g = tanh_quant(tanh(.))   (CIFG: f = 1 - i)
           c = cell_state_quant(f c + i g),  h = io_quant(o * tanh_quant(tanh(c)))
    RNN:   h = io_quant(act(.)),  act = tanh or relu

so that each call becomes its format's nodes (QONNX `Quant`, or QCDQ Q/DQ). The TorchScript exporter
traces the Python loop, so the graph is unrolled for the sequence length of the example input (and
works for that length only). In eval mode with fixed scales the values equal the layer's own forward
up to float summation order.
"""

from typing import Any

import torch
from torch import Tensor, nn

from quantframe.layers.base import plain
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.layers.recurrent.steps import lstm_sequence, rnn_sequence
from quantframe.tensor import QuantTensor


def _scale(x: Any) -> Tensor | None:
    return x.scale if isinstance(x, QuantTensor) else None


def _projection(gates: list[nn.Module], x: Tensor, input_scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x @ W_ih^T + b for all timesteps, W_hh^T), the gates stacked; weights and biases per gate."""
    projected, recurrent = [], []
    for gate in gates:
        w_ih = gate.input_weight.quant_weight()
        bias = gate.quant_bias(input_scale, w_ih.scale)
        part = torch.matmul(x, w_ih.value.t())
        projected.append(part if bias is None else part + bias)
        recurrent.append(gate.hidden_weight.quant_weight().value)
    return torch.cat(projected, dim=-1), torch.cat(recurrent).t()


def _calling(proxies: list[nn.Module], hidden: int) -> StepQuant:
    """Step quantizers that call every proxy on its gate's chunk (so that its handler emits nodes)."""
    return StepQuant(proxies, hidden, fixed=False)


def _on_grid(value: Tensor, quant: StepQuant) -> Any:
    """`value` with the metadata of the last call of a whole-tensor quantizer (else the tensor)."""
    return value if quant.meta is None else QuantTensor(value, *quant.meta, False)


def lstm_direction(layer: nn.Module, x: Any, h: Tensor, c: Tensor, cifg: bool) -> tuple:
    """(outputs (seq, batch, hidden), last hidden state, last cell state) of one LSTM layer/direction."""
    cell, hidden = layer.cell, h.shape[-1]
    xw, w_hh_t = _projection(layer.stacked_gates(), plain(x), _scale(x))
    quants = (
        _calling(cell.acc_quants(), hidden),
        _calling(cell.activation_quants(), hidden),
        _calling([cell.cell_state_quant], hidden),
        _calling([cell.hidden_state_tanh_quant], hidden),
        _calling([layer.io_quant], hidden),
    )
    out, h, c = lstm_sequence(xw, h, c, w_hh_t, quants, cifg, layer.reverse)
    return out, _on_grid(h, quants[-1]), _on_grid(c, quants[2])


def rnn_direction(layer: nn.Module, x: Any, h: Tensor, relu: bool) -> tuple:
    """(outputs (seq, batch, hidden), last io QuantTensor) of one QuantRNN layer and direction."""
    hidden = h.shape[-1]
    xw, w_hh_t = _projection([layer.gate_params], plain(x), _scale(x))
    acc, io = _calling([layer.cell.gate_acc_quant], hidden), _calling([layer.io_quant], hidden)
    out, h = rnn_sequence(xw, h, w_hh_t, acc, io, relu, layer.reverse)
    return out, _on_grid(h, io)


def _like(value: Tensor, grid: Any, wanted: bool) -> Any:
    """`value` as a QuantTensor on `grid`'s metadata when `wanted` and known, else the tensor."""
    if not wanted or not isinstance(grid, QuantTensor):
        return value
    return QuantTensor(value, grid.scale, grid.zero_point, grid.bit_width, grid.signed, False)


def unrolled_forward(module: nn.Module, input: Any, hx: Any = None) -> tuple:
    """`module`'s (QuantRNN or QuantLSTM) eval forward, step by step through its proxies (module doc)."""
    lstm = module.num_states == 2
    x = plain(input)
    batched = x.dim() == 3
    x = x.unsqueeze(1) if not batched else x.transpose(0, 1) if module.batch_first else x
    count, batch, hidden = module.num_layers * module.num_directions, x.shape[1], module.hidden_size
    given = (hx,) if not lstm and hx is not None else tuple(hx) if hx is not None else ()
    given = tuple(plain(s) if batched else plain(s).unsqueeze(1) for s in given)
    zeros = x.new_zeros(batch, hidden)
    h0 = plain(module.io_quant(given[0])).unbind(0) if given else [zeros] * count
    c0 = given[1].unbind(0) if lstm and given else [zeros] * count
    layer_input: Any = module.io_quant(x)
    finals_h, finals_c, grid = [], [], layer_input
    for k, directions in enumerate(module.layers):
        outs = []
        for d, layer in enumerate(directions):
            index = k * module.num_directions + d
            if lstm:
                c_start = plain(layer.cell.cell_state_quant(c0[index])) if given else c0[index]
                out, h_q, c_q = lstm_direction(
                    layer, layer_input, h0[index], c_start, module.coupled_input_forget_gates
                )
                finals_c.append(c_q)
            else:
                out, h_q = rnn_direction(layer, layer_input, h0[index], module.nonlinearity == "relu")
            outs.append(out)
            finals_h.append(plain(h_q))
            grid = h_q
        merged = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        layer_input = _like(merged, grid, True)  # the next layer's input keeps the io scale (bias grid)
    output = plain(layer_input)
    output = output.squeeze(1) if not batched else output.transpose(0, 1) if module.batch_first else output
    h_n = torch.stack(finals_h) if batched else torch.stack(finals_h).squeeze(1)
    wanted = module.return_quant_tensor
    if not lstm:
        return _like(output, grid, wanted), _like(h_n, grid, wanted)
    cells = [plain(c) if batched else plain(c).squeeze(0) for c in finals_c]
    if module.cat_output_cell_states:  # one shared cell-state quantizer
        c_n: Any = _like(torch.stack(cells), finals_c[-1], wanted)
    else:
        c_n = [_like(c, q, wanted) for c, q in zip(cells, finals_c, strict=True)]
    return _like(output, grid, wanted), (_like(h_n, grid, wanted), c_n)

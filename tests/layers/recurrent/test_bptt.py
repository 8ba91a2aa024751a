"""quantframe.layers.recurrent.bptt: the in-place loops and the hand-written backward pass equal autograd
over the cells' one step function (`steps.rnn_step` / `steps.lstm_step`).

The reference below runs each layer's recurrence through those step functions with quantizers built
from the layer's own quantizer parameters and torch's learnable fake-quant kernel (straight-through
inside the range, LSQ scale gradient), and lets autograd differentiate it; the layer must give the
same outputs and gradients for inputs, initial states, weights, biases and every learned activation
scale.
"""

import pytest
import torch
from torch import nn

from quantframe.core.scaling import ParameterFromStatsScaling
from quantframe.layers import QuantLSTM, QuantRNN
from quantframe.layers.recurrent.steps import lstm_sequence, rnn_sequence


def _x(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _learned(model):
    """Statistics from one batch, then learned scales; training mode."""
    model.train()
    model(_x((5, 3, model.input_size), 0))
    for module in model.modules():
        if isinstance(module, ParameterFromStatsScaling):
            module.init_from_statistics()
    return model


def _fq(x, proxy):
    """torch's learnable fake-quant kernel with the proxy's learned threshold: scale = threshold / divisor."""
    tq = proxy.tensor_quant
    scale = (tq.scaling_impl.value / tq.divisor).reshape(1)
    return torch._fake_quantize_learnable_per_tensor_affine(
        x, scale, torch.zeros(1), tq.min_value, tq.max_value, 1.0
    )


class _Reference:
    """Step quantizers applying `_fq` with each proxy on its chunk of the stacked gates."""

    def __init__(self, *proxies):
        self.proxies = proxies

    def quant(self, x):
        chunks = x.chunk(len(self.proxies), dim=-1)
        return torch.cat([_fq(c, p) for c, p in zip(chunks, self.proxies, strict=True)], dim=-1)


def _projection(gates, io, x_q):
    weights = [g.input_weight.quant_weight() for g in gates]
    io_scale = io.tensor_quant.scaling_impl.value / io.tensor_quant.divisor
    bias = torch.cat(
        [g.bias_quant(g.bias, io_scale, w.scale).value for g, w in zip(gates, weights, strict=True)]
    )
    w_ih = torch.cat([w.value for w in weights])
    xw = torch.addmm(bias, x_q.reshape(-1, x_q.shape[-1]), w_ih.t()).view(*x_q.shape[:2], -1)
    w_hh = torch.cat([g.hidden_weight.quant_weight().value for g in gates])
    return xw, w_hh.t().contiguous()


def _reference_rnn(rnn, x, h0):
    io = rnn.io_quant
    layer_input, finals = _fq(x, io), []
    for k, directions in enumerate(rnn.layers):
        outs = []
        for d, layer in enumerate(directions):
            xw, w_hh_t = _projection([layer.gate_params], io, layer_input)
            h = _fq(h0[k * len(directions) + d], io)
            acc = _Reference(layer.cell.gate_acc_quant)
            out, h = rnn_sequence(xw, h, w_hh_t, acc, _Reference(io), False, reverse=bool(d))
            outs.append(out)
            finals.append(h)
        layer_input = torch.cat(outs, dim=-1)
    return layer_input, torch.stack(finals)


def _reference_lstm(lstm, x, h0, c0):
    io = lstm.io_quant
    layer_input, hs, cs = _fq(x, io), [], []
    for k, directions in enumerate(lstm.layers):
        outs = []
        for d, layer in enumerate(directions):
            cell = layer.cell
            gates = [
                layer.input_gate_params,
                layer.forget_gate_params,
                layer.output_gate_params,
                layer.cell_gate_params,
            ]
            xw, w_hh_t = _projection(gates, io, layer_input)
            index = k * len(directions) + d
            h, c = _fq(h0[index], io), _fq(c0[index], cell.cell_state_quant)
            quants = (
                _Reference(
                    cell.input_acc_quant, cell.forget_acc_quant, cell.output_acc_quant, cell.cell_acc_quant
                ),
                _Reference(
                    cell.input_sigmoid_quant,
                    cell.forget_sigmoid_quant,
                    cell.output_sigmoid_quant,
                    cell.cell_tanh_quant,
                ),
                _Reference(cell.cell_state_quant),
                _Reference(cell.hidden_state_tanh_quant),
                _Reference(io),
            )
            out, h, c = lstm_sequence(xw, h, c, w_hh_t, quants, False, reverse=bool(d))
            outs.append(out)
            hs.append(h)
            cs.append(c)
        layer_input = torch.cat(outs, dim=-1)
    return layer_input, (torch.stack(hs), torch.stack(cs))


def _gradients(model, forward, inputs):
    model.zero_grad()
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out, states = forward(*inputs)
    states = states if isinstance(states, tuple) else (states,)
    weights = _x(out.shape, 7)
    loss = (out * weights).sum() + sum(s.pow(2).sum() for s in states)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    grads.update({f"input{n}": t.grad for n, t in enumerate(inputs)})
    return (out, *states), grads


def _compare(model, ours, reference, inputs):
    """Same outputs; same gradients (learned scales, sums of many cancelling terms, to float rounding)."""
    ours_out, ours_grads = _gradients(model, ours, inputs)
    ref_out, ref_grads = _gradients(model, reference, inputs)
    for a, b in zip(ours_out, ref_out, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert set(ours_grads) == set(ref_grads)
    for name, expected in ref_grads.items():
        rtol = 1e-3 if "scaling_impl" in name else 1e-4
        torch.testing.assert_close(ours_grads[name], expected, atol=1e-6, rtol=rtol, msg=name)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_backward_equals_autograd_reference(bidirectional):
    torch.manual_seed(0)
    rnn = _learned(QuantRNN(4, 6, num_layers=2, bidirectional=bidirectional))
    count = 4 if bidirectional else 2
    _compare(rnn, rnn, lambda *a: _reference_rnn(rnn, *a), [_x((5, 3, 4), 1), _x((count, 3, 6), 2)])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_backward_equals_autograd_reference(bidirectional):
    torch.manual_seed(0)
    lstm = _learned(QuantLSTM(4, 6, num_layers=2, bidirectional=bidirectional))
    count = 4 if bidirectional else 2
    inputs = [_x((5, 3, 4), 1), _x((count, 3, 6), 2), _x((count, 3, 6), 3)]
    _compare(lstm, lambda x, h0, c0: lstm(x, (h0, c0)), lambda *a: _reference_lstm(lstm, *a), inputs)


@pytest.mark.parametrize(
    "build, learned",
    [
        (lambda: QuantLSTM(4, 6, bidirectional=True), False),  # collecting: no scale gradients
        (lambda: QuantLSTM(4, 6, num_layers=2, coupled_input_forget_gates=True), True),
        (lambda: QuantLSTM(4, 6, shared_intra_layer_gate_acc_quant=True), True),
        (lambda: QuantRNN(4, 6, nonlinearity="relu", bidirectional=True), True),
    ],
)
def test_backward_equals_autograd_over_the_loop(monkeypatch, build, learned):
    """The same recurrence differentiated by autograd (the path for quantizers BPTT does not cover)."""
    import quantframe.layers.recurrent.step_quant as recurrent_quant

    def run(force_autograd):
        torch.manual_seed(0)
        model = _learned(build()) if learned else build()
        if force_autograd:
            original = recurrent_quant.StepQuant.__init__

            def no_bptt(self, *args, **kwargs):
                original(self, *args, **kwargs)
                self.bptt = False

            monkeypatch.setattr(recurrent_quant.StepQuant, "__init__", no_bptt)
        result = _gradients(model, model, [_x((5, 3, 4), 1)])
        monkeypatch.undo()
        return result

    (fast_out, fast), (slow_out, slow) = run(False), run(True)
    for a, b in zip(fast_out, slow_out, strict=True):  # the same ops up to summation order
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert set(fast) == set(slow)
    for name, expected in slow.items():
        rtol = 1e-3 if "scaling_impl" in name else 1e-4
        torch.testing.assert_close(fast[name], expected, atol=1e-6, rtol=rtol, msg=name)


def test_relu_rnn_and_cifg_lstm_train():
    rnn = _learned(QuantRNN(4, 6, nonlinearity="relu"))
    out, h = rnn(_x((5, 3, 4), 1))
    out.sum().backward()
    assert rnn.layers[0][0].gate_params.hidden_weight.weight.grad.abs().sum() > 0
    lstm = _learned(QuantLSTM(4, 6, coupled_input_forget_gates=True))
    out, (h, c) = lstm(_x((5, 3, 4), 1))
    (out.sum() + c.sum()).backward()
    assert all(p.grad is not None for p in lstm.parameters())


def test_unused_outputs_still_backpropagate():
    lstm = _learned(QuantLSTM(4, 6))
    _, (h, _) = lstm(_x((5, 3, 4), 1))
    h.sum().backward()
    assert lstm.layers[0][0].input_gate_params.input_weight.weight.grad.abs().sum() > 0
    assert isinstance(lstm, nn.Module)


def test_retained_graph_gives_the_same_gradients_twice():
    lstm = _learned(QuantLSTM(4, 6))
    out, (h, c) = lstm(_x((5, 3, 4), 1))
    loss = out.sum() + c.pow(2).sum()
    loss.backward(retain_graph=True)
    first = {n: p.grad.clone() for n, p in lstm.named_parameters()}
    lstm.zero_grad()
    loss.backward()
    for name, p in lstm.named_parameters():
        torch.testing.assert_close(p.grad, first[name], atol=0, rtol=0, msg=name)

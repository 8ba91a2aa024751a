"""The timestep loops of the quantized RNN and LSTM, and their hand-written backward pass.

Autograd over a Python loop pays per operation and per timestep (building the graph forward,
running one node per op backward), which dominates small recurrent workloads. Here one
`torch.autograd.Function` covers a whole sequence of one layer and direction:

* forward: the loop runs without autograd, writing every step into preallocated buffers in
  place (the same loop serves `torch.no_grad()` inference, where nothing is kept);
* backward: backpropagation through time by hand, per step only element-wise products and one
  matmul; the hidden-hidden weight gradient and the learned-scale gradients (LSQ) are reduced over
  all timesteps at once after the loop.

Quantizers use the straight-through estimator: the gradient passes where the value was inside the
clamp range (`StepQuant.mask_grad`). The derivatives are the textbook ones on the quantized
values the forward used: sigmoid' = s (1 - s), tanh' = 1 - t^2, relu' = [z > 0], and for the LSTM
c_t = f c_{t-1} + i g, h_t = o tanh_q(c_t) (f = 1 - i with coupled input and forget gates).
"""

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from quantframe.layers.recurrent.step_quant import StepQuant, StepRecord
from quantframe.layers.recurrent.steps import order


def begin(quants: tuple[StepQuant, ...], steps: int) -> None:
    """Announce a loop of `steps` timesteps to its quantizers (batched statistics collection)."""
    for quant in quants:
        quant.begin(steps)


def end(quants: tuple[StepQuant, ...]) -> None:
    """The loop is over: quantizers fold its statistics steps in."""
    for quant in quants:
        quant.end()


def _previous(initial: Tensor, states: Tensor, reverse: bool) -> Tensor:
    """The state each step started from: (initial, states[:-1]) forward, (states[1:], initial) reverse."""
    first = initial.unsqueeze(0)
    return torch.cat([states[1:], first]) if reverse else torch.cat([first, states[:-1]])


def _per_gate(buffer: Tensor, hidden: int) -> list[tuple[Tensor, ...]]:
    """Each gate's (batch, hidden) view of a (steps, batch, gates x hidden) buffer, per timestep."""
    return [gate.unbind(0) for gate in buffer.split(hidden, dim=2)]


def _tanh_(view: Tensor, scratch: Tensor) -> Tensor:
    """tanh of a strided (batch, hidden) view in place, computed in a contiguous scratch.

    torch's vectorised tanh splits work across threads from 2048 elements, and on strided memory
    that costs ~8x (measured: 17 us against 2 us for a 16 x 128 block with 2 threads).
    """
    return view.copy_(scratch.copy_(view).tanh_())


def rnn_loop(
    xw: Tensor,
    h: Tensor,
    w_hh_t: Tensor,
    acc: StepQuant,
    io: StepQuant,
    relu: bool,
    reverse: bool,
    records: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """h_t = io(act(acc(xw_t + h_{t-1} @ W_hh^T))) without autograd; fills `records` when given."""
    steps = xw.shape[0]
    out = torch.empty_like(xw)
    xs, outs = xw.unbind(0), out.unbind(0)
    rec_acc = rec_io = None
    if records is None:
        acts = (torch.empty_like(xs[0]),) * steps
    else:
        rec_acc = records["acc"] = acc.record(steps, xw.shape[1:], xw)
        rec_io = records["io"] = io.record(steps, xw.shape[1:], xw)
        records["acts"] = torch.empty_like(xw)
        acts = records["acts"].unbind(0)
    begin((acc, io), steps)
    for t in order(steps, reverse):
        pre = acc.apply(torch.addmm(xs[t], h, w_hh_t, out=outs[t]), outs[t], rec_acc, t)
        if relu:
            torch.clamp_min(pre, 0, out=acts[t])
        else:
            torch.tanh(pre, out=acts[t])
        h = io.apply(acts[t], outs[t], rec_io, t)
    end((acc, io))
    return out, h


def lstm_loop(
    xw: Tensor,
    h: Tensor,
    c: Tensor,
    w_hh_t: Tensor,
    quants: tuple,
    cifg: bool,
    reverse: bool,
    records: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """`steps.lstm_step` over the sequence in place, without autograd; fills `records` when given.

    `quants` = (acc, act, cell, tanh_h, io); pre-activations are stacked i, (f,) o, g. With records
    every timestep keeps its activations, gates, states and quantizer records (for the backward
    pass); without, all timesteps reuse one (batch, gates x hidden) buffer and one state buffer.
    """
    acc, act, cell, tanh_h, io = quants
    steps, batch, width = xw.shape
    hidden = h.shape[-1]
    sig = width - hidden
    out = xw.new_empty(steps, batch, hidden)
    pre, scratch = xw.new_empty(batch, width), xw.new_empty(batch, hidden)
    if records is None:
        recs: list[StepRecord | None] = [None] * 5
        c = c.clone()
        th = torch.empty_like(c)
        acts_at = gates_at = (pre,) * steps
        cells_at, tanhs_at = (c,) * steps, (th,) * steps
        tanhs_q_at = tanhs_at
        per_gate = [(v,) * steps for v in pre.split(hidden, dim=1)]
        sigmoids_at, tanhs_g_at = ((v,) * steps for v in pre.split([sig, hidden], dim=1))
    else:
        full, state = (steps, batch, width), (steps, batch, hidden)
        acts, gates = xw.new_empty(full), xw.new_empty(full)
        cells, tanhs, tanhs_q = (xw.new_empty(state) for _ in range(3))
        recs = [
            q.record(steps, shape[1:], xw)
            for q, shape in zip(quants, (full, full, state, state, state), strict=True)
        ]
        records.update(zip(("acc", "act", "cell", "tanh_h", "io"), recs, strict=True))
        records.update(acts=acts, gates=gates, cells=cells, tanhs=tanhs, tanhs_q=tanhs_q)
        acts_at, gates_at = acts.unbind(0), gates.unbind(0)
        cells_at, tanhs_at, tanhs_q_at = cells.unbind(0), tanhs.unbind(0), tanhs_q.unbind(0)
        per_gate = _per_gate(gates, hidden)
        sigmoids_at, tanhs_g_at = (part.unbind(0) for part in acts.split([sig, hidden], dim=2))
    rec_acc, rec_act, rec_cell, rec_tanh, rec_io = recs
    xs, outs = xw.unbind(0), out.unbind(0)
    begin(quants, steps)
    for t in order(steps, reverse):
        acc.apply(torch.addmm(xs[t], h, w_hh_t, out=pre), acts_at[t], rec_acc, t)
        sigmoids_at[t].sigmoid_()
        _tanh_(tanhs_g_at[t], scratch)
        act.apply(acts_at[t], gates_at[t], rec_act, t)
        i, o, g = per_gate[0][t], per_gate[-2][t], per_gate[-1][t]
        f = torch.rsub(i, 1) if cifg else per_gate[1][t]
        c = cell.apply(torch.mul(f, c, out=cells_at[t]).addcmul_(i, g), cells_at[t], rec_cell, t)
        tanh_h.apply(torch.tanh(c, out=tanhs_at[t]), tanhs_q_at[t], rec_tanh, t)
        h = io.apply(torch.mul(o, tanhs_q_at[t], out=outs[t]), outs[t], rec_io, t)
    end(quants)
    return out, h, c


class RNNSequence(torch.autograd.Function):
    """One layer and direction of a QuantRNN over a whole sequence, with backpropagation through time."""

    @staticmethod
    def forward(
        ctx,
        xw: Tensor,
        h0: Tensor,
        w_hh: Tensor,
        acc: StepQuant,
        io: StepQuant,
        relu: bool,
        reverse: bool,
        acc_scale: Tensor | None,
        io_scale: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        records: dict = {}
        out, h = rnn_loop(xw, h0, w_hh.t().contiguous(), acc, io, relu, reverse, records)
        ctx.save_for_backward(h0, w_hh, out)
        ctx.records, ctx.quants, ctx.relu, ctx.reverse = records, (acc, io), relu, reverse
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor, d_h: Tensor) -> tuple:
        h0, w_hh, out = ctx.saved_tensors
        records, (acc, io) = ctx.records, ctx.quants
        rec_acc, rec_io = records["acc"], records["io"]
        StepRecord.start_backward([rec_acc, rec_io])
        acts = records["acts"]
        deriv = ((acts > 0).to(acts.dtype) if ctx.relu else 1 - acts * acts).unbind(0)
        d_xw = torch.empty_like(out)
        d_outs, d_xw_at = d_out.unbind(0), d_xw.unbind(0)
        for t in reversed(order(out.shape[0], ctx.reverse)):
            grad = io.mask_grad(torch.add(d_outs[t], d_h, out=d_xw_at[t]), rec_io, t).mul_(deriv[t])
            d_h = acc.mask_grad(grad, rec_acc, t) @ w_hh
        d_w = d_xw.reshape(-1, d_xw.shape[-1]).t() @ _previous(h0, out, ctx.reverse).reshape(-1, h0.shape[-1])
        scale_grads = acc.scale_gradient(rec_acc), io.scale_gradient(rec_io)
        return (d_xw, d_h, d_w, None, None, None, None, *scale_grads)


class LSTMSequence(torch.autograd.Function):
    """One layer and direction of a QuantLSTM over a whole sequence, with backpropagation through time."""

    @staticmethod
    def forward(
        ctx,
        xw: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_hh: Tensor,
        quants: tuple,
        cifg: bool,
        reverse: bool,
        *scales: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        records: dict = {}
        out, h, c = lstm_loop(xw, h0, c0, w_hh.t().contiguous(), quants, cifg, reverse, records)
        ctx.save_for_backward(h0, c0, w_hh, out)
        ctx.records, ctx.quants, ctx.cifg, ctx.reverse = records, quants, cifg, reverse
        return out, h.clone(), c.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor, d_h: Tensor, d_c: Tensor) -> tuple:
        h0, c0, w_hh, out = ctx.saved_tensors
        rec, cifg, hidden = ctx.records, ctx.cifg, h0.shape[-1]
        acc, act, cell, tanh_h, io = ctx.quants
        records = [rec[name] for name in ("acc", "act", "cell", "tanh_h", "io")]
        rec_acc, rec_act, rec_cell, rec_tanh, rec_io = records
        StepRecord.start_backward(records)
        acts, gates = rec["acts"], rec["gates"]
        sig = acts.shape[-1] - hidden
        sigmoids, tanhs_g = acts.split([sig, hidden], dim=2)
        deriv_act = torch.cat([sigmoids * (1 - sigmoids), 1 - tanhs_g * tanhs_g], dim=2).unbind(0)
        deriv_tanh = (1 - rec["tanhs"] ** 2).unbind(0)
        c_prev = _previous(c0, rec["cells"], ctx.reverse).unbind(0)
        per_gate, tanhs_q_at = _per_gate(gates, hidden), rec["tanhs_q"].unbind(0)
        d_xw = torch.empty_like(gates)
        d_xw_at, d_per_gate, d_outs = d_xw.unbind(0), _per_gate(d_xw, hidden), d_out.unbind(0)
        for t in reversed(order(out.shape[0], ctx.reverse)):
            i, o, g = per_gate[0][t], per_gate[-2][t], per_gate[-1][t]
            d_i, d_o, d_g = d_per_gate[0][t], d_per_gate[-2][t], d_per_gate[-1][t]
            d_hq = io.mask_grad(d_outs[t] + d_h, rec_io, t)
            torch.mul(d_hq, tanhs_q_at[t], out=d_o)
            d_th = tanh_h.mask_grad(d_hq.mul_(o), rec_tanh, t)
            d_cell = cell.mask_grad(torch.addcmul(d_c, d_th, deriv_tanh[t]), rec_cell, t)
            if cifg:  # c = (1 - i) c_prev + i g
                torch.mul(d_cell, g - c_prev[t], out=d_i)
                d_c = d_cell * torch.rsub(i, 1)
            else:
                torch.mul(d_cell, g, out=d_i)
                torch.mul(d_cell, c_prev[t], out=d_per_gate[1][t])
                d_c = d_cell * per_gate[1][t]
            torch.mul(d_cell, i, out=d_g)
            grad = act.mask_grad(d_xw_at[t], rec_act, t).mul_(deriv_act[t])
            d_h = acc.mask_grad(grad, rec_acc, t) @ w_hh
        d_w = d_xw.reshape(-1, d_xw.shape[-1]).t() @ _previous(h0, out, ctx.reverse).reshape(-1, hidden)
        scale_grads = [q.scale_gradient(r) for q, r in zip(ctx.quants, records, strict=True)]
        return (d_xw, d_h, d_c, d_w, None, None, None, *scale_grads)

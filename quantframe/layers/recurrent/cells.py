"""Building blocks of the quantized recurrent layers: gate parameters and the timestep loops.

One layer and direction of a `QuantRNN` / `QuantLSTM` runs in three stages:

1. quantize its weights once (each `GateWeight`'s proxy) and its biases on the grid of
   input scale x input-weight scale;
2. project the whole input sequence at once: `xw = x_q @ W_ih^T + b` (one matmul, all timesteps);
3. run the recurrence: per timestep only `xw_t + h_{t-1} @ W_hh^T`, the gate arithmetic and the
   per-step quantizers, prepared once per forward (`StepQuant`). Without autograd the loop writes
   into preallocated buffers in place; with autograd one `torch.autograd.Function` per layer and
   direction runs that loop and backpropagates through time by hand (`bptt.py`).
   Quantizers the hand-written backward does not cover (binary, ternary, a learned zero point or
   bit width, other rounding rules) run through autograd over the step functions of `steps.py`.
"""

import torch
from torch import Tensor, nn

from quantframe.layers.recurrent.bptt import LSTMSequence, RNNSequence, lstm_loop, rnn_loop
from quantframe.layers.recurrent.cache import EvalCache
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.layers.recurrent.steps import lstm_sequence, rnn_sequence, stacking_order
from quantframe.proxy.bias import bias_proxy
from quantframe.proxy.weight import weight_proxy
from quantframe.tensor import QuantTensor


class GateWeight(nn.Module):
    """One weight matrix of a gate, `(hidden_size, in_features)`, with its weight quantizer."""

    def __init__(self, in_features: int, hidden_size: int, weight_quant: object, overrides: dict, owner: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size, in_features))
        self.weight_quant = weight_proxy(weight_quant, overrides, owner, self.weight)

    def quant_weight(self) -> QuantTensor:
        """The quantized weight (a QuantTensor with None metadata when weight_quant is None)."""
        return self.weight_quant(self.weight)


class GateParams(nn.Module):
    """A gate's input-hidden and hidden-hidden weights, its bias (b_ih + b_hh in torch) and bias quantizer.

    One weight quantizer serves both weights of the gate, so their scales are computed from both
    and are identical (per tensor: max over both; per channel: max over both rows of a channel).
    `quants` maps "weight" and "bias" to a quantizer class, None, or a proxy of another gate to
    share; `overrides` holds the routed keyword overrides of each. `input_weight` may be another
    gate's `GateWeight` (the reverse direction sharing the forward one's weight): its quantizer then
    serves this gate's hidden-hidden weight too.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        quants: dict,
        overrides: dict,
        owner: str,
        input_weight: GateWeight | None = None,
    ):
        super().__init__()
        self.input_weight = (
            input_weight
            if input_weight is not None
            else GateWeight(input_size, hidden_size, quants["weight"], overrides.get("weight", {}), owner)
        )
        self.hidden_weight = GateWeight(hidden_size, hidden_size, self.input_weight.weight_quant, {}, owner)
        self.bias = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.bias_quant = bias_proxy(quants["bias"], overrides.get("bias", {}), owner)

    def quant_bias(self, input_scale: Tensor | None, weight_scale: Tensor | None) -> Tensor | None:
        """The bias on its grid (input scale x weight scale for accumulator-grid quantizers), or None."""
        if self.bias is None or not self.bias_quant.is_quant_enabled:
            return self.bias
        return self.bias_quant(self.bias, input_scale, weight_scale).value


def project_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`x @ weight^T + bias` for every timestep of `x` (seq, batch, in) in one matmul."""
    flat = x.reshape(-1, x.shape[-1])
    out = flat @ weight.t() if bias is None else torch.addmm(bias, flat, weight.t())
    return out.view(x.shape[0], x.shape[1], -1)


def prepare(cache: EvalCache | None, key: str, proxies: list, chunk: int, dtype: torch.dtype) -> StepQuant:
    """A `StepQuant` for this forward: from the eval cache when there is one."""
    return StepQuant(proxies, chunk, dtype) if cache is None else cache.step_quant(key, proxies, chunk, dtype)


def transposed(cache: EvalCache | None, weight: Tensor) -> Tensor:
    """`weight.t()` made contiguous (the row-major operand of the per-step matmul), cached in eval."""
    if cache is None:
        return weight.t().contiguous()
    return cache.memo("transposed", (weight,), lambda: weight.t().contiguous())


class QuantRNNCell(nn.Module):
    """The Elman recurrence: h_t = io(act(gate_acc(xw_t + h_{t-1} @ W_hh^T))), act = tanh or relu."""

    def __init__(self, nonlinearity: str, gate_acc_quant: nn.Module):
        super().__init__()
        self.nonlinearity = nonlinearity
        self.gate_acc_quant = gate_acc_quant

    def run(
        self,
        xw: Tensor,
        h: Tensor,
        w_hh: Tensor,
        io: StepQuant,
        reverse: bool,
        cache: EvalCache | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Outputs (seq, batch, hidden) and the last hidden state, from projected inputs `xw`."""
        acc = prepare(cache, "acc", [self.gate_acc_quant], xw.shape[-1], xw.dtype)
        relu = self.nonlinearity == "relu"
        if not torch.is_grad_enabled():
            return rnn_loop(xw, h, transposed(cache, w_hh), acc, io, relu, reverse)
        if acc.bptt and io.bptt:
            return RNNSequence.apply(xw, h, w_hh, acc, io, relu, reverse, acc.grad_target(), io.grad_target())
        # autograd over the loop: quantizers the hand-written backward does not cover
        return rnn_sequence(xw, h, w_hh.t(), acc, io, relu, reverse)


class QuantLSTMCell(nn.Module):
    """The LSTM recurrence with a quantizer after every gate accumulator, activation and state.

        i, f, o = sigmoid_q(sigmoid(acc_q(pre_i))), ...   g = tanh_q(tanh(acc_q(pre_g)))
        c_t = cell_state_q(f * c_{t-1} + i * g)           h_t = io(o * tanh_q(tanh(c_t)))

    With coupled input and forget gates (CIFG) f = 1 - i and there is no forget gate. Pre-activations
    are stacked in the order i, f, o, g (sigmoid gates first), so that one call quantizes each group.
    """

    def __init__(self, quants: dict[str, nn.Module | None], coupled_input_forget_gates: bool):
        super().__init__()
        self.coupled_input_forget_gates = coupled_input_forget_gates
        for name, proxy in quants.items():
            setattr(self, name, proxy)

    def acc_quants(self) -> list:
        """Accumulator quantizers in the stacking order i, (f,) o, g."""
        return [
            getattr(self, f"{name}_acc_quant") for name in stacking_order(self.coupled_input_forget_gates)
        ]

    def activation_quants(self) -> list:
        """Gate activation quantizers in the stacking order: sigmoids of i, (f,) o, then tanh of g."""
        names = stacking_order(self.coupled_input_forget_gates)
        return [getattr(self, f"{n}_tanh_quant" if n == "cell" else f"{n}_sigmoid_quant") for n in names]

    def run(
        self,
        xw: Tensor,
        h: Tensor,
        c: Tensor,
        w_hh: Tensor,
        io: StepQuant,
        cell: StepQuant,
        reverse: bool,
        cache: EvalCache | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Outputs (seq, batch, hidden), last hidden and last cell state, from projected inputs `xw`."""
        hidden, dtype = h.shape[-1], xw.dtype
        quants = (
            prepare(cache, "acc", self.acc_quants(), hidden, dtype),
            prepare(cache, "act", self.activation_quants(), hidden, dtype),
            cell,
            prepare(cache, "tanh_h", [self.hidden_state_tanh_quant], hidden, dtype),
            io,
        )
        cifg = self.coupled_input_forget_gates
        if not torch.is_grad_enabled():
            return lstm_loop(xw, h, c, transposed(cache, w_hh), quants, cifg, reverse)
        if all(q.bptt for q in quants):
            scales = [q.grad_target() for q in quants]
            return LSTMSequence.apply(xw, h, c, w_hh, quants, cifg, reverse, *scales)
        # autograd over the loop: quantizers the hand-written backward does not cover
        return lstm_sequence(xw, h, c, w_hh.t(), quants, cifg, reverse)

"""The `gate_params` of a QuantLSTM layer: its per-gate parameters seen as torch's stacked ones.

A QuantLSTM layer and direction keeps one `GateParams` per gate (`input_gate_params`, ...), so that
every gate can have its own weight quantizer. `layer.gate_params` is a view over them with the
structure QuantRNN has:

    gate_params.input_weight.weight_quant    the input gate's weight quantizer (the one every gate
                                             uses with shared_intra_layer_weight_quant=True)
    gate_params.input_weight.quant_weight()  the gates' quantized input-hidden weights stacked in
                                             torch's order i, f, g, o: (4 * hidden, input), as
                                             torch's weight_ih (CIFG: i, g, o, 3 * hidden rows)
    gate_params.hidden_weight                the same for the hidden-hidden weights
    gate_params.bias_quant                   the bias quantizer (one per layer and direction)
    gate_params.bias                         the stacked biases (b_ih + b_hh of torch), or None

The stacked QuantTensor has one per-tensor scale when every gate has the same per-tensor scale
(a shared quantizer); otherwise one scale per row, (rows, 1): each gate's per-tensor scale repeated
over its hidden rows, or its per-channel scales. The view owns nothing (it is built on access and
is not a submodule), so the state_dict and the module tree are those of the per-gate layout.
"""

import torch
from torch import Tensor, nn

from quantframe.layers.recurrent.steps import GATES
from quantframe.tensor import QuantTensor


class StackedGateWeight:
    """One weight kind (`input_weight` or `hidden_weight`) of every gate, stacked as torch's matrix."""

    def __init__(self, weights: list[nn.Module]):
        self.weights = weights

    @property
    def weight_quant(self) -> nn.Module:
        """The first (input) gate's weight quantizer."""
        return self.weights[0].weight_quant

    @property
    def weight(self) -> Tensor:
        """The float weights stacked (a new tensor; gradients flow to each gate's parameter)."""
        return torch.cat([w.weight for w in self.weights])

    def quant_weight(self) -> QuantTensor:
        """The gates' quantized weights stacked, with per-tensor or per-row metadata (module docstring)."""
        parts = [w.quant_weight() for w in self.weights]
        value = torch.cat([p.value for p in parts])
        if any(p.scale is None for p in parts):
            return QuantTensor(value)
        scale = _stacked([p.scale for p in parts], parts)
        zero_point = _stacked([p.zero_point for p in parts], parts)
        bit_widths = [p.bit_width for p in parts]
        same_bits = all(torch.equal(b, bit_widths[0]) for b in bit_widths)
        # a grid narrower than another is inside it: the widest bit width describes every row
        bit_width = bit_widths[0] if same_bits else torch.stack(bit_widths).amax(dim=0)
        signed = any(bool(p.signed) for p in parts)
        return QuantTensor(value, scale, zero_point, bit_width, signed, parts[0].training)


def _stacked(tensors: list[Tensor], parts: list[QuantTensor]) -> Tensor:
    """One per-tensor value if all gates agree on a scalar, else one value per row, (rows, 1)."""
    first = tensors[0]
    if all(t.numel() == 1 for t in tensors) and all(torch.equal(t, first) for t in tensors):
        return first
    rows = [
        t.reshape(-1, 1).expand(p.value.shape[0], 1) if t.numel() == 1 else t.reshape(-1, 1)
        for t, p in zip(tensors, parts, strict=True)
    ]
    return torch.cat(rows)


class LSTMGateParams:
    """The `gate_params` view of one QuantLSTM layer and direction (module docstring)."""

    def __init__(self, layer: nn.Module):
        gates = [getattr(layer, f"{name}_gate_params") for name in GATES]
        self.gates = [g for g in gates if g is not None]  # CIFG: no forget gate
        self.input_weight = StackedGateWeight([g.input_weight for g in self.gates])
        self.hidden_weight = StackedGateWeight([g.hidden_weight for g in self.gates])
        self.bias_quant = self.gates[0].bias_quant

    @property
    def bias(self) -> Tensor | None:
        """The gates' biases stacked in torch's order, or None without biases."""
        if self.gates[0].bias is None:
            return None
        return torch.cat([g.bias for g in self.gates])

"""Quantized LSTM: `QuantLSTM`, torch.nn.LSTM's arguments plus quantizers for every gate and state.

Each layer and direction holds one `GateParams` per gate (`input_gate_params`, `forget_gate_params`,
`cell_gate_params`, `output_gate_params`: torch's i, f, g, o), so a per-channel weight quantizer has
`hidden_size` scales per gate. By default every gate has its own weight, accumulator, sigmoid and
tanh quantizers, the bias quantizer is one per layer and direction, and one cell-state quantizer is
shared by all layers (so that the final cell states can be concatenated on one grid).
`layer.gate_params` views the four gates as torch's stacked matrices, with QuantRNN's
`.input_weight` / `.hidden_weight` (`.weight_quant`, `.quant_weight()`) and `.bias_quant`
(`view.py`).
"""

from typing import Any

import torch
from torch import Tensor, nn

from quantframe.layers.recurrent.base import QuantRecurrent, gate_quantizers
from quantframe.layers.recurrent.cache import EvalCacheMixin
from quantframe.layers.recurrent.cells import GateParams, QuantLSTMCell, prepare, project_inputs
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.layers.recurrent.steps import GATES, stacking_order
from quantframe.layers.recurrent.view import LSTMGateParams
from quantframe.proxy.act import act_proxy
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFloat,
    Int32Bias,
    Uint8ActPerTensorFloat,
)
from quantframe.tensor import QuantTensor


class QuantLSTMLayer(EvalCacheMixin, nn.Module):
    """One layer and direction of a `QuantLSTM`."""

    def __init__(
        self, gate_params: dict[str, GateParams], cell: QuantLSTMCell, io_quant: nn.Module, reverse: bool
    ):
        super().__init__()
        for name in GATES:
            setattr(self, f"{name}_gate_params", gate_params.get(name))
        self.cell = cell
        self.io_quant = io_quant
        self.reverse = reverse

    @property
    def gate_params(self) -> LSTMGateParams:
        """The gates' parameters as torch's stacked matrices (see `view.py`)."""
        return LSTMGateParams(self)

    def stacked_gates(self) -> list[GateParams]:
        """Gate parameters in the order the cell stacks pre-activations: i, (f,) o, g."""
        return [
            getattr(self, f"{name}_gate_params") for name in stacking_order(self.forget_gate_params is None)
        ]

    def forward(
        self, x: Tensor, input_scale: Tensor | None, io: StepQuant, given: bool, h0: Tensor, c0: Tensor
    ) -> tuple[Tensor, tuple]:
        """Outputs (seq, batch, hidden) and (h_n, c_n) for a sequence `x` already on the io grid."""
        gates, cache = self.stacked_gates(), self.eval_cache()
        w_ih = [g.input_weight.quant_weight() for g in gates]
        w_hh = [g.hidden_weight.quant_weight().value for g in gates]
        biases = [g.bias for g in gates]
        w_ih_values = [w.value for w in w_ih]
        if cache is None:
            w_ih_cat, w_hh_cat = torch.cat(w_ih_values), torch.cat(w_hh)
            bias = _quant_biases(gates, w_ih, input_scale)
        else:  # the weight proxies return the same QuantTensors while the weights are unchanged
            w_ih_cat = cache.memo("w_ih", tuple(w_ih_values), lambda: torch.cat(w_ih_values))
            w_hh_cat = cache.memo("w_hh", tuple(w_hh), lambda: torch.cat(w_hh))
            bias = cache.memo(
                "bias",
                (input_scale, *biases, *(w.scale for w in w_ih)),
                lambda: _quant_biases(gates, w_ih, input_scale),
            )
        xw = project_inputs(x, w_ih_cat, bias)
        cell = prepare(cache, "cell", [self.cell.cell_state_quant], h0.shape[-1], x.dtype)
        if given:
            c0 = cell.quant(c0)
        out, h, c = self.cell.run(xw, h0, c0, w_hh_cat, io, cell, self.reverse, cache)
        if cell.meta is not None:
            c = QuantTensor(c, *cell.meta, self.training)
        return out, (h, c)


def _quant_biases(
    gates: list[GateParams], weights: list[QuantTensor], input_scale: Tensor | None
) -> Tensor | None:
    """The gate biases, stacked, each on its grid; one call when the grid is input x weight scale.

    The bias quantizer is one instance per layer and direction: on the accumulator grid the stacked
    call equals one call per gate (each gate's bias meets its own weight scale); a quantizer with its
    own scale is called per gate so that every gate keeps its own statistics.
    """
    first = gates[0]
    if first.bias is None:
        return None
    quant = first.bias_quant
    if quant.is_quant_enabled and quant.requires_input_scale:
        hidden = first.bias.shape[0]
        weight_scale = torch.cat([w.scale.reshape(-1).expand(hidden) for w in weights])
        return quant(torch.cat([g.bias for g in gates]), input_scale, weight_scale).value
    return torch.cat([g.quant_bias(input_scale, w.scale) for g, w in zip(gates, weights, strict=True)])


class QuantLSTM(QuantRecurrent):
    """LSTM with quantized weights, biases, gate accumulators, gate activations, cell and hidden states.

    Per timestep (`steps.py`): i, f, o = sigmoid_q(sigmoid(gate_acc_q(x W_ih^T + h W_hh^T + b))),
    g = tanh_q(tanh(gate_acc_q(...))), c = cell_state_q(f c + i g), h = io(o tanh_q(tanh(c))).
    `coupled_input_forget_gates`: f = 1 - i, no forget-gate weights. `cat_output_cell_states=False`
    returns the final cell states as a list (one per layer and direction). `proj_size` other than 0
    is not supported (ValueError).
    """

    num_states = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        weight_quant: Any = Int8WeightPerTensorFloat,
        bias_quant: Any = Int32Bias,
        io_quant: Any = Int8ActPerTensorFloat,
        gate_acc_quant: Any = Int8ActPerTensorFloat,
        sigmoid_quant: Any = Uint8ActPerTensorFloat,
        tanh_quant: Any = Int8ActPerTensorFloat,
        cell_state_quant: Any = Int8ActPerTensorFloat,
        shared_input_hidden_weights: bool = False,
        coupled_input_forget_gates: bool = False,
        cat_output_cell_states: bool = True,
        shared_intra_layer_weight_quant: bool = False,
        shared_intra_layer_gate_acc_quant: bool = False,
        shared_cell_state_quant: bool = True,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        if proj_size != 0:
            raise ValueError(
                f"QuantLSTM: proj_size={proj_size!r} is not supported (LSTM projections); allowed: 0"
            )
        if cat_output_cell_states and not shared_cell_state_quant:
            raise RuntimeError(
                "QuantLSTM: cat_output_cell_states=True concatenates the final cell states of all layers, "
                "which needs them on one grid, but shared_cell_state_quant=False gives each layer its own "
                "cell-state quantizer; set shared_cell_state_quant=True or cat_output_cell_states=False"
            )
        if return_quant_tensor and cell_state_quant is None:
            raise RuntimeError(
                "QuantLSTM: return_quant_tensor=True returns the cell states as QuantTensors, but "
                "cell_state_quant=None leaves them off any grid; set cell_state_quant (e.g. "
                "Int8ActPerTensorFloat) or return_quant_tensor=False"
            )
        self.coupled_input_forget_gates = bool(coupled_input_forget_gates)
        self.cat_output_cell_states = bool(cat_output_cell_states)
        self.shared_intra_layer_weight_quant = bool(shared_intra_layer_weight_quant)
        self.shared_intra_layer_gate_acc_quant = bool(shared_intra_layer_gate_acc_quant)
        self.shared_cell_state_quant = bool(shared_cell_state_quant)
        quants = {
            "weight": weight_quant,
            "bias": bias_quant,
            "io": io_quant,
            "gate_acc": gate_acc_quant,
            "sigmoid": sigmoid_quant,
            "tanh": tanh_quant,
            "cell_state": cell_state_quant,
        }
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            shared_input_hidden_weights,
            return_quant_tensor,
            quants,
            kwargs,
            device,
            dtype,
        )

    def _shared_quantizers(self, owner: str, quants: dict, routed: dict) -> dict:
        """The cell-state quantizer, when one instance serves all layers (`shared_cell_state_quant`)."""
        if not self.shared_cell_state_quant:
            return {}
        proxy = act_proxy(quants["cell_state"], routed["cell_state"], owner, "cell_state_quant")
        return {"cell_state": proxy}

    def _build(
        self,
        owner: str,
        in_size: int,
        quants: dict,
        routed: dict,
        shared: dict,
        reverse: bool,
        forward_layer: nn.Module | None,
    ) -> QuantLSTMLayer:
        names = [n for n in GATES if not (n == "forget" and self.coupled_input_forget_gates)]
        gate_quants, overrides = gate_quantizers(quants, routed)
        params: dict[str, GateParams] = {}
        for name in names:
            input_weight = None
            if forward_layer is not None:  # the reverse direction reuses the forward input-hidden weight
                input_weight = getattr(forward_layer, f"{name}_gate_params").input_weight
            gate = GateParams(
                in_size, self.hidden_size, self.bias, gate_quants, overrides, owner, input_weight
            )
            params[name] = gate
            # later gates reuse this gate's bias quantizer (one per layer and direction) and, when
            # asked, its weight quantizers; a shared proxy takes no overrides
            gate_quants = {**gate_quants, "bias": gate.bias_quant}
            overrides = {**overrides, "bias": {}}
            if self.shared_intra_layer_weight_quant:
                gate_quants.update(weight=gate.input_weight.weight_quant)
                overrides.update(weight={})
        return QuantLSTMLayer(params, self._build_cell(owner, quants, routed, shared), shared["io"], reverse)

    def _build_cell(self, owner: str, quants: dict, routed: dict, shared: dict) -> QuantLSTMCell:
        def new(kind: str) -> nn.Module:
            return act_proxy(quants[kind], routed[kind], owner, f"{kind}_quant")

        cifg = self.coupled_input_forget_gates
        shared_acc = new("gate_acc") if self.shared_intra_layer_gate_acc_quant else None

        def acc() -> nn.Module:
            return shared_acc if shared_acc is not None else new("gate_acc")

        cell_quants = {
            "input_acc_quant": acc(),
            "forget_acc_quant": None if cifg else acc(),
            "cell_acc_quant": acc(),
            "output_acc_quant": acc(),
            "input_sigmoid_quant": new("sigmoid"),
            "forget_sigmoid_quant": None if cifg else new("sigmoid"),
            "output_sigmoid_quant": new("sigmoid"),
            "cell_tanh_quant": new("tanh"),
            "hidden_state_tanh_quant": new("tanh"),
            "cell_state_quant": shared["cell_state"] if "cell_state" in shared else new("cell_state"),
        }
        return QuantLSTMCell(cell_quants, cifg)

    def _gate_params(self, layer: nn.Module) -> list[GateParams]:
        return layer.stacked_gates()

    def _gate_targets(self) -> list[str | None]:
        cifg = self.coupled_input_forget_gates
        return [None if n == "forget" and cifg else f"{n}_gate_params" for n in GATES]

    def _package(self, output: Tensor, finals: list, batched: bool, io: Any) -> tuple:
        output, h_n = super()._package(output, finals[:1], batched, io)
        cells = finals[1]
        plain = [c.value if isinstance(c, QuantTensor) else c for c in cells]
        if not batched:
            plain = [c.squeeze(0) for c in plain]
        if self.cat_output_cell_states:
            c_n = torch.stack(plain)
            if self.return_quant_tensor:
                last = cells[-1]
                c_n = QuantTensor(
                    c_n, last.scale, last.zero_point, last.bit_width, last.signed, last.training
                )
        elif self.return_quant_tensor:
            c_n = [
                QuantTensor(p, c.scale, c.zero_point, c.bit_width, c.signed, c.training)
                for p, c in zip(plain, cells, strict=True)
            ]
        else:
            c_n = plain
        return output, (h_n, c_n)

"""`QuantRNN`: the Elman recurrence with quantized weights, bias, gate accumulator and io."""

from typing import Any

from torch import Tensor, nn

from quantframe.layers.recurrent.base import QuantRecurrent, gate_quantizers
from quantframe.layers.recurrent.cache import EvalCacheMixin
from quantframe.layers.recurrent.cells import GateParams, QuantRNNCell, project_inputs
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.proxy.act import act_proxy
from quantframe.quantizers import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Int32Bias


class QuantRNNLayer(EvalCacheMixin, nn.Module):
    """One layer and direction of a `QuantRNN`."""

    def __init__(self, gate_params: GateParams, cell: QuantRNNCell, io_quant: nn.Module, reverse: bool):
        super().__init__()
        self.gate_params = gate_params
        self.cell = cell
        self.io_quant = io_quant
        self.reverse = reverse

    def forward(
        self, x: Tensor, input_scale: Tensor | None, io: StepQuant, given: bool, h0: Tensor
    ) -> tuple[Tensor, tuple]:
        """Outputs (seq, batch, hidden) and (h_n,) for a sequence `x` already on the io grid."""
        params, cache = self.gate_params, self.eval_cache()
        w_ih = params.input_weight.quant_weight()
        w_hh = params.hidden_weight.quant_weight()
        if cache is None:
            bias = params.quant_bias(input_scale, w_ih.scale)
        else:
            bias = cache.memo(
                "bias",
                (params.bias, input_scale, w_ih.scale),
                lambda: params.quant_bias(input_scale, w_ih.scale),
            )
        xw = project_inputs(x, w_ih.value, bias)
        out, h = self.cell.run(xw, h0, w_hh.value, io, self.reverse, cache)
        return out, (h,)


class QuantRNN(QuantRecurrent):
    """Elman RNN with quantized weights, bias, gate accumulator and io (input, hidden states, output).

        h_t = io(act(gate_acc(x_t @ W_ih^T + h_{t-1} @ W_hh^T + b))),  act = tanh or relu

    with x and h_0 quantized by `io_quant`, W by `weight_quant`, b by `bias_quant` on the grid
    io scale x input-weight scale. `shared_input_hidden_weights=True` makes the reverse direction
    use the forward direction's input-hidden weight.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        weight_quant: Any = Int8WeightPerTensorFloat,
        bias_quant: Any = Int32Bias,
        io_quant: Any = Int8ActPerTensorFloat,
        gate_acc_quant: Any = Int8ActPerTensorFloat,
        shared_input_hidden_weights: bool = False,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"QuantRNN: nonlinearity={nonlinearity!r}; allowed: 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        quants = {"weight": weight_quant, "bias": bias_quant, "io": io_quant, "gate_acc": gate_acc_quant}
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

    def _build(
        self,
        owner: str,
        in_size: int,
        quants: dict,
        routed: dict,
        shared: dict,
        reverse: bool,
        forward_layer: nn.Module | None,
    ) -> QuantRNNLayer:
        gate_quants, overrides = gate_quantizers(quants, routed)
        input_weight = forward_layer.gate_params.input_weight if forward_layer is not None else None
        params = GateParams(in_size, self.hidden_size, self.bias, gate_quants, overrides, owner, input_weight)
        acc = act_proxy(quants["gate_acc"], routed["gate_acc"], owner, "gate_acc_quant")
        return QuantRNNLayer(params, QuantRNNCell(self.nonlinearity, acc), shared["io"], reverse)

"""Export of QuantRNN / QuantLSTM: the standard ONNX `RNN`/`LSTM` operator, or the unrolled recurrence.

QCDQ, weight-only layers (every quantizer None but `weight_quant`): one ONNX `LSTM` (or `RNN`) node per
layer, whose W and R inputs are the quantized weights as integer initializers -> (Clip ->)
DequantizeLinear, one initializer per layer, direction and weight kind:

    W (1, G * hidden, in)  the gates' weight_ih rows in ONNX's gate order i, o, f, c (torch's is
                           i, f, g, o), with one scale per row when the gates' scales differ (a
                           per-channel quantizer, or one quantizer per gate): DequantizeLinear axis 1
    B (D, 2 * G * hidden)  [Wb, Rb] = [the layer's bias (b_ih + b_hh, stored summed), zeros]

and the directions concatenated on axis 0 (bidirectional). Coupled input and forget gates (CIFG,
f = 1 - i) set the LSTM attribute `input_forget=1` ("couple the input and forget gates"), which
onnxruntime computes as f = 1 - i, ignoring the forget rows (zeros here). The operator's sequence-
major layout is kept (it exists at every opset >= 13): a `batch_first` input is transposed before the
first layer and the output after the last; unbatched inputs gain and lose a batch axis of 1; between
layers Y (seq, D, batch, hidden) becomes (seq, batch, D * hidden). Initial states are sliced per layer.

Other layers (any activation, accumulator, state or bias quantizer enabled), in QCDQ and QONNX: the
recurrence unrolled over the example's sequence length with every quantizer as its format's nodes
(`recurrent_unrolled.py`). The encodings record runs the layer's own forward.

While tracing, the standard operator's eager outputs come from the unrolled recurrence (with the float
weights the weight handlers hand on, as for other layers); only their shapes reach the graph.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from quantframe.export.manager import patch_forward
from quantframe.export.params import QuantParams
from quantframe.export.qcdq import container, dequantized
from quantframe.export.recurrent_unrolled import unrolled_forward
from quantframe.layers.base import plain
from quantframe.layers.recurrent.base import QuantRecurrent
from quantframe.layers.recurrent.cells import GateParams, GateWeight
from quantframe.layers.recurrent.lstm import QuantLSTMLayer
from quantframe.proxy.base import QuantProxy
from quantframe.proxy.weight import WeightQuantProxy

ONNX_LSTM_GATES = ("input", "output", "forget", "cell")  # ONNX's i, o, f, c
_BUFFERS = {"input_weight": "export_input_weight", "hidden_weight": "export_hidden_weight"}


def quantized_beyond_weights(module: nn.Module) -> list[str]:
    """Paths of the enabled quantizers of `module` other than weight quantizers."""
    return [
        name
        for name, proxy in module.named_modules()
        if isinstance(proxy, QuantProxy)
        and proxy.is_quant_enabled
        and not isinstance(proxy, WeightQuantProxy)
    ]


def _gates(layer: nn.Module) -> list[GateParams | None]:
    """A layer's gates in ONNX order (None: the forget gate of a CIFG LSTM)."""
    if isinstance(layer, QuantLSTMLayer):
        return [getattr(layer, f"{name}_gate_params") for name in ONNX_LSTM_GATES]
    return [layer.gate_params]


def _weight_params(weight: GateWeight) -> QuantParams | None:
    """The checked parameters of one quantized gate weight (None: weight_quant is None)."""
    proxy = weight.weight_quant
    if not proxy.is_quant_enabled:
        return None
    with torch.no_grad():
        return proxy.export_handler.read(type(proxy).forward(proxy, weight.weight))


def _rows(t: Tensor, rows: int) -> Tensor:
    return t.reshape(-1).expand(rows) if t.numel() == 1 else t.reshape(-1)


def stacked_params(name: str, gates: list[GateParams | None], kind: str) -> QuantParams | Tensor:
    """The gates' `kind` weights stacked as an ONNX W/R matrix (1, G * hidden, features).

    Quantized: one QuantParams (per-tensor if every row has one scale and zero point, else per row on
    axis 1); a missing gate (CIFG forget) is zeros on the first gate's grid. Float: the tensor.
    """
    weights = [None if g is None else getattr(g, kind) for g in gates]
    present = [w for w in weights if w is not None]
    params = [_weight_params(w) for w in present]
    if params[0] is None:
        with torch.no_grad():
            stacked = [torch.zeros_like(present[0].weight) if w is None else w.weight for w in weights]
            return torch.cat(stacked).unsqueeze(0).detach().float()
    first = params[0]
    grid = {(p.kind, p.bit_width, p.signed, p.narrow, container(p, activation=False)) for p in params}
    if len(grid) > 1:
        raise ValueError(
            f"export_onnx_qcdq: the gates of '{name}' have weight grids {sorted(map(str, grid))}; one ONNX "
            "weight initializer needs one grid: give every gate the same weight quantizer settings"
        )
    by_weight = dict(zip(map(id, present), params, strict=True))
    chosen = [first if w is None else by_weight[id(w)] for w in weights]
    rows = first.value.shape[0]
    values = [
        torch.zeros_like(first.value) if w is None else p.value for w, p in zip(weights, chosen, strict=True)
    ]
    scale = torch.cat([_rows(p.scale, rows) for p in chosen])
    zero_point = torch.cat([_rows(p.zero_point, rows) for p in chosen])
    per_tensor = bool((scale == scale[0]).all() and (zero_point == zero_point[0]).all())
    return QuantParams(
        name=f"{name}.{kind}",
        role="weight",
        kind=first.kind,
        value=torch.cat(values).unsqueeze(0),
        scale=scale[:1].reshape(()) if per_tensor else scale.reshape(1, -1, 1),
        zero_point=zero_point[:1].reshape(()) if per_tensor else zero_point.reshape(1, -1, 1),
        bit_width=first.bit_width,
        signed=first.signed,
        narrow=first.narrow,
        rounding=first.rounding,
        axis=None if per_tensor else 1,
        blocked=False,
        threshold=first.threshold,
    )


def _bias(gates: list[GateParams | None]) -> Tensor | None:
    """ONNX B of one direction, (2 * G * hidden,): [the summed biases in ONNX order, zeros]."""
    present = [g for g in gates if g is not None]
    if present[0].bias is None:
        return None
    with torch.no_grad():
        wb = torch.cat([torch.zeros_like(present[0].bias) if g is None else g.bias for g in gates])
        return torch.cat([wb, torch.zeros_like(wb)]).detach().float()


class _Direction:
    """What the graph needs of one layer and direction: the W and R inputs and the bias."""

    def __init__(self, name: str, layer: nn.Module, shared_input: "_Direction | None"):
        gates = _gates(layer)
        self.w = shared_input.w if shared_input is not None else stacked_params(name, gates, "input_weight")
        self.r = stacked_params(name, gates, "hidden_weight")
        self.bias = _bias(gates)
        self.owner = {
            "input_weight": shared_input.layer if shared_input is not None else layer,
            "hidden_weight": layer,
        }
        self.layer = layer

    def stored(self, kind: str) -> Tensor:
        """The tensor the graph stores for `kind`: integers in their container, or float weights."""
        params = self.w if kind == "input_weight" else self.r
        if isinstance(params, QuantParams):
            return params.int_value(container(params, activation=False))
        return params

    def emit(self, g: Any, kind: str, stored: Any) -> Any:
        params = self.w if kind == "input_weight" else self.r
        return dequantized(g, stored, params) if isinstance(params, QuantParams) else stored


def _missing(g: Any) -> Any:
    """An omitted optional ONNX input (as torch's own RNN symbolics write it)."""
    node = g.op("prim::Constant")
    node.setType(torch._C.OptionalType.ofTensor())
    return node


def _const(g: Any, values: list[int]) -> Any:
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


class StandardOpGraph:
    """The ONNX RNN/LSTM nodes of one weight-only layer, emitted from the `symbolic` of one traced op."""

    def __init__(
        self, module: QuantRecurrent, directions: list[list[_Direction]], given: bool, batched: bool
    ):
        self.module, self.directions, self.given, self.batched = module, directions, given, batched
        self.lstm = module.num_states == 2

    def symbolic(self, g: Any, x: Any, *rest: Any) -> tuple:
        m, count = self.module, self.module.num_directions
        states = list(rest[: m.num_states]) if self.given else []
        stored = iter(rest[m.num_states if self.given else 0 :])
        if not self.batched:
            x = g.op("Unsqueeze", x, _const(g, [1]))
            states = [g.op("Unsqueeze", s, _const(g, [1])) for s in states]
        elif m.batch_first:
            x = g.op("Transpose", x, perm_i=[1, 0, 2])
        finals: list[list[Any]] = [[] for _ in range(m.num_states)]
        for k, directions in enumerate(self.directions):
            weights = {}
            for kind in ("input_weight", "hidden_weight"):
                emitted: dict[int, Any] = {}  # one DequantizeLinear for a weight both directions share
                chosen = []
                for d in directions:
                    value, params = next(stored), d.w if kind == "input_weight" else d.r
                    if id(params) not in emitted:
                        emitted[id(params)] = d.emit(g, kind, value)
                    chosen.append(emitted[id(params)])
                weights[kind] = chosen[0] if count == 1 else g.op("Concat", *chosen, axis_i=0)
            bias = self._bias(g, directions)
            inputs = [x, weights["input_weight"], weights["hidden_weight"], bias]
            if states:
                window = (_const(g, [k * count]), _const(g, [(k + 1) * count]), _const(g, [0]))
                sliced = states if m.num_layers == 1 else [g.op("Slice", s, *window) for s in states]
                inputs += [_missing(g), *sliced]
            outs = g.op(
                "LSTM" if self.lstm else "RNN", *inputs, outputs=1 + m.num_states, **self._attributes()
            )
            x = g.op("Reshape", g.op("Transpose", outs[0], perm_i=[0, 2, 1, 3]), _const(g, [0, 0, -1]))
            for kept, final in zip(finals, outs[1:], strict=True):
                kept.append(final)
        results = [x] + [f[0] if len(f) == 1 else g.op("Concat", *f, axis_i=0) for f in finals]
        if not self.batched:
            return tuple(g.op("Squeeze", r, _const(g, [1])) for r in results)
        if m.batch_first:
            results[0] = g.op("Transpose", results[0], perm_i=[1, 0, 2])
        return tuple(results)

    def _bias(self, g: Any, directions: list[_Direction]) -> Any:
        biases = [d.bias for d in directions]
        if biases[0] is None:
            return _missing(g)
        return g.op("Constant", value_t=torch.stack(biases))

    def _attributes(self) -> dict:
        m = self.module
        attributes: dict[str, Any] = {"hidden_size_i": m.hidden_size}
        if m.bidirectional:
            attributes["direction_s"] = "bidirectional"
        if self.lstm:
            attributes["input_forget_i"] = int(m.coupled_input_forget_gates)
        else:
            attributes["activations_s"] = ["Relu" if m.nonlinearity == "relu" else "Tanh"] * m.num_directions
        return attributes


def _traced_op(graph: StandardOpGraph, inputs: list[Tensor], eager: list[Tensor]) -> tuple[Tensor, ...]:
    """One traced node: `eager` in eager mode, `graph.symbolic`'s nodes in the graph (which drops `eager`:
    it is an input only so that the tracer sees the outputs derive from the node)."""
    count = len(eager)

    def forward(ctx: Any, *args: Tensor) -> tuple[Tensor, ...]:
        return tuple(t.clone() for t in args[-count:])

    def symbolic(g: Any, *args: Any) -> tuple:
        outs = graph.symbolic(g, *args[:-count])
        for out, like in zip(outs, args[-count:], strict=True):
            out.setType(like.type())  # for ONNX shape inference
        return outs

    function = type(
        "QuantframeRecurrent",
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "symbolic": staticmethod(symbolic)},
    )
    return function.apply(*inputs, *eager)


def _register_buffers(module: QuantRecurrent, directions: list[list[_Direction]]) -> Callable[[], None]:
    """Store each direction's W / R on its layer for the export (the graph's named initializers)."""
    added = []
    for direction in (d for ds in directions for d in ds):
        for kind, buffer in _BUFFERS.items():
            layer = direction.owner[kind]
            if buffer not in layer._buffers:
                layer.register_buffer(buffer, direction.stored(kind))
                added.append((layer, buffer))

    def remove() -> None:
        for layer, buffer in added:
            delattr(layer, buffer)

    return remove


def attach_qcdq(session: Any, module: QuantRecurrent, name: str) -> Callable[[], None]:
    """Weight-only: patch `module` to trace as standard RNN/LSTM nodes; else the unrolled recurrence."""
    if quantized_beyond_weights(module):
        return attach_unrolled(session, module, name)
    directions: list[list[_Direction]] = []
    for k, layers in enumerate(module.layers):
        row: list[_Direction] = []
        for d, layer in enumerate(layers):
            shared = row[0] if d == 1 and module.shared_input_hidden_weights else None
            row.append(_Direction(f"{name}.layers.{k}.{d}", layer, shared))
        directions.append(row)
    remove_buffers = _register_buffers(module, directions)
    original = type(module).forward

    def forward(input: Any, hx: Any = None) -> Any:
        if not session.emitting:
            return original(module, input, hx)

        # the eager values, from the unrolled recurrence: the layer's own loop works in place, which
        # the exporter cannot convert even where the graph drops it
        output, states = unrolled_forward(module, input, hx)
        states = (states,) if module.num_states == 1 else states
        if module.num_states == 2 and not module.cat_output_cell_states:
            states = (states[0], torch.stack([plain(c) for c in states[1]]))
        given = [] if hx is None else [plain(s) for s in ((hx,) if module.num_states == 1 else hx)]
        stored = [
            getattr(d.owner[kind], _BUFFERS[kind]) for row in directions for kind in _BUFFERS for d in row
        ]
        x = plain(input)
        graph = StandardOpGraph(module, directions, bool(given), x.dim() == 3)
        outs = _traced_op(graph, [x, *given, *stored], [plain(output), *(plain(s) for s in states)])
        if module.num_states == 1:
            return outs[0], outs[1]
        cells = outs[2] if module.cat_output_cell_states else list(outs[2].unbind(0))
        return outs[0], (outs[1], cells)

    restore = patch_forward(module, forward)

    def undo() -> None:
        restore()
        remove_buffers()

    return undo


def attach_unrolled(session: Any, module: QuantRecurrent, name: str) -> Callable[[], None]:
    """Patch `module` so that its export forward is the unrolled recurrence (`recurrent_unrolled.py`)."""
    return patch_forward(module, lambda input, hx=None: unrolled_forward(module, input, hx))

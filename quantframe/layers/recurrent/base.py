"""What QuantRNN and QuantLSTM share: torch's arguments and checks, the layer stack, states, loading.

Arguments, shapes, initial states and return values are torch.nn.RNN's / LSTM's; with every
quantizer None the outputs equal torch's for the same state_dict. `layers[layer][direction]` holds
the gate parameters (`gate_params.input_weight` / `.hidden_weight`, each a `GateWeight` with
`.weight_quant` and `.quant_weight()`, one weight quantizer serving both; and
`gate_params.bias_quant`; QuantLSTM has one such `GateParams` per gate), the timestep loop with its
quantizers (`cell`) and `io_quant`, one instance shared by all layers and directions: it quantizes
the input, the initial hidden state and every hidden state, so that layer outputs, final states and
the next layer's input share one grid. A float torch state_dict (`weight_ih_l0`,
`bias_hh_l0_reverse`, ...) loads into this layout; its two biases are summed into one, as they only
ever appear summed.

Speed: the input-hidden product of all timesteps is one matmul, weights are quantized once per
forward, and the per-timestep quantizers are prepared once per forward (`step_quant.py`); the
loop itself and its backward pass live in `bptt.py`.
"""

import numbers
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from quantframe.layers.recurrent.cache import EvalCacheMixin
from quantframe.layers.recurrent.cells import GateParams, prepare
from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.proxy.act import act_proxy
from quantframe.proxy.overrides import route_overrides
from quantframe.proxy.state_dict import ignore_missing_quantizer_keys
from quantframe.tensor import QuantTensor

WEIGHT_KEYS = (("weight_ih", "input_weight.weight"), ("weight_hh", "hidden_weight.weight"))


def gate_quantizers(quants: dict, routed: dict) -> tuple[dict, dict]:
    """The quantizers of a gate's weights (one for both) and bias, and their routed overrides."""
    return {"weight": quants["weight"], "bias": quants["bias"]}, {
        "weight": routed["weight"],
        "bias": routed["bias"],
    }


class QuantRecurrent(EvalCacheMixin, nn.Module):
    """What QuantRNN and QuantLSTM share: arguments, the layer stack, states, packaging, loading.

    Subclasses define `_build(owner, in_size, quants, routed, shared, reverse, forward_layer)`, which
    returns one layer and direction (`shared` holds the quantizers common to all layers: "io", and
    what `_shared_quantizers` adds), and name their torch gate chunks in `_gate_targets`.
    """

    num_states = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        shared_input_hidden_weights: bool,
        return_quant_tensor: bool,
        quants: dict[str, Any],
        kwargs: dict[str, Any],
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        owner = type(self).__name__
        _check_sizes(owner, input_size, hidden_size, num_layers, bias, batch_first, dropout)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = 0
        self.shared_input_hidden_weights = bool(shared_input_hidden_weights)
        self.return_quant_tensor = bool(return_quant_tensor)
        routed = route_overrides(owner, kwargs, quants)
        io_quant = act_proxy(quants["io"], routed["io"], owner, "io_quant")
        shared = {"io": io_quant, **self._shared_quantizers(owner, quants, routed)}
        self.layers = nn.ModuleList()
        for k in range(num_layers):
            in_size = input_size if k == 0 else hidden_size * self.num_directions
            directions = nn.ModuleList()
            for d in range(self.num_directions):
                forward_layer = directions[0] if d == 1 and self.shared_input_hidden_weights else None
                directions.append(self._build(owner, in_size, quants, routed, shared, d == 1, forward_layer))
            self.layers.append(directions)
        self._check_bias_scale(owner)
        if self.return_quant_tensor and not io_quant.is_quant_enabled:
            raise RuntimeError(
                f"{owner}: return_quant_tensor=True needs io_quant to put outputs and hidden states on a "
                "grid, but io_quant=None; set io_quant (e.g. Int8ActPerTensorFloat) or "
                "return_quant_tensor=False"
            )
        self.reset_parameters()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)
        ignore_missing_quantizer_keys(self)

    # ------------------------------------------------------------------ construction

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def io_quant(self) -> nn.Module:
        """The io quantizer, one instance shared by every layer and direction."""
        return self.layers[0][0].io_quant

    def _shared_quantizers(self, owner: str, quants: dict, routed: dict) -> dict:
        """Quantizers one instance of which serves every layer, besides io_quant (none here)."""
        return {}

    def _gate_params(self, layer: nn.Module) -> list[GateParams]:
        return [layer.gate_params]

    def reset_parameters(self) -> None:
        """torch's initialisation: every weight and bias uniform in [-1/sqrt(hidden), 1/sqrt(hidden)]."""
        bound = 1.0 / self.hidden_size**0.5
        for name, param in self.named_parameters():
            if name.endswith(".weight") and "_quant." not in name or name.endswith(".bias"):
                nn.init.uniform_(param, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn.RNN/LSTM (there are no cuDNN flat weights here)."""

    def _check_bias_scale(self, owner: str) -> None:
        if not self.bias:
            return
        first = self._gate_params(self.layers[0][0])[0]
        if not first.bias_quant.requires_input_scale:
            return
        missing = "io_quant" if not self.io_quant.is_quant_enabled else None
        if not first.input_weight.weight_quant.is_quant_enabled:
            missing = "weight_quant"
        if missing is not None:
            raise RuntimeError(
                f"{owner}: Input scale required: bias_quant={first.bias_quant.quant_name} puts the bias on "
                f"the grid of input scale x weight scale, but {missing}=None. Set {missing}, or use "
                "bias_quant=None or a bias quantizer with its own scale such as "
                "Int8BiasPerTensorFloatInternalScaling."
            )

    # ------------------------------------------------------------------ forward

    def forward(self, input: Tensor | QuantTensor, hx: Any = None) -> tuple:
        """torch's forward: returns (output, h_n) for RNN, (output, (h_n, c_n)) for LSTM."""
        owner = type(self).__name__
        if isinstance(input, PackedSequence):
            raise ValueError(
                f"{owner}: PackedSequence inputs are not supported; pass a padded tensor (seq, batch, "
                "features), (batch, seq, features) with batch_first=True, or an unbatched (seq, features) "
                "tensor"
            )
        x = input.value if isinstance(input, QuantTensor) else input
        if x.dim() not in (2, 3):
            raise ValueError(f"{owner}: expected a 2-D (unbatched) or 3-D (batched) input, got {x.dim()}-D")
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{owner}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {x.shape[-1]}"
            )
        batched = x.dim() == 3
        x = x.unsqueeze(1) if not batched else x.transpose(0, 1) if self.batch_first else x
        io = prepare(self.eval_cache(), "io", [self.io_quant], self.hidden_size, x.dtype)
        states = self._initial_states(owner, hx, x, batched, io)
        layer_input = io.quant(x)
        input_scale = io.meta[0] if io.meta is not None else None
        finals: list[list[Tensor]] = [[] for _ in range(self.num_states)]
        for k, directions in enumerate(self.layers):
            if k > 0:
                dropped = self.training and self.dropout > 0
                if dropped:
                    layer_input = F.dropout(layer_input, self.dropout, True)
                if dropped or io.mode == "dynamic":  # put the next layer's input back on one grid
                    layer_input = io.quant(layer_input)
                    input_scale = io.meta[0] if io.meta is not None else None
            outs = []
            for d, layer in enumerate(directions):
                index = k * self.num_directions + d
                states_here = [s[index] for s in states]
                out, final = layer(layer_input, input_scale, io, hx is not None, *states_here)
                outs.append(out)
                for kept, value in zip(finals, final, strict=True):
                    kept.append(value)
            layer_input = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        output = layer_input if batched else layer_input.squeeze(1)
        if batched and self.batch_first:
            output = output.transpose(0, 1)
        return self._package(output, finals, batched, io)

    def _initial_states(self, owner: str, hx: Any, x: Tensor, batched: bool, io: StepQuant) -> list:
        """Per-state lists of (batch, hidden) tensors, one per layer x direction (zeros if hx is None)."""
        count, batch = self.num_layers * self.num_directions, x.shape[1]
        if hx is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            return [[zeros] * count for _ in range(self.num_states)]
        given = (hx,) if self.num_states == 1 else tuple(hx)
        expected = (count, batch, self.hidden_size) if batched else (count, self.hidden_size)
        states = []
        for n, state in enumerate(given):
            state = state.value if isinstance(state, QuantTensor) else state
            if tuple(state.shape) != expected:
                raise RuntimeError(
                    f"{owner}: Expected hidden size {expected}, got {list(state.shape)}"
                    + (" (for the cell state)" if n == 1 else "")
                )
            state = state if batched else state.unsqueeze(1)
            # the hidden state goes on the io grid here; each layer quantizes its own cell state
            states.append(list((io.quant(state) if n == 0 else state).unbind(0)))
        return states

    def _package(self, output: Tensor, finals: list, batched: bool, io: StepQuant) -> tuple:
        h_n = torch.stack(finals[0]) if batched else torch.stack(finals[0]).squeeze(1)
        if self.return_quant_tensor:
            return _on_grid(output, io, self.training), _on_grid(h_n, io, self.training)
        return output, h_n

    # ------------------------------------------------------------------ loading torch state_dicts

    def _gate_targets(self) -> list[str | None]:
        """Attribute of each torch gate chunk of `weight_ih_l{k}` (in torch's order), None: no target."""
        return ["gate_params"]

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        """Map torch's flat keys (`weight_ih_l0`, `bias_hh_l1_reverse`, ...) onto `layers[k][d]`.

        A torch key whose rows have no place here (the forget gate with coupled input and forget
        gates, the reverse input-hidden weight when shared) is reported as unexpected, so that a
        strict load fails and `strict=False` loads the rest.
        """
        targets = self._gate_targets()
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                suffix = f"_l{k}" + ("_reverse" if d else "")
                pieces: dict[str, tuple[Tensor, list[str]]] = {}
                for torch_name, ours in WEIGHT_KEYS:
                    key = prefix + torch_name + suffix
                    if key in state_dict:
                        if torch_name == "weight_ih" and d == 1 and self.shared_input_hidden_weights:
                            continue  # left in place: reported as unexpected
                        pieces[ours] = (state_dict.pop(key), [key])
                keys = [prefix + name + suffix for name in ("bias_ih", "bias_hh")]
                keys = [key for key in keys if key in state_dict]
                if keys:
                    biases = [state_dict.pop(key) for key in keys]
                    pieces["bias"] = (biases[0] if len(biases) == 1 else biases[0] + biases[1], keys)
                for ours, (tensor, keys) in pieces.items():
                    for target, chunk in zip(targets, tensor.chunk(len(targets)), strict=True):
                        if target is None:
                            unexpected_keys.extend(keys)
                            continue
                        state_dict[f"{prefix}layers.{k}.{d}.{target}.{ours}"] = chunk
                        if (
                            ours == "input_weight.weight"
                            and self.shared_input_hidden_weights
                            and self.bidirectional
                        ):  # the reverse direction holds the same module
                            state_dict[f"{prefix}layers.{k}.1.{target}.{ours}"] = chunk
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text + ("" if self.bias else ", bias=False")


def _on_grid(value: Tensor, quant: StepQuant, training: bool) -> QuantTensor:
    scale, zero_point, bit_width, signed = quant.meta
    return QuantTensor(value, scale, zero_point, bit_width, signed, training)


def _check_sizes(
    owner: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bias: bool,
    batch_first: bool,
    dropout: float,
) -> None:
    """torch's argument checks, with the layer's name in front."""
    for name, val in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"{owner}: {name}={val!r}; allowed: an int greater than zero")
    for name, val in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(val, bool):
            raise TypeError(f"{owner}: {name} should be of type bool, got: {type(val).__name__}")
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(
            f"{owner}: dropout={dropout!r}; allowed: a number in [0, 1] (the probability of zeroing)"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"{owner}: dropout is applied after all but the last layer, so dropout={dropout} with "
            "num_layers=1 has no effect",
            stacklevel=3,
        )

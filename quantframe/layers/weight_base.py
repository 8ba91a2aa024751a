"""The quantized forward shared by every weight layer (Linear, Conv, ConvTranspose).

    x_q = input_quant(x);  w_q = weight_quant(weight);  b_q = bias_quant(bias[, x_q.scale * w_q.scale])
    acc = op(x_q, w_q, b_q)  on the grid  scale = s_x * s_w,
                                          bits  = ceil(log2((2^b_x - 1) * (2^b_w - 1) * K))
    out = output_quant(acc)

A bias on the accumulator grid (`Int8Bias`..`Int32Bias`) adds one bit: max(bits, b_bias) + 1. Any other
bias (float, or quantized on its own scale) keeps the output on the grid by moving the zero point:
zero_point = -bias / scale per output channel, so that value / scale + zero_point is still the integer sum.
A bipolar (1-bit signed) operand times an unsigned one counts as 2 bits: its sums reach +-(2^b - 1) * K.
"""

from typing import Any

import torch
from torch import Tensor, nn

from quantframe.core.accumulator import accumulator_bit_width
from quantframe.core.grid import IntGrid
from quantframe.layers.base import QuantIOMixin
from quantframe.proxy.bias import bias_proxy
from quantframe.proxy.overrides import route_overrides
from quantframe.proxy.resolve import check_quantizer
from quantframe.proxy.weight import WeightQuantProxy, weight_proxy
from quantframe.tensor import QuantTensor
from quantframe.tensor.metadata import has_offset

QUANTIZER_SLOTS = ("weight_quant", "bias_quant", "input_quant", "output_quant")
_ROLES = {"weight_quant": "weight", "bias_quant": "bias", "input_quant": "act", "output_quant": "act"}


def init_torch_layer(layer: nn.Module, torch_init: Any, *args: Any, **kwargs: Any) -> None:
    """Run the torch layer's __init__; its errors are re-raised with the quantized layer's name in front."""
    try:
        torch_init(layer, *args, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise type(exc)(f"{type(layer).__name__}: {exc}") from None


def check_size(owner: str, name: str, size: Any) -> None:
    """A channel/feature count must be a non-negative int (torch would fail later, less clearly)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{owner}: {name}={size!r}; expected a non-negative int")


class QuantWBIOLayer(QuantIOMixin):
    """Mixin of a torch weight layer with weight, bias, input and output quantizers.

    Subclasses define `_op(x, weight, bias, *args)` (the torch computation), `_inputs_per_output()`
    (K of the accumulator rule) and `weight_channel_axis` (the weight axis of the output channels).
    """

    weight_channel_axis = 0

    def _init_quant(
        self,
        weight_quant: Any,
        bias_quant: Any,
        input_quant: Any,
        output_quant: Any,
        return_quant_tensor: bool,
        kwargs: dict[str, Any],
        device: Any = None,
    ) -> None:
        """Resolve the four quantizers once; prefixed keywords (`weight_bit_width=4`) override attributes."""
        owner = type(self).__name__
        quants = {"weight": weight_quant, "bias": bias_quant, "input": input_quant, "output": output_quant}
        for prefix, quant in quants.items():
            # A class of the wrong role is reported before any keyword is routed to it.
            if quant is not None and not isinstance(quant, nn.Module):
                check_quantizer(owner, f"{prefix}_quant", quant, _ROLES[f"{prefix}_quant"])
        routed = route_overrides(owner, kwargs, quants)
        if isinstance(weight_quant, WeightQuantProxy):
            self._check_shared_weight_quant(owner, weight_quant)
        weight_overrides = {**routed["weight"], **self._weight_layout(owner, weight_quant, routed["weight"])}
        self.weight_quant = weight_proxy(weight_quant, weight_overrides, owner, self.weight)
        self.bias_quant = bias_proxy(bias_quant, routed["bias"], owner)
        self._init_io(input_quant, output_quant, return_quant_tensor, routed)
        self._check_bias_grid(owner)
        if device is not None:
            for slot in QUANTIZER_SLOTS:
                getattr(self, slot).to(device)

    def _weight_layout(self, owner: str, weight_quant: Any, overrides: dict[str, Any]) -> dict[str, Any]:
        """Internal attributes that place per-channel scales on `weight_channel_axis` (none for axis 0)."""
        return {}

    def _check_shared_weight_quant(self, owner: str, proxy: WeightQuantProxy) -> None:
        """A shared per-channel weight quantizer must scale along this layer's output-channel axis."""
        if not proxy.attributes.get("scaling_per_output_channel"):
            return
        proxy_axis = 1 if proxy.attributes.get("stats_keep_dims") == (1,) else 0
        if self.weight_channel_axis != 0 or proxy_axis != 0:
            raise ValueError(
                f"{owner}: weight_quant is a shared per-channel quantizer ({proxy.quant_name}); sharing "
                "per-channel weight quantizers is supported between Linear/Conv layers only, not with "
                "transposed convolutions (their output channels are weight axis 1); use a per-tensor "
                "quantizer or one quantizer per layer"
            )

    def _check_bias_grid(self, owner: str) -> None:
        """A bias on the accumulator grid needs a weight scale per tensor or per output channel."""
        if not self.bias_quant.is_quant_enabled or not self.bias_quant.requires_input_scale:
            return
        name = self.bias_quant.quant_name
        if not self.weight_quant.is_quant_enabled:
            raise ValueError(
                f"{owner}: bias_quant={name} uses scale = input scale x weight scale, but weight_quant is "
                "None; set weight_quant or use a bias quantizer with its own scale such as "
                "Int8BiasPerTensorFloatInternalScaling"
            )
        if self.weight_quant.attributes.get("scaling_per_group"):
            raise ValueError(
                f"{owner}: bias_quant={name} needs a weight scale per tensor or per output channel, but "
                f"weight_quant={self.weight_quant.quant_name} scales per group; use a bias quantizer with "
                "its own scale such as Int8BiasPerTensorFloatInternalScaling"
            )

    # ------------------------------------------------------------ forward

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        return self._quant_forward(x)

    def _quant_forward(self, x: Tensor | QuantTensor, *op_args: Any) -> Tensor | QuantTensor:
        """input_quant -> weight_quant -> bias_quant -> op -> accumulator grid -> output_quant."""
        # Each submodule is looked up once: nn.Module attribute access is the cost of this path.
        modules = self._modules
        input_quant, weight_quant = modules["input_quant"], modules["weight_quant"]
        if input_quant.is_quant_enabled:
            x = input_quant(x)
        weight = self.weight
        weight_q = weight_quant(weight) if weight_quant.is_quant_enabled else None
        bias = self.bias
        bias_q = None
        if bias is not None and modules["bias_quant"].is_quant_enabled:
            bias_q = self._quantize_bias(x.scale if isinstance(x, QuantTensor) else None, weight_q)
            bias = bias_q.value
        x_value = x.value if isinstance(x, QuantTensor) else x
        out = self._op(x_value, weight if weight_q is None else weight_q.value, bias, *op_args)
        output_quant = modules["output_quant"]
        if output_quant.is_quant_enabled:
            out = output_quant(out)
            return out if self.return_quant_tensor else out.value
        if not self.return_quant_tensor:
            return out
        return self._accumulator(out, x, weight_q, bias_q)

    def _quantize_bias(self, input_scale: Tensor | None, weight: QuantTensor | None) -> QuantTensor:
        if not self.bias_quant.requires_input_scale:
            return self.bias_quant(self.bias)
        if input_scale is None:
            return self.bias_quant(self.bias)  # raises "Input scale required ..."
        if input_scale.numel() != 1:
            raise RuntimeError(
                f"{type(self).__name__}: bias_quant={self.bias_quant.quant_name} needs a per-tensor input "
                f"scale; got one of shape {tuple(input_scale.shape)}"
            )
        weight_scale = self._output_channel_scale(weight.scale)
        if weight_scale is None:
            raise RuntimeError(
                f"{type(self).__name__}: bias_quant={self.bias_quant.quant_name} needs a weight scale per "
                f"tensor or per output channel; got one of shape {tuple(weight.scale.shape)}"
            )
        return self.bias_quant(self.bias, input_scale.reshape(()), weight_scale)

    def _accumulator(
        self, out: Tensor, x: Tensor | QuantTensor, weight: QuantTensor | None, bias_q: QuantTensor | None
    ) -> QuantTensor:
        """The op's output with the accumulator grid (see the module docstring); no grid: None metadata."""
        on_grid = (
            isinstance(x, QuantTensor)
            and x.scale is not None
            and x.bit_width is not None
            and x.signed is not None
            and x.scale.numel() == 1
            and weight is not None
        )
        weight_scale = self._output_channel_scale(weight.scale) if on_grid else None
        if weight_scale is None:
            return QuantTensor(out, training=self.training)
        scale = x.scale.reshape(()) * weight_scale
        # A bipolar operand times an unsigned one counts as 2 bits (`IntGrid.product_bit_width`).
        x_bits = IntGrid.of_metadata(x.bit_width, bool(x.signed)).product_bit_width(bool(weight.signed))
        w_bits = IntGrid.of_metadata(weight.bit_width, bool(weight.signed)).product_bit_width(bool(x.signed))
        bit_width = accumulator_bit_width(x_bits, w_bits, self._inputs_per_output())
        # Offsets make an unsigned x unsigned product signed: (x - z_x)(w - z_w) can be negative.
        signed = bool(x.signed or weight.signed or has_offset(x) or has_offset(weight))
        if bias_q is not None and self.bias_quant.requires_input_scale:
            bit_width = torch.maximum(bit_width, bias_q.bit_width.to(bit_width)) + 1
            zero_point = torch.zeros((), dtype=scale.dtype, device=scale.device)
        elif self.bias is not None:
            bias = self.bias if bias_q is None else bias_q.value
            zero_point = -self._output_channel_view(bias) / scale
        else:
            zero_point = torch.zeros((), dtype=scale.dtype, device=scale.device)
        return QuantTensor(out, scale, zero_point, bit_width, signed, self.training)

    def _output_channel_view(self, t: Tensor) -> Tensor:
        """A per-output-channel vector shaped to broadcast over the output: (O,) + (1,) * spatial dims."""
        return t.reshape(-1, *([1] * (self.weight.dim() - 2)))

    def _output_channel_scale(self, scale: Tensor) -> Tensor | None:
        """The weight scale laid out over the output channels, or None if it varies along the reduction."""
        if scale.numel() == 1:
            return scale.reshape(())
        axis = self.weight_channel_axis
        if scale.dim() != self.weight.dim() or any(n != 1 for i, n in enumerate(scale.shape) if i != axis):
            return None
        return self._output_channel_view(scale)

    # ------------------------------------------------------------ inspection

    @property
    def is_weight_quant_enabled(self) -> bool:
        return self.weight_quant.is_quant_enabled

    @property
    def is_bias_quant_enabled(self) -> bool:
        return self.bias is not None and self.bias_quant.is_quant_enabled

    def quant_weight(self) -> QuantTensor:
        """The quantized weight (a QuantTensor without metadata when weight_quant is None)."""
        return self.weight_quant(self.weight)

    def int_weight(self) -> Tensor:
        """The integer weights: quant_weight() == (int_weight() - zero_point) * scale."""
        self._require(self.is_weight_quant_enabled, "int_weight()", "weight_quant")
        return self.quant_weight().int()

    def quant_weight_scale(self) -> Tensor | None:
        return self.weight_quant.scale()

    def quant_weight_zero_point(self) -> Tensor | None:
        return self.weight_quant.zero_point()

    def quant_weight_bit_width(self) -> Tensor | None:
        return self.weight_quant.bit_width()

    def quant_bias(self, input_scale: Tensor | None = None) -> QuantTensor | None:
        """The quantized bias (None without a bias).

        A bias on the accumulator grid uses `input_scale`, else the current scale of input_quant.
        """
        if self.bias is None:
            return None
        if not self.bias_quant.is_quant_enabled:
            return QuantTensor(self.bias)
        if self.bias_quant.requires_input_scale and input_scale is None and self.input_quant.is_quant_enabled:
            input_scale = self.input_quant.scale()
        with torch.no_grad():
            weight = self.quant_weight() if self.weight_quant.is_quant_enabled else None
        return self._quantize_bias(input_scale, weight)

    def int_bias(self, input_scale: Tensor | None = None) -> Tensor | None:
        """The integer bias (None without a bias)."""
        self._require(self.is_bias_quant_enabled or self.bias is None, "int_bias()", "bias_quant")
        bias = self.quant_bias(input_scale)
        return None if bias is None else bias.int()

    def quant_bias_scale(self, input_scale: Tensor | None = None) -> Tensor | None:
        bias = self.quant_bias(input_scale)
        return None if bias is None else bias.scale

    def _require(self, enabled: bool, method: str, slot: str) -> None:
        if not enabled:
            raise ValueError(f"{type(self).__name__}.{method} needs a quantizer, but {slot} is None")

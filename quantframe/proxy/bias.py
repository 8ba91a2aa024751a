"""Bias quantizer proxy: on the accumulator grid (input scale x weight scale) or with its own scale."""

from typing import Any

from torch import Tensor

from quantframe.proxy.base import QuantProxy, shared_or_none
from quantframe.tensor import QuantTensor


class BiasQuantProxy(QuantProxy):
    """Quantizes a bias; `requires_input_scale` quantizers need the input and weight scales."""

    role = "bias"

    @property
    def requires_input_scale(self) -> bool:
        return bool(self.attributes.get("requires_input_scale", False))

    def forward(
        self, bias: Tensor, input_scale: Tensor | None = None, weight_scale: Tensor | None = None
    ) -> QuantTensor:
        if self.tensor_quant is None:
            return QuantTensor(bias)
        if self.requires_input_scale:
            if input_scale is None or weight_scale is None:
                raise RuntimeError(
                    f"{self.owner}: Input scale required: bias_quant={self.quant_name} puts the bias on the "
                    "accumulator grid (input scale x weight scale), but the input is not quantized. "
                    "Set input_quant on this layer (e.g. input_quant=Int8ActPerTensorFloat), pass a "
                    "QuantTensor input, or use a bias quantizer with its own scale such as "
                    "Int8BiasPerTensorFloatInternalScaling."
                )
            scale = (
                (input_scale * weight_scale).reshape(-1)
                if weight_scale.numel() > 1
                else (input_scale * weight_scale).reshape(())
            )
            value, scale, zero_point, bit_width = self.tensor_quant(bias, scale)
        else:
            value, scale, zero_point, bit_width = self.tensor_quant(bias)
        return QuantTensor(value, scale, zero_point, bit_width, self.signed, self.training)


def bias_proxy(quant: Any, overrides: dict[str, Any], owner: str) -> BiasQuantProxy:
    """A proxy for `quant`: a new one for a class or None, the same module when given a proxy (sharing)."""
    shared = shared_or_none(quant, BiasQuantProxy, overrides, owner, "bias_quant")
    return shared if shared is not None else BiasQuantProxy(quant, overrides, owner, None, "bias_quant")

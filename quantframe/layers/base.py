"""Shared pieces of quantized layers: output packaging and the optional input/output quantizers."""

from typing import Any

from torch import Tensor, nn

from quantframe.proxy.act import act_proxy
from quantframe.tensor import QuantTensor


def plain(x: Tensor | QuantTensor) -> Tensor:
    """The float tensor of `x`, whether or not it is a QuantTensor."""
    return x.value if isinstance(x, QuantTensor) else x


class QuantIOMixin:
    """Adds `input_quant`, `output_quant` and `return_quant_tensor` to a layer."""

    def _init_io(
        self: nn.Module,
        input_quant: Any,
        output_quant: Any,
        return_quant_tensor: bool,
        overrides: dict[str, dict[str, Any]],
    ) -> None:
        owner = type(self).__name__
        self.input_quant = act_proxy(input_quant, overrides.get("input", {}), owner, "input_quant")
        self.output_quant = act_proxy(output_quant, overrides.get("output", {}), owner, "output_quant")
        self.return_quant_tensor = bool(return_quant_tensor)

    @property
    def is_input_quant_enabled(self) -> bool:
        return self.input_quant.is_quant_enabled

    @property
    def is_output_quant_enabled(self) -> bool:
        return self.output_quant.is_quant_enabled

    def _package(self, out: Tensor | QuantTensor) -> Tensor | QuantTensor:
        """Apply output_quant, then return a QuantTensor only if the user asked for one."""
        out = self.output_quant(out)
        if self.return_quant_tensor:
            return out
        return plain(out)

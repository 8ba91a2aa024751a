"""Quantized element-wise layers: addition and concatenation through one shared input quantizer.

Quantizing every operand with the *same* quantizer puts them on one grid, so the integer result is
exact: `a + b` keeps the scale with bit width max(b_a, b_b) + 1 (see `QuantTensor.__add__`), and
`cat` keeps scale, zero point and bit width. In training mode, while the quantizer still collects
statistics, each operand may get its own batch scale; the result then carries their mean and may be
off the grid (gradients still flow), as `QuantTensor` specifies. With `input_quant=None` the operands
are used as given (two QuantTensors must then share a scale in eval mode).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from quantframe.layers.base import QuantIOMixin
from quantframe.proxy.overrides import route_overrides
from quantframe.quantizers import Int8ActPerTensorFloat
from quantframe.tensor import QuantTensor


class _QuantEltwise(QuantIOMixin, nn.Module):
    """Shared construction: input/output quantizers, `return_quant_tensor`, `input_*`/`output_*` overrides."""

    def __init__(
        self, input_quant: Any, output_quant: Any, return_quant_tensor: bool, kwargs: dict[str, Any]
    ):
        super().__init__()
        routed = route_overrides(type(self).__name__, kwargs, {"input": input_quant, "output": output_quant})
        self._init_io(input_quant, output_quant, return_quant_tensor, routed)


class QuantEltwiseAdd(_QuantEltwise):
    """`input + other`, both quantized by one shared `input_quant`; optional `output_quant` after."""

    def __init__(
        self,
        input_quant: Any = Int8ActPerTensorFloat,
        output_quant: Any = None,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__(input_quant, output_quant, return_quant_tensor, kwargs)

    def forward(self, input: Tensor | QuantTensor, other: Tensor | QuantTensor) -> Tensor | QuantTensor:
        return self._package(self.input_quant(input) + self.input_quant(other))


class QuantCat(_QuantEltwise):
    """`torch.cat(tensor_list, dim)`, every input quantized by one shared `input_quant`."""

    def __init__(
        self,
        input_quant: Any = Int8ActPerTensorFloat,
        output_quant: Any = None,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__(input_quant, output_quant, return_quant_tensor, kwargs)

    def forward(self, tensor_list: Sequence[Tensor | QuantTensor], dim: int = 1) -> Tensor | QuantTensor:
        return self._package(torch.cat([self.input_quant(t) for t in tensor_list], dim=dim))

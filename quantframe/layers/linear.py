"""QuantLinear: torch.nn.Linear with weight, bias, input and output quantizers."""

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from quantframe.layers.weight_base import QuantWBIOLayer, check_size, init_torch_layer
from quantframe.quantizers import Int8WeightPerTensorFloat


class QuantLinear(QuantWBIOLayer, nn.Linear):
    """y = x W^T + b on quantized x, W, b; accumulator K = in_features.

    With every quantizer None it computes exactly what `nn.Linear` computes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_quant: Any = Int8WeightPerTensorFloat,
        bias_quant: Any = None,
        input_quant: Any = None,
        output_quant: Any = None,
        return_quant_tensor: bool = False,
        device: Any = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        check_size(owner, "in_features", in_features)
        check_size(owner, "out_features", out_features)
        init_torch_layer(
            self, nn.Linear.__init__, in_features, out_features, bias, device=device, dtype=dtype
        )
        self._init_quant(
            weight_quant, bias_quant, input_quant, output_quant, return_quant_tensor, kwargs, device
        )

    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def _inputs_per_output(self) -> int:
        return self.in_features

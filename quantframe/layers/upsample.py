"""Quantized upsampling: nearest-neighbour keeps the grid, interpolating modes leave it.

Nearest (and nearest-exact) upsampling only copies elements, so a QuantTensor input keeps its scale,
zero point and bit width. Linear, bilinear, bicubic and trilinear modes compute weighted means that
are not on the input grid: the output decays to a plain tensor, unless `output_quant` requantizes it.
"""

from typing import Any

from torch import Tensor, nn

from quantframe.layers.base import QuantIOMixin
from quantframe.proxy.overrides import route_overrides
from quantframe.tensor import QuantTensor


class QuantUpsample(QuantIOMixin, nn.Upsample):
    """`nn.Upsample` with optional `input_quant`/`output_quant`; nearest mode returns the input's grid."""

    def __init__(
        self,
        size: Any = None,
        scale_factor: Any = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
        input_quant: Any = None,
        output_quant: Any = None,
        return_quant_tensor: bool = True,
        **kwargs: Any,
    ):
        super().__init__(size, scale_factor, mode, align_corners, recompute_scale_factor)
        routed = route_overrides(type(self).__name__, kwargs, {"input": input_quant, "output": output_quant})
        self._init_io(input_quant, output_quant, return_quant_tensor, routed)

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        return self._package(super().forward(self.input_quant(x)))

"""QuantConv1d/2d/3d: torch convolutions with weight, bias, input and output quantizers.

Every torch argument behaves as in torch (padding='same', padding_mode 'reflect'/'replicate'/'circular',
groups, dilation, stride): the forward is torch's own `_conv_forward` on the quantized weight.
Accumulator K = in_channels / groups * kernel elements.
"""

from typing import Any

from torch import Tensor, nn

from quantframe.layers.weight_base import QuantWBIOLayer, check_size, init_torch_layer
from quantframe.quantizers import Int8WeightPerTensorFloat

Size = int | tuple[int, ...]


class _QuantConvNd(QuantWBIOLayer):
    """The constructor and forward shared by the three convolution dimensions."""

    _torch_class: type = nn.Conv2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Size,
        stride: Size = 1,
        padding: Size | str = 0,
        dilation: Size = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
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
        check_size(owner, "in_channels", in_channels)
        check_size(owner, "out_channels", out_channels)
        init_torch_layer(
            self,
            self._torch_class.__init__,
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self._init_quant(
            weight_quant, bias_quant, input_quant, output_quant, return_quant_tensor, kwargs, device
        )

    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self._conv_forward(x, weight, bias)

    def _inputs_per_output(self) -> int:
        return self.weight[0].numel()


class QuantConv1d(_QuantConvNd, nn.Conv1d):
    """nn.Conv1d on quantized input, weight and bias."""

    _torch_class = nn.Conv1d


class QuantConv2d(_QuantConvNd, nn.Conv2d):
    """nn.Conv2d on quantized input, weight and bias."""

    _torch_class = nn.Conv2d


class QuantConv3d(_QuantConvNd, nn.Conv3d):
    """nn.Conv3d on quantized input, weight and bias."""

    _torch_class = nn.Conv3d

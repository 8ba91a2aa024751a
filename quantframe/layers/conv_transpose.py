"""QuantConvTranspose1d/2d/3d: torch transposed convolutions with weight, bias, input and output quantizers.

The weight is laid out (in_channels, out_channels / groups, *kernel), so output channels are weight
axis 1: a per-output-channel weight quantizer scales along axis 1 here (groups=1). Accumulator
K = weight.shape[1] * prod(max(ceil(k_d / s_d), 1)): the kernel taps
that can land on one output position along each dimension, times the weight's second dimension.
"""

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from quantframe.inject import quantizer_attributes
from quantframe.layers.base import plain
from quantframe.layers.weight_base import QuantWBIOLayer, check_size, init_torch_layer
from quantframe.quantizers import Int8WeightPerTensorFloat
from quantframe.tensor import QuantTensor

Size = int | tuple[int, ...]


class _QuantConvTransposeNd(QuantWBIOLayer):
    """The constructor and forward shared by the three transposed-convolution dimensions."""

    weight_channel_axis = 1
    _torch_class: type = nn.ConvTranspose2d
    _spatial_dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Size,
        stride: Size = 1,
        padding: Size = 0,
        output_padding: Size = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Size = 1,
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
            output_padding=output_padding,
            groups=groups,
            bias=bias,
            dilation=dilation,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self._init_quant(
            weight_quant, bias_quant, input_quant, output_quant, return_quant_tensor, kwargs, device
        )

    def _weight_layout(self, owner: str, weight_quant: Any, overrides: dict[str, Any]) -> dict[str, Any]:
        """Per-output-channel scales on weight axis 1: statistics keep dim 1, scale shape (1, O, 1, ...)."""
        if not isinstance(weight_quant, type):
            return {}
        per_channel = overrides.get(
            "scaling_per_output_channel", quantizer_attributes(weight_quant).get("scaling_per_output_channel")
        )
        if per_channel is not True:
            return {}
        if self.groups != 1:
            raise ValueError(
                f"{owner}: weight_quant={weight_quant.__name__} scales per output channel, which "
                f"{owner} supports only with groups=1 (got groups={self.groups}); use a per-tensor "
                "weight quantizer such as Int8WeightPerTensorFloat"
            )
        return {"stats_keep_dims": (1,), "scaling_shape": (1, self.out_channels, *([1] * self._spatial_dims))}

    def forward(self, x: Tensor | QuantTensor, output_size: list[int] | None = None) -> Tensor | QuantTensor:
        output_padding = self._output_padding(
            plain(x),
            output_size,
            self.stride,
            self.padding,
            self.kernel_size,
            self._spatial_dims,
            self.dilation,
        )
        return self._quant_forward(x, output_padding)

    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None, output_padding: list[int]) -> Tensor:
        return self._conv_transpose(
            x, weight, bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )

    def _inputs_per_output(self) -> int:
        taps = 1
        for k, s in zip(self.kernel_size, self.stride, strict=True):
            taps *= max(math.ceil(k / s), 1)
        return self.weight.shape[1] * taps


class QuantConvTranspose1d(_QuantConvTransposeNd, nn.ConvTranspose1d):
    """nn.ConvTranspose1d on quantized input, weight and bias."""

    _torch_class = nn.ConvTranspose1d
    _spatial_dims = 1
    _conv_transpose = staticmethod(F.conv_transpose1d)


class QuantConvTranspose2d(_QuantConvTransposeNd, nn.ConvTranspose2d):
    """nn.ConvTranspose2d on quantized input, weight and bias."""

    _torch_class = nn.ConvTranspose2d
    _spatial_dims = 2
    _conv_transpose = staticmethod(F.conv_transpose2d)


class QuantConvTranspose3d(_QuantConvTransposeNd, nn.ConvTranspose3d):
    """nn.ConvTranspose3d on quantized input, weight and bias."""

    _torch_class = nn.ConvTranspose3d
    _spatial_dims = 3
    _conv_transpose = staticmethod(F.conv_transpose3d)

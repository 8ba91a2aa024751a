"""Quantized pooling: max pooling (keeps the grid) and average pooling re-quantized by truncation.

Max pooling picks one of its inputs, so a QuantTensor's grid is unchanged (`QuantTensor` handles
`max_pool*` itself; these layers only decide whether the QuantTensor is returned).

Truncated average pooling (`TruncAvgPool2d`, `QuantAdaptiveAvgPool2d`) replaces the division by the
window size with a right shift, as integer hardware does. For an input on the grid (scale s, zero point
z, bit width b) and a window of k elements divided by d (d = k unless `divisor_override`):

    sum_int   = sum of the k window integers (padding counts as real 0, the integer z)
    acc_bits  = b + ceil(log2 k)                         (the sum never needs more)
    out_bits  = min(bit_width, acc_bits)                 (bit_width defaults to b)
    shift     = acc_bits - out_bits
    out_int   = floor(sum_int / 2^shift)                 (truncation: the low bits are dropped)
    out_scale = s * 2^shift / d,   out_zero_point = k * z / 2^shift

so `value = (out_int - out_zero_point) * out_scale` is the float average rounded down to a multiple of
out_scale: it lies within one output step below the exact average. Signedness is the input's (a 1-bit
signed, bipolar, input counts as 2 bits). A nonzero input zero point gives an exact but possibly
fractional output zero point. Gradients: straight-through for the rounding and the floor, so the
backward is that of the float average.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from quantframe.core.grid import IntGrid
from quantframe.core.ste import floor_ste, round_ste
from quantframe.layers.base import QuantIOMixin, plain
from quantframe.proxy.overrides import route_overrides
from quantframe.tensor import QuantTensor
from quantframe.tensor.metadata import is_complete


def truncated_window_average(
    x: QuantTensor,
    window_sum: Callable[[Tensor], Tensor],
    count: int,
    divisor: int,
    bit_width: int | None = None,
) -> QuantTensor:
    """Average of x over windows of `count` elements, re-quantized by truncation (formulas: module docstring).

    `window_sum(t)` sums `t` over each window (zero padding included); `divisor` is what the float
    average divides by.
    """
    work_dtype = torch.promote_types(x.value.dtype, torch.float32)
    # Integers relative to the zero point (round(value / scale) = int - z): padding then adds real zeros.
    sums = window_sum(round_ste(x.value.to(work_dtype) / x.scale))
    in_bits = IntGrid.of_metadata(x.bit_width, bool(x.signed)).summand_bit_width(bool(x.signed))
    acc_bits = in_bits + (count - 1).bit_length()  # + ceil(log2(count)), exact in integers
    out_bits = in_bits if bit_width is None else acc_bits.clamp(max=bit_width)
    step = 2.0 ** (acc_bits - out_bits)
    zero_point = x.zero_point * count / step
    ints = floor_ste((sums + x.zero_point * count) / step)
    scale = x.scale * step / divisor
    value = ((ints - zero_point) * scale).to(x.value.dtype)
    return QuantTensor(value, scale, zero_point, out_bits, x.signed, x.training)


def _check_trunc_args(owner: str, trunc_quant: Any, bit_width: Any) -> bool:
    """Check `trunc_quant` (True: truncate, None/False: float average) and `bit_width`; True if truncating."""
    if trunc_quant not in (True, False, None):
        raise TypeError(
            f"{owner}: trunc_quant={trunc_quant!r} is not supported; allowed: True (truncate the sum to "
            "`bit_width` bits) or None/False (a float average, as the torch layer)"
        )
    if bit_width is not None and (
        isinstance(bit_width, bool) or not isinstance(bit_width, int) or not 1 <= bit_width <= 32
    ):
        raise ValueError(
            f"{owner}: bit_width={bit_width!r} is not allowed; allowed: None (keep the input's bit width) "
            "or an int in 1..32"
        )
    return bool(trunc_quant)


def _require_quant_tensor(owner: str, x: Any) -> QuantTensor:
    if isinstance(x, QuantTensor) and is_complete(x):
        return x
    what = "a plain tensor"
    if isinstance(x, QuantTensor):
        what = "a QuantTensor without scale/zero point/bit width"
    raise TypeError(
        f"{owner}: truncated average pooling needs a quantized input, got {what}; pass a QuantTensor "
        "(return_quant_tensor=True upstream), set input_quant, or use trunc_quant=None for a float average"
    )


class _QuantMaxPool:
    """Max pooling that returns the input's QuantTensor grid when `return_quant_tensor` is set.

    Mixed in before `nn.MaxPool1d`/`nn.MaxPool2d`: one constructor and one forward for both.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        return_quant_tensor: bool = True,
    ):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.return_quant_tensor = bool(return_quant_tensor)

    def forward(self, x: Tensor | QuantTensor) -> Any:
        out = super().forward(x)
        if self.return_quant_tensor:
            return out
        if isinstance(out, tuple):  # return_indices
            return (plain(out[0]), *out[1:])
        return plain(out)


class QuantMaxPool1d(_QuantMaxPool, nn.MaxPool1d):
    """`nn.MaxPool1d` that keeps a QuantTensor input's grid (max of grid values is a grid value)."""


class QuantMaxPool2d(_QuantMaxPool, nn.MaxPool2d):
    """`nn.MaxPool2d` that keeps a QuantTensor input's grid (max of grid values is a grid value)."""


class TruncAvgPool2d(QuantIOMixin, nn.AvgPool2d):
    """Average pooling whose output is re-quantized to `bit_width` bits by truncating the window sum.

    Semantics in the module docstring; needs a QuantTensor input (or `input_quant`). With
    `trunc_quant=None` it is `nn.AvgPool2d` (a QuantTensor input then gets the exact accumulator grid
    of `avg_pool2d`, scale / k, where that exists). Truncation needs every window divided by the same
    number: `ceil_mode=True`, or padding with `count_include_pad=False`, are refused.
    Overrides: `input_*` keywords go to `input_quant`.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        bit_width: int | None = None,
        trunc_quant: bool | None = True,
        input_quant: Any = None,
        return_quant_tensor: bool = True,
        **kwargs: Any,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        owner = type(self).__name__
        self.trunc = _check_trunc_args(owner, trunc_quant, bit_width)
        if self.trunc and ceil_mode:
            raise ValueError(f"{owner}: ceil_mode=True makes partial windows; needs ceil_mode=False")
        if self.trunc and not count_include_pad and any(_pair(padding)):
            raise ValueError(
                f"{owner}: count_include_pad=False with padding={padding} divides edge windows by fewer "
                "elements; truncation needs count_include_pad=True or padding=0"
            )
        self.bit_width = bit_width
        routed = route_overrides(owner, kwargs, {"input": input_quant})
        self._init_io(input_quant, None, return_quant_tensor, routed)
        kernel = _pair(kernel_size)
        self._count = kernel[0] * kernel[1]

    @property
    def is_trunc_quant_enabled(self) -> bool:
        return self.trunc

    def _window_sum(self, t: Tensor) -> Tensor:
        return F.avg_pool2d(t, self.kernel_size, self.stride, self.padding, False, True, 1)

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        x = self.input_quant(x)
        if not self.trunc:
            return self._package(super().forward(x))
        x = _require_quant_tensor(type(self).__name__, x)
        divisor = self.divisor_override or self._count
        out = truncated_window_average(x, self._window_sum, self._count, divisor, self.bit_width)
        return self._package(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bit_width={self.bit_width}, trunc_quant={self.trunc}"


class QuantAdaptiveAvgPool2d(QuantIOMixin, nn.AdaptiveAvgPool2d):
    """Adaptive average pooling re-quantized by truncation, as `TruncAvgPool2d`.

    The window is input size / output size per dim, so the input size must divide evenly by the
    output size (`ValueError` naming both otherwise); `None` in `output_size` keeps that dim.
    With `trunc_quant=None` it is `nn.AdaptiveAvgPool2d` (any sizes; a QuantTensor input decays).
    """

    def __init__(
        self,
        output_size: Any,
        bit_width: int | None = None,
        trunc_quant: bool | None = True,
        input_quant: Any = None,
        return_quant_tensor: bool = True,
        **kwargs: Any,
    ):
        super().__init__(output_size)
        owner = type(self).__name__
        self.trunc = _check_trunc_args(owner, trunc_quant, bit_width)
        self.bit_width = bit_width
        routed = route_overrides(owner, kwargs, {"input": input_quant})
        self._init_io(input_quant, None, return_quant_tensor, routed)

    @property
    def is_trunc_quant_enabled(self) -> bool:
        return self.trunc

    def window(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) window for an input of spatial `input_size`; must tile it exactly."""
        requested = _pair(self.output_size)
        output = tuple(i if o is None else o for i, o in zip(input_size, requested, strict=True))
        if any(o == 0 or i % o for i, o in zip(input_size, output, strict=True)):
            raise ValueError(
                f"{type(self).__name__}: input size {tuple(input_size)} is not divisible by output_size "
                f"{output}; truncation needs equal windows: pick an output size that divides the input "
                "size, or trunc_quant=None for a float average"
            )
        return input_size[0] // output[0], input_size[1] // output[1]

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        x = self.input_quant(x)
        if not self.trunc:
            return self._package(super().forward(x))
        x = _require_quant_tensor(type(self).__name__, x)
        kernel = self.window(tuple(x.value.shape[-2:]))
        count = kernel[0] * kernel[1]
        out = truncated_window_average(
            x, lambda t: F.avg_pool2d(t, kernel, kernel, 0, False, True, 1), count, count, self.bit_width
        )
        return self._package(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bit_width={self.bit_width}, trunc_quant={self.trunc}"


TruncAdaptiveAvgPool2d = QuantAdaptiveAvgPool2d
"""The Brevitas name of the same layer."""

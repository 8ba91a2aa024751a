"""The quantization math as plain functions on tensors: integer ranges and fake quantization.

Every quantizer ends here. `fake_quant` is one fused kernel call where torch has one
(`torch.fake_quantize_per_*`): the learnable variant when the scale needs a gradient, the plain
one otherwise; other rounding rules, learned bit widths and dtypes those kernels do not take go
through the reference formula

    q = clamp(round(x / scale + zero_point), min_int, max_int);  value = (q - zero_point) * scale
"""

from collections.abc import Callable

import torch
from torch import Tensor

from quantframe.core.ste import round_ste

_FUSED_DTYPES = (torch.float32,)


def max_int(bit_width: Tensor | int, signed: bool, narrow_range: bool) -> Tensor | int:
    """Largest integer of the grid: 2^(b-1) - 1 signed, 2^b - 1 unsigned (2^b - 2 narrow unsigned)."""
    if signed:
        return 2 ** (bit_width - 1) - 1
    return 2**bit_width - 1 - int(narrow_range)


def min_int(bit_width: Tensor | int, signed: bool, narrow_range: bool) -> Tensor | int:
    """Smallest integer of the grid: -2^(b-1) signed (+1 when narrow), 0 unsigned."""
    if signed:
        return -(2 ** (bit_width - 1)) + int(narrow_range)
    return bit_width * 0


def threshold_divisor(bit_width: Tensor | int, signed: bool, narrow_range: bool) -> Tensor | int:
    """What a threshold is divided by to give the scale.

    The largest magnitude of the grid: 127 for narrow int8, 128 for int8, 255 for uint8.
    """
    if signed:
        return 2 ** (bit_width - 1) - int(narrow_range)
    return max_int(bit_width, signed, narrow_range)


def reference_fake_quant(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    min_value: Tensor | int,
    max_value: Tensor | int,
    round_fn: Callable[[Tensor], Tensor] = round_ste,
) -> Tensor:
    """The unfused formula; gradients: straight-through rounding, zero outside the clamp range."""
    q = torch.clamp(round_fn(x / scale + zero_point), min_value, max_value)
    return (q - zero_point) * scale


def fused_fake_quant(
    x: Tensor, scale: Tensor, zero_point: Tensor, min_value: int, max_value: int, axis: int | None
) -> Tensor:
    """One torch kernel for round-half-even fake quantization with a per-tensor or per-axis scale.

    `scale`/`zero_point` are broadcastable to `x` (one element, or channels along `axis`).
    With grad mode on and a scale that needs a gradient it is the learnable (LSQ) kernel, whose
    gradients equal those of `reference_fake_quant`; otherwise the cheaper cached-mask kernel.
    """
    learnable = torch.is_grad_enabled() and (scale.requires_grad or zero_point.requires_grad)
    if axis is None:
        if learnable:
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, scale.reshape(1), zero_point.reshape(1).to(scale.dtype), min_value, max_value, 1.0
            )
        return torch.fake_quantize_per_tensor_affine(
            x, scale.reshape(()), zero_point.reshape(()).to(torch.int32), min_value, max_value
        )
    channels = x.shape[axis]
    scale = scale.reshape(-1).expand(channels)
    if learnable:
        return torch._fake_quantize_learnable_per_channel_affine(
            x, scale, zero_point.to(scale.dtype).reshape(-1).expand(channels), axis, min_value, max_value, 1.0
        )
    return torch.fake_quantize_per_channel_affine(
        x,
        scale.contiguous(),
        zero_point.reshape(-1).to(torch.int32).expand(channels).contiguous(),
        axis,
        min_value,
        max_value,
    )


def fused_axis(x: Tensor, scale: Tensor) -> int | None | bool:
    """The axis a broadcastable `scale` varies along (None: per tensor), or False if not one axis."""
    if scale.numel() == 1:
        return None
    if scale.dim() != x.dim():
        return False
    varying = [d for d, n in enumerate(scale.shape) if n != 1]
    if len(varying) != 1 or scale.shape[varying[0]] != x.shape[varying[0]]:
        return False
    return varying[0]


def can_fuse(x: Tensor, scale: Tensor, min_value: int, max_value: int) -> bool:
    """Whether torch's fake-quant kernels accept these operands (float32, an int range up to 16 bits)."""
    return (
        x.dtype in _FUSED_DTYPES
        and scale.dtype == torch.float32
        and min_value >= -(2**15)
        and max_value <= 2**16 - 1
        and not torch.jit.is_scripting()
    )


def binary_quant(x: Tensor, scale: Tensor) -> Tensor:
    """Bipolar quantization: scale * sign(x), sign(0) = +1; straight-through gradient inside |x| <= scale."""
    sign = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    return _straight_through(torch.clamp(x, -scale, scale), sign * scale)


def ternary_quant(x: Tensor, scale: Tensor, threshold: float) -> Tensor:
    """Ternary quantization: scale * {-1, 0, +1} with |x| > threshold * scale; straight-through gradient."""
    levels = (x > threshold * scale).to(x.dtype) - (x < -threshold * scale).to(x.dtype)
    return _straight_through(torch.clamp(x, -scale, scale), levels * scale)


def _straight_through(surrogate: Tensor, exact: Tensor) -> Tensor:
    """`exact`'s values with `surrogate`'s gradient.

    Written as (surrogate - surrogate) + exact rather than surrogate + (exact - surrogate): the
    first is exactly `exact` in floating point, the second can miss it by a rounding.
    """
    return (surrogate - surrogate.detach()) + exact.detach()

"""The quantization parameters of one quantized tensor, read eagerly from a proxy's output.

Every export format starts here: a proxy's QuantTensor (value, scale, zero point, bit width, signed)
plus the proxy's grid attributes (narrow range, rounding, binary/ternary) become a `QuantParams` of
plain constants, so that the graph holds them as initializers and nothing is recomputed while tracing.

    int = round(value / scale + zero_point)  in [lo, hi]:  value = (int - zero_point) * scale

`axis` is the one dimension a per-channel scale varies along (None: per tensor); a scale varying along
several dimensions (per-group weights) has `axis = None` and `blocked = True`.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from quantframe.core.fake_quant import quantize
from quantframe.core.grid import IntGrid
from quantframe.enums import QuantType
from quantframe.tensor import QuantTensor


@dataclass(frozen=True)
class QuantParams:
    """Constants describing one quantized tensor (see the module docstring)."""

    name: str
    role: str  # "weight", "act" or "bias"
    kind: QuantType  # INT, BINARY or TERNARY
    value: Tensor  # the fake-quantized tensor the proxy returned
    scale: Tensor  # float32, broadcastable against value
    zero_point: Tensor  # float32 integers, broadcastable against value
    bit_width: int
    signed: bool
    narrow: bool
    rounding: str
    axis: int | None
    blocked: bool
    threshold: float | None = None

    @property
    def grid(self) -> IntGrid:
        """The integer grid of the tensor (bipolar for BINARY, {-1, 0, +1} for TERNARY)."""
        if self.kind == QuantType.BINARY:
            return IntGrid.binary()
        if self.kind == QuantType.TERNARY:
            return IntGrid.ternary()
        return IntGrid(self.bit_width, self.signed, self.narrow)

    @property
    def lo(self) -> int:
        """Smallest integer of the grid (-1 for a bipolar grid)."""
        return int(self.grid.min_int)

    @property
    def hi(self) -> int:
        """Largest integer of the grid."""
        return int(self.grid.max_int)

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def flat_scale(self) -> Tensor:
        """The scale as ONNX Q/DQ nodes take it: a scalar, or a 1-D vector along `axis`."""
        return self.scale.reshape(()) if self.scale.numel() == 1 else self.scale.reshape(-1)

    def flat_zero_point(self) -> Tensor:
        """The zero point shaped like `flat_scale()` (a per-tensor zero point is expanded per channel)."""
        if self.scale.numel() == 1:
            return self.zero_point.reshape(())
        return (
            self.zero_point.reshape(-1).expand(self.scale.numel())
            if self.zero_point.numel() == 1
            else self.zero_point.reshape(-1)
        )

    def int_value(self, dtype: torch.dtype | None = None) -> Tensor:
        """The integers of `value`, round(value / scale + zero_point), as `dtype` (default int32, or
        int64 above 31 bits).

        float32 up to 16 bits (the quotient stays within 0.01 of the integer), float64 above (exact up
        to 53 bits). `value` is on the grid by construction: the clamp changes nothing.
        """
        wide = self.bit_width > 31 or (not self.signed and self.bit_width > 30)
        work = torch.float32 if self.bit_width <= 16 else torch.float64
        zero_point = self.zero_point.to(work) if bool(self.zero_point.any()) else None
        q = quantize(self.value.to(work), self.scale.to(work), zero_point, self.lo, self.hi)
        return q.to(dtype or (torch.int64 if wide else torch.int32))

    def fractional_bits(self) -> int | None:
        """n where every scale is 2^-n (fixed point), else None."""
        scale = self.scale.double().reshape(-1)
        exponent = torch.log2(scale)
        if not torch.all(exponent == torch.round(exponent)) or not torch.all(exponent == exponent[0]):
            return None
        return int(-exponent[0].item())


def broadcast_axis(value: Tensor, scale: Tensor) -> tuple[int | None, bool]:
    """(axis, blocked) of a broadcastable scale: its one varying dim, or blocked if several vary."""
    if scale.numel() == 1:
        return None, False
    if scale.dim() == 1 and value.dim() == 1 and scale.shape[0] == value.shape[0]:
        return 0, False
    if scale.dim() != value.dim():
        raise ValueError(
            f"a scale of shape {tuple(scale.shape)} does not broadcast over a tensor of shape "
            f"{tuple(value.shape)} along one axis"
        )
    varying = [d for d, n in enumerate(scale.shape) if n != 1]
    if len(varying) == 1:
        return varying[0], False
    return None, True


def params_from_output(name: str, role: str, proxy: object, out: QuantTensor) -> QuantParams:
    """QuantParams of what `proxy` returned (eval mode): constants detached to float32 on the CPU."""
    tensor_quant = proxy.tensor_quant
    kind = QuantType(proxy.attributes.get("quant_type", QuantType.INT))
    value = out.value.detach().float().cpu()
    scale = out.scale.detach().float().cpu()
    zero_point = out.zero_point.detach().float().cpu()
    axis, blocked = broadcast_axis(value, scale)
    if zero_point.numel() > 1:
        zp_axis, zp_blocked = broadcast_axis(value, zero_point)
        if zp_blocked or (scale.numel() > 1 and zp_axis != axis):
            raise ValueError(
                f"{name}: a zero point of shape {tuple(zero_point.shape)} does not follow the scale"
            )
        axis = zp_axis if axis is None else axis
        scale = scale.expand_as(zero_point).contiguous() if scale.numel() == 1 else scale
    rounding = proxy.rounding
    threshold = getattr(tensor_quant, "threshold", None) if kind == QuantType.TERNARY else None
    return QuantParams(
        name=name,
        role=role,
        kind=kind,
        value=value,
        scale=scale,
        zero_point=zero_point,
        bit_width=int(round(float(out.bit_width.detach().max()))),
        signed=bool(out.signed),
        narrow=bool(getattr(tensor_quant, "narrow_range", False)),
        rounding=str(rounding.value if rounding is not None else "ROUND"),
        axis=axis,
        blocked=blocked,
        threshold=None if threshold is None else float(threshold),
    )

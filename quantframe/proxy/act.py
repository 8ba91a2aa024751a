"""Activation quantizer proxy: quantizes a tensor into a QuantTensor."""

from typing import Any

from torch import Tensor

from quantframe.core.functional import threshold_divisor
from quantframe.proxy.base import QuantProxy
from quantframe.tensor import QuantTensor


class ActQuantProxy(QuantProxy):
    """Quantizes activations; statistics are collected in training mode (see the scaling component)."""

    role = "act"

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        """A QuantTensor of `x` (a QuantTensor input is requantized); disabled: `x` unchanged."""
        if self.tensor_quant is None:
            return x
        if isinstance(x, QuantTensor):
            x = x.value
        value, scale, zero_point, bit_width = self.tensor_quant(x)
        return QuantTensor(value, scale, zero_point, bit_width, self.signed, self.training)

    def scale(self) -> Tensor | None:
        """The scale an eval forward uses now (learned, or statistics collected so far)."""
        if self.tensor_quant is None:
            return None
        tq = self.tensor_quant
        divisor = getattr(tq, "divisor", 1)
        if not getattr(getattr(tq, "bit_width_impl", None), "is_const", True):  # a learned bit width
            divisor = threshold_divisor(tq.bit_width_impl(), tq.signed, tq.narrow_range)
        return tq.scaling_impl.current_scale(divisor)

    def zero_point(self) -> Tensor | None:
        """The current zero point (0 for symmetric quantizers)."""
        if self.tensor_quant is None:
            return None
        impl = getattr(self.tensor_quant, "zero_point_impl", None)
        if impl is None or impl.is_zero:
            return self.tensor_quant.zero_point if impl is None else impl.zero
        scale = self.scale()
        if impl.learning:
            return impl.value.round().clamp(0, self.tensor_quant.max_value)
        return (impl.collector.value / scale).round().clamp(0, self.tensor_quant.max_value)


def act_proxy(quant: Any, overrides: dict[str, Any], owner: str, argument: str, context: dict | None = None):
    """A proxy for `quant`: a new one for a class or None, the same module when given a proxy (sharing)."""
    if isinstance(quant, ActQuantProxy):
        if overrides:
            raise TypeError(f"{owner}: cannot override {sorted(overrides)} of a shared {argument}")
        return quant
    return ActQuantProxy(quant, overrides, owner, context, argument)

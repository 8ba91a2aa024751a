"""Quantized activations: the float activation, then an activation quantizer.

Overrides take the `act_` prefix or none at all: `QuantReLU(bit_width=4)` and
`QuantIdentity(act_bit_width=3)` both set the activation quantizer's bit width.
"""

from typing import Any

import torch
from torch import Tensor, nn

from quantframe.layers.base import QuantIOMixin, plain
from quantframe.proxy.act import act_proxy
from quantframe.proxy.overrides import route_overrides
from quantframe.quantizers import Int8ActPerTensorFloat, Uint8ActPerTensorFloat
from quantframe.tensor import QuantTensor


class QuantActivation(QuantIOMixin, nn.Module):
    """`act_impl` (None: identity) followed by `act_quant`, with optional `input_quant`."""

    def __init__(
        self,
        act_impl: nn.Module | None,
        act_quant: Any,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__()
        owner = type(self).__name__
        routed = route_overrides(owner, kwargs, {"act": act_quant, "input": input_quant}, unprefixed="act")
        self._init_io(input_quant, None, return_quant_tensor, routed)
        self.act_impl = act_impl
        self.act_quant = act_proxy(act_quant, routed["act"], owner, "act_quant")
        proxy = self.act_quant
        # Inference only: an unsigned grid with zero point 0 clamps negatives to 0 itself, so the ReLU
        # pass is redundant (training keeps it: the ReLU's gradient differs just below zero).
        self._relu_folds_into_quant = (
            type(act_impl) is nn.ReLU
            and proxy.is_quant_enabled
            and not proxy.signed
            and proxy.zero_point_is_zero
            and proxy.min_int == 0
        )

    @property
    def is_act_quant_enabled(self) -> bool:
        return self.act_quant.is_quant_enabled

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        x = self.input_quant(x)
        enabled = self.act_quant.is_quant_enabled  # (off inside `quantization_disabled`)
        if self.act_impl is not None and not (
            self._relu_folds_into_quant and enabled and not torch.is_grad_enabled()
        ):
            x = self.act_impl(x) if not enabled else self.act_impl(plain(x))
        out = self.act_quant(x)
        return out if self.return_quant_tensor else plain(out)


class QuantIdentity(QuantActivation):
    """Quantizes its input (signed 8-bit by default)."""

    def __init__(
        self,
        act_quant: Any = Int8ActPerTensorFloat,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__(None, act_quant, input_quant, return_quant_tensor, **kwargs)


class QuantReLU(QuantActivation):
    """ReLU, then unsigned 8-bit quantization by default."""

    def __init__(
        self,
        act_quant: Any = Uint8ActPerTensorFloat,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        inplace: bool = False,
        **kwargs: Any,
    ):
        super().__init__(nn.ReLU(), act_quant, input_quant, return_quant_tensor, **kwargs)


class QuantReLU6(QuantActivation):
    """ReLU6, then unsigned 8-bit quantization by default."""

    def __init__(
        self,
        act_quant: Any = Uint8ActPerTensorFloat,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        inplace: bool = False,
        **kwargs: Any,
    ):
        super().__init__(nn.ReLU6(), act_quant, input_quant, return_quant_tensor, **kwargs)


class QuantHardTanh(QuantActivation):
    """HardTanh(min_val, max_val), then signed 8-bit quantization by default."""

    def __init__(
        self,
        act_quant: Any = Int8ActPerTensorFloat,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        min_val: float = -1.0,
        max_val: float = 1.0,
        **kwargs: Any,
    ):
        if isinstance(act_quant, type):
            # The range also initialises a quantizer that reads it (Int8ActPerTensorFloatMinMaxInit).
            kwargs.setdefault("act_min_val", min_val)
            kwargs.setdefault("act_max_val", max_val)
        super().__init__(nn.Hardtanh(min_val, max_val), act_quant, input_quant, return_quant_tensor, **kwargs)


class QuantSigmoid(QuantActivation):
    """Sigmoid, then unsigned 8-bit quantization by default."""

    def __init__(
        self,
        act_quant: Any = Uint8ActPerTensorFloat,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__(nn.Sigmoid(), act_quant, input_quant, return_quant_tensor, **kwargs)


class QuantTanh(QuantActivation):
    """Tanh, then signed 8-bit quantization by default."""

    def __init__(
        self,
        act_quant: Any = Int8ActPerTensorFloat,
        input_quant: Any = None,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__(nn.Tanh(), act_quant, input_quant, return_quant_tensor, **kwargs)

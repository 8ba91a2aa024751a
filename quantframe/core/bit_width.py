"""Bit-width components: a constant, or a learned parameter rounded straight-through."""

import torch
from torch import Tensor, nn

from quantframe.core.ste import round_ste


class ConstBitWidth(nn.Module):
    """A fixed bit width (a non-persistent buffer, so it follows `.to(device)` but adds no state)."""

    is_const = True

    def __init__(self, bit_width: int):
        super().__init__()
        self.int_value = int(bit_width)
        self.register_buffer("value", torch.tensor(float(bit_width)), persistent=False)

    def forward(self) -> Tensor:
        return self.value

    def extra_repr(self) -> str:
        return str(self.int_value)


class ParameterBitWidth(nn.Module):
    """A learned bit width: `min_bit_width + round(|offset|)`, offset initialised to `bit_width - min`."""

    is_const = False

    def __init__(self, bit_width: int, min_bit_width: int = 2):
        super().__init__()
        self.min_bit_width = int(min_bit_width)
        self.int_value = int(bit_width)
        self.offset = nn.Parameter(torch.tensor(float(bit_width - self.min_bit_width)))

    def forward(self) -> Tensor:
        return self.min_bit_width + round_ste(torch.abs(self.offset))

"""Float-to-int components: one rounding rule each, selected by `FloatToIntImplType`."""

from collections.abc import Callable

from torch import Tensor, nn

from quantframe.core.ste import ceil_ste, floor_ste, round_ste, round_to_zero_ste, stochastic_round_ste
from quantframe.enums import FloatToIntImplType

ROUNDING_FUNCTIONS: dict[FloatToIntImplType, Callable[[Tensor], Tensor]] = {
    FloatToIntImplType.ROUND: round_ste,
    FloatToIntImplType.FLOOR: floor_ste,
    FloatToIntImplType.CEIL: ceil_ste,
    FloatToIntImplType.ROUND_TO_ZERO: round_to_zero_ste,
    FloatToIntImplType.STOCHASTIC_ROUND: stochastic_round_ste,
}

# Names of the rounding modes in the QONNX `Quant` op's `rounding_mode` attribute.
QONNX_ROUNDING_MODES: dict[FloatToIntImplType, str] = {
    FloatToIntImplType.ROUND: "ROUND",
    FloatToIntImplType.FLOOR: "FLOOR",
    FloatToIntImplType.CEIL: "CEIL",
    FloatToIntImplType.ROUND_TO_ZERO: "ROUND_TO_ZERO",
}


class FloatToInt(nn.Module):
    """Maps scaled floats to integers with a straight-through gradient."""

    def __init__(self, float_to_int_impl_type: FloatToIntImplType = FloatToIntImplType.ROUND):
        super().__init__()
        self.impl_type = FloatToIntImplType(float_to_int_impl_type)
        self.fn = ROUNDING_FUNCTIONS[self.impl_type]

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.impl_type.value

"""Declarative quantizers users import: subclass them, or override attributes with prefixed keywords.

`QuantizerSpec`, `to_spec` and `from_spec` are loaded on first use: they need pydantic, which
costs more to import than everything else here together.
"""

from typing import TYPE_CHECKING, Any

from quantframe.enums import (
    BitWidthImplType,
    FloatToIntImplType,
    QuantType,
    RestrictValueType,
    ScalingImplType,
    StatsOp,
    ZeroPointImplType,
)
from quantframe.quantizers.act import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8ActPerTensorFloatMinMaxInit,
    ShiftedUint8ActPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedTernaryActPerTensorConst,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)
from quantframe.quantizers.bias import (
    Int8Bias,
    Int8BiasPerTensorFixedPointInternalScaling,
    Int8BiasPerTensorFloatInternalScaling,
    Int16Bias,
    Int24Bias,
    Int32Bias,
)
from quantframe.quantizers.weight import (
    Int4WeightPerTensorFloat,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerChannelFloat,
    Int8WeightPerGroupFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Int8WeightPerTensorFloatMSE,
    ShiftedUint8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryWeightPerTensorConst,
)

if TYPE_CHECKING:
    from quantframe.quantizers.spec import QuantizerSpec, from_spec, to_spec

WEIGHT_QUANTIZERS = (
    Int8WeightPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Int4WeightPerTensorFloat,
    Int8WeightPerGroupFloat,
    ShiftedUint8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryWeightPerTensorConst,
    Int8WeightPerTensorFloatMSE,
)
ACT_QUANTIZERS = (
    Int8ActPerTensorFloat,
    Uint8ActPerTensorFloat,
    Int8ActPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
    ShiftedUint8ActPerTensorFloat,
    Int8ActPerTensorFloatMinMaxInit,
    SignedBinaryActPerTensorConst,
    SignedTernaryActPerTensorConst,
)
BIAS_QUANTIZERS = (
    Int8Bias,
    Int16Bias,
    Int24Bias,
    Int32Bias,
    Int8BiasPerTensorFloatInternalScaling,
    Int8BiasPerTensorFixedPointInternalScaling,
)

__all__ = [
    "ACT_QUANTIZERS",
    "BIAS_QUANTIZERS",
    "WEIGHT_QUANTIZERS",
    "BitWidthImplType",
    "FloatToIntImplType",
    "QuantType",
    "QuantizerSpec",
    "RestrictValueType",
    "ScalingImplType",
    "StatsOp",
    "ZeroPointImplType",
    "from_spec",
    "to_spec",
    *(q.__name__ for q in WEIGHT_QUANTIZERS + ACT_QUANTIZERS + BIAS_QUANTIZERS),
]

SPEC_NAMES = frozenset({"QuantizerSpec", "from_spec", "to_spec"})


def __getattr__(name: str) -> Any:
    """The spec names, imported from `quantframe.quantizers.spec` when first asked for."""
    if name in SPEC_NAMES:
        from quantframe.quantizers import spec

        return getattr(spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | SPEC_NAMES)

"""Declarative quantizers users import: subclass them, or override attributes with prefixed keywords."""

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
from quantframe.quantizers.spec import QuantizerSpec, from_spec, to_spec
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

"""Drop-in quantized layers: with every quantizer None each computes exactly what its torch twin does."""

from quantframe.layers.act import (
    QuantHardTanh,
    QuantIdentity,
    QuantReLU,
    QuantReLU6,
    QuantSigmoid,
    QuantTanh,
)
from quantframe.layers.conv import QuantConv1d, QuantConv2d, QuantConv3d
from quantframe.layers.conv_transpose import QuantConvTranspose1d, QuantConvTranspose2d, QuantConvTranspose3d
from quantframe.layers.dropout import QuantDropout
from quantframe.layers.eltwise import QuantCat, QuantEltwiseAdd
from quantframe.layers.embedding import QuantEmbedding
from quantframe.layers.linear import QuantLinear
from quantframe.layers.pool import (
    QuantAdaptiveAvgPool2d,
    QuantMaxPool1d,
    QuantMaxPool2d,
    TruncAdaptiveAvgPool2d,
    TruncAvgPool2d,
)
from quantframe.layers.recurrent import QuantLSTM, QuantRNN
from quantframe.layers.upsample import QuantUpsample

__all__ = [
    "QuantAdaptiveAvgPool2d",
    "QuantCat",
    "QuantConv1d",
    "QuantConv2d",
    "QuantConv3d",
    "QuantConvTranspose1d",
    "QuantConvTranspose2d",
    "QuantConvTranspose3d",
    "QuantDropout",
    "QuantEltwiseAdd",
    "QuantEmbedding",
    "QuantHardTanh",
    "QuantIdentity",
    "QuantLSTM",
    "QuantLinear",
    "QuantMaxPool1d",
    "QuantMaxPool2d",
    "QuantRNN",
    "QuantReLU",
    "QuantReLU6",
    "QuantSigmoid",
    "QuantTanh",
    "QuantUpsample",
    "TruncAdaptiveAvgPool2d",
    "TruncAvgPool2d",
]

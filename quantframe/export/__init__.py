"""Export of quantized models: ONNX QCDQ, QONNX, encodings JSON and integer weight dumps (DESIGN §8).

Handlers attach to the quantizer proxies from outside for the duration of one export
(`quantframe.export.manager`); layers know nothing of ONNX. `register_layer` extends the export to
new layer types (see `quantframe.export.registry`).
"""

from quantframe.export import recurrent as _recurrent  # noqa: F401  (registers QuantRNN / QuantLSTM)
from quantframe.export import trunc as _trunc  # noqa: F401  (registers the truncated-pooling handlers)
from quantframe.export.encodings import Encodings, export_encodings, load_encodings
from quantframe.export.int_weights import export_int_weights
from quantframe.export.onnxruntime import onnxruntime_session
from quantframe.export.qcdq import export_onnx_qcdq
from quantframe.export.qonnx import export_qonnx
from quantframe.export.registry import register_layer

__all__ = [
    "Encodings",
    "export_encodings",
    "export_int_weights",
    "export_onnx_qcdq",
    "export_qonnx",
    "load_encodings",
    "onnxruntime_session",
    "register_layer",
]

"""Export of quantized models: ONNX QCDQ, QONNX, encodings JSON and integer weight dumps.

Handlers attach to the quantizer proxies from outside for the duration of one export
(`quantframe.export.manager`); layers know nothing of ONNX. `register_layer` extends the export to
new layer types; `quantframe.export.registry` holds the one table deciding which handler exports
which layer.
"""

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

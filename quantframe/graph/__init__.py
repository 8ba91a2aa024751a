"""Whole-model quantization: capture a float model's graph, place the recipe's quantizers, report.

    qmodel = quantize_model(model, example_inputs)          # the "onnx" recipe
    with calibration_mode(qmodel):
        for x in batches: qmodel(x)
    print(report(qmodel))

`capture.py` turns the forward into a module graph, `recipe.py` says which quantizer goes where,
`rewrite.py` places them, `twins.py` makes the quantized layers, `fold.py` folds BatchNorm,
`report.py` says what was done, `quantize.py` ties them together (and falls back to module swapping).
"""

from quantframe.graph.capture import CaptureError, capture
from quantframe.graph.quantize import quantize_model
from quantframe.graph.recipe import RECIPES, Recipe
from quantframe.graph.report import FloatOp, QuantizationReport, QuantizedOp, report

__all__ = [
    "RECIPES",
    "CaptureError",
    "FloatOp",
    "QuantizationReport",
    "QuantizedOp",
    "Recipe",
    "capture",
    "quantize_model",
    "report",
]

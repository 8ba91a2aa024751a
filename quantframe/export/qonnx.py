"""QONNX export: `Quant`, `BipolarQuant` and `Trunc` nodes of the `qonnx.custom_op.general` domain.

    Quant(x, scale, zero_point, bit_width; signed, narrow, rounding_mode)
        = (clamp(round(x / scale + zero_point), min_int, max_int) - zero_point) * scale
    BipolarQuant(x, scale) = scale * (x >= 0 ? 1 : -1)

Scale and zero point keep the broadcastable shape the quantizer produced ((O, 1, 1, 1) per output
channel, (1, C, 1, 1) per activation channel, one scale per group of weights too), as float32
initializers; the bit width is a float32 scalar. Weights and biases are float initializers holding
the already-quantized values feeding a `Quant` node (rounding ROUND, exact on grid values), as FINN
expects. Ternary grids are 2-bit narrow signed `Quant` nodes (exact for a 0.5 threshold). Truncated
average pooling becomes AveragePool -> Mul(window) -> Trunc (see `quantframe.export.trunc`), which
needs `Trunc` version 2 (an output scale input), hence domain version 2 (`Quant` is unchanged there).
The file runs in the `qonnx` executor after `qonnx.util.cleanup.cleanup_model`. Tracing uses the
TorchScript-based exporter for the reasons given in `quantframe.export.qcdq`.
"""

import io
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from quantframe.enums import QuantType
from quantframe.export.onnx_graph import OnnxFormat, export_onnx
from quantframe.export.params import QuantParams
from quantframe.export.trace import emitted, emitted_from

DOMAIN = "qonnx.custom_op.general"
DOMAIN_VERSION = 2
DEFAULT_OPSET = 13
_QONNX_ROUNDING = ("ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO")


class QONNXFormat(OnnxFormat):
    """Emits QONNX quantization nodes."""

    name = "qonnx"
    function = "export_qonnx"
    opsets = range(11, 21)
    default_opset = DEFAULT_OPSET
    custom_opsets = {DOMAIN: DOMAIN_VERSION}

    def check(self, params: QuantParams) -> None:
        where = f"export_qonnx: quantizer '{params.name}'"
        if params.kind == QuantType.TERNARY and params.threshold != 0.5:
            raise ValueError(
                f"{where} is ternary with threshold {params.threshold}; a 2-bit narrow Quant node rounds "
                "at 0.5, so only threshold 0.5 is exact"
            )
        if params.role == "act" and params.rounding not in _QONNX_ROUNDING:
            raise ValueError(
                f"{where} rounds with {params.rounding}; the Quant node's rounding_mode allows "
                f"{list(_QONNX_ROUNDING)}"
            )

    def emit(self, params: QuantParams, x: Tensor) -> Tensor:
        if params.role == "act":
            return emitted(x, lambda g, x: quant_node(g, x, params), "QuantframeQuant")
        return emitted(
            x, lambda g, _: quant_node(g, constant(g, params.value), params, "ROUND"), "QuantframeQuantConst"
        )

    weight_name = "quant_weight"

    def weight_initializer(self, params: QuantParams) -> Tensor:
        return params.value  # a detached view of the cached quantized weight: nothing writes to it

    def emit_weight(self, params: QuantParams, weight: Tensor, initializer: Tensor) -> Tensor:
        return emitted_from(
            initializer, weight, lambda g, w: quant_node(g, w, params, "ROUND"), "QuantframeQuantConst"
        )


def constant(g: Any, t: Tensor) -> Any:
    return g.op("Constant", value_t=t)


def quant_node(g: Any, x: Any, params: QuantParams, rounding: str | None = None) -> Any:
    """The QONNX node quantizing `x` as `params` says."""
    scale = constant(g, params.scale.float())
    if params.kind == QuantType.BINARY:
        return g.op(f"{DOMAIN}::BipolarQuant", x, scale)
    zero_point = constant(g, params.zero_point.float())
    bit_width = constant(g, torch.tensor(float(params.bit_width)))
    return g.op(
        f"{DOMAIN}::Quant",
        x,
        scale,
        zero_point,
        bit_width,
        signed_i=int(params.signed),
        narrow_i=int(params.narrow),
        rounding_mode_s=rounding or params.rounding,
    )


def export_qonnx(
    model: nn.Module,
    args: Any,
    export_path: str | Path | io.IOBase | None = None,
    opset_version: int | None = None,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = False,
) -> onnx.ModelProto:
    """Export `model` to QONNX (module docstring); returns the model, also written to `export_path`."""
    return export_onnx(
        model, args, QONNXFormat, export_path, opset_version, input_names, output_names, dynamic_batch
    )

"""ONNX QCDQ export: standard QuantizeLinear -> Clip -> DequantizeLinear nodes per quantized tensor.

    activation:    x -> QuantizeLinear(scale, zp) [-> Clip(lo, hi)] -> DequantizeLinear(scale, zp)
    weight, bias:  integer initializer [-> Clip(lo, hi)] -> DequantizeLinear(scale, zp)

Rules. The integer container is int8/uint8 up to 8 bits, else int32 for weights and biases
(DequantizeLinear has read int32 since opset 10). Clip, with integer bounds of the container type, is
emitted only where the grid is narrower than its container (narrow range, or a bit width other than
8/32); an int16 activation grid is clipped in float before QuantizeLinear (no int16 Clip kernel in
onnxruntime). A per-channel scale sets `axis` (0 for weights and biases; 1 for transposed-convolution
weights, whose output channels are axis 1). The default opset is 13, the first with per-axis Q/DQ.
Activations above 8 bits need QuantizeLinear to produce int16, which ONNX allows from opset 21:
with `opset_version=21` the graph is traced at opset 20 (the TorchScript exporter's newest) and its
opset import raised to 21, which changes no op it emits; below 21 such an activation is an error.
At opset 21, where DequantizeLinear reads 4-bit types, constant integers on a grid of <= 4 bits
(weights) are stored as int4/uint4 instead, two per byte, and without their Clip: ONNX's Clip takes
no 4-bit type, and the stored integers already lie on the grid (checked). The trace, at opset 20,
cannot write 4-bit types, so `quantframe.export.int4` does it on the finished file. Activations keep
their containers.
QuantizeLinear rounds half to even, so an activation quantizer with another rounding rule, a
binary activation, or a ternary one with a threshold other than 0.5 cannot be exported here (QONNX can).

Exporter choice: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. It records each
handler's `torch.autograd.Function` as one node and calls its `symbolic`, so the Q/DQ nodes and
integer constants are written exactly as decided here. The torch.export-based exporter (the default
since torch 2.9) would need every handler as a `torch.library` custom op with an onnxscript
translation, and it is the slower of the two: 1.4-3.2 s for the float ResNet-18 benchmark model
against 0.35 s for the TorchScript one, whose time is the baseline of the export-time target.
"""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from quantframe.enums import QuantType
from quantframe.export.fold import fold_batch_norm as fold
from quantframe.export.int4 import store_4bit_weights
from quantframe.export.onnx_graph import OnnxFormat, export_onnx
from quantframe.export.params import QuantParams
from quantframe.export.trace import emitted, emitted_from

DEFAULT_OPSET = 13
INT4_OPSET = 21  # DequantizeLinear reads int4/uint4 from here
_TRACE_MAX_OPSET = 20


def container(params: QuantParams, activation: bool) -> torch.dtype:
    """The integer type holding `params`' grid: int8/uint8 up to 8 bits; above, int16 for activations
    (QuantizeLinear's limit) and int32 for weights and biases."""
    bits = params.bit_width if params.kind == QuantType.INT else 8
    if bits <= 8:
        return torch.int8 if params.signed or params.lo < 0 else torch.uint8
    if activation:  # unsigned grids up to 15 bits fit int16 (torch's exporter writes no uint16 constants)
        return torch.int16
    return torch.int32


def _dtype_range(dtype: torch.dtype) -> tuple[int, int]:
    info = torch.iinfo(dtype)
    return int(info.min), int(info.max)


def needs_clip(params: QuantParams, dtype: torch.dtype) -> bool:
    """Clip only where the grid is narrower than its container."""
    return (params.lo, params.hi) != _dtype_range(dtype)


class QCDQFormat(OnnxFormat):
    """Emits standard ONNX Q/Clip/DQ nodes; `check` refuses what they cannot express."""

    name = "qcdq"
    function = "export_onnx_qcdq"
    opsets = range(13, 22)
    default_opset = DEFAULT_OPSET

    def __init__(self, opset: int, fold_batch_norm: bool = True):
        super().__init__(opset)
        self.fold_batch_norm = fold_batch_norm

    @property
    def trace_opset(self) -> int:
        return min(self.opset, _TRACE_MAX_OPSET)

    def passes(self) -> list[Callable[[onnx.ModelProto], Any]]:
        return [fold] if self.fold_batch_norm else []

    def finish(self, model: onnx.ModelProto) -> None:
        if self.opset > self.trace_opset:
            raise_opset(model, self.opset)
        if self.opset >= INT4_OPSET:
            store_4bit_weights(model)

    def check(self, params: QuantParams) -> None:
        where = f"export_onnx_qcdq: quantizer '{params.name}'"
        if params.blocked:
            raise ValueError(
                f"{where} has a scale per group of channels (shape {tuple(params.scale.shape)}); QCDQ "
                "expresses per-tensor and per-axis scales only; use a per-channel quantizer, or export_qonnx"
            )
        if params.role != "act":
            if params.bit_width > 32:
                raise ValueError(f"{where} has {params.bit_width} bits; QCDQ integers are at most 32 bits")
            return
        if params.kind == QuantType.BINARY:
            raise ValueError(
                f"{where} is binary (bipolar); QuantizeLinear has no sign rounding; use export_qonnx "
                "(BipolarQuant) for binary activations"
            )
        if params.kind == QuantType.TERNARY and params.threshold != 0.5:
            raise ValueError(
                f"{where} is ternary with threshold {params.threshold}; QuantizeLinear rounds at 0.5, so "
                "only threshold 0.5 is exact; use export_qonnx or threshold = 0.5"
            )
        if params.rounding != "ROUND":
            raise ValueError(
                f"{where} rounds with {params.rounding}; QuantizeLinear rounds half to even (ROUND); use "
                "export_qonnx, whose Quant node has a rounding_mode"
            )
        if params.hi > 2**15 - 1 or params.lo < -(2**15):
            raise ValueError(
                f"{where} has {params.bit_width} bits (signed={params.signed}); QCDQ activations are at most "
                "int16 here (16 bits signed, 15 unsigned); use fewer bits, or export_qonnx"
            )
        if params.bit_width > 8 and self.opset < 21:
            raise ValueError(
                f"{where} has {params.bit_width} bits; QuantizeLinear produces int16 from opset 21 "
                f"only (opset_version={self.opset}); pass opset_version=21, or use at most 8 bits"
            )

    def emit(self, params: QuantParams, x: Tensor) -> Tensor:
        if params.role == "act":
            return emitted(x, lambda g, x: qcdq_activation(g, x, params), "QuantframeQCDQ")
        return emitted(x, lambda g, _: dequantized_constant(g, params), "QuantframeDQ")

    weight_name = "int_weight"

    def weight_initializer(self, params: QuantParams) -> Tensor:
        return integers(params, container(params, activation=False))

    def emit_weight(self, params: QuantParams, weight: Tensor, initializer: Tensor) -> Tensor:
        return emitted_from(initializer, weight, lambda g, ints: dequantized(g, ints, params), "QuantframeDQ")


def integers(params: QuantParams, dtype: torch.dtype) -> Tensor:
    """The grid integers of `params.value` in `dtype`."""
    return params.int_value(dtype)


def _axis(params: QuantParams) -> dict[str, int]:
    return {"axis_i": params.axis} if params.per_channel else {}


def _scale_zero_point(g: Any, params: QuantParams, dtype: torch.dtype) -> tuple[Any, Any]:
    scale = g.op("Constant", value_t=params.flat_scale().float())
    zero_point = g.op("Constant", value_t=params.flat_zero_point().round().to(dtype))
    return scale, zero_point


def _clip(g: Any, q: Any, params: QuantParams, dtype: torch.dtype) -> Any:
    if not needs_clip(params, dtype):
        return q
    lo = g.op("Constant", value_t=torch.tensor(params.lo, dtype=dtype))
    hi = g.op("Constant", value_t=torch.tensor(params.hi, dtype=dtype))
    return g.op("Clip", q, lo, hi)


def qcdq_activation(g: Any, x: Any, params: QuantParams) -> Any:
    """x -> QuantizeLinear -> (Clip) -> DequantizeLinear.

    An int16 grid is clipped in the float domain before QuantizeLinear instead, to
    [(lo - z) s, (hi - z) s], which gives the same integers: onnxruntime has no int16 Clip kernel.
    """
    dtype = container(params, activation=True)
    scale, zero_point = _scale_zero_point(g, params, dtype)
    if dtype == torch.int16 and needs_clip(params, dtype):
        lo = (params.lo - params.zero_point) * params.scale
        hi = (params.hi - params.zero_point) * params.scale
        x = g.op("Min", g.op("Max", x, g.op("Constant", value_t=lo)), g.op("Constant", value_t=hi))
        q = g.op("QuantizeLinear", x, scale, zero_point, **_axis(params))
        return g.op("DequantizeLinear", q, scale, zero_point, **_axis(params))
    q = g.op("QuantizeLinear", x, scale, zero_point, **_axis(params))
    return g.op("DequantizeLinear", _clip(g, q, params, dtype), scale, zero_point, **_axis(params))


def dequantized(g: Any, ints: Any, params: QuantParams) -> Any:
    """Integers -> (Clip) -> DequantizeLinear: a weight or bias."""
    dtype = container(params, activation=False)
    scale, zero_point = _scale_zero_point(g, params, dtype)
    return g.op("DequantizeLinear", _clip(g, ints, params, dtype), scale, zero_point, **_axis(params))


def dequantized_constant(g: Any, params: QuantParams) -> Any:
    """An integer constant (an initializer after tidying) -> (Clip) -> DequantizeLinear."""
    ints = g.op("Constant", value_t=integers(params, container(params, activation=False)))
    return dequantized(g, ints, params)


def export_onnx_qcdq(
    model: nn.Module,
    args: Any,
    export_path: str | Path | io.IOBase | None = None,
    opset_version: int | None = None,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = False,
    fold_batch_norm: bool = True,
) -> onnx.ModelProto:
    """Export `model` to standard ONNX with Q/Clip/DQ nodes (rules in the module docstring).

    `args`: the example input (a tensor, a tuple, or a dict of keyword inputs). Returns the model,
    also written to `export_path` when given. The model is left exactly as it was.
    `fold_batch_norm`: fold inference BatchNorm into the preceding quantized conv's dequantization
    scale (`quantframe.export.fold`), as torch does for float convs; `dynamic_batch`: a symbolic
    batch dimension; `input_names`/`output_names` default to input[_i]/output[_i].
    """
    return export_onnx(
        model,
        args,
        QCDQFormat,
        export_path,
        opset_version,
        input_names,
        output_names,
        dynamic_batch,
        fold_batch_norm=fold_batch_norm,
    )


def raise_opset(model: onnx.ModelProto, opset: int) -> None:
    """Set the default-domain opset import to `opset` (ops emitted here have the same meaning there)."""
    changed = {"GroupNormalization"}  # ops whose meaning changed at 21
    used = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    if used & changed:
        raise ValueError(f"export_onnx_qcdq: cannot raise the opset to {opset}: {sorted(used & changed)}")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset

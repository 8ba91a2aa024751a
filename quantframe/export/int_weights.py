"""Integer weight dumps for HLS/RTL flows: two's-complement integers plus their fixed-point position.

For every layer with an enabled weight quantizer (and its quantized bias where the bias scale is
known: its own scale, or input scale x weight scale with an input quantizer):

- `fmt="hex"`: `path` is a folder; `<layer>.weight.hex` holds one integer per line in row-major order,
  two's complement in ceil(bits / 4) hex digits (-2 at 8 bits is `FE`, 5 at 4 bits is `5`), as Verilog's
  `$readmemh` reads it; a bipolar (binary) weight is one bit, 1 for +1 and 0 for -1.
  `manifest.json` lists each tensor's file, shape, bit width, signedness, scale(s), zero point(s) and
  `fractional_bits` n where every scale is 2^-n (value = int * 2^-n), else null.
- `fmt="npz"`: `path` is one `.npz` file with an integer array per tensor (`"<layer>.weight"`, the
  smallest of int8/int16/int32/int64 that holds it) and the manifest as the JSON string `"manifest"`.
"""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quantframe.enums import QuantType
from quantframe.export.manager import evaluation
from quantframe.export.params import QuantParams, params_from_output
from quantframe.proxy import WeightQuantProxy

FORMATS = ("hex", "npz")


def _tensors(model: nn.Module) -> list[tuple[str, QuantParams]]:
    """(tensor name, parameters) of every quantized weight and computable quantized bias."""
    found = []
    with evaluation(model), torch.no_grad():
        for layer_name, layer in model.named_modules():
            proxy = getattr(layer, "weight_quant", None)
            if not isinstance(proxy, WeightQuantProxy) or not proxy.is_quant_enabled:
                continue
            prefix = f"{layer_name}." if layer_name else ""
            found.append(
                (
                    f"{prefix}weight",
                    params_from_output(f"{prefix}weight_quant", "weight", proxy, proxy(layer.weight)),
                )
            )
            bias_quant = getattr(layer, "bias_quant", None)
            if getattr(layer, "bias", None) is None or bias_quant is None or not bias_quant.is_quant_enabled:
                continue
            try:
                bias = layer.quant_bias()
            except RuntimeError:  # the bias scale needs the input's scale, unknown here
                continue
            found.append(
                (f"{prefix}bias", params_from_output(f"{prefix}bias_quant", "bias", bias_quant, bias))
            )
    return found


def hex_digits(bit_width: int) -> int:
    return max(1, math.ceil(bit_width / 4))


def to_twos_complement(ints: np.ndarray, bit_width: int, kind: QuantType = QuantType.INT) -> np.ndarray:
    """Integers as unsigned `bit_width`-bit patterns (bipolar: 1 for +1, 0 for -1)."""
    ints = ints.astype(np.int64)
    if kind == QuantType.BINARY:
        return (ints > 0).astype(np.uint64)
    return (ints & ((1 << bit_width) - 1)).astype(np.uint64)


_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def hex_lines(patterns: np.ndarray, width: int) -> bytes:
    """One `width`-digit upper-case hex number per line (vectorised: weight tensors are large)."""
    shifts = 4 * np.arange(width - 1, -1, -1, dtype=np.uint64)
    digits = (patterns.reshape(-1, 1).astype(np.uint64) >> shifts) & np.uint64(0xF)
    chars = np.empty((digits.shape[0], width + 1), dtype=np.uint8)
    chars[:, :width] = _HEX[digits.astype(np.int64)]
    chars[:, width] = ord("\n")
    return chars.tobytes()


def _smallest_int(ints: np.ndarray) -> np.ndarray:
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if ints.size == 0 or (ints.min() >= info.min and ints.max() <= info.max):
            return ints.astype(dtype)
    return ints.astype(np.int64)


def _entry(params: QuantParams, file: str | None) -> dict[str, Any]:
    bits = 1 if params.kind == QuantType.BINARY else params.bit_width
    return {
        "file": file,
        "shape": list(params.value.shape),
        "bit_width": bits,
        "signed": params.signed,
        "kind": params.kind.value,
        "axis": params.axis,
        "scale_shape": list(params.scale.shape),
        "scale": params.scale.reshape(-1).double().tolist(),
        "zero_point": params.zero_point.reshape(-1).double().tolist(),
        "fractional_bits": params.fractional_bits(),
    }


def export_int_weights(model: nn.Module, path: str | Path, fmt: str = "hex") -> dict[str, dict[str, Any]]:
    """Dump `model`'s integer weights (module docstring); returns the manifest."""
    if fmt not in FORMATS:
        raise ValueError(f"export_int_weights: fmt={fmt!r}; allowed: {list(FORMATS)}")
    path = Path(path)
    manifest: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    if fmt == "hex":
        path.mkdir(parents=True, exist_ok=True)
    for name, params in _tensors(model):
        ints = params.int_value().numpy()
        if fmt == "npz":
            arrays[name] = _smallest_int(ints)
            manifest[name] = _entry(params, None)
            continue
        file = f"{name}.hex"
        bits = 1 if params.kind == QuantType.BINARY else params.bit_width
        width = hex_digits(bits)
        patterns = to_twos_complement(ints.reshape(-1), bits, params.kind)
        (path / file).write_bytes(hex_lines(patterns, width))
        manifest[name] = _entry(params, file)
    if fmt == "hex":
        (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    else:
        np.savez(path, manifest=np.array(json.dumps(manifest)), **arrays)
    return manifest

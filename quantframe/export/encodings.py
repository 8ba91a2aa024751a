"""Quantization encodings as JSON: every quantizer's scale, zero point, bit width and signedness.

    {"version": 1, "producer": "quantframe <version>",
     "encodings": {"conv.weight_quant": {"role": "weight", "bit_width": 8, "signed": true, "axis": 0,
                                        "scale": [...], "zero_point": [...], "offset": [...], ...}, ...}}

Entries are keyed by the quantizer's module path. `zero_point` is quantframe's (value = (int - zero_point)
* scale); `offset` = -zero_point is the AIMET convention (value = (int + offset) * scale). `axis` is the
per-channel axis (None per tensor); `scale_shape` the broadcastable shape the quantizer uses.

Without example inputs the values are read from the quantizers: weights from their weights,
activations from their current (learned or collected) scale; a bias whose scale is input scale x weight
scale is written with `scale` None unless its layer has an input quantizer. With `args` one forward
records exactly what each quantizer computes. `load_encodings` validates a file against the schema;
given a model, it checks every entry against the model's quantizers and restores the activation
scales and zero points of learned/collected quantizers (weights are verified, not changed).
"""

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

import quantframe
from quantframe.export.manager import ExportFormat, ExportSession, evaluation, split_args
from quantframe.export.params import QuantParams, params_from_output
from quantframe.proxy import ActQuantProxy, BiasQuantProxy, QuantProxy, WeightQuantProxy
from quantframe.tensor import QuantTensor

ENCODINGS_VERSION = 1


class TensorEncoding(BaseModel):
    """The encoding of one quantizer."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["weight", "bias", "act"]
    quantizer: str
    kind: Literal["INT", "BINARY", "TERNARY"]
    bit_width: int = Field(ge=1, le=64)
    signed: bool
    narrow_range: bool
    rounding: str
    axis: int | None
    scale_shape: list[int]
    scale: list[float] | None = Field(min_length=1)
    zero_point: list[float] | None
    offset: list[float] | None
    fractional_bits: int | None = None


class Encodings(BaseModel):
    """A model's encodings file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = ENCODINGS_VERSION
    producer: str = Field(default_factory=lambda: f"quantframe {quantframe.__version__}")
    encodings: dict[str, TensorEncoding]


def encoding_of(params: QuantParams, quantizer: str) -> TensorEncoding:
    zero_point = (
        params.zero_point.expand_as(params.scale).reshape(-1)
        if params.zero_point.numel() == 1
        else params.zero_point.reshape(-1)
    )
    return TensorEncoding(
        role=params.role,
        quantizer=quantizer,
        kind=params.kind.value,
        bit_width=params.bit_width,
        signed=params.signed,
        narrow_range=params.narrow,
        rounding=params.rounding,
        axis=params.axis,
        scale_shape=list(params.scale.shape),
        scale=params.scale.reshape(-1).double().tolist(),
        zero_point=zero_point.double().tolist(),
        offset=(-zero_point).double().tolist(),
        fractional_bits=params.fractional_bits(),
    )


def _static_params(name: str, proxy: QuantProxy, owner: nn.Module | None) -> QuantParams | None:
    """Parameters read from the quantizer without an input (None: they depend on the input)."""
    with torch.no_grad():
        if isinstance(proxy, WeightQuantProxy):
            out = proxy(proxy.tracked[0])
        elif isinstance(proxy, ActQuantProxy):
            scale = proxy.scale()
            out = QuantTensor(
                torch.zeros(scale.shape), scale, proxy.zero_point(), proxy.bit_width(), proxy.signed
            )
        elif isinstance(proxy, BiasQuantProxy) and hasattr(owner, "is_bias_quant_enabled"):
            if owner.bias is None:
                return None
            try:
                out = owner.quant_bias()
            except RuntimeError:  # "Input scale required": the scale comes with the input
                return None
        else:
            return None
    return params_from_output(name, proxy.role, proxy, out)


def collect_encodings(model: nn.Module, args: Any = None) -> Encodings:
    """The encodings of every enabled quantizer of `model` (see the module docstring)."""
    recorded: dict[str, QuantParams] = {}
    if args is not None:
        positional, keywords = split_args(args)
        with ExportSession(model, ExportFormat()) as session:
            session.record(positional, keywords)
            recorded = {name: calls[0] for name, calls in session.recorded().items()}
    modules = dict(model.named_modules())
    entries: dict[str, TensorEncoding] = {}
    with evaluation(model):
        for name, proxy in modules.items():
            if not isinstance(proxy, QuantProxy) or not proxy.is_quant_enabled:
                continue
            params = recorded.get(name)
            if params is None:
                params = _static_params(name, proxy, modules.get(name.rpartition(".")[0]))
            if params is not None:
                entries[name] = encoding_of(params, proxy.quant_name)
            elif isinstance(proxy, BiasQuantProxy):
                entries[name] = _unknown_bias(proxy)
    return Encodings(encodings=entries)


def _unknown_bias(proxy: BiasQuantProxy) -> TensorEncoding:
    bits = proxy.bit_width()
    return TensorEncoding(
        role="bias",
        quantizer=proxy.quant_name,
        kind="INT",
        bit_width=int(bits),
        signed=proxy.signed,
        narrow_range=proxy.narrow_range,
        rounding=str(proxy.rounding.value),
        axis=None,
        scale_shape=[],
        scale=None,
        zero_point=None,
        offset=None,
    )


def export_encodings(model: nn.Module, path: str | Path, args: Any = None) -> Encodings:
    """Write the encodings JSON of `model` to `path` and return it."""
    encodings = collect_encodings(model, args)
    Path(path).write_text(encodings.model_dump_json(indent=1))
    return encodings


def load_encodings(path: str | Path, model: nn.Module | None = None) -> Encodings:
    """Read and validate an encodings file; with `model`, check it and restore activation encodings."""
    encodings = Encodings.model_validate(json.loads(Path(path).read_text()))
    if model is not None:
        apply_encodings(model, encodings)
    return encodings


def apply_encodings(model: nn.Module, encodings: Encodings) -> None:
    """Check every entry against `model`'s quantizers; restore learned/collected activation scales."""
    modules = dict(model.named_modules())
    for name, entry in encodings.encodings.items():
        proxy = modules.get(name)
        if not isinstance(proxy, QuantProxy) or not proxy.is_quant_enabled:
            raise ValueError(f"load_encodings: '{name}' is not an enabled quantizer of the model")
        bits = int(proxy.bit_width().round().max())
        if (entry.bit_width, entry.signed) != (bits, proxy.signed):
            raise ValueError(
                f"load_encodings: '{name}' is {entry.bit_width}-bit signed={entry.signed} in the file but "
                f"{bits}-bit signed={proxy.signed} in the model"
            )
        if isinstance(proxy, ActQuantProxy) and entry.scale is not None:
            _restore_activation(name, proxy, entry)


def _restore_activation(name: str, proxy: ActQuantProxy, entry: TensorEncoding) -> None:
    current = proxy.scale()
    scale = torch.tensor(entry.scale, dtype=current.dtype, device=current.device).reshape(current.shape)
    zero_point = None
    if entry.zero_point is not None:
        zero_point = torch.tensor(entry.zero_point, dtype=current.dtype, device=current.device)
    proxy.load_parameters(scale, zero_point)
    restored = proxy.scale()
    if not torch.allclose(restored, scale, rtol=1e-5, atol=0):
        raise ValueError(
            f"load_encodings: '{name}' ({proxy.quant_name}) has a scale it cannot take (only a "
            f"learned or collected scale is loaded): "
            f"file {entry.scale}, model {restored.reshape(-1).tolist()}"
        )

"""Which layers an export handles, and how: one table from layer class to a handler per format.

Quantizer proxies are handled generically (each becomes its format's quantize/dequantize nodes), so
for most layers the entry says "the layer's forward, with its proxies exported, is its graph"
(`FORWARD`: None for every format). A layer whose forward has to become something else in a format
has an attach function there: it patches the layer for the duration of the export and returns the
function that undoes the patch. Truncated average pooling becomes a QONNX `Trunc` (or standard ops in
QCDQ); QuantRNN/QuantLSTM become the ONNX `RNN`/`LSTM` operator or their unrolled recurrence, and
their entry *drives their parts*: the cells and gate parameters inside hold quantizers the layer's
export forward uses, so they need no entries of their own.

`EXPORT_TABLE` below lists every built-in layer; nothing is registered by importing a module. Its
handlers live in modules that import layers and formats, so the table names them (`Deferred`) and
imports them when an export first attaches one. Other packages add rows with `register_layer`
(`register_layer(MyLayer)`, or `register_layer(MyLayer, {"qcdq": attach, "qonnx": None})`).

Refused: a float recurrent layer (`nn.RNN`/`nn.LSTM`/`nn.GRU`: its quantized counterpart is
`QuantRNN`/`QuantLSTM`), and any module that holds quantizer proxies without a row (its forward may
use them in ways no handler knows). A layer missing from the table is looked up by its base classes.
"""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from quantframe.layers import (
    QuantAdaptiveAvgPool2d,
    QuantCat,
    QuantConv1d,
    QuantConv2d,
    QuantConv3d,
    QuantConvTranspose1d,
    QuantConvTranspose2d,
    QuantConvTranspose3d,
    QuantDropout,
    QuantEltwiseAdd,
    QuantEmbedding,
    QuantHardTanh,
    QuantIdentity,
    QuantLinear,
    QuantLSTM,
    QuantMaxPool1d,
    QuantMaxPool2d,
    QuantReLU,
    QuantReLU6,
    QuantRNN,
    QuantSigmoid,
    QuantTanh,
    QuantUpsample,
    TruncAvgPool2d,
)
from quantframe.proxy.base import QuantProxy

FORMATS = ("qcdq", "qonnx", "record")

# attach(session, module, name) -> a function undoing whatever attach did (or None)
AttachFn = Callable[[Any, nn.Module, str], Callable[[], None] | None]


@dataclass(frozen=True)
class Deferred:
    """The attach function `module.function` (or `module.function(*args)` for a factory), imported
    when an export first calls it."""

    module: str
    function: str
    args: tuple = ()

    def resolve(self) -> AttachFn:
        found = getattr(importlib.import_module(self.module), self.function)
        return found(*self.args) if self.args else found

    def __call__(self, session: Any, layer: nn.Module, name: str) -> Callable[[], None] | None:
        return self.resolve()(session, layer, name)


@dataclass(frozen=True)
class LayerExport:
    """One row: a handler per format (None: the layer's own forward), and whether the layer's export
    forward drives the quantizers of its submodules (which then need no rows)."""

    handlers: Mapping[str, AttachFn | None]
    drives_parts: bool = False
    formats: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(f for f in self.handlers if f != "record"))


FORWARD = LayerExport(dict.fromkeys(FORMATS))
_TRUNCATED = LayerExport(
    {
        "qcdq": Deferred("quantframe.export.trunc", "_attach", ("qcdq",)),
        "qonnx": Deferred("quantframe.export.trunc", "_attach", ("qonnx",)),
        "record": None,
    }
)
_RECURRENT = LayerExport(
    {
        "qcdq": Deferred("quantframe.export.recurrent", "attach_qcdq"),
        "qonnx": Deferred("quantframe.export.recurrent", "attach_unrolled"),
        "record": None,
    },
    drives_parts=True,
)

# Listed, not discovered: a layer whose forward bypasses its proxies (the recurrent layers quantize
# per timestep) must not be exported as if it did.
EXPORT_TABLE: dict[type, LayerExport] = {
    QuantLinear: FORWARD,
    QuantConv1d: FORWARD,
    QuantConv2d: FORWARD,
    QuantConv3d: FORWARD,
    QuantConvTranspose1d: FORWARD,
    QuantConvTranspose2d: FORWARD,
    QuantConvTranspose3d: FORWARD,
    QuantEmbedding: FORWARD,
    QuantIdentity: FORWARD,
    QuantReLU: FORWARD,
    QuantReLU6: FORWARD,
    QuantHardTanh: FORWARD,
    QuantSigmoid: FORWARD,
    QuantTanh: FORWARD,
    QuantMaxPool1d: FORWARD,
    QuantMaxPool2d: FORWARD,
    QuantEltwiseAdd: FORWARD,
    QuantCat: FORWARD,
    QuantDropout: FORWARD,
    QuantUpsample: FORWARD,
    TruncAvgPool2d: _TRUNCATED,
    QuantAdaptiveAvgPool2d: _TRUNCATED,
    QuantRNN: _RECURRENT,
    QuantLSTM: _RECURRENT,
}


def register_layer(
    layer_type: type, handlers: Mapping[str, AttachFn | None] | None = None, drives_parts: bool = False
) -> None:
    """Declare `layer_type` exportable: `handlers` maps a format ("qcdq", "qonnx") to an attach
    function, or None when the layer's own forward (with its proxies exported) is its graph.
    Without `handlers` every format uses the layer's forward. `drives_parts`: the quantizers of its
    submodules are exported by the layer's handlers (its submodules need no rows)."""
    chosen = dict.fromkeys(FORMATS) if handlers is None else dict(handlers)
    unknown = set(chosen) - set(FORMATS)
    if unknown:
        raise ValueError(
            f"register_layer({layer_type.__name__}): unknown formats {sorted(unknown)}; "
            f"allowed: {list(FORMATS)}"
        )
    chosen.setdefault("record", None)
    EXPORT_TABLE[layer_type] = LayerExport(chosen, drives_parts)


def layer_export(module: nn.Module) -> LayerExport | None:
    """The row of the module's type or of its nearest base class in the table."""
    for cls in type(module).__mro__:
        row = EXPORT_TABLE.get(cls)
        if row is not None:
            return row
    return None


def _holds_proxy(module: nn.Module) -> bool:
    return any(isinstance(child, QuantProxy) for child in module.children())


def check_supported(model: nn.Module, fmt: str) -> list[tuple[str, nn.Module, AttachFn]]:
    """The (name, module, attach) of layers with a handler for `fmt`; raises on unsupported modules."""
    attach_list = []
    driven: list[str] = []  # paths (with a trailing dot) of layers that drive their parts
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in driven):
            continue
        path = name or "<model>"
        row = layer_export(module)
        if row is None:
            if isinstance(module, nn.RNNBase):
                raise TypeError(
                    f"export: module '{path}' ({type(module).__name__}) is a float recurrent layer, which "
                    f"the {fmt} export does not support; use quantframe's QuantRNN/QuantLSTM instead"
                )
            if _holds_proxy(module):
                raise TypeError(
                    f"export: module '{path}' ({type(module).__name__}) holds quantizers but has no export "
                    f"handler for the {fmt} format; register one with "
                    "quantframe.export.register_layer or replace the module by a supported layer"
                )
            continue
        if fmt not in row.handlers:
            raise TypeError(
                f"export: module '{path}' ({type(module).__name__}) cannot be exported to {fmt}; it "
                f"supports {sorted(row.formats)}"
            )
        if row.drives_parts:
            driven.append(f"{name}." if name else "")
        attach = row.handlers[fmt]
        if attach is not None:
            attach_list.append((path, module, attach))
    return attach_list

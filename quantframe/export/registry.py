"""Which modules an export knows how to handle: a registry from layer types to per-format handlers.

Quantizer proxies are handled generically (each becomes its format's quantize/dequantize nodes); a
layer only needs an entry here to say that its forward, with its proxies exported, is its graph. A
layer whose forward has to become something else in one format (truncated average pooling becomes a
QONNX `Trunc`) registers an attach function for that format: it patches the layer for the duration of
the export and returns the function that undoes the patch. Other packages extend the export the same
way (`register_layer(QuantLSTM, {"qcdq": attach_lstm})`).

Refused: a float recurrent layer (`nn.RNN`/`nn.LSTM`/`nn.GRU`: its quantized counterpart is
`QuantRNN`/`QuantLSTM`), and any module that holds quantizer proxies without an entry here (its
forward may use them in ways no handler knows).
"""

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from quantframe.proxy.base import QuantProxy

FORMATS = ("qcdq", "qonnx", "record")

# attach(session, module, name) -> a function undoing whatever attach did (or None)
AttachFn = Callable[[Any, nn.Module, str], Callable[[], None] | None]

_LAYERS: dict[type, dict[str, AttachFn | None]] = {}


def register_layer(layer_type: type, handlers: Mapping[str, AttachFn | None] | None = None) -> None:
    """Declare `layer_type` exportable: `handlers` maps a format ("qcdq", "qonnx") to an attach
    function, or None when the layer's own forward (with its proxies exported) is its graph.
    Without `handlers` every format uses the layer's forward."""
    chosen = dict.fromkeys(FORMATS) if handlers is None else dict(handlers)
    unknown = set(chosen) - set(FORMATS)
    if unknown:
        raise ValueError(
            f"register_layer({layer_type.__name__}): unknown formats {sorted(unknown)}; "
            f"allowed: {list(FORMATS)}"
        )
    chosen.setdefault("record", None)
    _LAYERS[layer_type] = chosen


def layer_handlers(module: nn.Module) -> dict[str, AttachFn | None] | None:
    """The handlers registered for the module's type or its nearest registered base class."""
    for cls in type(module).__mro__:
        if cls in _LAYERS:
            return _LAYERS[cls]
    return None


def _holds_proxy(module: nn.Module) -> bool:
    return any(isinstance(child, QuantProxy) for child in module.children())


def check_supported(model: nn.Module, fmt: str) -> list[tuple[str, nn.Module, AttachFn]]:
    """The (name, module, attach) of layers with a handler for `fmt`; raises on unsupported modules."""
    attach_list = []
    for name, module in model.named_modules():
        path = name or "<model>"
        handlers = layer_handlers(module)
        if handlers is None:
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
        if fmt not in handlers:
            raise TypeError(
                f"export: module '{path}' ({type(module).__name__}) cannot be exported to {fmt}; it "
                f"supports {sorted(f for f in handlers if f != 'record')}"
            )
        if handlers[fmt] is not None:
            attach_list.append((path, module, handlers[fmt]))
    return attach_list


# quantframe layers whose forward, with the proxies exported, is their graph. Listed, not discovered:
# a layer whose forward bypasses its proxies (the recurrent layers quantize per timestep) must not be
# exported as if it did.
_BUILTIN = (
    "QuantLinear",
    "QuantConv1d",
    "QuantConv2d",
    "QuantConv3d",
    "QuantConvTranspose1d",
    "QuantConvTranspose2d",
    "QuantConvTranspose3d",
    "QuantIdentity",
    "QuantReLU",
    "QuantReLU6",
    "QuantHardTanh",
    "QuantSigmoid",
    "QuantTanh",
    "QuantMaxPool1d",
    "QuantMaxPool2d",
    "TruncAvgPool2d",
    "QuantAdaptiveAvgPool2d",
    "QuantEltwiseAdd",
    "QuantCat",
    "QuantDropout",
    "QuantUpsample",
    "QuantEmbedding",
)


def _register_builtin_layers() -> None:
    from quantframe import layers

    for name in _BUILTIN:
        layer_type = getattr(layers, name, None)
        if layer_type is not None:
            register_layer(layer_type)


_register_builtin_layers()

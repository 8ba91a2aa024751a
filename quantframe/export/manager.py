"""The export manager: attach a handler to every quantizer proxy, trace, and always detach.

An export runs inside `ExportSession`:

1. attach: the model goes to eval mode (every module's training flag is remembered); each enabled
   proxy gets a `ProxyHandler` in its `export_handler` slot and, for the duration, as its `forward`
   (an instance attribute shadowing the class's method; nothing in the proxy's code reads the slot).
   Layers whose row in the export table (`registry.EXPORT_TABLE`) has an attach function for the
   format are patched too.
2. weights (`start_emitting`): every weight a weight proxy tracks is quantized once, eagerly, and
   the tensor its format stores (integers for QCDQ) is registered on the proxy as a temporary buffer,
   so that the exporter writes it as a named initializer (`conv.weight_quant.int_weight`) rather than
   as a constant node it would hash and shape-infer.
3. trace: during the exporter's one forward each handler takes the proxy's output (the prepared
   weight, or for activations and biases the proxy's real forward), turns it into `QuantParams`
   constants (scales, zero points), lets the format check that it can represent them (errors name
   the proxy), and returns a QuantTensor whose value is the format's nodes (`trace.emitted`) and
   whose metadata is the proxy's. Ops of the real forward are traced too but feed nothing, and the
   exporter drops them. (`record` runs the calls eagerly without emitting, for encodings.)

Leaving the session (also on an exception) removes every patch and restores the training flags, so
the model's outputs and state_dict are those it had before.
"""

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from quantframe.export.params import QuantParams, params_from_output
from quantframe.export.registry import check_supported
from quantframe.modes import training_modes_restored
from quantframe.proxy.base import QuantProxy
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.tensor import QuantTensor

_MISSING = object()


@contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode; every module's own training flag is restored afterwards."""
    with training_modes_restored(model):
        model.eval()
        yield model


class ExportFormat:
    """What a format does with one recorded quantized tensor; subclasses emit graph nodes."""

    name = "record"

    def check(self, params: QuantParams) -> None:
        """Raise if the format cannot represent `params` (the message names `params.name`)."""

    def emit(self, params: QuantParams, x: Tensor) -> Tensor:
        """The traced tensor replacing the proxy's output value (`x` is the proxy's input)."""
        return x

    weight_name = "export_weight"  # the stored weight's name under its proxy: "<proxy path>.<weight_name>"

    def weight_initializer(self, params: QuantParams) -> Tensor | None:
        """The tensor the graph stores for a weight (None: the format emits its own constants)."""
        return None

    def emit_weight(self, params: QuantParams, weight: Tensor, initializer: Tensor) -> Tensor:
        """The traced tensor replacing a weight, from its stored `initializer` (a traced buffer)."""
        return weight


def patch_forward(module: nn.Module, forward: Callable[..., Any]) -> Callable[[], None]:
    """Shadow `module.forward` by `forward`; returns the function that restores the original."""
    saved = module.__dict__.get("forward", _MISSING)
    module.forward = forward

    def restore() -> None:
        if saved is _MISSING:
            module.__dict__.pop("forward", None)
        else:
            module.forward = saved

    return restore


class ProxyHandler:
    """Sits in one proxy's `export_handler` slot: reads each output's parameters, emits graph nodes."""

    def __init__(self, proxy: QuantProxy, name: str, fmt: ExportFormat):
        self.proxy = proxy
        self.name = name
        self.format = fmt
        self.calls: list[QuantParams] = []
        self.emitting = False
        # id(weight) -> (params, output metadata, buffer name): weights prepared before tracing
        self.prepared: dict[int, tuple[QuantParams, QuantTensor, str]] = {}

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = self.prepared.get(id(x)) if self.emitting else None
        if prepared is not None:
            params, meta, buffer = prepared
            self.calls.append(params)
            value = self.format.emit_weight(params, x, getattr(self.proxy, buffer))
            return QuantTensor(value, meta.scale, meta.zero_point, meta.bit_width, meta.signed, False)
        out = type(self.proxy).forward(self.proxy, x, *args, **kwargs)
        if not isinstance(out, QuantTensor) or out.scale is None:
            return out
        params = self.read(out)
        if not self.emitting:
            return out
        x_value = x.value if isinstance(x, QuantTensor) else x
        return QuantTensor(
            self.format.emit(params, x_value), out.scale, out.zero_point, out.bit_width, out.signed, False
        )

    def read(self, out: QuantTensor) -> QuantParams:
        """The parameters of one output, checked by the format and recorded."""
        params = params_from_output(self.name, self.proxy.role, self.proxy, out)
        self.format.check(params)
        self.calls.append(params)
        return params

    def prepare_weights(self) -> Callable[[], None] | None:
        """Quantize each tracked weight now and register what the format stores as a buffer."""
        names = []
        tracked = list(getattr(self.proxy, "tracked", ()))
        with torch.no_grad():
            for i, weight in enumerate(tracked):
                out = type(self.proxy).forward(self.proxy, weight)
                params = params_from_output(self.name, self.proxy.role, self.proxy, out)
                self.format.check(params)
                stored = self.format.weight_initializer(params)
                if stored is None:
                    continue
                buffer = self.format.weight_name + ("" if len(tracked) == 1 else f"_{i}")
                self.proxy.register_buffer(buffer, stored)
                names.append(buffer)
                meta = QuantTensor(None, out.scale, out.zero_point, out.bit_width, out.signed, False)
                self.prepared[id(weight)] = (params, meta, buffer)
        if not names:
            return None

        def remove() -> None:
            for buffer in names:
                if hasattr(self.proxy, buffer):
                    delattr(self.proxy, buffer)
            self.prepared.clear()

        return remove


class ExportSession:
    """Context manager running steps 1-3 of the module docstring on `model` for one format."""

    def __init__(self, model: nn.Module, fmt: ExportFormat):
        self.model = model
        self.format = fmt
        self.handlers: dict[str, ProxyHandler] = {}
        self._undo: list[Callable[[], None]] = []
        self.emitting = False

    def __enter__(self) -> "ExportSession":
        modes = ExitStack()
        modes.enter_context(training_modes_restored(self.model))
        self._undo.append(modes.close)  # undone last: the flags come back after every patch is gone
        try:
            self.model.eval()
            layer_attachments = check_supported(self.model, self.format.name)
            self._attach_proxies()
            hook = self.model.register_forward_hook(lambda module, args, out: plain_outputs(out))
            self._undo.append(hook.remove)
            for name, module, attach in layer_attachments:
                undo = attach(self, module, name)
                if undo is not None:
                    self._undo.append(undo)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _attach_proxies(self) -> None:
        for name, module in self.model.named_modules():
            if not isinstance(module, QuantProxy) or not module.is_quant_enabled:
                continue
            if module.export_handler is not None:
                raise RuntimeError(
                    f"export: quantizer '{name}' already has an export handler (nested export)"
                )
            handler = ProxyHandler(module, name, self.format)
            self.handlers[name] = handler
            module.export_handler = handler
            restore = patch_forward(module, handler)

            def undo(module: QuantProxy = module, restore: Callable[[], None] = restore) -> None:
                restore()
                module.export_handler = None

            self._undo.append(undo)

    def record(self, args: tuple, kwargs: dict | None = None) -> Any:
        """One eager forward (no_grad) that records every proxy's parameters without emitting."""
        with torch.no_grad():
            return self.model(*args, **(kwargs or {}))

    def start_emitting(self) -> None:
        """Prepare the weights; from now on handlers return the format's nodes (call before tracing)."""
        for handler in self.handlers.values():
            if isinstance(handler.proxy, WeightQuantProxy):
                remove = handler.prepare_weights()
                if remove is not None:
                    self._undo.append(remove)
        self.emitting = True
        for handler in self.handlers.values():
            handler.emitting = True

    def recorded(self) -> dict[str, list[QuantParams]]:
        """Every proxy's recorded parameters, by proxy name, one entry per call."""
        return {name: list(h.calls) for name, h in self.handlers.items() if h.calls}

    def close(self) -> None:
        """Undo every patch (last first), the training flags last."""
        while self._undo:
            self._undo.pop()()


def plain_outputs(out: Any) -> Any:
    """The model's outputs with every QuantTensor replaced by its value (graphs output tensors)."""
    if isinstance(out, QuantTensor):
        return out.value
    if isinstance(out, (tuple, list)):
        return type(out)(plain_outputs(item) for item in out)
    if isinstance(out, dict):
        return {key: plain_outputs(item) for key, item in out.items()}
    return out


def split_args(args: Any) -> tuple[tuple, dict]:
    """Example inputs as (positional, keyword): a tensor, a tuple (a trailing dict is keywords) or a dict."""
    if isinstance(args, QuantTensor):
        return (args.value,), {}
    if isinstance(args, Tensor):
        return (args,), {}
    if isinstance(args, dict):
        return (), dict(args)
    if isinstance(args, (tuple, list)):
        args = tuple(a.value if isinstance(a, QuantTensor) else a for a in args)
        if args and isinstance(args[-1], dict):
            return args[:-1], dict(args[-1])
        return args, {}
    raise TypeError(f"export: args must be a tensor, a tuple or a dict of tensors; got {type(args).__name__}")

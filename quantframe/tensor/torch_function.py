"""The `__torch_function__` table of QuantTensor: which torch functions keep a grid, and how.

A torch function keeps a QuantTensor only where its output still lies on a known integer grid; every
other function *decays*: each QuantTensor in the arguments is replaced by its `.value` and the plain
torch function runs. Handlers parse torch's arguments, ask the rules of `quantframe.tensor.ops` /
`quantframe.tensor.shape` for the result's fields and build it with the class they are handed
(`cls`, from `__torch_function__`); nothing here imports the class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from quantframe.tensor import ops, shape
from quantframe.tensor.metadata import flat_in_last, has_offset, is_complete, replaced, unwrap, with_metadata

Handler = Callable[[type, Callable, tuple, dict], Any]
HANDLERS: dict[Callable, Handler] = {}
"""torch function -> handler(cls, func, args, kwargs); functions not in here decay."""


def dispatch(cls: type, func: Callable, args: tuple, kwargs: dict | None) -> Any:
    """Route a torch function: grid-keeping functions to their handler, everything else decays."""
    kwargs = kwargs or {}
    handler = HANDLERS.get(func)
    if handler is None or kwargs.get("out") is not None:
        return decay(cls, func, args, kwargs)
    return handler(cls, func, args, kwargs)


def decay(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Run func on the plain values: the result carries no quantization metadata."""
    return func(*unwrap(args, cls), **unwrap(kwargs, cls))


def _register(*funcs: Callable) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        for func in funcs:
            HANDLERS[func] = handler
        return handler

    return decorate


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    """An argument given either by position or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _input(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("input")


def _keep_grid(cls: type, func: Callable, args: tuple, kwargs: dict, mixed_dims: int) -> Any:
    """Run func on the value and keep the metadata as is (tuples: the first element is the value)."""
    qt = _input(args, kwargs)
    if not isinstance(qt, cls) or not flat_in_last(qt, mixed_dims):
        return decay(cls, func, args, kwargs)
    out = decay(cls, func, args, kwargs)
    if isinstance(out, tuple):
        return (cls(*replaced(qt, out[0])), *out[1:])
    return cls(*replaced(qt, out))


def _pooling_handler(spatial_dims: int) -> Handler:
    """Max pooling selects elements of each channel: metadata kept (with_indices: (QuantTensor, indices))."""
    return lambda cls, func, args, kwargs: _keep_grid(cls, func, args, kwargs, spatial_dims)


for _n in (1, 2, 3):
    _register(
        getattr(F, f"max_pool{_n}d"),
        getattr(F, f"max_pool{_n}d_with_indices"),
        getattr(torch, f"max_pool{_n}d"),
        getattr(F, f"adaptive_max_pool{_n}d"),
        getattr(F, f"adaptive_max_pool{_n}d_with_indices"),
    )(_pooling_handler(_n))
_register(torch.adaptive_max_pool1d)(_pooling_handler(1))


@_register(torch.clone)
def _clone(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    qt = _input(args, kwargs)
    if not isinstance(qt, cls):
        return decay(cls, func, args, kwargs)
    value = qt.value.clone(**{k: v for k, v in kwargs.items() if k != "input"})
    return cls(*with_metadata(qt, value, torch.Tensor.clone))


@_register(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout)
def _dropout(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """`ops.dropout`, the rule `QuantDropout` follows too: eval keeps the grid, training rescales it."""
    qt = _input(args, kwargs)
    if not isinstance(qt, cls):
        return decay(cls, func, args, kwargs)
    name = "train" if func is torch.dropout else "training"
    training = bool(_arg(args, kwargs, 2, name, True))
    value = decay(cls, func, args, kwargs)
    fields = ops.dropout(qt, value, _arg(args, kwargs, 1, "p", 0.5), training)
    return value if fields is None else cls(*fields)


@_register(F.relu, torch.relu)
def _relu(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """relu maps negative levels to level 0: on the grid when zero point is 0 (bipolar has no 0)."""
    qt = _input(args, kwargs)
    if not (isinstance(qt, cls) and is_complete(qt) and ops.zero_is_level(qt)):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, 0)


@_register(F.pad)
def _pad(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Constant zero padding adds level 0: kept when zero point is 0."""
    qt = _input(args, kwargs)
    mode = _arg(args, kwargs, 2, "mode", "constant")
    fill = _arg(args, kwargs, 3, "value", None)
    if not (isinstance(qt, cls) and is_complete(qt) and mode == "constant" and not fill):
        return decay(cls, func, args, kwargs)
    if not ops.zero_is_level(qt):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, len(_arg(args, kwargs, 1, "pad", ())) // 2)


@_register(F.interpolate)
def _interpolate(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Nearest-neighbour resampling only copies elements (F.upsample* call interpolate)."""
    qt = _input(args, kwargs)
    mode = _arg(args, kwargs, 3, "mode", "nearest")
    if not isinstance(qt, cls) or mode not in ("nearest", "nearest-exact"):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, qt.value.dim() - 2)


@_register(torch.pixel_shuffle, torch.pixel_unshuffle)
def _pixel_shuffle(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Moves elements between channels and space: per-tensor metadata only."""
    qt = _input(args, kwargs)
    metas = (qt.scale, qt.zero_point, qt.bit_width) if isinstance(qt, cls) else ()
    if not metas or any(meta is not None and meta.numel() > 1 for meta in metas):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, 0)


def _avg_pool_handler(spatial_dims: int) -> Handler:
    def handler(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
        """`ops.avg_pool` where exact: every window divides by k (zero point 0, no ceil_mode, padding
        0 or counted, as padded zeros are level 0, no divisor_override); else decay."""
        qt = _input(args, kwargs)
        padding = _arg(args, kwargs, 3, "padding", 0)
        padded = any(p != 0 for p in (padding if isinstance(padding, (tuple, list)) else (padding,)))
        exact = (
            isinstance(qt, cls)
            and is_complete(qt)
            and not _arg(args, kwargs, 4, "ceil_mode", False)
            and (not padded or _arg(args, kwargs, 5, "count_include_pad", True))
            and _arg(args, kwargs, 6, "divisor_override", None) is None
            and flat_in_last(qt, spatial_dims)
            and not has_offset(qt)
        )
        if not exact:
            return decay(cls, func, args, kwargs)
        kernel = _arg(args, kwargs, 1, "kernel_size", None)
        kernel = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel,)
        if len(kernel) == 1:
            kernel = kernel * spatial_dims
        return cls(*ops.avg_pool(qt, decay(cls, func, args, kwargs), math.prod(kernel)))

    return handler


_register(F.avg_pool1d)(_avg_pool_handler(1))
_register(F.avg_pool2d)(_avg_pool_handler(2))
_register(F.avg_pool3d)(_avg_pool_handler(3))


@_register(torch.cat, torch.concat, torch.concatenate, torch.stack)
def _cat(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """cat/stack of QuantTensors on one grid (`ops.cat_metadata`), else decay."""
    tensors = args[0] if args else kwargs.get("tensors")
    dim = _arg(args, kwargs, 1, "dim", kwargs.get("axis", 0))
    if not tensors or isinstance(dim, str) or not all(isinstance(t, cls) for t in tensors):
        return decay(cls, func, args, kwargs)
    metadata = ops.cat_metadata(list(tensors), dim, func is torch.stack)
    if metadata is None:
        return decay(cls, func, args, kwargs)
    return cls(decay(cls, func, args, kwargs), *metadata)


# Shape functions: the same rules as the QuantTensor methods.
def _shape_handler(rule: Callable[[Any, Callable, tuple, dict], Any]) -> Handler:
    def handler(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
        if args:
            qt, rest, rest_kwargs = args[0], args[1:], kwargs
        else:
            rest_kwargs = dict(kwargs)
            qt, rest = rest_kwargs.pop("input", None), ()
        if not isinstance(qt, cls):
            return decay(cls, func, args, kwargs)
        return cls(*rule(qt, func, unwrap(rest, cls), unwrap(rest_kwargs, cls)))

    return handler


_register(torch.flatten, torch.reshape)(
    _shape_handler(lambda qt, func, rest, kw: shape.reshape_like(qt, func(qt.value, *rest, **kw)))
)
_register(torch.transpose, torch.swapaxes, torch.swapdims, torch.permute, torch.unsqueeze)(
    _shape_handler(
        lambda qt, func, rest, kw: shape.same_op(
            qt, func(qt.value, *rest, **kw), lambda m: func(m, *rest, **kw)
        )
    )
)
_register(torch.squeeze)(
    _shape_handler(lambda qt, func, rest, kw: shape.squeeze(qt, _arg(rest, kw, 0, "dim", None)))
)


# Arithmetic functions: the operator rules when both operands are QuantTensors and nothing else is passed.
def _binary_handler(rule: Callable[[Any, Any], Any]) -> Handler:
    def handler(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
        if len(args) == 2 and not kwargs and isinstance(args[0], cls) and isinstance(args[1], cls):
            result = rule(args[0], args[1])
            if result is not None:
                return cls(*result)
        return decay(cls, func, args, kwargs)

    return handler


_register(torch.add)(_binary_handler(ops.add))
_register(torch.sub, torch.subtract)(_binary_handler(ops.sub))
_register(torch.mul, torch.multiply)(_binary_handler(ops.mul))


@_register(torch.neg, torch.negative)
def _neg(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    if len(args) == 1 and not kwargs and isinstance(args[0], cls):
        result = ops.neg(args[0])
        if result is not None:
            return cls(*result)
    return decay(cls, func, args, kwargs)

"""What shape ops and torch functions do to a QuantTensor's metadata: the `__torch_function__` table.

Nothing here imports `quantframe.tensor` (which imports this): handlers receive the QuantTensor class
from `__torch_function__` and build results with `type(qt)(...)`. An op keeps a QuantTensor only where
its output still lies on a known integer grid; everywhere else it *decays*: every QuantTensor in the
arguments is replaced by its `.value` and the plain torch function runs.

Integer grids used below (b = bit width): signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1],
and 1-bit signed is bipolar {-1, +1}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Handler = Callable[[type, Callable, tuple, dict], Any]
HANDLERS: dict[Callable, Handler] = {}
"""torch function -> handler(cls, func, args, kwargs); functions not in here decay."""


def _register(*funcs: Callable) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        for func in funcs:
            HANDLERS[func] = handler
        return handler

    return decorate


# ---------------------------------------------------------------- helpers


def unwrap(obj: Any, cls: type) -> Any:
    """Replace every `cls` instance in obj (through lists, tuples and dicts) by its `.value`."""
    if isinstance(obj, cls):
        return obj.value
    if isinstance(obj, list):
        return [unwrap(item, cls) for item in obj]
    if isinstance(obj, tuple):
        items = [unwrap(item, cls) for item in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        return {key: unwrap(item, cls) for key, item in obj.items()}
    return obj


def decay(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Run func on the plain values: the result carries no quantization metadata."""
    return func(*unwrap(args, cls), **unwrap(kwargs, cls))


def describe(meta: Tensor | None) -> str:
    """Short text for a metadata tensor: the number when per-tensor, else its shape and range."""
    if meta is None:
        return "None"
    if meta.numel() == 1:
        return f"{meta.item():.6g}"
    return f"{tuple(meta.shape)} in [{meta.min().item():.6g}, {meta.max().item():.6g}]"


def is_complete(qt: Any) -> bool:
    """Whether the grid is fully described (scale, zero point, bit width, signedness all set)."""
    return not (qt.scale is None or qt.zero_point is None or qt.bit_width is None or qt.signed is None)


def _replace(qt: Any, value: Tensor, **changes: Any) -> Any:
    """A QuantTensor around value with qt's metadata, some fields changed."""
    fields = {"scale": qt.scale, "zero_point": qt.zero_point, "bit_width": qt.bit_width}
    fields.update(signed=qt.signed, training=qt.training, **changes)
    return type(qt)(value, **fields)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    """An argument given either by position or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _split_input(cls: type, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    """(input, the other positional args, the other kwargs); input may come as kwarg `input`."""
    if args:
        return args[0], args[1:], kwargs
    rest = dict(kwargs)
    return rest.pop("input", None), (), rest


def equal(x: Tensor, y: Tensor) -> bool:
    """Exact equality of two metadata tensors that broadcast together."""
    if x is y:
        return True
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        return False
    return bool((x == y).all())


def _zero_is_on_grid(qt: Any) -> bool:
    """Real 0 maps to integer 0 and 0 is a level: zero point 0, and not bipolar."""
    if bool((qt.zero_point != 0).any()):
        return False
    return not (qt.signed and bool((qt.bit_width == 1).any()))


def grid_bits(qt: Any, signed_out: bool, bipolar_as_two: bool) -> Tensor:
    """Bits qt's integers need in a grid of signedness signed_out.

    Unsigned b-bit integers need b + 1 bits in a signed grid (255 is not an int8). Bipolar {-1, +1}
    counts as 2 signed bits where its integers are summed (1 + 1 is not a bipolar level).
    """
    if qt.signed:
        if not bipolar_as_two:
            return qt.bit_width
        return torch.where(qt.bit_width == 1, qt.bit_width + 1, qt.bit_width)
    return qt.bit_width + 1 if signed_out else qt.bit_width


def left_pad(meta: Tensor, ndim: int) -> Tensor:
    """meta with leading 1-dims up to ndim: same broadcast, same ndim as the value (no copy)."""
    if meta.dim() >= ndim:
        return meta
    return meta.reshape((1,) * (ndim - meta.dim()) + tuple(meta.shape))


def map_metadata(qt: Any, out: Tensor, per_channel: Callable[[Tensor], Tensor]) -> Any:
    """QuantTensor around out: per-tensor metadata kept, per-channel metadata sent through per_channel."""

    def one(meta: Tensor | None) -> Tensor | None:
        if meta is None:
            return None
        if meta.numel() == 1:
            # Never let a (1, 1, 1, 1) scale broadcast a lower-rank value up to its rank.
            return meta if meta.dim() <= out.dim() else meta.reshape(())
        return per_channel(meta)

    return type(qt)(out, one(qt.scale), one(qt.zero_point), one(qt.bit_width), qt.signed, qt.training)


def _reshape_metadata(meta: Tensor, in_shape: torch.Size, out_shape: torch.Size) -> Tensor:
    """Reshape a broadcast metadata tensor along with a value reshaped from in_shape to out_shape.

    A reshape splits the dims into groups of consecutive dims whose sizes multiply to the same number
    on both sides, and reorders nothing inside a group. A group where meta is constant (size 1 on
    all its dims) stays size 1; any other group is expanded to the value's sizes and reshaped like it.
    So (1, C, 1, 1) reshaped with (N, C, H, W) -> (N, C, H*W) gives (1, C, 1), without a copy.
    """
    if 0 in in_shape:
        return meta.expand(in_shape).reshape(out_shape)
    meta = left_pad(meta, len(in_shape))
    expand_to, new_shape = list(meta.shape), []
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        i0, j0, size_in, size_out = i, j, 1, 1
        if i < len(in_shape):
            size_in, i = in_shape[i], i + 1
        if j < len(out_shape):
            size_out, j = out_shape[j], j + 1
        while size_in != size_out:
            if size_in < size_out:
                size_in, i = size_in * in_shape[i], i + 1
            else:
                size_out, j = size_out * out_shape[j], j + 1
        if all(meta.shape[d] == 1 for d in range(i0, i)):
            new_shape += [1] * (j - j0)
        else:
            expand_to[i0:i] = in_shape[i0:i]
            new_shape += out_shape[j0:j]
    return meta.expand(expand_to).reshape(new_shape)


def reshape_like(qt: Any, out: Tensor) -> Any:
    """After view/reshape/flatten: per-channel metadata reshaped consistently (see `_reshape_metadata`)."""
    in_shape = qt.value.shape
    return map_metadata(qt, out, lambda meta: _reshape_metadata(meta, in_shape, out.shape))


def same_op(qt: Any, out: Tensor, op: Callable[[Tensor], Tensor]) -> Any:
    """After transpose/permute/unsqueeze: op on the metadata padded to the value's ndim (no copy)."""
    ndim = qt.value.dim()
    return map_metadata(qt, out, lambda meta: op(left_pad(meta, ndim)))


def squeeze(qt: Any, dim: int | tuple[int, ...] | None = None) -> Any:
    """Squeeze the value; the metadata drops exactly the dims the value dropped (size 1 there too)."""
    value = qt.value
    out = value.squeeze() if dim is None else value.squeeze(dim)

    def per_channel(meta: Tensor) -> Tensor:
        ndim = value.dim()
        dims = range(ndim) if dim is None else (tuple(dim) if isinstance(dim, (tuple, list)) else (dim,))
        dropped = tuple(d % ndim for d in dims if value.shape[d] == 1)
        return left_pad(meta, ndim).squeeze(dropped) if dropped else meta

    return map_metadata(qt, out, per_channel)


def index(qt: Any, key: Any) -> Any:
    """qt[key]: per-channel metadata is expanded (no copy) and indexed with the same key."""
    key = unwrap(key, type(qt))
    shape = qt.value.shape
    return map_metadata(qt, qt.value[key], lambda meta: meta.expand(shape)[key])


# ---------------------------------------------------------------- torch functions


def _flat_in_last(qt: Any, count: int) -> bool:
    """Whether every metadata tensor has size 1 in the value's last `count` dims (the ones the op mixes)."""
    for meta in (qt.scale, qt.zero_point, qt.bit_width):
        if meta is None or meta.numel() == 1:
            continue
        if any(size != 1 for size in meta.shape[max(meta.dim() - count, 0) :]):
            return False
    return True


def _keep_grid(cls: type, func: Callable, args: tuple, kwargs: dict, mixed_dims: int) -> Any:
    """Run func on the value and keep the metadata as is (tuples: the first element is the value)."""
    qt = args[0] if args else kwargs.get("input")
    if not isinstance(qt, cls) or not _flat_in_last(qt, mixed_dims):
        return decay(cls, func, args, kwargs)
    out = decay(cls, func, args, kwargs)
    if isinstance(out, tuple):
        return (_replace(qt, out[0]), *out[1:])
    return _replace(qt, out)


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
    qt = args[0] if args else kwargs.get("input")
    if not isinstance(qt, cls):
        return decay(cls, func, args, kwargs)
    return qt.clone(**{k: v for k, v in kwargs.items() if k != "input"})


@_register(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout)
def _dropout(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Dropout is the identity only when not training (the functional form defaults to training=True)."""
    name = "train" if func is torch.dropout else "training"
    if _arg(args, kwargs, 2, name, True):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, 0)


@_register(F.relu, torch.relu)
def _relu(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """relu maps negative levels to level 0: on the grid when zero point is 0 (bipolar has no 0)."""
    qt = args[0] if args else kwargs.get("input")
    if not (isinstance(qt, cls) and is_complete(qt) and _zero_is_on_grid(qt)):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, 0)


@_register(F.pad)
def _pad(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Constant zero padding adds level 0: kept when zero point is 0."""
    qt = args[0] if args else kwargs.get("input")
    mode = _arg(args, kwargs, 2, "mode", "constant")
    fill = _arg(args, kwargs, 3, "value", None)
    if not (isinstance(qt, cls) and is_complete(qt) and mode == "constant" and not fill):
        return decay(cls, func, args, kwargs)
    if not _zero_is_on_grid(qt):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, len(_arg(args, kwargs, 1, "pad", ())) // 2)


@_register(F.interpolate)
def _interpolate(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Nearest-neighbour resampling only copies elements (F.upsample* call interpolate)."""
    qt = args[0] if args else kwargs.get("input")
    mode = _arg(args, kwargs, 3, "mode", "nearest")
    if not isinstance(qt, cls) or mode not in ("nearest", "nearest-exact"):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, qt.value.dim() - 2)


@_register(torch.pixel_shuffle, torch.pixel_unshuffle)
def _pixel_shuffle(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """Moves elements between channels and space: per-tensor metadata only."""
    qt = args[0] if args else kwargs.get("input")
    metas = (qt.scale, qt.zero_point, qt.bit_width) if isinstance(qt, cls) else ()
    if not metas or any(meta is not None and meta.numel() > 1 for meta in metas):
        return decay(cls, func, args, kwargs)
    return _keep_grid(cls, func, args, kwargs, 0)


def _avg_pool_handler(spatial_dims: int) -> Handler:
    def handler(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
        """Average = sum of k integers / k: an accumulator with scale / k and bit width + ceil(log2 k).

        Exact only when every window divides by k: zero point 0, no ceil_mode, padding 0 or counted
        (padded zeros are level 0), no divisor_override.
        """
        qt = args[0] if args else kwargs.get("input")
        padding = _arg(args, kwargs, 3, "padding", 0)
        padded = any(p != 0 for p in (padding if isinstance(padding, (tuple, list)) else (padding,)))
        exact = (
            isinstance(qt, cls)
            and is_complete(qt)
            and not _arg(args, kwargs, 4, "ceil_mode", False)
            and (not padded or _arg(args, kwargs, 5, "count_include_pad", True))
            and _arg(args, kwargs, 6, "divisor_override", None) is None
            and _flat_in_last(qt, spatial_dims)
            and not bool((qt.zero_point != 0).any())
        )
        if not exact:
            return decay(cls, func, args, kwargs)
        kernel = _arg(args, kwargs, 1, "kernel_size", None)
        kernel = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel,)
        if len(kernel) == 1:
            kernel = kernel * spatial_dims
        count = math.prod(kernel)
        growth = (count - 1).bit_length()  # ceil(log2(count)), exact in integers
        bit_width = grid_bits(qt, bool(qt.signed), True) + growth
        out = decay(cls, func, args, kwargs)
        return _replace(qt, out, scale=qt.scale / count, bit_width=bit_width)

    return handler


_register(F.avg_pool1d)(_avg_pool_handler(1))
_register(F.avg_pool2d)(_avg_pool_handler(2))
_register(F.avg_pool3d)(_avg_pool_handler(3))


def _common(metas: list[Tensor], average: bool) -> Tensor | None:
    """The shared metadata tensor, their mean when average is set, or None when they differ."""
    if all(equal(metas[0], meta) for meta in metas[1:]):
        return metas[0]
    if not average:
        return None
    try:
        return sum(metas[1:], metas[0]) / len(metas)
    except RuntimeError:
        return None


@_register(torch.cat, torch.concat, torch.concatenate, torch.stack)
def _cat(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    """cat/stack of QuantTensors sharing scale and zero point (training mode: mean scale), else decay.

    Bit width is the max over the inputs (unsigned ones count b + 1 when any is signed).
    """
    tensors = args[0] if args else kwargs.get("tensors")
    dim = _arg(args, kwargs, 1, "dim", kwargs.get("axis", 0))
    if not tensors or isinstance(dim, str) or not all(isinstance(t, cls) and is_complete(t) for t in tensors):
        return decay(cls, func, args, kwargs)
    training = any(bool(t.training) for t in tensors)
    signed = any(bool(t.signed) for t in tensors)
    scale = _common([t.scale for t in tensors], training)
    zero_point = _common([t.zero_point for t in tensors], False)
    if scale is None or zero_point is None:
        return decay(cls, func, args, kwargs)
    bit_width = None
    for t in tensors:
        bits = grid_bits(t, signed, False)
        bit_width = bits if bit_width is None else torch.maximum(bit_width, bits)
    ndim = tensors[0].value.dim()
    metas = [left_pad(m, ndim) if m.numel() > 1 else m for m in (scale, zero_point, bit_width)]
    if func is torch.stack:
        metas = [m.unsqueeze(dim) if m.numel() > 1 else m for m in metas]
    elif any(m.numel() > 1 and m.shape[dim] != 1 for m in metas):
        return decay(cls, func, args, kwargs)
    out = decay(cls, func, args, kwargs)
    return cls(out, *metas, signed, training)


# Shape functions: the same rules as the QuantTensor methods.
def _shape_handler(rule: Callable[[Any, Callable, tuple, dict], Any]) -> Handler:
    def handler(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
        qt, rest, rest_kwargs = _split_input(cls, args, kwargs)
        if not isinstance(qt, cls):
            return decay(cls, func, args, kwargs)
        return rule(qt, func, unwrap(rest, cls), unwrap(rest_kwargs, cls))

    return handler


_register(torch.flatten, torch.reshape)(
    _shape_handler(lambda qt, func, rest, kw: reshape_like(qt, func(qt.value, *rest, **kw)))
)
_register(torch.transpose, torch.swapaxes, torch.swapdims, torch.permute, torch.unsqueeze)(
    _shape_handler(
        lambda qt, func, rest, kw: same_op(qt, func(qt.value, *rest, **kw), lambda m: func(m, *rest, **kw))
    )
)
_register(torch.squeeze)(
    _shape_handler(lambda qt, func, rest, kw: squeeze(qt, _arg(rest, kw, 0, "dim", None)))
)


# Arithmetic functions: the operator rules when both operands are QuantTensors and nothing else is passed.
def _binary_handler(rule: Callable[[Any, Any], Any]) -> Handler:
    def handler(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
        if len(args) == 2 and not kwargs and isinstance(args[0], cls) and isinstance(args[1], cls):
            return rule(args[0], args[1])
        return decay(cls, func, args, kwargs)

    return handler


_register(torch.add)(_binary_handler(lambda a, b: a + b))
_register(torch.sub, torch.subtract)(_binary_handler(lambda a, b: a - b))
_register(torch.mul, torch.multiply)(_binary_handler(lambda a, b: a * b))


@_register(torch.neg, torch.negative)
def _neg(cls: type, func: Callable, args: tuple, kwargs: dict) -> Any:
    if len(args) == 1 and not kwargs and isinstance(args[0], cls):
        return -args[0]
    return decay(cls, func, args, kwargs)

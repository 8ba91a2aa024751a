"""Small helpers on a QuantTensor's metadata shared by the rule modules (no QuantTensor import).

A QuantTensor's *fields* are `(value, scale, zero_point, bit_width, signed, training)`: what the
rules return and what the class is built from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Fields = tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, bool | None, bool | None]


def fields(qt: Any) -> Fields:
    """The six fields of qt."""
    return qt.value, qt.scale, qt.zero_point, qt.bit_width, qt.signed, qt.training


def replaced(qt: Any, value: Tensor, **changes: Any) -> Fields:
    """qt's fields around a new value, some metadata fields changed (scale=..., bit_width=...)."""
    meta = {"scale": qt.scale, "zero_point": qt.zero_point, "bit_width": qt.bit_width}
    meta.update(signed=qt.signed, training=qt.training)
    meta.update(changes)
    return value, meta["scale"], meta["zero_point"], meta["bit_width"], meta["signed"], meta["training"]


def with_metadata(qt: Any, value: Tensor, meta: Callable[[Tensor], Tensor]) -> Fields:
    """Fields around value with every metadata tensor sent through meta (detach, clone, to(...))."""

    def one(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else meta(tensor)

    return value, one(qt.scale), one(qt.zero_point), one(qt.bit_width), qt.signed, qt.training


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


def equal(x: Tensor, y: Tensor) -> bool:
    """Exact equality of two metadata tensors that broadcast together."""
    if x is y:
        return True
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        return False
    return bool((x == y).all())


def has_offset(qt: Any) -> bool:
    """Whether some zero point is nonzero (real 0 is not the integer 0); no zero point: False."""
    return qt.zero_point is not None and bool((qt.zero_point != 0).any())


def left_pad(meta: Tensor, ndim: int) -> Tensor:
    """meta with leading 1-dims up to ndim: same broadcast, same ndim as the value (no copy)."""
    if meta.dim() >= ndim:
        return meta
    return meta.reshape((1,) * (ndim - meta.dim()) + tuple(meta.shape))


def flat_in_last(qt: Any, count: int) -> bool:
    """Whether every metadata tensor has size 1 in the value's last `count` dims (the ones an op mixes)."""
    for meta in (qt.scale, qt.zero_point, qt.bit_width):
        if meta is None or meta.numel() == 1:
            continue
        if any(size != 1 for size in meta.shape[max(meta.dim() - count, 0) :]):
            return False
    return True

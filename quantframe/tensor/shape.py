"""What shape ops do to a QuantTensor's metadata: the grid is unchanged, per-channel metadata moves.

Every function returns the fields of the result (see `quantframe.tensor.metadata`). Per-tensor
metadata is kept as is; per-channel (broadcast) metadata follows the value's dims without a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from quantframe.tensor.metadata import Fields, left_pad, unwrap


def map_metadata(qt: Any, out: Tensor, per_channel: Callable[[Tensor], Tensor]) -> Fields:
    """Fields around out: per-tensor metadata kept, per-channel metadata sent through per_channel."""

    def one(meta: Tensor | None) -> Tensor | None:
        if meta is None:
            return None
        if meta.numel() == 1:
            # Never let a (1, 1, 1, 1) scale broadcast a lower-rank value up to its rank.
            return meta if meta.dim() <= out.dim() else meta.reshape(())
        return per_channel(meta)

    return out, one(qt.scale), one(qt.zero_point), one(qt.bit_width), qt.signed, qt.training


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


def reshape_like(qt: Any, out: Tensor) -> Fields:
    """After view/reshape/flatten: per-channel metadata reshaped consistently (see `_reshape_metadata`)."""
    in_shape = qt.value.shape
    return map_metadata(qt, out, lambda meta: _reshape_metadata(meta, in_shape, out.shape))


def same_op(qt: Any, out: Tensor, op: Callable[[Tensor], Tensor]) -> Fields:
    """After transpose/permute/unsqueeze: op on the metadata padded to the value's ndim (no copy)."""
    ndim = qt.value.dim()
    return map_metadata(qt, out, lambda meta: op(left_pad(meta, ndim)))


def squeeze(qt: Any, dim: int | tuple[int, ...] | None = None) -> Fields:
    """Squeeze the value; the metadata drops exactly the dims the value dropped (size 1 there too)."""
    value = qt.value
    out = value.squeeze() if dim is None else value.squeeze(dim)

    def per_channel(meta: Tensor) -> Tensor:
        ndim = value.dim()
        dims = range(ndim) if dim is None else (tuple(dim) if isinstance(dim, (tuple, list)) else (dim,))
        dropped = tuple(d % ndim for d in dims if value.shape[d] == 1)
        return left_pad(meta, ndim).squeeze(dropped) if dropped else meta

    return map_metadata(qt, out, per_channel)


def index(qt: Any, key: Any) -> Fields:
    """qt[key]: per-channel metadata is expanded (no copy) and indexed with the same key."""
    key = unwrap(key, type(qt))
    shape = qt.value.shape
    return map_metadata(qt, qt.value[key], lambda meta: meta.expand(shape)[key])

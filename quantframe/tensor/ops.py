"""The grid rules of QuantTensor operators and of the torch functions that keep a grid.

Each rule takes QuantTensors (and plain arguments) and returns the fields of the result (see
`quantframe.tensor.metadata`), or None where the result has no known grid and must decay to a
plain tensor. Grid questions (bipolar, 0 a level, bits of sums) go to `quantframe.core.grid`.
Nothing here imports the QuantTensor class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from quantframe.core.grid import IntGrid
from quantframe.tensor.metadata import Fields, describe, equal, has_offset, is_complete, left_pad, replaced


def grid_of(qt: Any) -> IntGrid:
    """The integer grid qt's bit width and signedness describe (1 signed bit is bipolar)."""
    return IntGrid.of_metadata(qt.bit_width, bool(qt.signed))


def zero_is_level(qt: Any) -> bool:
    """Real 0 maps to integer 0 and 0 is a level: zero point 0, and not bipolar."""
    if has_offset(qt):
        return False
    level = grid_of(qt).zero_is_level
    return bool(level.all()) if isinstance(level, Tensor) else level


# ---------------------------------------------------------------- operators


def add(a: Any, b: Any) -> Fields | None:
    """a + b of two QuantTensors: integers add, so zero points add and bit width = max(b1, b2) + 1.

    Mixed signedness counts an unsigned operand as b + 1 signed bits, bipolar as 2 bits (else the
    sum could leave the grid). Eval mode needs equal scales (else ValueError); training mode
    averages them and the result may be invalid. None: a grid is not fully described.
    """
    if not (is_complete(a) and is_complete(b)):
        return None
    training = bool(a.training) or bool(b.training)
    if not training and not equal(a.scale, b.scale):
        raise ValueError(
            f"cannot add QuantTensors with different scales in eval mode: scale "
            f"{describe(a.scale)} vs scale {describe(b.scale)}; requantize one "
            "operand to the other's scale"
        )
    signed = bool(a.signed or b.signed)
    bits_a, bits_b = grid_of(a).summand_bit_width(signed), grid_of(b).summand_bit_width(signed)
    bit_width = torch.maximum(bits_a, bits_b) + 1
    # (s + s) / 2 == s exactly in binary floating point: equal scales come back unchanged.
    scale = (a.scale + b.scale) / 2
    return a.value + b.value, scale, a.zero_point + b.zero_point, bit_width, signed, training


def sub(a: Any, b: Any) -> Fields | None:
    """a - b = a + (-b) of two QuantTensors (the class of b builds -b)."""
    negated = neg(b)
    return None if negated is None else add(a, type(b)(*negated))


def mul(a: Any, b: Any) -> Fields | None:
    """a * b of two QuantTensors with zero points 0: scales multiply, bit widths add, signed if either is."""
    if not (is_complete(a) and is_complete(b)) or has_offset(a) or has_offset(b):
        return None
    return (
        a.value * b.value,
        a.scale * b.scale,
        a.zero_point * b.zero_point,
        a.bit_width + b.bit_width,
        bool(a.signed or b.signed),
        bool(a.training) or bool(b.training),
    )


def neg(qt: Any) -> Fields | None:
    """-qt: signed, zero point negated; an unsigned b-bit input needs b + 1 bits, a signed one keeps b.

    Negating the most negative level -2^(b-1) of a non-narrow signed grid leaves the grid by one
    level; the bit width is kept anyway so that negation does not grow signed tensors.
    """
    if not is_complete(qt):
        return None
    bit_width = grid_of(qt).bit_width_in(True)
    return -qt.value, qt.scale, -qt.zero_point, bit_width, True, qt.training


# ---------------------------------------------------------------- grid-keeping functions


def dropout(qt: Any, value: Tensor, p: float, training: bool) -> Fields | None:
    """The grid of `value`, torch's dropout of qt.value with probability p.

    Not training (or p = 0): qt's grid unchanged. Training: dropout zeroes elements and multiplies
    the others by 1 / (1 - p); a kept value (int - z) * s / (1 - p) and a dropped 0 (the integer z)
    both lie on the grid of scale s / (1 - p), same zero point and integers; a bipolar grid, which has
    no 0 level, becomes 2-bit signed. p = 1 zeroes everything, and a grid not fully described stays
    undescribed: None (plain tensor).
    """
    if not training or p == 0:
        return replaced(qt, value)
    if p == 1 or not is_complete(qt):
        return None
    bit_width = grid_of(qt).bit_width_with_zero()
    return replaced(qt, value, scale=qt.scale / (1.0 - p), bit_width=bit_width)


def avg_pool(qt: Any, value: Tensor, count: int) -> Fields:
    """Average of `count` integers = their sum / count: an accumulator grid of scale s / count.

    Bit width: the summands' bits (bipolar counts 2) + ceil(log2(count)). Only exact when every
    window sums `count` elements and the zero point is 0 (the caller checks).
    """
    growth = (count - 1).bit_length()  # ceil(log2(count)), exact in integers
    bit_width = grid_of(qt).summand_bit_width(bool(qt.signed)) + growth
    return replaced(qt, value, scale=qt.scale / count, bit_width=bit_width)


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


def cat_metadata(tensors: list[Any], dim: int, stack: bool) -> tuple | None:
    """(scale, zero_point, bit_width, signed, training) of cat/stack along dim, or None (decay).

    The inputs must share scale and zero point (training mode: the mean scale, as `add`); the bit
    width is the max over the inputs (unsigned ones count b + 1 when any is signed).
    """
    if not all(is_complete(t) for t in tensors):
        return None
    training = any(bool(t.training) for t in tensors)
    signed = any(bool(t.signed) for t in tensors)
    scale = _common([t.scale for t in tensors], training)
    zero_point = _common([t.zero_point for t in tensors], False)
    if scale is None or zero_point is None:
        return None
    bit_width = None
    for t in tensors:
        bits = grid_of(t).bit_width_in(signed)
        bit_width = bits if bit_width is None else torch.maximum(bit_width, bits)
    ndim = tensors[0].value.dim()
    metas = [left_pad(m, ndim) if m.numel() > 1 else m for m in (scale, zero_point, bit_width)]
    if stack:
        metas = [m.unsqueeze(dim) if m.numel() > 1 else m for m in metas]
    elif any(m.numel() > 1 and m.shape[dim] != 1 for m in metas):
        return None
    return (*metas, signed, training)

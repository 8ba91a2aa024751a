"""QuantTensor: a dequantized float tensor together with the integer grid it lies on.

    value = (int - zero_point) * scale,   int in [-2^(b-1), 2^(b-1) - 1] (signed) or [0, 2^b - 1]

Design decision: a light wrapper, not a `torch.Tensor` subclass. A plain `__slots__` class costs
well under 1 µs to build (about 0.25 µs measured on CPU) and adds nothing to the ops of the hot path
(a tensor subclass pays the `__torch_function__` dispatch on every op it touches, including the ones
inside layers that never return a QuantTensor); `copy.deepcopy` and pickle are trivial; and layers
build one only when the user asks for `return_quant_tensor=True`. `torch.*` and
`torch.nn.functional.*` calls still reach it through the `__torch_function__` classmethod: the ops
that keep the grid return a QuantTensor (see `quantframe.tensor.torch_function`), every other op *decays* to a
plain tensor computed on `value`. Anything not provided here is reached through `.value` (no
`__getattr__` forwarding: it would hide mistakes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from quantframe.core.grid import IntGrid
from quantframe.tensor import ops, torch_function
from quantframe.tensor import shape as shape_rules
from quantframe.tensor.metadata import describe, is_complete, unwrap, with_metadata

# Slack of the integer check, in integer units: an absolute 1e-3 for the rounding of value / scale,
# plus the precision of value's dtype at the grid's largest magnitude (8 eps * 2^b leaves room for the
# few float roundings that produced value). A fixed 1e-3 would call valid 16-bit float32 tensors
# invalid (65535 * scale carries ~0.004 levels of rounding); past b = 19 the float32 slack exceeds
# half a level, so wide grids (32-bit biases) are only checked for integrality with a float64 value.
_INT_ATOL = 1e-3
_DTYPE_SLACK = 8.0


class QuantTensor:
    """A dequantized tensor `value` on the grid (scale, zero_point, bit_width, signed); None allowed."""

    __slots__ = ("value", "scale", "zero_point", "bit_width", "signed", "training")

    def __init__(
        self,
        value: Tensor,
        scale: Tensor | None = None,
        zero_point: Tensor | None = None,
        bit_width: Tensor | None = None,
        signed: bool | None = None,
        training: bool | None = None,
    ) -> None:
        # Stores only: no validation here, this runs on every quantized forward.
        self.value = value
        self.scale = scale
        self.zero_point = zero_point
        self.bit_width = bit_width
        self.signed = signed
        self.training = training

    @classmethod
    def __torch_function__(
        cls, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        """Route a torch function: grid-keeping ops to their handler, everything else decays to `value`."""
        return torch_function.dispatch(cls, func, args, kwargs)

    def __reduce__(self) -> tuple:
        fields = (self.value, self.scale, self.zero_point, self.bit_width, self.signed, self.training)
        return (type(self), fields)

    # ------------------------------------------------------------ grid

    @property
    def signed_t(self) -> Tensor | None:
        """`signed` as a bool tensor on value's device."""
        return None if self.signed is None else torch.tensor(bool(self.signed), device=self.value.device)

    @property
    def training_t(self) -> Tensor | None:
        """`training` as a bool tensor on value's device."""
        return None if self.training is None else torch.tensor(bool(self.training), device=self.value.device)

    @property
    def is_valid(self) -> bool:
        """Whether value / scale + zero_point is integral and inside the grid of bit_width/signed.

        Computed in float64; 1-bit signed is bipolar ({-1, +1}); None metadata is never valid.
        """
        if not is_complete(self):
            return False
        with torch.no_grad():
            bit_width = self.bit_width.double()
            int_float = self.value.double() / self.scale.double() + self.zero_point.double()
            rounded = torch.round(int_float)
            eps = torch.finfo(self.value.dtype).eps if self.value.is_floating_point() else 0.0
            atol = _INT_ATOL + _DTYPE_SLACK * eps * 2.0**bit_width
            if not bool(((int_float - rounded).abs() <= atol).all()):
                return False
            return bool(IntGrid.of_metadata(bit_width, bool(self.signed)).contains(rounded).all())

    def int(self, float_datatype: bool = False) -> Tensor:
        """The integers round(value / scale + zero_point); so (int - zero_point) * scale == value.

        int32 unless the grid needs more (over 32 bits, or unsigned over 31): then int64. With
        float_datatype the same integers in value's float dtype (at least float32).
        """
        if not is_complete(self):
            raise ValueError(
                "QuantTensor.int() needs scale, zero_point, bit_width and signed; got "
                f"scale={describe(self.scale)}, zero_point={describe(self.zero_point)}, "
                f"bit_width={describe(self.bit_width)}, signed={self.signed}"
            )
        int_float = torch.round(self.value.double() / self.scale.double() + self.zero_point.double())
        if float_datatype:
            return int_float.to(torch.promote_types(self.value.dtype, torch.float32))
        widest = self.bit_width.max().item()
        wide = widest > 32 or (not self.signed and widest > 31)
        return int_float.to(torch.int64 if wide else torch.int32)

    # ------------------------------------------------------------ tensor-like

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.value.size() if dim is None else self.value.size(dim)

    def dim(self) -> int:
        return self.value.dim()

    @property
    def ndim(self) -> int:
        return self.value.dim()

    def numel(self) -> int:
        return self.value.numel()

    @property
    def device(self) -> torch.device:
        return self.value.device

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    @property
    def requires_grad(self) -> bool:
        return self.value.requires_grad

    def __len__(self) -> int:
        return len(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __repr__(self) -> str:
        return (
            f"QuantTensor(shape={tuple(self.value.shape)}, bit_width={describe(self.bit_width)}, "
            f"signed={self.signed}, scale={describe(self.scale)}, "
            f"zero_point={describe(self.zero_point)}, training={self.training})"
        )

    def detach(self) -> QuantTensor:
        """Value and metadata detached from the graph."""
        return type(self)(*with_metadata(self, self.value.detach(), Tensor.detach))

    def clone(self, **kwargs: Any) -> QuantTensor:
        """Value and metadata copied (kwargs such as memory_format go to the value's clone)."""
        return type(self)(*with_metadata(self, self.value.clone(**kwargs), Tensor.clone))

    def to(self, *args: Any, **kwargs: Any) -> QuantTensor:
        """`Tensor.to` on value; metadata follows the device, and is float32 (float64 with a float64 value).

        A non-floating dtype is refused: the integers are `int()`, a cast of `value` is `value.to(...)`.
        """
        value = self.value.to(*args, **kwargs)
        if not value.is_floating_point():
            raise TypeError(
                f"QuantTensor.to() keeps a float value; got dtype {value.dtype}. Use .int() for the "
                "integer tensor or .value.to(...) for a plain cast"
            )
        return self._moved(value, cast=value.dtype != self.value.dtype)

    def cpu(self) -> QuantTensor:
        return self._moved(self.value.cpu(), cast=False)

    def cuda(self, device: Any = None, non_blocking: bool = False) -> QuantTensor:
        return self._moved(self.value.cuda(device, non_blocking), cast=False)

    def _moved(self, value: Tensor, cast: bool) -> QuantTensor:
        dtype = (torch.float64 if value.dtype == torch.float64 else torch.float32) if cast else None
        return type(self)(*with_metadata(self, value, lambda meta: meta.to(device=value.device, dtype=dtype)))

    # ------------------------------------------------------------ shape ops (the grid is unchanged)

    def view(self, *shape: Any) -> QuantTensor | Tensor:
        """view(*shape); view(dtype) reinterprets bits and returns a plain tensor."""
        if len(shape) == 1 and isinstance(shape[0], torch.dtype):
            return self.value.view(shape[0])
        return type(self)(*shape_rules.reshape_like(self, self.value.view(*shape)))

    def reshape(self, *shape: Any) -> QuantTensor:
        return type(self)(*shape_rules.reshape_like(self, self.value.reshape(*shape)))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> QuantTensor:
        return type(self)(*shape_rules.reshape_like(self, self.value.flatten(start_dim, end_dim)))

    def unflatten(self, dim: int, sizes: Any) -> QuantTensor:
        return type(self)(*shape_rules.reshape_like(self, self.value.unflatten(dim, sizes)))

    def contiguous(self, **kwargs: Any) -> QuantTensor:
        return type(self)(*shape_rules.map_metadata(self, self.value.contiguous(**kwargs), lambda meta: meta))

    def transpose(self, dim0: int, dim1: int) -> QuantTensor:
        out = self.value.transpose(dim0, dim1)
        return type(self)(*shape_rules.same_op(self, out, lambda meta: meta.transpose(dim0, dim1)))

    def permute(self, *dims: Any) -> QuantTensor:
        out = self.value.permute(*dims)
        return type(self)(*shape_rules.same_op(self, out, lambda meta: meta.permute(*dims)))

    def unsqueeze(self, dim: int) -> QuantTensor:
        out = self.value.unsqueeze(dim)
        return type(self)(*shape_rules.same_op(self, out, lambda meta: meta.unsqueeze(dim)))

    def squeeze(self, dim: int | tuple[int, ...] | None = None) -> QuantTensor:
        return type(self)(*shape_rules.squeeze(self, dim))

    def __getitem__(self, key: Any) -> QuantTensor:
        return type(self)(*shape_rules.index(self, key))

    # Element-wise functions that F.sigmoid / F.tanh call as methods: they decay like torch.sigmoid.
    def sigmoid(self) -> Tensor:
        return torch.sigmoid(self.value)

    def tanh(self) -> Tensor:
        return torch.tanh(self.value)

    # ------------------------------------------------------------ arithmetic

    def __add__(self, other: Any) -> QuantTensor | Tensor:
        """QuantTensor + QuantTensor on the integer grid of `ops.add`; any other operand: a plain tensor."""
        if not isinstance(other, QuantTensor):
            return self.value + other
        result = ops.add(self, other)
        return self.value + other.value if result is None else type(self)(*result)

    def __radd__(self, other: Any) -> Tensor:
        return other + self.value

    def __sub__(self, other: Any) -> QuantTensor | Tensor:
        """a - b = a + (-b) for two QuantTensors (`ops.sub`); anything else is plain."""
        if not isinstance(other, QuantTensor):
            return self.value - other
        result = ops.sub(self, other)
        return self.value + (-other.value) if result is None else type(self)(*result)

    def __rsub__(self, other: Any) -> Tensor:
        return other - self.value

    def __mul__(self, other: Any) -> QuantTensor | Tensor:
        """QuantTensor * QuantTensor with zero points 0 (`ops.mul`): scales multiply, bit widths add."""
        if not isinstance(other, QuantTensor):
            return self.value * other
        result = ops.mul(self, other)
        return self.value * other.value if result is None else type(self)(*result)

    def __rmul__(self, other: Any) -> Tensor:
        return other * self.value

    def __truediv__(self, other: Any) -> Tensor:
        return self.value / unwrap(other, QuantTensor)

    def __rtruediv__(self, other: Any) -> Tensor:
        return other / self.value

    def __neg__(self) -> QuantTensor | Tensor:
        """-qt: signed, zero point negated, bit width as `ops.neg`."""
        result = ops.neg(self)
        return -self.value if result is None else type(self)(*result)

    # Comparisons decay like any other op; identity hashing as for torch.Tensor.
    __hash__ = object.__hash__

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self.value == unwrap(other, QuantTensor)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self.value != unwrap(other, QuantTensor)

    def __lt__(self, other: Any) -> Tensor:
        return self.value < unwrap(other, QuantTensor)

    def __le__(self, other: Any) -> Tensor:
        return self.value <= unwrap(other, QuantTensor)

    def __gt__(self, other: Any) -> Tensor:
        return self.value > unwrap(other, QuantTensor)

    def __ge__(self, other: Any) -> Tensor:
        return self.value >= unwrap(other, QuantTensor)


__all__ = ["QuantTensor"]

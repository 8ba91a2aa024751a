"""The fake-quant kernel: every integer quantize-dequantize of the package is computed here.

    q = clamp(round(x / scale + zero_point), lo, hi);   value = (q - zero_point) * scale

always dividing by the scale (x * (1 / scale) rounds differently near ties). `scale`/`zero_point`
broadcast against `x` (per tensor, per channel or per group alike). The paths:

- `fake_quant`: what quantizers call; picks one of the three below.
- `fast_fake_quant`: round half to even as one autograd function of in-place passes, the CPU hot
  path. torch's `fake_quantize_per_*` CPU kernels cost about 20x a ReLU on a 2M-element activation
  (torch 2.13 on this project's 2-core x86 machines), this chain about 2x. Its backward equals the
  autograd of `reference_fake_quant` without storing anything but `x`, the output and the metadata.
- `fused_fake_quant`: torch's fused kernels, used on CUDA (they multiply by a reciprocal
  internally, which is torch's choice, not ours).
- `reference_fake_quant`: the formula in out-of-place ops, for other rounding rules, learned bit
  widths and dtypes the fused kernels refuse; the twin the tests hold the other paths to.

and, without autograd, `fake_quant_into` (writes into a given buffer, optionally recording the
straight-through mask, for loops that preallocate) and `quantize` (the integers q only).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from quantframe.core.ste import round_ste

Bound = int | Tensor
_FUSED_DTYPES = (torch.float32,)


# ---------------------------------------------------------------- the formula, in place


def _round_clamp_(scaled: Tensor, zero_point: Tensor | None, lo: Bound, hi: Bound) -> Tensor:
    """In place: `scaled` (holding x / scale) becomes clamp(round(x / scale + zero_point), lo, hi)."""
    if zero_point is not None:
        scaled.add_(zero_point)
    return scaled.round_().clamp_(lo, hi)


def _dequantize_(levels: Tensor, scale: Tensor, zero_point: Tensor | None) -> Tensor:
    """In place: integers `levels` become (levels - zero_point) * scale."""
    if zero_point is not None:
        levels.sub_(zero_point)
    return levels.mul_(scale)


def _quantized(x: Tensor, scale: Tensor, zero_point: Tensor | None, lo: Bound, hi: Bound) -> Tensor:
    """The fake-quantized x in one new tensor (no autograd)."""
    return _dequantize_(_round_clamp_(torch.div(x, scale), zero_point, lo, hi), scale, zero_point)


def quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor | None, lo: Bound, hi: Bound, out: Tensor | None = None
) -> Tensor:
    """The integers clamp(round(x / scale + zero_point), lo, hi) as floats, into `out` when given.

    No straight-through gradient (round has none): for statistics, searches and exports.
    `zero_point=None` is a zero point of 0 without its pass.
    """
    return _round_clamp_(torch.div(x, scale, out=out), zero_point, lo, hi)


def fake_quant_into(
    out: Tensor,
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor | None,
    lo: Bound,
    hi: Bound,
    scratch: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """out = (clamp(round(x / scale + zero_point), lo, hi) - zero_point) * scale; no autograd.

    `out` may be `x`; `zero_point=None` skips the zero-point passes. With `scratch` = (scaled,
    levels, mask), buffers shaped like `x`: `scaled` receives x / scale + zero_point, `levels` the
    integers minus the zero point, `mask` the straight-through mask (True inside the clamp range),
    what a hand-written backward needs.
    """
    if scratch is None:
        levels = _round_clamp_(torch.div(x, scale, out=out), zero_point, lo, hi)
        return _dequantize_(levels, scale, zero_point)
    scaled, levels, mask = scratch
    torch.div(x, scale, out=scaled)
    if zero_point is not None:
        scaled.add_(zero_point)
    torch.round(scaled, out=out)
    torch.clamp(out, lo, hi, out=levels)
    torch.eq(out, levels, out=mask)
    if zero_point is not None:
        levels.sub_(zero_point)
    return torch.mul(levels, scale, out=out)


# ---------------------------------------------------------------- the CPU autograd path


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, lo: int, hi: int, has_zero_point: bool):  # noqa: ANN205
        out = _quantized(x, scale, zero_point if has_zero_point else None, lo, hi)
        # `out` is usually saved by the next layer too (same storage): keeping it costs no memory.
        ctx.save_for_backward(x, out, scale, zero_point)
        ctx.bounds = (lo, hi)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN205
        x, out, scale, zero_point = ctx.saved_tensors
        lo, hi = ctx.bounds
        # round(x / s + z) lies in [lo, hi] exactly when x lies in [(lo - z - 1/2) s, (hi - z + 1/2) s]
        # (up to ties, which round half to even decides and which have measure zero).
        low = (lo - 0.5 - zero_point) * scale
        high = (hi + 0.5 - zero_point) * scale
        if low.numel() == 1:  # one fused pass: grad where low < x < high, else 0
            grad_x = torch.ops.aten.hardtanh_backward(grad, x, float(low), float(high))
        else:
            grad_x = torch.where((x >= low) & (x <= high), grad, 0.0)
        grad_scale = grad_zero_point = None
        if ctx.needs_input_grad[1]:
            # d/ds of (clamp(round(x/s + z)) - z) s is out/s - x/s inside (straight-through), out/s outside
            if scale.numel() == 1:
                flat = torch.dot
                total = flat(grad.reshape(-1), out.reshape(-1)) - flat(grad_x.reshape(-1), x.reshape(-1))
                grad_scale = (total / scale).reshape(scale.shape)
            else:
                grad_scale = (grad * out - grad_x * x).sum_to_size(scale.shape) / scale
        if ctx.needs_input_grad[2]:
            grad_zero_point = ((grad_x - grad) * scale).sum_to_size(zero_point.shape)
        return grad_x if ctx.needs_input_grad[0] else None, grad_scale, grad_zero_point, None, None, None


class _FakeQuantNoClip(torch.autograd.Function):
    """Fake quantization of a tensor whose grid holds it whole: the gradient is the identity."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, lo: int, hi: int, has_zero_point: bool):  # noqa: ANN205
        return _quantized(x, scale, zero_point if has_zero_point else None, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN205
        return grad, None, None, None, None, None


def fast_fake_quant(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    lo: int,
    hi: int,
    zero_point_is_zero: bool = False,
    never_clips: bool = False,
) -> Tensor:
    """`reference_fake_quant` with round-half-even, computed in a few in-place passes.

    `zero_point_is_zero` (known from the quantizer's configuration) skips the zero-point passes;
    `never_clips` (a constant scale from max |x| on a symmetric grid) makes the clamp inactive,
    so the backward pass is the identity.
    """
    has_zero_point = not zero_point_is_zero or zero_point.requires_grad
    needs_grad = x.requires_grad or scale.requires_grad or zero_point.requires_grad
    if not (torch.is_grad_enabled() and needs_grad):
        return _quantized(x, scale, zero_point if has_zero_point else None, lo, hi)
    if never_clips and not (scale.requires_grad or zero_point.requires_grad):
        return _FakeQuantNoClip.apply(x, scale, zero_point, lo, hi, has_zero_point)
    return _FakeQuant.apply(x, scale, zero_point, lo, hi, has_zero_point)


# ---------------------------------------------------------------- reference and fused paths


def reference_fake_quant(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    min_value: Bound,
    max_value: Bound,
    round_fn: Callable[[Tensor], Tensor] = round_ste,
) -> Tensor:
    """The unfused formula; gradients: straight-through rounding, zero outside the clamp range."""
    q = torch.clamp(round_fn(x / scale + zero_point), min_value, max_value)
    return (q - zero_point) * scale


def fused_fake_quant(
    x: Tensor, scale: Tensor, zero_point: Tensor, min_value: int, max_value: int, axis: int | None
) -> Tensor:
    """One torch kernel for round-half-even fake quantization with a per-tensor or per-axis scale.

    `scale`/`zero_point` are broadcastable to `x` (one element, or channels along `axis`).
    With grad mode on and a scale that needs a gradient it is the learnable (LSQ) kernel, whose
    gradients equal those of `reference_fake_quant`; otherwise the cheaper cached-mask kernel.
    """
    learnable = torch.is_grad_enabled() and (scale.requires_grad or zero_point.requires_grad)
    if axis is None:
        if learnable:
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, scale.reshape(1), zero_point.reshape(1).to(scale.dtype), min_value, max_value, 1.0
            )
        return torch.fake_quantize_per_tensor_affine(
            x, scale.reshape(()), zero_point.reshape(()).to(torch.int32), min_value, max_value
        )
    channels = x.shape[axis]
    scale = scale.reshape(-1).expand(channels)
    if learnable:
        return torch._fake_quantize_learnable_per_channel_affine(
            x, scale, zero_point.to(scale.dtype).reshape(-1).expand(channels), axis, min_value, max_value, 1.0
        )
    return torch.fake_quantize_per_channel_affine(
        x,
        scale.contiguous(),
        zero_point.reshape(-1).to(torch.int32).expand(channels).contiguous(),
        axis,
        min_value,
        max_value,
    )


def fused_axis(x: Tensor, scale: Tensor) -> int | None | bool:
    """The axis a broadcastable `scale` varies along (None: per tensor), or False if not one axis."""
    if scale.numel() == 1:
        return None
    if scale.dim() != x.dim():
        return False
    varying = [d for d, n in enumerate(scale.shape) if n != 1]
    if len(varying) != 1 or scale.shape[varying[0]] != x.shape[varying[0]]:
        return False
    return varying[0]


def can_fuse(x: Tensor, scale: Tensor, min_value: int, max_value: int) -> bool:
    """Whether torch's fake-quant kernels accept these operands (float32, an int range up to 16 bits)."""
    return (
        x.dtype in _FUSED_DTYPES
        and scale.dtype == torch.float32
        and min_value >= -(2**15)
        and max_value <= 2**16 - 1
        and not torch.jit.is_scripting()
    )


# ---------------------------------------------------------------- the dispatcher


def fake_quant(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    lo: Bound,
    hi: Bound,
    round_fn: Callable[[Tensor], Tensor] | None = None,
    zero_point_is_zero: bool = False,
    never_clips: bool = False,
) -> Tensor:
    """Fake-quantize x with straight-through gradients, on the fastest path that computes it exactly.

    `round_fn=None` means round half to even with integer bounds (a constant bit width): on the CPU
    the in-place chain, on CUDA torch's fused kernels where they take the operands. Anything else
    (another rounding rule, tensor bounds of a learned bit width) runs the reference formula.
    `zero_point_is_zero` and `never_clips` are the shortcuts of `fast_fake_quant`.
    """
    if round_fn is None:
        if not x.is_cuda:
            return fast_fake_quant(x, scale, zero_point, lo, hi, zero_point_is_zero, never_clips)
        if can_fuse(x, scale, lo, hi):
            axis = fused_axis(x, scale)
            if axis is not False and (zero_point.numel() == 1 or fused_axis(x, zero_point) == axis):
                return fused_fake_quant(x, scale, zero_point, lo, hi, axis)
        round_fn = round_ste
    return reference_fake_quant(x, scale, zero_point, lo, hi, round_fn)

"""Activation quantizers of a recurrence, prepared once per forward and applied at every timestep.

A recurrent layer quantizes a few small tensors per timestep (gate accumulators, gate activations,
cell state, hidden state). Once statistics collection is over (and always in eval mode) a
quantizer's scale does not depend on the tensor it quantizes, so `StepQuant` reads scale, zero
point and integer range once per forward ("fixed" mode) and a timestep costs a short in-place chain

    value = (clamp(round(x * (1 / scale)) + zero_point, lo, hi) - zero_point) * scale

which is what `torch.fake_quantize_per_tensor_affine` computes (it also multiplies by the float32
reciprocal), so all paths give the same values. The quantizers of several gates quantize the equal
chunks of one `(batch, G * chunk)` tensor in one call: their scales are repeated into a row.
Integer ranges of equal width share one clamp through a zero-point shift (uint8 [0, 255] is int8
[-128, 127] shifted by 128). While a quantizer collects statistics in training ("dynamic" mode), or
when it is not an integer quantizer with a fixed scale, each timestep runs the quantizer's
components: every timestep is then one statistics step, as for the same quantizer called in a loop
(Brevitas counts steps the same way; one update per forward would stretch `collect_stats_steps` over
32x more forwards for a 32-step sequence, and the scale of step t needs step t's statistic anyway).
Without autograd a plain integer quantizer runs its scaling and zero-point components and then the
quantization chain here, which also fills the straight-through mask (`_dynamic_into`). Loops announce
their length (`begin`/`end`): quantizers collecting a per-tensor percentile then run all chunks of a
step in one pass and fold the sequence's statistics in once (`stats.py`).

For the hand-written backward pass of a sequence (`bptt.py`) a `StepRecord` keeps, per
timestep, the straight-through mask (1 inside the clamp range) and, for learned scales, what the
scale gradient needs (LSQ: d value / d scale = q - zero_point - (x / scale) * inside), reduced over
all timesteps at once after the backward loop.
"""

import functools
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from quantframe.core.functional import can_fuse, fused_fake_quant, reference_fake_quant
from quantframe.core.scaling import ConstScaling, ParameterFromStatsScaling, ParameterScaling
from quantframe.core.tensor_quant import IntTensorQuant as IntQuant
from quantframe.core.zero_point import ParameterFromStatsZeroPoint, ZeroZeroPoint
from quantframe.layers.recurrent.stats import BatchedCollection, divide_and_quantize_into
from quantframe.proxy.act import ActQuantProxy

_FIXED = (ConstScaling, ParameterScaling, ZeroZeroPoint)
_FIXED_AFTER_STATS = (ParameterFromStatsScaling, ParameterFromStatsZeroPoint)


def _fixed_now(component: object) -> bool:
    """Whether a scaling / zero-point component's output is independent of the tensor right now."""
    if isinstance(component, _FIXED):
        return True
    if isinstance(component, _FIXED_AFTER_STATS):
        return not (component.training and component.collector.collecting)
    return False


def _plain_int(proxy: ActQuantProxy) -> IntQuant | None:
    """The IntQuant of a round-to-nearest, constant-bit-width, per-tensor quantizer, else None."""
    tq = proxy.tensor_quant
    if type(tq) is not IntQuant or not tq.fusable_rounding or tq.group_size is not None:
        return None
    return tq


def _fixed_params(proxy: ActQuantProxy) -> tuple[Tensor, Tensor | None, int, int, Tensor] | None:
    """(scale, zero_point or None if symmetric, lo, hi, bit_width) of a tensor-independent scale, else None.

    Reading the scale of a `ParameterFromStatsScaling` that has just finished collecting initialises
    its learned parameter: one step per forward, as for any layer.
    """
    tq = _plain_int(proxy)
    if tq is None or not (_fixed_now(tq.scaling_impl) and _fixed_now(tq.zero_point_impl)):
        return None
    scale = tq.scaling_impl(None, tq.divisor)
    zero_impl = tq.zero_point_impl
    zero_point = None if isinstance(zero_impl, ZeroZeroPoint) else zero_impl(None, scale, tq.max_value)
    return scale, zero_point, tq.min_value, tq.max_value, tq.bit_width_impl()


def _detached_stats(proxy: ActQuantProxy) -> bool:
    """Whether a dynamic quantizer's per-step scale and zero point carry no gradient (statistics)."""
    tq = _plain_int(proxy)
    if tq is None:
        return False
    components = (tq.scaling_impl, tq.zero_point_impl)
    return all(
        isinstance(c, ZeroZeroPoint) or isinstance(c, _FIXED_AFTER_STATS) and not _fixed_now(c)
        for c in components
    )


class StepRecord:
    """What one quantizer's timesteps leave for the backward pass.

    `mask` (steps, *shape) is the straight-through mask, 1.0 inside the clamp range (in the data's
    dtype, so that applying it needs no conversion). With a learned scale, `term` holds
    d value / d scale / scale = levels - zero_point - (x / scale) * inside per element, and the
    backward loop accumulates grad * term into `accum` (one in-cache product per step instead of a
    pass over the whole sequence); the scale gradient is its sum. `scaled` and `levels` are one
    timestep of scratch. The `*_at` lists hold each timestep's view, so loops index a list.
    """

    __slots__ = ("mask", "mask_at", "term", "term_at", "accum", "scaled", "levels")

    def __init__(self, steps: int, shape: tuple[int, ...], like: Tensor, scale_grad: bool):
        self.mask = like.new_empty((steps, *shape))
        self.mask_at = self.mask.unbind(0)
        self.scaled, self.levels = like.new_empty(shape), like.new_empty(shape)
        self.term, self.term_at, self.accum = None, (), None
        if scale_grad:
            self.term = like.new_empty((steps, *shape))
            self.term_at = self.term.unbind(0)
            self.accum = like.new_zeros(shape)

    @staticmethod
    def start_backward(records: Sequence["StepRecord | None"]) -> None:
        """Zero the scale-gradient sums (a graph kept with retain_graph may be differentiated again)."""
        for record in records:
            if record is not None and record.accum is not None:
                record.accum.zero_()


class StepQuant:
    """The quantizers of the G equal chunks (width `chunk`) of a `(batch, G * chunk)` tensor.

    Built once per forward with the quantizers' current scales. `quant(x)` returns a new tensor
    through autograd; `apply(x, out, record, t)` writes the quantized `x` into `out` (which may be
    `x`) without autograd, filling `record` at timestep `t` when given. Proxies may repeat (a
    quantizer shared by several gates) or be disabled (chunk left as is).
    """

    def __init__(self, proxies: Sequence[ActQuantProxy], chunk: int, dtype: torch.dtype = torch.float32):
        self.proxies = list(proxies)
        self.chunk = chunk
        self.meta: tuple | None = None
        self.scale_grad = False
        enabled = [p.is_quant_enabled for p in self.proxies]
        self.mode = "identity" if not any(enabled) else "dynamic"
        self.plain = all(not p.is_quant_enabled or _plain_int(p) is not None for p in self.proxies)
        self.dtype = dtype
        self.batched: BatchedCollection | None = None
        self.bptt = all(not p.is_quant_enabled or _detached_stats(p) for p in self.proxies)
        if self.mode == "identity" or not all(enabled):
            return
        distinct = list({id(p): p for p in self.proxies}.values())
        fixed = {id(p): _fixed_params(p) for p in distinct}
        if any(f is None for f in fixed.values()):
            return
        params = [fixed[id(p)] for p in self.proxies]
        lo, hi = params[0][2], params[0][3]
        if any(f[3] - f[2] != hi - lo for f in params):
            return  # ranges of different widths cannot share one clamp: quantize chunk by chunk
        self.mode, self.lo, self.hi, self.fuse = "fixed", lo, hi, None
        # ranges [lo_c, hi_c] of one width become [lo, hi] through the zero point (uint8 = int8 + 128)
        shifts = [lo - f[2] for f in params]
        zero_points = [f[1] for f in params]
        if len(distinct) == 1:
            scale, zero_point, _, _, bit_width = params[0]
            if zero_point is None:
                zero_point = distinct[0].tensor_quant.zero_point_impl.zero
            self.meta = (scale, zero_point, bit_width, distinct[0].signed)
            self.axis, self.scale, self.zero_point = None, scale, zero_point
        else:
            self.axis, self.scale = 1, torch.stack([f[0].reshape(()) for f in params])
            self.zero_point = torch.tensor(shifts, dtype=self.scale.dtype, device=self.scale.device)
            if any(z is not None for z in zero_points):
                zeros = self.scale.new_zeros(())
                self.zero_point = self.zero_point + torch.stack(
                    [(z if z is not None else zeros).reshape(()) for z in zero_points]
                )
        self.bptt = not self.zero_point.requires_grad
        self.scale_grad = self.scale.requires_grad and torch.is_grad_enabled()
        with torch.no_grad():
            inv = torch.reciprocal(self.scale.detach())  # x * (1 / scale), as torch's kernel
            rows = [self.scale.detach(), inv]
            symmetric = all(z is None for z in zero_points) and not any(shifts)
            if not symmetric:
                rows.append(self.zero_point.detach().float())
            if self.axis is not None:
                rows = [r.repeat_interleave(self.chunk).reshape(1, -1) for r in rows]
            rows = [r.to(dtype) for r in rows]
            self.scale_row, self.inv_row = rows[0], rows[1]
            self.shift_row = None if symmetric else rows[2]

    # ------------------------------------------------------------------ autograd path

    def quant(self, x: Tensor) -> Tensor:
        """The quantized `x` as a new tensor (gradients: straight-through, learned scales included)."""
        if self.mode == "identity":
            return x
        if self.mode == "dynamic":
            return self._dynamic(x, None, 0)
        if not torch.is_grad_enabled():
            return self.apply(x, torch.empty_like(x))
        if self.bptt:
            return _FixedFakeQuant.apply(x, self.grad_target(), self)
        if self.axis is None:  # a learned zero point: torch's learnable kernels
            v, scale, zero_point = x, self.scale, self.zero_point
        else:
            v = x.reshape(x.shape[0], -1, self.chunk)
            scale, zero_point = self.scale.reshape(1, -1, 1), self.zero_point.reshape(1, -1, 1)
        if self.fuse is None:
            self.fuse = can_fuse(x, self.scale, self.lo, self.hi)
        if self.fuse:
            out = fused_fake_quant(v, scale, zero_point, self.lo, self.hi, self.axis)
        else:
            out = reference_fake_quant(v, scale, zero_point, self.lo, self.hi)
        return out.reshape(x.shape)

    # ------------------------------------------------------------------ no-autograd path

    @functools.cached_property
    def collection(self) -> BatchedCollection | None:
        """The batched statistics collection of these quantizers (None: not possible), built on first use."""
        return BatchedCollection.build(self.proxies, self.chunk, self.dtype)

    def begin(self, steps: int) -> None:
        """Before `steps` timesteps of `apply`: batch their statistics steps where the quantizers allow
        (`stats.py`); `end()` after the last one folds them into the running statistics."""
        if self.mode != "dynamic" or not self.plain or torch.compiler.is_compiling():
            return  # (no state is touched otherwise: dynamo traces the loop as one graph)
        self.batched = None
        if self.collection is not None and self.collection.start(steps):
            self.batched = self.collection

    def end(self) -> None:
        """After the timesteps announced by `begin`: fold their statistics in (raises on NaN/Inf)."""
        batched = self.batched
        if batched is not None:
            self.batched = None
            batched.finish()
            if batched.groups == 1:
                self.meta = batched.meta()

    def apply(self, x: Tensor, out: Tensor, record: StepRecord | None = None, t: int = 0) -> Tensor:
        """Write the quantized `x` into `out` (may be `x`); fill `record[t]` when given. No autograd."""
        if self.mode == "identity":
            return out if out is x else out.copy_(x)
        if self.mode == "dynamic":
            if self.batched is not None:
                return self.batched.step(x, out, record, t)
            if not self.plain:
                return out.copy_(self._dynamic(x, record, t))
            return self._dynamic_into(x, out, record, t)
        if record is None:
            v = x.mul_(self.inv_row) if out is x else torch.mul(x, self.inv_row, out=out)
            v.round_()
            if self.shift_row is None:
                v.clamp_(self.lo, self.hi)
            else:
                v.add_(self.shift_row).clamp_(self.lo, self.hi).sub_(self.shift_row)
            return v.mul_(self.scale_row)
        scaled, levels, mask = record.scaled, record.levels, record.mask_at[t]
        torch.mul(x, self.inv_row, out=scaled)
        torch.round(scaled, out=out)
        if self.shift_row is not None:
            out.add_(self.shift_row)
        torch.clamp(out, self.lo, self.hi, out=levels)
        torch.eq(out, levels, out=mask)
        if self.shift_row is not None:
            levels.sub_(self.shift_row)
        if record.term is not None:
            torch.addcmul(levels, scaled, mask, value=-1, out=record.term_at[t])
        return torch.mul(levels, self.scale_row, out=out)

    def _dynamic_into(self, x: Tensor, out: Tensor, record: StepRecord | None, t: int) -> Tensor:
        """`_dynamic` of plain integer quantizers without autograd, written into `out` chunk by chunk.

        Each quantizer's scaling and zero-point components run as in its `IntQuant` (one statistics
        step per call), then the in-place chain of `fast_fake_quant` (x / scale: the bits of
        IntQuant's CPU path) fills the straight-through mask in the same pass, with no per-chunk
        tensors to concatenate: ~40% less per step than calling `tensor_quant` and recomputing the
        mask (measured on a (16, 128) chunk; statistics collection is where training pays it).
        """
        proxies = self.proxies
        whole = all(p is proxies[0] for p in proxies)
        width = x.shape[-1] if whole else self.chunk
        buffers = (x, out) if record is None else (x, out, record.scaled, record.levels, record.mask_at[t])
        for n, proxy in enumerate(proxies[:1] if whole else proxies):
            pieces = [b.narrow(-1, n * width, width) for b in buffers]  # narrow: cheaper than split
            xc, oc = pieces[0], pieces[1]
            if not proxy.is_quant_enabled:
                oc.copy_(xc)
                if record is not None:
                    pieces[4].fill_(True)
                continue
            tq = proxy.tensor_quant
            scale = tq.scaling_impl(xc, tq.divisor)
            zero_point = tq.zero_point_impl(xc, scale, tq.max_value)
            if whole:
                self.meta = (scale, zero_point, tq.bit_width_impl(), proxy.signed)
            shift = None if tq.zero_point_impl.is_zero else zero_point
            scratch = None if record is None else (pieces[2], pieces[3], pieces[4])
            divide_and_quantize_into(xc, scale, tq.min_value, tq.max_value, oc, scratch, shift)
        return out

    def _dynamic(self, x: Tensor, record: StepRecord | None, t: int) -> Tensor:
        """Each distinct quantizer's component on its chunks (statistics steps); record the masks."""
        proxies = self.proxies
        if all(p is proxies[0] for p in proxies):
            value, scale, zero_point, bit_width = proxies[0].tensor_quant(x)
            self.meta = (scale, zero_point, bit_width, proxies[0].signed)
            if record is not None:
                self._inside(x, scale, zero_point, proxies[0].tensor_quant, record.mask_at[t])
            return value
        chunks = x.split(self.chunk, dim=-1)
        masks = record.mask_at[t].split(self.chunk, dim=-1) if record is not None else [None] * len(chunks)
        values = []
        for proxy, chunk, mask in zip(proxies, chunks, masks, strict=True):
            if not proxy.is_quant_enabled:
                values.append(chunk)
                if mask is not None:
                    mask.fill_(True)
                continue
            value, scale, zero_point, _ = proxy.tensor_quant(chunk)
            if mask is not None:
                self._inside(chunk, scale, zero_point, proxy.tensor_quant, mask)
            values.append(value)
        return torch.cat(values, dim=-1)

    @staticmethod
    def _inside(x: Tensor, scale: Tensor, zero_point: Tensor, tq: IntQuant, mask: Tensor) -> None:
        levels = torch.round(x / scale) + zero_point
        torch.logical_and(levels >= tq.min_value, levels <= tq.max_value, out=mask)

    # ------------------------------------------------------------------ backward helpers

    def grad_target(self) -> Tensor | None:
        """The scale tensor a hand-written backward returns a gradient for (None: no learned scale)."""
        return self.scale if self.scale_grad else None

    def record(self, steps: int, shape: tuple[int, ...], like: Tensor) -> StepRecord | None:
        """Buffers for `steps` timesteps of `shape` tensors (None for a disabled quantizer)."""
        return None if self.mode == "identity" else StepRecord(steps, shape, like, self.scale_grad)

    @staticmethod
    def mask_grad(grad: Tensor, record: StepRecord | None, t: int, out: Tensor | None = None) -> Tensor:
        """Straight-through: `grad` zeroed outside the clamp range, into `out` (None: `grad` in place).

        With a learned scale, grad * term is first added to the record's scale-gradient sum.
        """
        if record is None:
            return grad if out is None or out is grad else out.copy_(grad)
        if record.accum is not None:
            record.accum.addcmul_(grad, record.term_at[t])
        mask = record.mask_at[t]
        return grad.mul_(mask) if out is None or out is grad else torch.mul(grad, mask, out=out)

    def scale_gradient(self, record: StepRecord | None) -> Tensor | None:
        """d loss / d scale: the sum of grad * term over all timesteps (per chunk when grouped)."""
        if not self.scale_grad or record is None:
            return None
        if self.axis is None:
            return record.accum.sum().reshape(self.scale.shape).to(self.scale.dtype)
        return record.accum.reshape(-1, len(self.proxies), self.chunk).sum(dim=(0, 2)).to(self.scale.dtype)


class _FixedFakeQuant(torch.autograd.Function):
    """`StepQuant.apply` under autograd: the in-place chain forward, straight-through and LSQ backward.

    Cheaper per element than torch's learnable fake-quant kernels, which also compute a zero-point
    gradient that a fixed zero point does not need.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor | None, quant: StepQuant) -> Tensor:
        record = quant.record(1, tuple(x.shape), x)
        ctx.record, ctx.quant = record, quant
        return quant.apply(x, torch.empty_like(x), record, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple:
        quant, record = ctx.quant, ctx.record
        StepRecord.start_backward([record])
        grad_x = quant.mask_grad(grad, record, 0, out=torch.empty_like(grad))
        return grad_x if ctx.needs_input_grad[0] else None, quant.scale_gradient(record), None

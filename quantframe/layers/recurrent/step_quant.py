"""Activation quantizers of a recurrence, prepared once per forward and applied at every timestep.

A recurrent layer quantizes a few small tensors per timestep (gate accumulators, gate activations,
cell state, hidden state). Once statistics collection is over (and always in eval mode) a
quantizer's scale does not depend on the tensor it quantizes, so `StepQuant` reads scale, zero
point and integer range once per forward ("fixed" mode) and a timestep costs the in-place chain of
`quantframe.core.fake_quant.fake_quant_into`, the quantizers' own formula (x divided by the scale).
The quantizers of several gates quantize the equal chunks of one `(batch, G * chunk)` tensor in one
call: their scales, zero points and integer bounds are repeated into rows. While a quantizer
collects statistics in training ("dynamic" mode), or when it is not an integer quantizer with a
fixed scale, each timestep computes the step's scale through the proxy: every timestep is then one
statistics step, as for the same quantizer called in a loop (Brevitas counts steps the same way;
one update per forward would stretch `collect_stats_steps` over 32x more forwards for a 32-step
sequence, and the scale of step t needs step t's statistic anyway). Without autograd a plain
integer quantizer takes the step's scale from `step_parameters` and runs the same chain, which also
fills the straight-through mask (`_dynamic_into`). Loops announce their length (`begin`/`end`):
quantizers collecting a per-tensor percentile then run all chunks of a step in one pass and fold
the sequence's statistics in once (`stats.py`).

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

from quantframe.core.fake_quant import fake_quant, fake_quant_into
from quantframe.core.ste import round_ste
from quantframe.layers.recurrent.stats import BatchedCollection
from quantframe.proxy.act import ActQuantProxy
from quantframe.tensor import QuantTensor

Bound = int | Tensor


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


def _row(values: Sequence[Tensor | int], chunk: int, dtype: torch.dtype, like: Tensor) -> Tensor:
    """One value per chunk repeated over the chunk's columns: a (1, G * chunk) row."""
    stacked = torch.stack([torch.as_tensor(v, device=like.device).reshape(()).to(dtype) for v in values])
    return stacked.repeat_interleave(chunk).reshape(1, -1)


class StepQuant:
    """The quantizers of the G equal chunks (width `chunk`) of a `(batch, G * chunk)` tensor.

    Built once per forward with the quantizers' current scales. `quant(x)` returns a new tensor
    through autograd; `apply(x, out, record, t)` writes the quantized `x` into `out` (which may be
    `x`) without autograd, filling `record` at timestep `t` when given. Proxies may repeat (a
    quantizer shared by several gates) or be disabled (chunk left as is). `fixed=False` keeps the
    per-step mode even for fixed scales: `quant` then calls every proxy on its chunk (for exports,
    whose handlers see each call).
    """

    def __init__(
        self,
        proxies: Sequence[ActQuantProxy],
        chunk: int,
        dtype: torch.dtype = torch.float32,
        fixed: bool = True,
    ):
        self.proxies = list(proxies)
        self.chunk = chunk
        self.meta: tuple | None = None
        self.scale_grad = False
        enabled = [p.is_quant_enabled for p in self.proxies]
        self.mode = "identity" if not any(enabled) else "dynamic"
        self.plain = fixed and all(not p.is_quant_enabled or p.is_plain_integer for p in self.proxies)
        self.dtype = dtype
        self.batched: BatchedCollection | None = None
        self.bptt = fixed and all(not p.is_quant_enabled or p.statistics_only for p in self.proxies)
        if not fixed or self.mode == "identity" or not all(enabled):
            return
        distinct = list({id(p): p for p in self.proxies}.values())
        if not all(p.parameters_fixed for p in distinct):
            return
        fixed_params = {id(p): p.fixed_parameters() for p in distinct}
        params = [fixed_params[id(p)] for p in self.proxies]
        lows, highs = [p.min_int for p in self.proxies], [p.max_int for p in self.proxies]
        if any(h - lo != highs[0] - lows[0] for lo, h in zip(lows, highs, strict=True)):
            return  # grids of different widths (int8 beside int4) are left to the per-chunk path
        self.mode = "fixed"
        self.lo: Bound = lows[0]
        self.hi: Bound = highs[0]
        zero_points = [z for _, z in params]
        symmetric = all(z is None for z in zero_points)
        if len(distinct) == 1:
            proxy = distinct[0]
            scale, zero_point = params[0]
            self.meta = (
                scale,
                proxy.zero_point() if zero_point is None else zero_point,
                proxy.bit_width(),
                proxy.signed,
            )
            self.axis, self.scale, self.zero_point = None, scale, zero_point
        else:
            self.axis, self.scale = 1, torch.stack([s.reshape(()) for s, _ in params])
            self.zero_point = None
            if not symmetric:
                zeros = self.scale.new_zeros(())
                self.zero_point = torch.stack([(zeros if z is None else z).reshape(()) for z in zero_points])
        self.bptt = self.zero_point is None or not self.zero_point.requires_grad
        self.scale_grad = self.scale.requires_grad and torch.is_grad_enabled()
        with torch.no_grad():
            if self.axis is None:
                self.scale_row = self.scale.detach().to(dtype)
                self.zero_row = None if symmetric else self.zero_point.detach().to(dtype)
            else:
                self.scale_row = _row(self.scale.detach().unbind(0), chunk, dtype, self.scale)
                self.zero_row = (
                    None if symmetric else _row(self.zero_point.detach().unbind(0), chunk, dtype, self.scale)
                )
            if len(set(lows)) > 1 or len(set(highs)) > 1:  # one width, several ranges (uint8 beside int8)
                self.lo, self.hi = (_row(b, chunk, dtype, self.scale) for b in (lows, highs))

    # ------------------------------------------------------------------ autograd path

    def quant(self, x: Tensor) -> Tensor:
        """The quantized `x` as a new tensor (gradients: straight-through, learned scales included)."""
        if self.mode == "identity":
            return x
        if self.mode == "dynamic":
            return self._dynamic(x)
        if not torch.is_grad_enabled():
            return self.apply(x, torch.empty_like(x))
        if self.bptt:
            return _FixedFakeQuant.apply(x, self.grad_target(), self)
        # (a learned zero point) the kernel's autograd, with gradients for scale and zero point
        scale, zero_point, symmetric = self.scale, self.zero_point, self.zero_point is None
        if self.axis is not None:
            scale = scale.repeat_interleave(self.chunk).reshape(1, -1)
            if not symmetric:
                zero_point = zero_point.repeat_interleave(self.chunk).reshape(1, -1)
        if symmetric:
            zero_point = scale.new_zeros(())
        rounding = None if isinstance(self.lo, int) else round_ste  # tensor bounds: the reference formula
        return fake_quant(x, scale, zero_point, self.lo, self.hi, rounding, zero_point_is_zero=symmetric)

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
                return out.copy_(self._dynamic(x))
            return self._dynamic_into(x, out, record, t)
        if record is None:
            return fake_quant_into(out, x, self.scale_row, self.zero_row, self.lo, self.hi)
        mask = record.mask_at[t]
        fake_quant_into(
            out, x, self.scale_row, self.zero_row, self.lo, self.hi, (record.scaled, record.levels, mask)
        )
        if record.term is not None:  # levels - (x / scale) * inside; `scaled` holds x / scale + zero point
            term = torch.addcmul(record.levels, record.scaled, mask, value=-1, out=record.term_at[t])
            if self.zero_row is not None:
                term.addcmul_(self.zero_row, mask)
        return out

    def _dynamic_into(self, x: Tensor, out: Tensor, record: StepRecord | None, t: int) -> Tensor:
        """`_dynamic` of plain integer quantizers without autograd, written into `out` chunk by chunk.

        Each quantizer computes its step's scale and zero point (one statistics step per call), then
        the in-place chain fills the straight-through mask in the same pass, with no per-chunk tensors
        to concatenate: ~40% less per step than calling the proxy and recomputing the mask (measured
        on a (16, 128) chunk; statistics collection is where training pays it).
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
            scale, zero_point = proxy.step_parameters(xc)
            if whole:
                self.meta = (scale, zero_point, proxy.bit_width(), proxy.signed)
            shift = None if proxy.zero_point_is_zero else zero_point
            scratch = None if record is None else (pieces[2], pieces[3], pieces[4])
            fake_quant_into(oc, xc, scale, shift, proxy.min_int, proxy.max_int, scratch)
        return out

    def _dynamic(self, x: Tensor) -> Tensor:
        """Each distinct quantizer called on its chunks (statistics steps, export handlers see them)."""
        proxies = self.proxies
        if all(p is proxies[0] for p in proxies):
            value = proxies[0](x)
            if isinstance(value, QuantTensor):
                self.meta = (value.scale, value.zero_point, value.bit_width, value.signed)
                value = value.value
            return value
        values = []
        for proxy, chunk in zip(proxies, x.split(self.chunk, dim=-1), strict=True):
            value = proxy(chunk) if proxy.is_quant_enabled else chunk
            values.append(value.value if isinstance(value, QuantTensor) else value)
        return torch.cat(values, dim=-1)

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

    Cheaper per element than the kernel's general autograd, which also computes a zero-point
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

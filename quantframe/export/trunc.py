"""Export of truncated average pooling (`TruncAvgPool2d`, `QuantAdaptiveAvgPool2d`).

The layer sums each window of k integers (padding counts as the integer z) and drops `shift` low bits
(`quantframe.layers.pool`). Both formats start from the window sums

    sums = AveragePool(x; count_include_pad) * k          = s * sum(int - z)

QONNX:  Trunc(sums; scale s, zero point k z, input bits, output scale s 2^shift, output bits; FLOOR)
        = (floor((round(sums / s) + k z) / 2^shift) - k z / 2^shift) * s 2^shift   (clamped to the bits)
QCDQ:   the same with standard operators: Round(sums / s) + k z -> / 2^shift -> Floor -> - z_out -> * s_out

then Div(d) when the average divides by d != 1 (QONNX; QCDQ folds d into s_out). The layer's own
torch graph cannot be exported as is: torch's exporter drops `divisor_override` of `avg_pool2d`,
which the layer uses to sum its windows.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from quantframe.core.grid import IntGrid
from quantframe.export.manager import patch_forward
from quantframe.export.qonnx import DOMAIN, constant
from quantframe.export.trace import emitted
from quantframe.layers.pool import QuantAdaptiveAvgPool2d, truncated_window_average
from quantframe.tensor import QuantTensor


def _window(module: Any, x: QuantTensor) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    """(kernel, stride, padding, divisor) of the pooling `module` for input `x`."""
    if isinstance(module, QuantAdaptiveAvgPool2d):
        kernel = module.window(tuple(int(d) for d in x.value.shape[-2:]))  # traced sizes are tensors
        return kernel, kernel, (0, 0), kernel[0] * kernel[1]
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    divisor = module.divisor_override or kernel[0] * kernel[1]
    return kernel, stride, _pair(module.padding), divisor


def _eager(module: Any, q: QuantTensor) -> QuantTensor:
    """The layer's own truncated average of `q` (traced, but dead in the graph)."""
    kernel, stride, padding, divisor = _window(module, q)

    def window_sum(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, kernel, stride, padding, False, True, 1)

    return truncated_window_average(q, window_sum, kernel[0] * kernel[1], divisor, module.bit_width)


def _trunc_nodes(g: Any, x: Any, module: Any, q: QuantTensor, out: QuantTensor, fmt: str) -> Any:
    kernel, stride, padding, divisor = _window(module, q)
    count = kernel[0] * kernel[1]
    pooled = g.op(
        "AveragePool",
        x,
        kernel_shape_i=list(kernel),
        strides_i=list(stride),
        pads_i=[padding[0], padding[1], padding[0], padding[1]],
        count_include_pad_i=1,
    )
    sums = g.op("Mul", pooled, constant(g, torch.tensor(float(count))))
    scale = q.scale.detach().float()
    offset = q.zero_point.detach().float() * count
    step = out.scale.detach().float() * divisor / scale  # 2^shift
    if fmt == "qonnx":
        grid = IntGrid.of_metadata(q.bit_width.detach().float(), bool(q.signed))
        in_bits = grid.summand_bit_width(bool(q.signed))
        trunc = g.op(
            f"{DOMAIN}::Trunc",
            sums,
            constant(g, scale),
            constant(g, offset),
            constant(g, (in_bits + (count - 1).bit_length()).reshape(())),
            constant(g, scale * step),
            constant(g, out.bit_width.detach().float().reshape(())),
            rounding_mode_s="FLOOR",
            signed_i=int(bool(q.signed)),
            narrow_i=0,
        )
        return trunc if divisor == 1 else g.op("Div", trunc, constant(g, torch.tensor(float(divisor))))
    ints = g.op("Add", g.op("Round", g.op("Div", sums, constant(g, scale))), constant(g, offset))
    shifted = g.op("Floor", g.op("Div", ints, constant(g, step.round())))
    centred = g.op("Sub", shifted, constant(g, out.zero_point.detach().float()))
    return g.op("Mul", centred, constant(g, out.scale.detach().float()))


def _attach(fmt: str) -> Callable[[Any, Any, str], Callable[[], None]]:
    def attach(session: Any, module: Any, name: str) -> Callable[[], None]:
        """Patch the pooling layer so that, while tracing, its truncation is the nodes above."""
        original = type(module).forward

        def forward(x: Tensor | QuantTensor) -> Any:
            if not session.emitting or not module.trunc:
                return original(module, x)
            q = module.input_quant(x)
            if not isinstance(q, QuantTensor) or q.scale is None:
                return original(module, q)  # raises the layer's own error
            # on a detached copy: a no-op `.to()` inside the layer's math would rebind q.value in the trace
            out = _eager(module, QuantTensor(q.value.detach(), q.scale, q.zero_point, q.bit_width, q.signed))
            value = emitted(
                q.value,
                lambda g, xv: _trunc_nodes(g, xv, module, q, out, fmt),
                "QuantframeTrunc",
                eager=out.value.detach(),
            )
            return module._package(
                QuantTensor(value, out.scale, out.zero_point, out.bit_width, out.signed, False)
            )

        return patch_forward(module, forward)

    return attach

"""One traced node group: a tensor whose nodes in the exported graph are emitted by a handler.

The TorchScript-based exporter records a `torch.autograd.Function` as one node and asks its `symbolic`
for the ONNX nodes. `emitted(x, emit)` builds such a Function on the fly: its symbolic calls
`emit(g, x)`, and its eager forward returns `x` itself. The quantization parameters were recorded in an
eager pass before tracing, so the numbers flowing through the trace only need the right shapes and
dtypes; returning `x` keeps the recorded tensors (the weights above all) out of the traced graph, where
they would be large constants that the exporter hashes and shape-infers.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Emit = Callable[[Any, Any], Any]


def emitted(x: Tensor, emit: Emit, name: str = "QuantframeExport", eager: Tensor | None = None) -> Tensor:
    """`x` (or `eager`) in eager mode; the nodes `emit(g, x)` in the graph.

    `eager`: the value to trace on when the output's shape differs from the input's (pooling). It is
    an input of the node (the tracer only follows outputs derived from inputs) that the graph drops.
    """
    if eager is None:

        def forward(ctx: Any, x: Tensor) -> Tensor:
            return x.view_as(x)

        def symbolic(g: Any, x: Any) -> Any:
            out = emit(g, x)
            out.setType(x.type())  # for ONNX shape inference
            return out
    else:

        def forward(ctx: Any, x: Tensor, eager: Tensor) -> Tensor:
            return eager.clone()

        def symbolic(g: Any, x: Any, eager: Any) -> Any:
            return emit(g, x)

    function = type(
        name,
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "symbolic": staticmethod(symbolic),
        },
    )
    return function.apply(x) if eager is None else function.apply(x, eager)


def emitted_from(source: Tensor, like: Tensor, emit: Emit, name: str = "QuantframeExport") -> Tensor:
    """`like` in eager mode; the nodes `emit(g, source)` in the graph, with `like`'s shape and dtype.

    For a weight: `source` is the stored initializer (integers, a traced buffer), `like` the float
    weight the layer's eager computation continues with.
    """

    def forward(ctx: Any, source: Tensor, like: Tensor) -> Tensor:
        return like.view_as(like)

    def symbolic(g: Any, source: Any, like: Any) -> Any:
        out = emit(g, source)
        out.setType(like.type())
        return out

    function = type(
        name,
        (torch.autograd.Function,),
        {
            "forward": staticmethod(forward),
            "symbolic": staticmethod(symbolic),
        },
    )
    return function.apply(source, like)

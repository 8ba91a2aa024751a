"""Quantized embedding: rows looked up in the quantized weight table.

The output rows are rows of the quantized weight, so with `return_quant_tensor=True` they carry its
grid: a per-tensor scale as is, a per-row (per-channel, axis 0) scale or zero point looked up with the
same indices (shape (*indices, 1)), a per-column one broadcast as is.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantframe.proxy.overrides import route_overrides
from quantframe.proxy.weight import weight_proxy
from quantframe.quantizers import Int8WeightPerTensorFloat
from quantframe.tensor import QuantTensor


class QuantEmbedding(nn.Embedding):
    """`nn.Embedding` over the weight quantized by `weight_quant`; `weight_*` keywords override it.

    `max_norm` renormalises the float weight rows (as torch does) before they are quantized.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Tensor | None = None,
        _freeze: bool = False,
        device: Any = None,
        dtype: Any = None,
        weight_quant: Any = Int8WeightPerTensorFloat,
        return_quant_tensor: bool = False,
        **kwargs: Any,
    ):
        super().__init__(
            num_embeddings,
            embedding_dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            _weight,
            _freeze,
            device,
            dtype,
        )
        owner = type(self).__name__
        routed = route_overrides(owner, kwargs, {"weight": weight_quant})
        self.weight_quant = weight_proxy(weight_quant, routed["weight"], owner, self.weight)
        if sparse and self.weight_quant.is_quant_enabled:
            raise ValueError(
                f"{owner}: sparse=True needs weight_quant=None; a quantized weight table is a dense "
                "tensor computed from the weight, its gradient cannot be sparse"
            )
        self.return_quant_tensor = bool(return_quant_tensor)

    @property
    def is_weight_quant_enabled(self) -> bool:
        return self.weight_quant.is_quant_enabled

    def quant_weight(self) -> QuantTensor:
        """The quantized weight table as a QuantTensor (None metadata when weight_quant is None)."""
        return self.weight_quant(self.weight)

    def int_weight(self) -> Tensor:
        """The integer weight table."""
        return self.quant_weight().int()

    def forward(self, input: Tensor) -> Tensor | QuantTensor:
        if self.max_norm is not None:
            with torch.no_grad():
                torch.embedding_renorm_(self.weight, input.contiguous(), self.max_norm, self.norm_type)
        weight = self.weight_quant(self.weight)
        out = F.embedding(
            input, weight.value, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq, self.sparse
        )
        if not self.return_quant_tensor or weight.scale is None:
            return out
        meta = (_rows(input, m) for m in (weight.scale, weight.zero_point, weight.bit_width))
        return QuantTensor(out, *meta, weight.signed, weight.training)


def _rows(input: Tensor, meta: Tensor) -> Tensor:
    """Metadata of the looked-up rows: per-tensor as is, per-row looked up like the rows themselves."""
    if meta.numel() == 1:
        return meta
    meta = meta.reshape(1, -1) if meta.dim() < 2 else meta
    if meta.shape[0] == 1:
        return meta
    return F.embedding(input, meta)

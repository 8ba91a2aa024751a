"""Quantized dropout: the identity in eval mode; in training the kept levels stay on a rescaled grid.

Training-mode dropout zeroes elements and multiplies the others by 1 / (1 - p). On a QuantTensor
(scale s, zero point z) the kept values are (int - z) * s / (1 - p) and a dropped value 0 is the
integer z, so the result is exactly on the grid with scale s / (1 - p) and the same zero point and
integers. A bipolar (1-bit signed) grid has no 0 level: its output is reported as 2-bit signed.
p = 1 zeroes everything and returns a plain tensor. The rule is `quantframe.tensor.ops.dropout`,
which `F.dropout` on a QuantTensor follows too, so the module and the function agree.
"""

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from quantframe.tensor import QuantTensor


class QuantDropout(nn.Dropout):
    """`nn.Dropout` that keeps a QuantTensor input's grid (rescaled in training, see the module docstring)."""

    def __init__(self, p: float = 0.5, inplace: bool = False, return_quant_tensor: bool = True):
        super().__init__(p, inplace)
        self.return_quant_tensor = bool(return_quant_tensor)

    def forward(self, x: Tensor | QuantTensor) -> Any:
        if not isinstance(x, QuantTensor):
            return super().forward(x)
        if not self.training or self.p == 0:
            return x if self.return_quant_tensor else x.value
        out = F.dropout(x, self.p, self.training, self.inplace)  # the QuantTensor rule: tensor.ops.dropout
        return out if self.return_quant_tensor or not isinstance(out, QuantTensor) else out.value

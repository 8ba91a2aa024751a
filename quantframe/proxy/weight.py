"""Weight quantizer proxy: quantizes the weights it tracks, with an eval-mode cache."""

from typing import Any

import torch
from torch import Tensor, nn

from quantframe.proxy.base import QuantProxy, shared_or_none
from quantframe.tensor import QuantTensor


class WeightQuantProxy(QuantProxy):
    """Quantizes a layer's weight. Shared between layers, its scale comes from all tracked weights.

    In eval mode without autograd the quantized weight is computed once and reused until the
    weight (its storage or in-place version), the proxy's parameters/buffers or the mode change.
    """

    role = "weight"

    def __init__(
        self,
        quant: type | None,
        overrides: dict[str, Any] | None,
        owner: str,
        weight: nn.Parameter,
        argument: str = "weight_quant",
    ):
        super().__init__(quant, overrides, owner, {"tracked_shape": tuple(weight.shape)}, argument)
        group_size = self.attributes.get("group_size")
        if self.attributes.get("scaling_per_group") and weight.shape[1] % group_size:
            raise ValueError(
                f"{owner}: {self.quant_name}.group_size = {group_size} does not divide the weight's "
                f"{weight.shape[1]} input channels; allowed: a divisor of {weight.shape[1]}"
            )
        self.tracked: list[nn.Parameter] = [weight]
        self._cache: dict[int, tuple[tuple, QuantTensor]] = {}

    def track(self, weight: nn.Parameter, owner: str) -> None:
        """Serve one more weight (sharing); its statistics join the others'."""
        if self.attributes.get("scaling_per_group"):
            raise ValueError(f"{owner}: a per-group weight quantizer cannot be shared between layers")
        if self.attributes.get("scaling_per_output_channel") and weight.shape[0] != self.tracked[0].shape[0]:
            raise ValueError(
                f"{owner}: a shared per-channel weight quantizer needs the same number of output "
                f"channels ({weight.shape[0]} vs {self.tracked[0].shape[0]})"
            )
        if all(w is not weight for w in self.tracked):
            self.tracked.append(weight)
        self._cache.clear()

    def forward(self, weight: Tensor) -> QuantTensor:
        if self.tensor_quant is None:
            return QuantTensor(weight)
        use_cache = not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if use_cache:
            key = self._cache_key(weight)
            hit = self._cache.get(id(weight))
            if hit is not None and hit[0] == key:
                return hit[1]
        value, scale, zero_point, bit_width = self.tensor_quant(weight, self._stats_input())
        out = QuantTensor(value, scale, zero_point, bit_width, self.signed, self.training)
        if use_cache:
            self._cache[id(weight)] = (key, out)
        return out

    def _stats_input(self) -> Tensor | None:
        if len(self.tracked) == 1:
            return None
        first = self.tracked[0]
        if self.attributes.get("scaling_per_output_channel"):
            flat = torch.cat([w.reshape(w.shape[0], -1) for w in self.tracked], dim=1)
            return flat.reshape(first.shape[0], -1, *([1] * (first.dim() - 2)))
        return torch.cat([w.reshape(-1) for w in self.tracked])

    def _cache_key(self, weight: Tensor) -> tuple:
        state = tuple(t._version for t in self.tensor_quant.parameters())
        tracked = tuple((w.data_ptr(), w._version) for w in self.tracked) if len(self.tracked) > 1 else ()
        # shape and stride too: id() of a dead view can be reused by another view of the same storage
        where = (weight.data_ptr(), weight._version, weight.shape, weight.stride())
        return (*where, weight.dtype, weight.device, state, tracked)

    def train(self, mode: bool = True) -> "WeightQuantProxy":
        if mode != self.training:  # a no-op switch (torch.onnx.export's eval()) keeps the cache
            self._cache.clear()
        return super().train(mode)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_cache"] = {}
        return state

    def _current(self) -> QuantTensor:
        with torch.no_grad():
            return self(self.tracked[0])

    def scale(self) -> Tensor | None:
        """The scale of the (first) tracked weight."""
        return self._current().scale if self.tensor_quant is not None else None

    def zero_point(self) -> Tensor | None:
        return self._current().zero_point if self.tensor_quant is not None else None


def weight_proxy(quant: Any, overrides: dict[str, Any], owner: str, weight: nn.Parameter) -> WeightQuantProxy:
    """A new proxy for a class or None; a shared proxy module starts tracking `weight` too."""
    shared = shared_or_none(quant, WeightQuantProxy, overrides, owner, "weight_quant")
    if shared is None:
        return WeightQuantProxy(quant, overrides, owner, weight)
    shared.track(weight, owner)
    return shared

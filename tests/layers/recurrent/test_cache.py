"""quantframe.layers.recurrent.cache: prepared quantizers and weights kept between eval forwards."""

import torch

from quantframe.layers.recurrent.cache import EvalCache
from tests.helpers import learned_proxy


def test_eval_cache_reuses_until_state_changes():
    proxy = learned_proxy(threshold=2.0).eval()
    cache = EvalCache()
    with torch.no_grad():
        first = cache.step_quant("io", [proxy], 8, torch.float32)
        assert cache.step_quant("io", [proxy], 8, torch.float32) is first
        proxy.tensor_quant.scaling_impl.value.mul_(2)
        second = cache.step_quant("io", [proxy], 8, torch.float32)
        assert second is not first and torch.equal(second.scale, first.scale * 2)
        weight = torch.ones(3)
        calls = []
        assert cache.memo("w", (weight,), lambda: calls.append(1) or weight * 2) is cache.memo(
            "w", (weight,), lambda: calls.append(1) or weight * 2
        )
        weight.add_(1)
        again = cache.memo("w", (weight,), lambda: calls.append(1) or weight * 2)
        assert torch.equal(again, torch.full((3,), 4.0))
        assert len(calls) == 2

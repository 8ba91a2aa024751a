"""quantframe.proxy.base: the API a proxy offers callers outside core (grid, collection, loading)."""

import pytest
import torch
from torch import nn

from quantframe.enums import FloatToIntImplType
from quantframe.proxy.act import ActQuantProxy, act_proxy
from quantframe.proxy.base import shared_or_none
from quantframe.proxy.bias import BiasQuantProxy
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.quantizers import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8ActPerTensorFloatMinMaxInit,
    Int8WeightPerTensorFloat,
    Int32Bias,
    ShiftedUint8ActPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedTernaryActPerTensorConst,
    Uint8ActPerTensorFloat,
)


def _x(seed=0, n=1000):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_grid_of_an_int8_and_a_uint4_quantizer():
    signed = ActQuantProxy(Int8ActPerTensorFloat, {}, "L")
    assert (signed.min_int, signed.max_int, signed.divisor) == (-128, 127, 128)
    unsigned = ActQuantProxy(Uint8ActPerTensorFloat, {"bit_width": 4}, "L")
    assert (unsigned.min_int, unsigned.max_int, unsigned.divisor) == (0, 15, 15)
    narrow = WeightQuantProxy(Int8WeightPerTensorFloat, {}, "L", nn.Parameter(torch.randn(3, 4)))
    assert (narrow.min_int, narrow.max_int, narrow.divisor) == (-127, 127, 127)
    assert signed.has_constant_bit_width and signed.rounding == FloatToIntImplType.ROUND


def test_zero_point_and_ternary_threshold_flags():
    assert ActQuantProxy(Int8ActPerTensorFloat, {}, "L").zero_point_is_zero
    assert not ActQuantProxy(ShiftedUint8ActPerTensorFloat, {}, "L").zero_point_is_zero
    assert ActQuantProxy(SignedTernaryActPerTensorConst, {}, "L").ternary_threshold == 0.5
    assert ActQuantProxy(SignedBinaryActPerTensorConst, {}, "L").ternary_threshold is None


def test_collection_state_follows_the_steps():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 2}, "L")
    assert proxy.collects_statistics and proxy.is_collecting
    assert (proxy.steps_seen, proxy.collect_stats_steps) == (0, 2)
    proxy(_x(0))
    proxy(_x(1))
    assert proxy.steps_seen == 2 and not proxy.is_collecting
    proxy.eval()
    assert not proxy.is_collecting
    constant = ActQuantProxy(SignedBinaryActPerTensorConst, {}, "L")
    assert not constant.collects_statistics and not constant.is_collecting and constant.steps_seen == 0


def test_finish_collection_makes_the_statistics_the_learned_parameters():
    proxy = ActQuantProxy(ShiftedUint8ActPerTensorFloat, {"collect_stats_steps": 10}, "L")
    proxy(_x(0) + 0.5)
    proxy.eval()
    before = (proxy.scale().clone(), proxy.zero_point().clone())
    proxy.finish_collection()
    assert not proxy.train().is_collecting
    proxy.eval()
    assert torch.allclose(proxy.scale(), before[0]) and torch.equal(proxy.zero_point(), before[1])
    scaling = proxy.tensor_quant.scaling_impl
    assert scaling.learning and torch.allclose(scaling.value, scaling.collector.value)


def test_collecting_all_steps_restarts_and_restores_the_settings():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 3}, "L")
    proxy(_x(0) * 10)
    collector = proxy.tensor_quant.scaling_impl.collector
    momentum = collector.momentum
    with proxy.collecting_all_steps():
        assert proxy.steps_seen == 0 and collector.momentum is None
        for seed in range(5):
            proxy(_x(seed))
        assert proxy.is_collecting and proxy.steps_seen == 5
    assert (proxy.collect_stats_steps, collector.momentum) == (3, momentum)


@pytest.mark.parametrize(
    "quant", [Int8ActPerTensorFloat, Int8ActPerTensorFixedPoint, ShiftedUint8ActPerTensorFloat]
)
def test_load_parameters_sets_the_scale_and_zero_point(quant):
    proxy = ActQuantProxy(quant, {}, "L").eval()
    scale = torch.tensor(2.0**-5)
    zero_point = None if proxy.zero_point_is_zero else torch.tensor([7.0])
    proxy.load_parameters(scale, zero_point)
    assert torch.allclose(proxy.scale(), scale, rtol=1e-5)
    if zero_point is not None:
        assert proxy.zero_point().item() == 7.0
    assert not proxy.train().is_collecting


def test_load_parameters_leaves_a_learned_scale_without_statistics_learned():
    proxy = ActQuantProxy(Int8ActPerTensorFloatMinMaxInit, {"min_val": -3.0, "max_val": 2.0}, "L")
    proxy.load_parameters(torch.tensor(0.25))
    assert torch.allclose(proxy.scale(), torch.tensor(0.25))


def test_shared_or_none():
    proxy = act_proxy(Int8ActPerTensorFloat, {}, "A", "input_quant")
    assert shared_or_none(proxy, ActQuantProxy, {}, "B", "input_quant") is proxy
    assert shared_or_none(Int8ActPerTensorFloat, ActQuantProxy, {}, "B", "input_quant") is None
    assert shared_or_none(proxy, BiasQuantProxy, {}, "B", "bias_quant") is None
    with pytest.raises(TypeError, match=r"B: cannot override \['bit_width'\] of a shared input_quant"):
        shared_or_none(proxy, ActQuantProxy, {"bit_width": 4}, "B", "input_quant")
    assert BiasQuantProxy(Int32Bias, {}, "L").min_int is None  # its grid follows its input

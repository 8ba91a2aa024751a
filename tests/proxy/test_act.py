"""quantframe.proxy.act: ActQuantProxy resolution, disabled pass-through, requantization, sharing."""

import pytest
import torch

from quantframe import QuantTensor
from quantframe.proxy.act import ActQuantProxy, act_proxy
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFloat,
    ShiftedUint8ActPerTensorFloat,
    SignedBinaryActPerTensorConst,
    Uint8ActPerTensorFloat,
)


def _x(seed=0, n=1000):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_disabled_returns_the_input_unchanged():
    proxy = ActQuantProxy(None, {}, "MyLayer")
    x = _x()
    assert proxy(x) is x
    qt = QuantTensor(x, torch.tensor(1.0), torch.tensor(0.0), torch.tensor(8.0), True, False)
    assert proxy(qt) is qt
    assert proxy.scale() is None and proxy.zero_point() is None and proxy.bit_width() is None


def test_output_metadata():
    proxy = ActQuantProxy(Uint8ActPerTensorFloat, {"bit_width": 4}, "MyLayer")
    qt = proxy(_x().abs())
    assert not qt.signed and qt.training and qt.bit_width.item() == 4
    assert not proxy.signed and not proxy.narrow_range
    proxy.eval()
    assert proxy(_x()).training is False


def test_quant_tensor_input_is_requantized():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {}, "MyLayer")
    proxy(_x())
    proxy.eval()
    coarse = QuantTensor(_x(1) * 3, torch.tensor(0.5), torch.tensor(0.0), torch.tensor(16.0), True, False)
    out = proxy(coarse)
    assert torch.equal(out.scale, proxy.scale())
    assert torch.equal(out.value, proxy(coarse.value).value)


def test_scale_and_zero_point_match_an_eval_forward():
    proxy = ActQuantProxy(ShiftedUint8ActPerTensorFloat, {"collect_stats_steps": 2}, "MyLayer")
    for step in range(4):
        proxy.train()
        proxy(_x(step) + 0.5)
        proxy.eval()
        qt = proxy(_x(9))
        assert torch.equal(proxy.scale(), qt.scale)
        assert torch.equal(proxy.zero_point(), qt.zero_point)
    constant = ActQuantProxy(SignedBinaryActPerTensorConst, {}, "MyLayer")
    assert constant.scale().item() == 1.0 and constant.zero_point().item() == 0.0


def test_sharing_returns_the_same_module():
    proxy = act_proxy(Int8ActPerTensorFloat, {}, "First", "input_quant")
    assert act_proxy(proxy, {}, "Second", "input_quant") is proxy
    with pytest.raises(TypeError, match="Second: cannot override"):
        act_proxy(proxy, {"bit_width": 4}, "Second", "input_quant")


def test_wrong_kind_of_quantizer_is_rejected():
    with pytest.raises(
        TypeError, match="MyLayer: input_quant=Int8WeightPerTensorFloat is a weight quantizer"
    ):
        act_proxy(Int8WeightPerTensorFloat, {}, "MyLayer", "input_quant")


def test_scale_follows_a_learned_bit_width():
    overrides = {"bit_width_impl_type": "PARAMETER", "bit_width": 6, "collect_stats_steps": 1}
    proxy = ActQuantProxy(Int8ActPerTensorFloat, overrides, "MyLayer")
    proxy(_x())
    proxy(_x(1))
    with torch.no_grad():
        proxy.tensor_quant.bit_width_impl.offset.fill_(2.0)  # 2 + 2 = 4 bits
    proxy.eval()
    qt = proxy(_x(2))
    assert qt.bit_width.item() == 4 and qt.is_valid
    assert torch.equal(proxy.scale(), qt.scale)
    threshold = proxy.tensor_quant.scaling_impl.value
    assert torch.allclose(qt.scale, threshold / 8)


def test_step_api_reproduces_the_forward_of_a_collecting_quantizer():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 4}, "MyLayer")
    twin = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 4}, "MyLayer")
    assert proxy.is_plain_integer and proxy.statistics_only and not proxy.parameters_fixed
    x = _x(3)
    scale, zero_point = proxy.step_parameters(x)
    levels = torch.clamp(torch.round(x / scale + zero_point), proxy.min_int, proxy.max_int)
    expected = twin(x)
    assert torch.equal((levels - zero_point) * scale, expected.value)
    assert torch.equal(scale, expected.scale) and proxy.steps_seen == 1


def test_step_api_threshold_and_many_statistics_at_once():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 8}, "MyLayer")
    twin = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 8}, "MyLayer")
    q, absolute = proxy.scale_statistic
    assert absolute and 0 < q <= 100
    assert proxy.scale_rule == twin.scale_rule
    xs = [_x(seed) for seed in range(3)]
    stats = []
    for x in xs:
        stats.append(twin.tensor_quant.scaling_impl.stats(x))
        assert torch.equal(proxy.scale_from_threshold(stats[-1]), twin(x).scale)
    proxy.collect_statistics(torch.stack(stats))
    assert proxy.steps_seen == twin.steps_seen == 3
    proxy.eval()
    assert torch.allclose(proxy.scale(), twin.eval().scale())


def test_fixed_parameters_after_collection():
    proxy = ActQuantProxy(ShiftedUint8ActPerTensorFloat, {"collect_stats_steps": 1}, "MyLayer")
    proxy(_x(0) + 0.5)
    proxy.eval()
    assert proxy.parameters_fixed and not proxy.statistics_only
    scale, zero_point = proxy.fixed_parameters()
    qt = proxy(_x(1))
    assert torch.equal(scale, qt.scale) and torch.equal(zero_point, qt.zero_point)
    symmetric = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 1}, "MyLayer").eval()
    assert symmetric.fixed_parameters()[1] is None
    assert not ActQuantProxy(SignedBinaryActPerTensorConst, {}, "MyLayer").is_plain_integer

"""Activation quantizers (quantframe.quantizers.act): statistics, the switch to a learned scale, eval.

Percentiles are recomputed with `kthvalue` at rank k = floor(q/100 * n + 0.5); the EMA is replayed
by hand (first step initialises, then buf = 0.9 buf + 0.1 new).
"""

import math

import pytest
import torch

from quantframe.proxy.act import ActQuantProxy
from quantframe.quantizers import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8ActPerTensorFloatMinMaxInit,
    ShiftedUint8ActPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedTernaryActPerTensorConst,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)


def _batch(step, n=5000):
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(n, generator=generator) * (1.0 + 0.3 * step)


def _percentile(values, q=99.999):
    k = min(max(int(math.floor(0.01 * q * values.numel() + 0.5)), 1), values.numel())
    return values.flatten().kthvalue(k).values


@pytest.mark.parametrize(
    "quant, divisor, absolute",
    [(Int8ActPerTensorFloat, 128, True), (Uint8ActPerTensorFloat, 255, False)],
)
def test_statistics_then_learned_scale(quant, divisor, absolute):
    steps = 4
    proxy = ActQuantProxy(quant, {"collect_stats_steps": steps}, "test")
    assert quant.collect_stats_steps == 300 and quant.high_percentile_q == 99.999
    buffer = None
    for step in range(steps):
        x = _batch(step)
        stat = _percentile(x.abs() if absolute else x)
        buffer = stat if buffer is None else 0.9 * buffer + 0.1 * stat
        qt = proxy(x)
        assert torch.allclose(qt.scale, stat / divisor, rtol=1e-6)  # this batch's statistic
        assert qt.is_valid
    scaling = proxy.tensor_quant.scaling_impl
    assert torch.allclose(scaling.collector.value, buffer, rtol=1e-6)
    assert scaling.collector.steps.item() == steps
    qt = proxy(_batch(99))  # the switch: the learned parameter is initialised from the buffer
    assert scaling.value.item() == scaling.collector.value.item()
    assert torch.allclose(qt.scale, buffer / divisor, rtol=1e-6)
    assert qt.scale.requires_grad
    qt.value.pow(2).sum().backward()
    assert scaling.value.grad is not None and scaling.value.grad.item() != 0
    proxy.eval()
    assert torch.allclose(proxy(_batch(7)).scale, buffer / divisor, rtol=1e-6)
    assert torch.allclose(proxy.scale(), buffer / divisor, rtol=1e-6)


def test_eval_before_collection_finishes_uses_statistics_so_far():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {}, "test")
    first, second = _batch(0), _batch(1)
    proxy(first)
    proxy(second)
    expected = 0.9 * _percentile(first.abs()) + 0.1 * _percentile(second.abs())
    proxy.eval()
    x = _batch(5) * 10
    qt = proxy(x)
    assert torch.allclose(qt.scale, expected / 128, rtol=1e-6)
    assert qt.is_valid
    assert qt.int().max() == 127 and qt.int().min() == -128  # clipped to the stored range
    assert proxy.tensor_quant.scaling_impl.collector.steps.item() == 2


def test_eval_with_no_statistics_is_initialised():
    proxy = ActQuantProxy(Uint8ActPerTensorFloat, {}, "test").eval()
    qt = proxy(torch.rand(10))
    assert torch.isfinite(qt.scale) and qt.scale.item() == pytest.approx(1.0 / 255)


def test_learned_scale_is_optimised_by_sgd():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4000, generator=generator)
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 1, "bit_width": 4}, "test")
    proxy(x * 4)  # a deliberately poor statistic: threshold 4x too large
    optimiser = torch.optim.SGD(proxy.parameters(), lr=10.0)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = (proxy(x).value - x).pow(2).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    assert proxy.tensor_quant.scaling_impl.value.item() < 2 * _percentile(x.abs()).item()


def test_non_finite_statistic_raises_naming_quantizer_and_keeps_state():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {}, "MyLayer")
    proxy(_batch(0))
    collector = proxy.tensor_quant.scaling_impl.collector
    before = collector.value.clone()
    for bad in (float("nan"), float("inf")):
        x = _batch(1, n=100)
        x[3] = bad
        with pytest.raises(ValueError, match="Int8ActPerTensorFloat"):
            proxy(x)
        assert torch.equal(collector.value, before) and collector.steps.item() == 1


def test_fixed_point_activations():
    for quant, divisor in ((Int8ActPerTensorFixedPoint, 128), (Uint8ActPerTensorFixedPoint, 255)):
        proxy = ActQuantProxy(quant, {}, "test")
        x = _batch(2)
        stat = _percentile(x.abs() if divisor == 128 else x).item()
        qt = proxy(x)
        assert qt.scale.item() == 2.0 ** math.ceil(math.log2(stat / divisor))
        assert qt.is_valid


def test_shifted_uint8_activation():
    proxy = ActQuantProxy(ShiftedUint8ActPerTensorFloat, {}, "test")
    x = _batch(3) + 1.0
    qt = proxy(x)
    high, low = _percentile(x, 99.999), _percentile(x, 0.001)
    scale = (high - low) / 255
    assert torch.allclose(qt.scale, scale, rtol=1e-6)
    assert qt.zero_point.item() == torch.round(-low / scale).item()
    assert not qt.signed and qt.is_valid
    proxy.eval()
    assert torch.allclose(proxy.zero_point(), qt.zero_point)


def test_min_max_init_activation():
    proxy = ActQuantProxy(Int8ActPerTensorFloatMinMaxInit, {"min_val": -3.0, "max_val": 2.0}, "test")
    qt = proxy(_batch(0))
    assert qt.scale.item() == pytest.approx(3.0 / 128)
    assert set(proxy.state_dict()) == {"tensor_quant.scaling_impl.value"}


def test_binary_and_ternary_activations():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.6])
    assert torch.equal(
        ActQuantProxy(SignedBinaryActPerTensorConst, {}, "t")(x).value, torch.tensor([-1.0, -1, 1, 1])
    )
    assert torch.equal(
        ActQuantProxy(SignedTernaryActPerTensorConst, {}, "t")(x).value, torch.tensor([-1.0, 0, 0, 1])
    )


def test_statistics_collection_under_calibration_style_no_grad():
    proxy = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 1}, "test")
    with torch.no_grad():
        proxy(_batch(0))
        proxy(_batch(1))  # the switch under no_grad still initialises the parameter
    scaling = proxy.tensor_quant.scaling_impl
    assert scaling.learning and scaling.value.item() == pytest.approx(_percentile(_batch(0).abs()).item())


INT_ACT_QUANTIZERS = [
    Int8ActPerTensorFloat,
    Uint8ActPerTensorFloat,
    Int8ActPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
    ShiftedUint8ActPerTensorFloat,
]


@pytest.mark.parametrize("quant", INT_ACT_QUANTIZERS, ids=lambda q: q.__name__)
def test_all_zero_input_gives_the_scale_floor_without_nan(quant):
    # 2^-20 is a power of two, so the floor is the same for float and fixed-point scales
    proxy = ActQuantProxy(quant, {"collect_stats_steps": 2, "scaling_min_val": 2**-20}, "test")
    for _ in range(4):  # two collecting steps, the switch, one learning step
        x = torch.zeros(3, 5, requires_grad=True)
        qt = proxy(x)
        assert qt.scale.item() == 2**-20 and torch.equal(qt.value, torch.zeros(3, 5))
        qt.value.sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in proxy.parameters() if p.grad is not None)
        assert all(torch.isfinite(p).all() for p in proxy.parameters())
    proxy.eval()
    assert proxy(torch.zeros(3)).scale.item() == 2**-20

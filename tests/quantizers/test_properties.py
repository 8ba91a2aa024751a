"""Properties of every quantizer class's output, over random tensors (hypothesis).

For each class in WEIGHT_QUANTIZERS, ACT_QUANTIZERS and BIAS_QUANTIZERS: the QuantTensor is valid;
`int()` round-trips, `(int - zero_point) * scale == value`; `+` and `*` of two outputs follow the
bit-width rules; and quantizing an already quantized tensor again changes nothing (statistics-based
weight quantizers, and activation quantizers in eval mode).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from quantframe import QuantTensor
from quantframe.enums import ScalingImplType
from quantframe.proxy.act import ActQuantProxy
from quantframe.proxy.bias import BiasQuantProxy
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.quantizers import (
    ACT_QUANTIZERS,
    BIAS_QUANTIZERS,
    WEIGHT_QUANTIZERS,
    Int8ActPerTensorFloatMinMaxInit,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=20)
STATS_WEIGHT_QUANTIZERS = tuple(q for q in WEIGHT_QUANTIZERS if q.scaling_impl_type == ScalingImplType.STATS)


@st.composite
def tensors(draw, min_dims=1, channel_multiple=1):
    """A float32 tensor: 1-4 dims, a log-uniform magnitude, sometimes all zeros or with ties."""
    dims = draw(st.integers(min_dims, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(dims)]
    if dims >= 2:
        shape[1] = channel_multiple * draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    magnitude = 10.0 ** draw(st.floats(-4, 3))
    kind = draw(st.sampled_from(["normal", "normal", "uniform", "zeros", "levels"]))
    generator = torch.Generator().manual_seed(seed)
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "levels":  # values on a coarse grid: exact ties for the rounding
        return torch.randint(-4, 5, shape, generator=generator).float() * 0.5 * magnitude
    if kind == "uniform":
        return (torch.rand(shape, generator=generator) * 2 - 1) * magnitude
    return torch.randn(shape, generator=generator) * magnitude


def _weight_output(quant, w):
    proxy = WeightQuantProxy(quant, {}, "test", nn.Parameter(w))
    return proxy(proxy.tracked[0])


def _weight_tensor_strategy(quant):
    per_group = bool(getattr(quant, "scaling_per_group", False))
    per_channel = per_group or bool(getattr(quant, "scaling_per_output_channel", False))
    return tensors(min_dims=2 if per_channel else 1, channel_multiple=quant.group_size if per_group else 1)


def _act_proxy(quant, steps):
    overrides = {"min_val": -1.5, "max_val": 2.5} if quant is Int8ActPerTensorFloatMinMaxInit else {}
    if hasattr(quant, "collect_stats_steps"):
        overrides["collect_stats_steps"] = 2
    proxy = ActQuantProxy(quant, overrides, "test")
    for x in steps:
        proxy(x)
    return proxy


def _check_round_trip(qt: QuantTensor):
    assert qt.is_valid, qt
    ints = qt.int()
    assert not ints.is_floating_point()
    rebuilt = (ints.double() - qt.zero_point.double()) * qt.scale.double()
    assert torch.allclose(rebuilt, qt.value.double(), rtol=1e-6, atol=0), qt


def _check_add_mul(a: QuantTensor, b: QuantTensor, equal_scales: bool):
    total = a + b
    assert isinstance(total, QuantTensor)
    assert torch.allclose(total.value, a.value + b.value)
    assert torch.equal(total.zero_point, a.zero_point + b.zero_point)
    bipolar = a.bit_width.item() == 1 and a.signed
    if a.signed == b.signed and not bipolar:
        assert torch.equal(total.bit_width, torch.maximum(a.bit_width, b.bit_width) + 1)
    if equal_scales:
        assert total.is_valid
    if bool((a.zero_point == 0).all()) and bool((b.zero_point == 0).all()):
        product = a * b
        assert torch.equal(product.bit_width, a.bit_width + b.bit_width)
        assert torch.equal(product.scale, a.scale * b.scale)
        assert product.signed == (a.signed or b.signed)
        assert torch.allclose(product.value, a.value * b.value)
        assert product.is_valid


@pytest.mark.parametrize("quant", WEIGHT_QUANTIZERS, ids=lambda q: q.__name__)
def test_weight_outputs(quant):
    @SETTINGS
    @given(st.data())
    def run(data):
        w1 = data.draw(_weight_tensor_strategy(quant))
        w2 = w1.flip(0) * data.draw(st.sampled_from([1.0, 0.6, -3.0]))
        a, b = _weight_output(quant, w1), _weight_output(quant, w2)
        _check_round_trip(a)
        _check_round_trip(b)
        _check_add_mul(a, b, equal_scales=bool(torch.equal(a.scale, b.scale)))

    run()


@pytest.mark.parametrize("quant", STATS_WEIGHT_QUANTIZERS, ids=lambda q: q.__name__)
def test_requantizing_a_quantized_weight_changes_nothing(quant):
    @SETTINGS
    @given(_weight_tensor_strategy(quant))
    def run(w):
        first = _weight_output(quant, w)
        second = _weight_output(quant, first.value.detach())
        assert torch.allclose(second.scale, first.scale, rtol=1e-6, atol=0)
        assert torch.equal(second.zero_point, first.zero_point)
        assert torch.equal(second.int(), first.int())
        assert torch.allclose(second.value, first.value, rtol=1e-6, atol=0)

    run()


@pytest.mark.parametrize("quant", ACT_QUANTIZERS, ids=lambda q: q.__name__)
def test_act_outputs_train_and_eval(quant):
    @SETTINGS
    @given(st.lists(tensors(), min_size=1, max_size=4), tensors(), st.booleans())
    def run(batches, x, positive):
        if positive:  # what a ReLU would hand an unsigned quantizer
            batches, x = [t.abs() for t in batches], x.abs()
        proxy = _act_proxy(quant, batches)
        trained = proxy(x)
        _check_round_trip(trained)
        proxy.eval()
        a = proxy(x)
        b = proxy(x.flip(0) * 0.75)
        for qt in (a, b):
            _check_round_trip(qt)
            assert torch.equal(qt.scale, proxy.scale())
        _check_add_mul(a, b, equal_scales=True)
        again = proxy(a)  # a QuantTensor input is requantized: on the grid already, nothing moves
        assert torch.equal(again.int(), a.int())
        assert torch.allclose(again.value, a.value, rtol=1e-6, atol=0)

    run()


@pytest.mark.parametrize("quant", BIAS_QUANTIZERS, ids=lambda q: q.__name__)
def test_bias_outputs(quant):
    @SETTINGS
    @given(tensors(), st.floats(1e-4, 1e-1), st.lists(st.floats(1e-4, 1e-1), min_size=1, max_size=4))
    def run(values, input_scale, weight_scales):
        channels = len(weight_scales)
        bias = values.flatten().repeat(channels)[:channels].clamp(-100, 100)
        proxy = BiasQuantProxy(quant, {}, "test")
        if proxy.requires_input_scale:  # per-channel weight scales, shaped like a conv weight's
            qt = proxy(bias, torch.tensor(input_scale), torch.tensor(weight_scales).reshape(-1, 1, 1, 1))
        else:
            qt = proxy(bias)
        _check_round_trip(qt)
        _check_add_mul(qt, qt, equal_scales=True)

    run()

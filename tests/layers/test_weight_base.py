"""The shared weight-layer machinery: eval-mode weight caching, the lean forward, inspection methods,
offsets, dtypes and copies."""

import copy
import io
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from quantframe.layers import QuantConv2d, QuantLinear, weight_base
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8Bias,
    Int8BiasPerTensorFloatInternalScaling,
    ShiftedUint8ActPerTensorFloat,
    ShiftedUint8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
)
from quantframe.tensor import QuantTensor


def assert_on_grid(qt: QuantTensor, atol: float = 0.1) -> None:
    """value / scale + zero_point is an integer inside the signed/unsigned range of bit_width (float64)."""
    ints = qt.value.double() / qt.scale.double() + qt.zero_point.double()
    assert torch.allclose(ints, ints.round(), rtol=0, atol=atol)
    bits = qt.bit_width.double()
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if qt.signed else (0 * bits, 2**bits - 1)
    assert bool((ints.round() >= low).all()) and bool((ints.round() <= high).all())


def int8_reference(layer: QuantConv2d, x: torch.Tensor) -> torch.Tensor:
    """conv2d with the weight quantized by hand: scale = max|w| / 127."""
    w = layer.weight.detach()
    scale = w.abs().max() / 127
    return F.conv2d(x, torch.round(w / scale) * scale, layer.bias.detach())


@pytest.fixture
def x():
    return torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def counted():
    """A QuantConv2d whose weight tensor_quant calls are counted by a forward hook."""
    torch.manual_seed(0)
    layer = QuantConv2d(2, 3, 3)
    calls = []
    layer.weight_quant.tensor_quant.register_forward_hook(lambda *args: calls.append(1))
    return layer, calls


# ---------------------------------------------------------------- eval-mode caching


def test_eval_no_grad_quantizes_the_weight_once(counted, x):
    layer, calls = counted
    layer.eval()
    with torch.no_grad():
        first = layer(x)
        for _ in range(3):
            assert torch.equal(layer(x), first)
        layer.quant_weight()
        layer.quant_weight_scale()
    assert len(calls) == 1


def test_in_place_weight_change_invalidates_the_cache(counted, x):
    layer, calls = counted
    layer.eval()
    with torch.no_grad():
        layer(x)
        layer.weight.add_(1)
        out = layer(x)
        layer(x)
    assert len(calls) == 2
    assert torch.allclose(out, int8_reference(layer, x), rtol=0, atol=1e-6)


def test_load_state_dict_invalidates_the_cache(counted, x):
    layer, calls = counted
    layer.eval()
    torch.manual_seed(7)
    other = QuantConv2d(2, 3, 3).eval()
    with torch.no_grad():
        layer(x)
        layer.load_state_dict(other.state_dict())
        out = layer(x)
        assert torch.equal(out, other(x))
    assert len(calls) == 2


def test_train_invalidates_the_cache_and_training_never_caches(counted, x):
    layer, calls = counted
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    layer(x)
    layer(x)
    assert len(calls) == 3
    with torch.no_grad():
        layer.weight.mul_(2)
    assert torch.allclose(layer(x), int8_reference(layer, x), rtol=0, atol=1e-6)
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert len(calls) == 5


def test_eval_with_grad_enabled_does_not_cache(counted, x):
    layer, calls = counted
    layer.eval()
    layer(x)
    layer(x)
    assert len(calls) == 2


def test_optimizer_steps_are_seen(x):
    torch.manual_seed(0)
    layer = QuantConv2d(2, 3, 3)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(2):
        layer.eval()
        with torch.no_grad():
            before = layer(x)
        layer.train()
        layer(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        layer.eval()
        with torch.no_grad():
            after = layer(x)
        assert not torch.equal(before, after)
        assert torch.allclose(after, int8_reference(layer, x), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the lean forward


def test_no_accumulator_metadata_unless_returned(monkeypatch, x):
    def fail(*args, **kwargs):
        raise AssertionError("accumulator metadata computed on the lean path")

    monkeypatch.setattr(weight_base, "accumulator_bit_width", fail)
    torch.manual_seed(0)
    lean = [
        {},
        {"input_quant": Int8ActPerTensorFloat},
        {"bias_quant": Int8BiasPerTensorFloatInternalScaling},
        {
            "input_quant": Int8ActPerTensorFloat,
            "output_quant": Int8ActPerTensorFloat,
            "return_quant_tensor": True,
        },
    ]
    for kwargs in lean:
        QuantConv2d(2, 3, 3, **kwargs)(x)
    with pytest.raises(AssertionError, match="lean path"):
        QuantConv2d(2, 3, 3, input_quant=Int8ActPerTensorFloat, return_quant_tensor=True)(x)


# ---------------------------------------------------------------- inspection


def test_enabled_properties():
    internal = Int8BiasPerTensorFloatInternalScaling
    layer = QuantConv2d(2, 3, 3, bias_quant=internal, output_quant=Int8ActPerTensorFloat)
    assert layer.is_weight_quant_enabled and layer.is_bias_quant_enabled and layer.is_output_quant_enabled
    assert not layer.is_input_quant_enabled
    bare = QuantConv2d(2, 3, 3, weight_quant=None, bias=False, bias_quant=internal)
    assert not bare.is_weight_quant_enabled and not bare.is_bias_quant_enabled


def test_inspection_without_quantizers():
    layer = QuantLinear(4, 2, weight_quant=None, bias=False)
    assert layer.quant_weight_scale() is None and layer.quant_weight_bit_width() is None
    assert layer.quant_bias() is None and layer.int_bias() is None
    assert torch.equal(layer.quant_weight().value, layer.weight)
    with pytest.raises(ValueError, match=r"QuantLinear.int_weight\(\) needs a quantizer, but weight_quant"):
        layer.int_weight()
    with pytest.raises(ValueError, match=r"QuantLinear.int_bias\(\) needs a quantizer, but bias_quant"):
        QuantLinear(4, 2).int_bias()


def test_weight_zero_point_and_bit_width():
    layer = QuantLinear(4, 2)
    assert layer.quant_weight_zero_point().abs().max().item() == 0
    assert layer.quant_weight_bit_width().item() == 8


def test_quant_bias_uses_a_given_input_scale():
    torch.manual_seed(0)
    layer = QuantLinear(4, 2, bias_quant=Int8Bias)
    input_scale = torch.tensor(0.02)
    assert torch.allclose(layer.quant_bias_scale(input_scale), input_scale * layer.quant_weight_scale())
    with pytest.raises(RuntimeError, match="Input scale required"):
        layer.quant_bias()


# ---------------------------------------------------------------- offsets, copies


def test_zero_point_offsets_make_the_accumulator_signed(x):
    torch.manual_seed(0)
    layer = QuantConv2d(
        2,
        3,
        3,
        bias=False,
        weight_quant=ShiftedUint8WeightPerTensorFloat,
        input_quant=ShiftedUint8ActPerTensorFloat,
        return_quant_tensor=True,
    )
    out = layer(x)
    assert out.signed is True
    assert_on_grid(out)


def test_bipolar_weights_times_unsigned_input_stay_on_the_grid():
    layer = QuantLinear(
        18, 2, bias=False, weight_quant=SignedBinaryWeightPerTensorConst, return_quant_tensor=True
    )
    with torch.no_grad():
        layer.weight.fill_(1.0)
    scale, zero_point, bit_width = torch.tensor(0.5), torch.tensor(0.0), torch.tensor(8.0)
    x = QuantTensor(torch.full((1, 18), 255 * 0.5), scale, zero_point, bit_width, False)  # all at 255
    out = layer(x)
    assert out.value.max().item() / 0.5 == 255 * 18
    assert out.bit_width.item() == math.ceil(math.log2(255 * 3 * 18))  # the weight counted as 2 bits
    assert_on_grid(out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    torch.manual_seed(0)
    layer = QuantLinear(8, 4, dtype=dtype, input_quant=Int8ActPerTensorFloat, return_quant_tensor=True)
    out = layer(torch.randn(3, 8, dtype=dtype))
    assert out.dtype == dtype and out.is_valid


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device():
    layer = QuantConv2d(
        2,
        3,
        3,
        input_quant=Int8ActPerTensorFloat,
        bias_quant=Int8Bias,
        return_quant_tensor=True,
        device="cuda",
    )
    out = layer(torch.randn(2, 2, 6, 6, device="cuda"))
    assert out.value.is_cuda and out.bit_width.is_cuda and out.is_valid


def test_deepcopy_and_pickle_preserve_outputs(x):
    torch.manual_seed(0)
    layer = QuantConv2d(
        2, 3, 3, input_quant=Int8ActPerTensorFloat, bias_quant=Int8Bias, return_quant_tensor=True
    )
    layer(x)
    layer.eval()
    with torch.no_grad():
        expected = layer(x)  # fills the weight cache
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        for clone in (
            copy.deepcopy(layer),
            pickle.loads(pickle.dumps(layer)),
            torch.load(buffer, weights_only=False),
        ):
            out = clone(x)
            assert torch.equal(out.value, expected.value) and torch.equal(out.scale, expected.scale)

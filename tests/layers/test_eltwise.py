"""Element-wise layers: one shared input quantizer puts the operands on one grid."""

import pytest
import torch

from quantframe.layers import QuantCat, QuantEltwiseAdd
from quantframe.quantizers import Int8ActPerTensorFloat, Uint8ActPerTensorFloat
from quantframe.tensor import QuantTensor


def calibrated(layer, n_inputs=2, steps=3, seed=0):
    """Run a few training steps so that the input quantizer has statistics, then switch to eval."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        inputs = [torch.randn(4, 3, 5, generator=gen) for _ in range(n_inputs)]
        layer(*inputs) if isinstance(layer, QuantEltwiseAdd) else layer(inputs)
    return layer.eval()


def fake_quant(x, scale, bits):
    """Signed symmetric fake quantization by hand: clamp(round(x / s), -2^(b-1), 2^(b-1) - 1) * s."""
    return torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * scale


def test_disabled_equals_torch():
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(QuantEltwiseAdd(input_quant=None)(a, b), a + b, atol=1e-6, rtol=0)
    c = torch.randn(2, 5)
    torch.testing.assert_close(QuantCat(input_quant=None)([a, c]), torch.cat([a, c], 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(QuantCat(input_quant=None)([a, b], 0), torch.cat([a, b]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("overrides", "bits"), [({}, 8), ({"input_bit_width": 4}, 4)])
def test_add_is_valid_with_one_more_bit(overrides, bits):
    layer = calibrated(QuantEltwiseAdd(return_quant_tensor=True, **overrides))
    a, b = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    out = layer(a, b)
    scale = layer.input_quant.scale()
    assert isinstance(out, QuantTensor) and out.is_valid
    assert out.bit_width.item() == bits + 1 and out.signed
    torch.testing.assert_close(out.scale, scale)
    torch.testing.assert_close(out.value, fake_quant(a, scale, bits) + fake_quant(b, scale, bits))


def test_add_output_quant_and_plain_return():
    layer = calibrated(QuantEltwiseAdd(output_quant=Uint8ActPerTensorFloat, return_quant_tensor=True))
    out = layer(torch.randn(4, 3, 5), torch.randn(4, 3, 5))
    assert out.is_valid and out.bit_width.item() == 8 and not out.signed
    plain = calibrated(QuantEltwiseAdd())(torch.randn(2, 2), torch.randn(2, 2))
    assert type(plain) is torch.Tensor


def test_add_training_mode_gradients_flow():
    layer = QuantEltwiseAdd(return_quant_tensor=True)
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    layer(a, b).value.sum().backward()
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0


def test_cat_is_valid_and_shares_the_grid():
    layer = calibrated(QuantCat(return_quant_tensor=True), n_inputs=3)
    xs = [torch.randn(2, 3, 4), torch.randn(2, 1, 4), torch.randn(2, 5, 4)]
    out = layer(xs)
    scale = layer.input_quant.scale()
    assert isinstance(out, QuantTensor) and out.is_valid and out.shape == (2, 9, 4)
    assert out.bit_width.item() == 8
    torch.testing.assert_close(out.value, torch.cat([fake_quant(x, scale, 8) for x in xs], 1))
    assert layer(xs[:1] * 2, dim=2).shape == (2, 3, 8)


def test_overrides_and_typos():
    assert QuantCat(input_bit_width=3).input_quant.bit_width().item() == 3
    with pytest.raises(TypeError, match="did you mean input_bit_width"):
        QuantEltwiseAdd(input_bit_widht=4)
    with pytest.raises(TypeError, match="output_quant is None"):
        QuantCat(output_bit_width=4)


def test_shared_input_quant_instance():
    first = QuantEltwiseAdd()
    second = QuantEltwiseAdd(input_quant=first.input_quant)
    assert second.input_quant is first.input_quant


@pytest.mark.parametrize("cls", [QuantEltwiseAdd, QuantCat])
def test_state_dict_round_trip(cls):
    first = calibrated(cls(output_quant=Int8ActPerTensorFloat).train(), n_inputs=2)
    second = cls(output_quant=Int8ActPerTensorFloat)
    second.load_state_dict(first.state_dict(), strict=True)
    second.eval()
    a, b = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    if cls is QuantEltwiseAdd:
        assert torch.equal(first(a, b), second(a, b))
    else:
        assert torch.equal(first([a, b]), second([a, b]))

"""QuantEmbedding: rows of the quantized weight table."""

import pytest
import torch
from torch import nn

from quantframe.layers import QuantEmbedding
from quantframe.quantizers import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
from quantframe.tensor import QuantTensor

INDICES = torch.tensor([[1, 2, 4], [9, 0, 1]])


def test_disabled_equals_torch_and_loads_a_float_state_dict():
    torch.manual_seed(0)
    ref = nn.Embedding(10, 6, padding_idx=0)
    layer = QuantEmbedding(10, 6, padding_idx=0, weight_quant=None)
    layer.load_state_dict(ref.state_dict(), strict=True)
    torch.testing.assert_close(layer(INDICES), ref(INDICES), atol=1e-6, rtol=0)
    quantized = QuantEmbedding(10, 6)
    quantized.load_state_dict(ref.state_dict(), strict=True)


def test_max_norm_renormalises_like_torch():
    torch.manual_seed(1)
    ref = nn.Embedding(10, 6, max_norm=0.5)
    layer = QuantEmbedding(10, 6, max_norm=0.5, weight_quant=None)
    layer.load_state_dict(ref.state_dict())
    torch.testing.assert_close(layer(INDICES), ref(INDICES), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.weight, ref.weight, atol=1e-6, rtol=0)


def test_rows_are_the_quantized_weight_rows():
    torch.manual_seed(2)
    layer = QuantEmbedding(10, 6, return_quant_tensor=True)
    out = layer(INDICES)
    weight = layer.weight.detach()
    scale = weight.abs().max() / 127  # Int8WeightPerTensorFloat: narrow range, max|w| / 127
    expected = torch.clamp(torch.round(weight / scale), -127, 127) * scale
    assert isinstance(out, QuantTensor) and out.is_valid and out.bit_width.item() == 8
    torch.testing.assert_close(out.scale, scale)
    torch.testing.assert_close(out.value, expected[INDICES])
    assert torch.equal(layer.int_weight()[INDICES].float(), out.int(float_datatype=True))
    assert type(QuantEmbedding(10, 6)(INDICES)) is torch.Tensor


def test_per_row_scales_are_looked_up():
    torch.manual_seed(3)
    layer = QuantEmbedding(10, 6, weight_quant=Int8WeightPerChannelFloat, return_quant_tensor=True)
    out = layer(INDICES)
    row_scale = layer.weight.detach().abs().amax(1) / 127
    assert out.is_valid and out.scale.shape == (2, 3, 1)
    torch.testing.assert_close(out.scale, row_scale[INDICES].unsqueeze(-1))


def test_overrides_typos_and_sparse():
    layer = QuantEmbedding(10, 6, weight_bit_width=4, return_quant_tensor=True)
    out = layer(INDICES)
    assert out.bit_width.item() == 4 and out.int().abs().max() <= 7
    with pytest.raises(TypeError, match="did you mean weight_bit_width"):
        QuantEmbedding(10, 6, weight_bit_widht=4)
    with pytest.raises(ValueError, match="sparse=True"):
        QuantEmbedding(10, 6, sparse=True)
    QuantEmbedding(10, 6, sparse=True, weight_quant=None)(INDICES).sum().backward()


def test_gradient_reaches_the_float_weight_and_from_pretrained():
    layer = QuantEmbedding(10, 6)
    layer(INDICES).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad[INDICES].abs().sum() > 0
    table = torch.randn(5, 3)
    pretrained = QuantEmbedding.from_pretrained(table)
    assert pretrained.is_weight_quant_enabled and pretrained(torch.tensor([4])).shape == (1, 3)


def test_state_dict_round_trip():
    torch.manual_seed(4)
    first = QuantEmbedding(10, 6, weight_quant=Int8WeightPerTensorFloat)
    second = QuantEmbedding(10, 6, weight_quant=Int8WeightPerTensorFloat)
    second.load_state_dict(first.state_dict(), strict=True)
    assert torch.equal(first.eval()(INDICES), second.eval()(INDICES))

"""QuantDropout: identity in eval; in training the kept integers stay on a grid of scale s / (1 - p)."""

import pytest
import torch
from torch import nn

from quantframe.layers import QuantDropout
from quantframe.tensor import QuantTensor


def grid_tensor(shape, bit_width=8, signed=True, scale=0.05, zero_point=0.0, seed=0) -> QuantTensor:
    """A QuantTensor built from random integers: value = (int - zero_point) * scale."""
    gen = torch.Generator().manual_seed(seed)
    low, high = (-(2 ** (bit_width - 1)), 2 ** (bit_width - 1)) if signed else (0, 2**bit_width)
    ints = torch.randint(low, high, shape, generator=gen).float()
    if signed and bit_width == 1:
        ints = ints * 2 + 1
    zp = torch.tensor(float(zero_point))
    bits = torch.tensor(float(bit_width))
    return QuantTensor((ints - zp) * scale, torch.tensor(scale), zp, bits, signed, True)


def test_plain_equals_torch():
    x = torch.randn(8, 16)
    layer, ref = QuantDropout(0.3), nn.Dropout(0.3)
    torch.manual_seed(0)
    out = layer(x)
    torch.manual_seed(0)
    torch.testing.assert_close(out, ref(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.eval()(x), ref.eval()(x), atol=1e-6, rtol=0)


def test_eval_is_identity_on_quant_tensors():
    x = grid_tensor((4, 8))
    assert QuantDropout(0.5).eval()(x) is x
    assert torch.equal(QuantDropout(0.5, return_quant_tensor=False).eval()(x), x.value)


@pytest.mark.parametrize(
    ("bit_width", "signed", "zero_point", "out_bits"),
    [(8, True, 0, 8), (8, False, 37, 8), (1, True, 0, 2), (4, False, 0, 4)],
)
def test_training_keeps_a_valid_rescaled_grid(bit_width, signed, zero_point, out_bits):
    x = grid_tensor((16, 32), bit_width, signed, 0.05, zero_point)
    torch.manual_seed(1)
    out = QuantDropout(0.25)(x)
    torch.manual_seed(1)
    expected = nn.functional.dropout(x.value, 0.25, True)
    assert isinstance(out, QuantTensor) and out.is_valid
    torch.testing.assert_close(out.value, expected)
    torch.testing.assert_close(out.scale, torch.tensor(0.05 / 0.75))
    assert out.bit_width.item() == out_bits and out.signed == signed
    assert torch.equal(out.zero_point, x.zero_point)
    assert 0 < (out.value == 0).float().mean() < 1


def test_training_edge_cases():
    x = grid_tensor((4, 8))
    dropped = QuantDropout(1.0)(x)
    assert type(dropped) is torch.Tensor and not dropped.any()
    assert QuantDropout(0.0)(x) is x
    assert type(QuantDropout(0.5, return_quant_tensor=False)(x)) is torch.Tensor


def test_state_dict_round_trip():
    second = QuantDropout(0.2)
    second.load_state_dict(QuantDropout(0.2).state_dict(), strict=True)
    second.load_state_dict(nn.Dropout(0.2).state_dict(), strict=True)

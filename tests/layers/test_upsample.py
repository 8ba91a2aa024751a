"""QuantUpsample: nearest keeps the grid; interpolating modes decay unless output_quant requantizes."""

import pytest
import torch
from torch import nn

from quantframe.layers import QuantUpsample
from quantframe.quantizers import Int8ActPerTensorFloat
from quantframe.tensor import QuantTensor


def grid_tensor(shape, scale=0.05, seed=0) -> QuantTensor:
    """A signed 8-bit QuantTensor built from random integers; scale may be per channel."""
    gen = torch.Generator().manual_seed(seed)
    ints = torch.randint(-128, 128, shape, generator=gen).float()
    scale = torch.as_tensor(scale, dtype=torch.float32)
    return QuantTensor(ints * scale, scale, torch.tensor(0.0), torch.tensor(8.0), True, False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 2},
        {"size": (5, 7)},
        {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
        {"scale_factor": 1.5, "mode": "bicubic", "align_corners": True},
    ],
)
def test_plain_equals_torch(kwargs):
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(QuantUpsample(**kwargs)(x), nn.Upsample(**kwargs)(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_keeps_a_valid_quant_tensor(mode):
    x = grid_tensor((2, 3, 4, 4), scale=torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1))
    out = QuantUpsample(scale_factor=2, mode=mode)(x)
    assert isinstance(out, QuantTensor) and out.is_valid
    assert torch.equal(out.value, nn.Upsample(scale_factor=2, mode=mode)(x.value))
    assert torch.equal(out.scale, x.scale) and out.bit_width.item() == 8
    assert type(QuantUpsample(scale_factor=2, return_quant_tensor=False)(x)) is torch.Tensor


def test_bilinear_decays_or_is_requantized():
    x = grid_tensor((2, 3, 4, 4))
    decayed = QuantUpsample(scale_factor=2, mode="bilinear")(x)
    assert type(decayed) is torch.Tensor
    layer = QuantUpsample(
        scale_factor=2, mode="bilinear", output_quant=Int8ActPerTensorFloat, output_bit_width=6
    )
    out = layer(x)
    assert isinstance(out, QuantTensor) and out.bit_width.item() == 6
    layer.eval()
    assert layer(x).is_valid


def test_input_quant_overrides_and_typos():
    layer = QuantUpsample(scale_factor=2, input_quant=Int8ActPerTensorFloat, input_bit_width=4)
    out = layer(torch.randn(1, 2, 3, 3))
    assert isinstance(out, QuantTensor) and out.bit_width.item() == 4
    with pytest.raises(TypeError, match="did you mean output_bit_width"):
        QuantUpsample(scale_factor=2, output_quant=Int8ActPerTensorFloat, output_bit_widt=4)


def test_state_dict_round_trip():
    torch.manual_seed(2)
    first = QuantUpsample(scale_factor=2, mode="bilinear", output_quant=Int8ActPerTensorFloat)
    for _ in range(3):
        first(torch.randn(2, 3, 4, 4))
    second = QuantUpsample(scale_factor=2, mode="bilinear", output_quant=Int8ActPerTensorFloat)
    second.load_state_dict(first.state_dict(), strict=True)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(first.eval()(x).value, second.eval()(x).value)

"""QuantLinear: torch parity, the accumulator over the last dim, errors, brevitas parity, 4-bit QAT."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantframe.layers import QuantLinear, QuantReLU
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8Bias,
    Int8WeightPerChannelFloat,
    Int8WeightPerGroupFloat,
    Int32Bias,
)
from quantframe.tensor import QuantTensor

NO_QUANT = {"weight_quant": None, "bias_quant": None, "input_quant": None, "output_quant": None}


def assert_on_grid(qt: QuantTensor, atol: float = 0.1) -> None:
    """value / scale + zero_point is an integer inside the signed/unsigned range of bit_width (float64)."""
    ints = qt.value.double() / qt.scale.double() + qt.zero_point.double()
    assert torch.allclose(ints, ints.round(), rtol=0, atol=atol)
    bits = qt.bit_width.double()
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if qt.signed else (0 * bits, 2**bits - 1)
    assert bool((ints.round() >= low).all()) and bool((ints.round() <= high).all())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)])
def test_without_quantizers_equals_torch_exactly(bias, shape):
    torch.manual_seed(0)
    ref = nn.Linear(7, 4, bias=bias)
    layer = QuantLinear(7, 4, bias=bias, **NO_QUANT)
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(shape)
    assert torch.equal(layer(x), ref(x))
    assert isinstance(layer, nn.Linear)


def test_default_weight_quant_is_int8_per_tensor_narrow():
    torch.manual_seed(0)
    layer = QuantLinear(7, 4)
    w = layer.weight.detach()
    scale = w.abs().max() / 127
    assert torch.allclose(layer.quant_weight_scale(), scale, rtol=1e-6, atol=0)
    assert torch.equal(layer.int_weight().long(), torch.round(w / scale).long())
    x = torch.randn(3, 7)
    expected = F.linear(x, torch.round(w / scale) * scale, layer.bias)
    assert torch.allclose(layer(x), expected, rtol=0, atol=1e-6)


def test_per_channel_accumulator_broadcasts_over_the_last_dim():
    torch.manual_seed(0)
    layer = QuantLinear(
        7,
        4,
        weight_quant=Int8WeightPerChannelFloat,
        input_quant=Int8ActPerTensorFloat,
        bias_quant=Int32Bias,
        return_quant_tensor=True,
    )
    out = layer(torch.randn(2, 3, 7))
    assert out.scale.shape == (4,)
    assert out.bit_width.item() == max(math.ceil(math.log2(255 * 255 * 7)), 32) + 1
    assert_on_grid(out)


def test_float_bias_zero_point_is_per_output_feature():
    torch.manual_seed(0)
    layer = QuantLinear(7, 4, input_quant=Int8ActPerTensorFloat, return_quant_tensor=True)
    out = layer(torch.randn(5, 7))
    assert out.zero_point.shape == (4,)
    assert out.bit_width.item() == math.ceil(math.log2(255 * 255 * 7))
    assert_on_grid(out)


def test_per_group_weights_give_no_accumulator_grid():
    torch.manual_seed(0)
    layer = QuantLinear(
        8,
        4,
        weight_quant=Int8WeightPerGroupFloat,
        weight_group_size=4,
        input_quant=Int8ActPerTensorFloat,
        return_quant_tensor=True,
    )
    out = layer(torch.randn(5, 8))
    assert out.scale is None and not out.is_valid
    with pytest.raises(ValueError, match="QuantLinear: bias_quant=Int8Bias .* per group"):
        QuantLinear(8, 4, weight_quant=Int8WeightPerGroupFloat, weight_group_size=4, bias_quant=Int8Bias)


@pytest.mark.parametrize(
    "argument,value", [("in_features", -1), ("out_features", 2.5), ("in_features", True)]
)
def test_bad_sizes_name_the_argument(argument, value):
    sizes = {"in_features": 3, "out_features": 2, argument: value}
    with pytest.raises(ValueError, match=f"QuantLinear: {argument}={value!r}; expected a non-negative int"):
        QuantLinear(**sizes)


def test_quantizer_of_the_wrong_role_names_layer_and_argument():
    with pytest.raises(TypeError, match="QuantLinear: bias_quant=Int8ActPerTensorFloat is an activation"):
        QuantLinear(3, 2, bias_quant=Int8ActPerTensorFloat)


def test_override_of_a_disabled_quantizer_is_an_error():
    with pytest.raises(TypeError, match="QuantLinear: got input_bit_width=4 but input_quant is None"):
        QuantLinear(3, 2, input_bit_width=4)


def test_same_int_weights_and_scale_as_brevitas():
    bnn = pytest.importorskip("brevitas.nn")
    torch.manual_seed(0)
    reference = bnn.QuantLinear(7, 4, bias=True)
    layer = QuantLinear(7, 4)
    layer.load_state_dict(reference.state_dict())
    expected = reference.quant_weight()
    assert torch.equal(layer.int_weight().long(), expected.int().long())
    assert torch.allclose(layer.quant_weight_scale(), expected.scale.detach(), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- QAT


def regression_task() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    teacher = torch.randn(8, 1, generator=gen)
    return x, torch.sin(x @ teacher) + 0.5 * x[:, :1] ** 2


def loss_reduction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 50) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(steps):
        loss = F.mse_loss(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return first - F.mse_loss(model(x), y).item()


def test_4_bit_qat_reduces_the_loss_like_float_training():
    x, y = regression_task()
    torch.manual_seed(1)
    float_model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    quant_model = nn.Sequential(
        QuantLinear(8, 32, weight_bit_width=4), QuantReLU(bit_width=4), QuantLinear(32, 1, weight_bit_width=4)
    )
    quant_model.load_state_dict(float_model.state_dict(), strict=False)  # the same starting weights
    assert quant_model[0].quant_weight_bit_width().item() == 4
    float_drop = loss_reduction(float_model, x, y)
    quant_drop = loss_reduction(quant_model, x, y)
    assert float_drop > 0
    assert quant_drop >= 0.8 * float_drop

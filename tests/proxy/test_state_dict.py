"""State-dict loading: float weights map 1:1, quantizer keys are missing unless IGNORE_MISSING_KEYS."""

import pytest
import torch
from torch import nn

from quantframe import config
from quantframe.layers import QuantConv2d, QuantLinear, QuantReLU
from quantframe.proxy.act import act_proxy
from quantframe.proxy.state_dict import ignore_missing_quantizer_keys
from quantframe.quantizers import Int8ActPerTensorFloat, Int8Bias


@pytest.fixture
def ignore_missing_keys():
    previous = config.IGNORE_MISSING_KEYS
    config.IGNORE_MISSING_KEYS = True
    try:
        yield
    finally:
        config.IGNORE_MISSING_KEYS = previous


def float_and_quant_models():
    torch.manual_seed(0)
    float_model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    quant_model = nn.Sequential(
        QuantConv2d(2, 3, 3, input_quant=Int8ActPerTensorFloat),
        QuantReLU(return_quant_tensor=True),
        nn.Flatten(),
        QuantLinear(48, 4, bias_quant=Int8Bias, output_quant=Int8ActPerTensorFloat),
    )
    return float_model, quant_model


def test_float_state_dict_maps_weights_and_biases_one_to_one():
    float_model, quant_model = float_and_quant_models()
    result = quant_model.load_state_dict(float_model.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all("_quant." in k for k in result.missing_keys)
    assert "0.input_quant.tensor_quant.scaling_impl.value" in result.missing_keys
    for name in ("0.weight", "0.bias", "3.weight", "3.bias"):
        assert torch.equal(quant_model.state_dict()[name], float_model.state_dict()[name])


def test_quantizer_keys_are_missing_by_default():
    float_model, quant_model = float_and_quant_models()
    assert config.IGNORE_MISSING_KEYS is False
    with pytest.raises(RuntimeError, match="Missing key.*input_quant"):
        quant_model.load_state_dict(float_model.state_dict())


def test_ignore_missing_keys_drops_quantizer_keys(ignore_missing_keys):
    float_model, quant_model = float_and_quant_models()
    # QuantReLU (index 1) is an activation layer: whether its act_quant keys are dropped is act.py's business
    layer_keys = [k for k in quant_model.state_dict() if not k.startswith("1.")]
    result = quant_model.load_state_dict(float_model.state_dict(), strict=False)
    assert not [k for k in result.missing_keys if k in layer_keys]
    x = torch.randn(2, 2, 6, 6)
    assert quant_model(x).shape == (2, 4)


def test_ignore_missing_keys_still_reports_missing_weights(ignore_missing_keys):
    float_model, quant_model = float_and_quant_models()
    state = float_model.state_dict()
    del state["3.bias"]
    result = quant_model.load_state_dict(state, strict=False)
    assert "3.bias" in result.missing_keys
    assert not [k for k in result.missing_keys if k.startswith(("0.", "3.")) and "_quant." in k]


def test_strict_load_with_only_weight_layers(ignore_missing_keys):
    torch.manual_seed(0)
    float_layer = nn.Linear(5, 3)
    quant_layer = QuantLinear(5, 3, input_quant=Int8ActPerTensorFloat, output_quant=Int8ActPerTensorFloat)
    quant_layer.load_state_dict(float_layer.state_dict())  # strict: passes only because of the flag
    assert torch.equal(quant_layer.weight, float_layer.weight)


def test_fresh_quantized_state_dict_loads_strictly_into_a_fresh_twin():
    _, first = float_and_quant_models()
    _, second = float_and_quant_models()
    second.load_state_dict(first.state_dict(), strict=True)


class SharedQuantizers(nn.Module):
    """A module whose one activation quantizer is reachable under two paths."""

    def __init__(self):
        super().__init__()
        self.first = act_proxy(Int8ActPerTensorFloat, {}, "SharedQuantizers", "first")
        self.second = self.first
        self.linear = nn.Linear(2, 2)
        ignore_missing_quantizer_keys(self)


def test_helper_drops_keys_under_every_path_of_a_shared_quantizer(ignore_missing_keys):
    model = nn.Sequential(SharedQuantizers())
    result = model.load_state_dict({"0.linear.weight": torch.zeros(2, 2)}, strict=False)
    assert result.missing_keys == ["0.linear.bias"]


def test_helper_does_nothing_without_the_flag():
    model = nn.Sequential(SharedQuantizers())
    result = model.load_state_dict({"0.linear.weight": torch.zeros(2, 2)}, strict=False)
    assert "0.first.tensor_quant.scaling_impl.value" in result.missing_keys
    assert "0.second.tensor_quant.scaling_impl.value" in result.missing_keys

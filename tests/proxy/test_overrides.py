"""quantframe.proxy.overrides: prefixed keywords routed to quantizers, typos rejected."""

import pytest

from quantframe.proxy.overrides import accepted_attributes, route_overrides
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.quantizers import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Int32Bias

QUANTS = {
    "weight": Int8WeightPerTensorFloat,
    "bias": Int32Bias,
    "input": Int8ActPerTensorFloat,
    "output": None,
}


def test_prefixed_keys_are_routed():
    routed = route_overrides(
        "MyConv", {"weight_bit_width": 4, "bias_bit_width": 16, "input_scaling_min_val": 1e-4}, QUANTS
    )
    assert routed == {
        "weight": {"bit_width": 4},
        "bias": {"bit_width": 16},
        "input": {"scaling_min_val": 1e-4},
        "output": {},
    }


def test_unprefixed_keys_go_to_the_default_slot():
    quants = {"act": Int8ActPerTensorFloat, "input": None}
    routed = route_overrides("QuantReLU", {"bit_width": 4, "act_signed": False}, quants, unprefixed="act")
    assert routed["act"] == {"bit_width": 4, "signed": False}


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("weight_bitwidth", "weight_bit_width"),
        ("wieght_bit_width", "weight_bit_width"),
        ("bias_bit_widht", "bias_bit_width"),
    ],
)
def test_typos_raise_type_error_with_did_you_mean(key, suggestion):
    with pytest.raises(TypeError) as info:
        route_overrides("MyConv", {key: 4}, QUANTS)
    message = str(info.value)
    assert "MyConv" in message and f"'{key}'" in message and f"did you mean {suggestion}?" in message


def test_overriding_a_disabled_quantizer_is_an_error():
    with pytest.raises(TypeError, match="output_quant is None"):
        route_overrides("MyConv", {"output_bit_width": 4}, QUANTS)


def test_overrides_beat_class_attributes():
    import torch

    w = torch.nn.Parameter(torch.randn(3, 3))
    proxy = WeightQuantProxy(Int8WeightPerTensorFloat, {"bit_width": 5, "narrow_range": False}, "L", w)
    assert proxy.bit_width().item() == 5 and not proxy.narrow_range
    assert Int8WeightPerTensorFloat.bit_width == 8


def test_accepted_attributes():
    accepted = accepted_attributes(Int8ActPerTensorFloat)
    assert {"bit_width", "collect_stats_steps", "high_percentile_q", "min_val"} <= accepted
    assert accepted_attributes(None) == set()

"""quantframe.quantizers.validation: bad attribute values fail at construction, enum names normalise."""

import pytest

from quantframe.proxy.act import ActQuantProxy
from quantframe.quantizers import Int8ActPerTensorFloat
from quantframe.quantizers.validation import validate_attributes


@pytest.mark.parametrize(
    "attribute, bad, allowed",
    [
        ("bit_width", 0, "an integer in [1, 32]"),
        ("bit_width", 2.5, "an integer in [1, 32]"),
        ("bit_width", True, "an integer in [1, 32]"),
        ("bit_width", 33, "an integer in [1, 32]"),
        ("restrict_scaling_type", "POWER_OF_3", "FP, LOG_FP, POWER_OF_TWO"),
        ("scaling_stats_op", "MEDIAN", "MAX, MIN_MAX, PERCENTILE, AVE, MSE"),
        ("signed", 1, "True or False"),
        ("scaling_min_val", 0.0, "a positive number"),
        ("high_percentile_q", 101, "(0, 100]"),
        ("scaling_stats_momentum", 0.0, "None (running mean)"),
        ("collect_stats_steps", -1, "an integer >= 0"),
    ],
)
def test_bad_values_fail_at_construction_with_quantizer_attribute_value_allowed(attribute, bad, allowed):
    with pytest.raises(ValueError) as info:
        ActQuantProxy(Int8ActPerTensorFloat, {attribute: bad}, "MyLayer")
    message = str(info.value)
    for part in ("MyLayer", "Int8ActPerTensorFloat", attribute, repr(bad), allowed):
        assert part in message


def test_enum_names_are_normalised():
    attrs = validate_attributes("Q", {"restrict_scaling_type": "power_of_two", "scaling_stats_op": "MAX"})
    assert attrs["restrict_scaling_type"].name == "POWER_OF_TWO" and attrs["scaling_stats_op"].name == "MAX"


def test_per_group_needs_a_group_size():
    with pytest.raises(ValueError, match="group_size"):
        validate_attributes("Q", {"scaling_per_group": True, "group_size": None})

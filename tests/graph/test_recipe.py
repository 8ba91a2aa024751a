"""quantframe.graph.recipe: the named recipes, overrides on top of them, and the validation of fields."""

import pytest
from torch import nn

from quantframe.graph import RECIPES, Recipe, quantize_model
from quantframe.graph.recipe import resolve_recipe
from quantframe.quantizers import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerTensorFloat,
)


def test_named_recipes_say_what_they_quantize():
    assert set(RECIPES) == {"onnx", "layerwise", "weight_only", "fixed_point"}
    weight_only = RECIPES["weight_only"]
    assert (
        weight_only.act_quant is None
        and weight_only.signed_act_quant is None
        and weight_only.bias_quant is None
    )
    assert RECIPES["layerwise"].layer_input_quant and not RECIPES["layerwise"].fold_batch_norm
    fixed = RECIPES["fixed_point"]
    assert (
        fixed.weight_quant is Int8WeightPerChannelFixedPoint
        and fixed.layer_output_quant is Int8ActPerTensorFixedPoint
    )


def test_explicit_values_override_and_none_means_the_recipe():
    chosen = resolve_recipe(
        "onnx", {"weight_quant": Int8WeightPerTensorFloat, "act_bit_width": 6, "bias_quant": None}
    )
    assert chosen.weight_quant is Int8WeightPerTensorFloat and chosen.act_bit_width == 6
    assert chosen.bias_quant is RECIPES["onnx"].bias_quant
    assert resolve_recipe(RECIPES["onnx"], {}) is RECIPES["onnx"]


def test_keeps_float_by_pattern_or_type():
    recipe = Recipe(keep_float=["encoder.*.fc", nn.LayerNorm])
    assert recipe.keeps_float("encoder.3.fc", nn.Linear(2, 2))
    assert recipe.keeps_float("anything", nn.LayerNorm(4))
    assert not recipe.keeps_float("encoder.fc2", nn.Linear(2, 2))


def test_recipe_model_validates_its_fields():
    with pytest.raises(ValueError, match="bit width must be in"):
        Recipe(weight_bit_width=0)
    with pytest.raises(ValueError, match="extra"):
        Recipe(wieght_quant=None)
    with pytest.raises(ValueError, match="allowed: \\['fixed_point', 'layerwise', 'onnx', 'weight_only'\\]"):
        quantize_model(nn.Linear(2, 2), recipe="int8")
    with pytest.raises(ValueError, match="capture='tracing'"):
        quantize_model(nn.Linear(2, 2), capture="tracing")
    with pytest.raises(ValueError, match="keep_float entries are module names"):
        Recipe(keep_float=[3])

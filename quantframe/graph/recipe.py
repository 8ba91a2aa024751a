"""Recipes: which quantizer goes where when a whole model is quantized.

A `Recipe` is a pydantic model users copy and change (`RECIPES["onnx"].model_copy(update={...})`);
`quantize_model` takes one or a name from `RECIPES`, and its explicit keyword arguments override
the recipe's fields. Quantizer fields hold quantizer classes (or None: that slot stays float).
"""

import fnmatch
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from quantframe.quantizers import (
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerChannelFloat,
    Int32Bias,
    ShiftedUint8ActPerTensorFloat,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)


class Recipe(BaseModel):
    """Where quantizers go in a captured model, and which ones.

    - `weight_quant` on every Conv/Linear weight, `bias_quant` on their biases (the accumulator
      grid needs a quantized input), `act_quant` after ReLU-like ops, `signed_act_quant` everywhere
      else a tensor is quantized (model input, layer inputs, add/cat inputs).
    - `quantize_input`: the model's floating-point inputs. `quantize_layer_inputs`: every
      Conv/Linear/matmul data input. `layer_input_quant`: put that quantizer inside the layer
      (`input_quant=`) rather than on the graph edge (Brevitas's layerwise flow).
      `quantize_layer_outputs`: a layer output no quantizer reads directly is quantized (what an
      integer kernel such as QLinearConv needs: a classifier head, a conv before a GELU), by
      `layer_output_quant`. Its default is asymmetric uint8: onnxruntime's U8U8 precision mode
      (x86 without VNNI) cannot convert an int8 QuantizeLinear read by several nodes to uint8, and
      the conv before it would then stay float.
    - `quantize_activations`: ReLU/ReLU6/Hardtanh become quantized activations.
    - `align_eltwise`: the inputs of each residual add and each cat share one quantizer (equal
      scales: the sum needs no requantization). `quantize_mul`: both inputs of a product of two
      tensors (squeeze-excitation) are quantized.
    - `fold_batch_norm`: a BatchNorm right after a conv is folded into it.
    - `keep_float`: module names (fnmatch patterns) or types left float.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str = "custom"
    weight_quant: Any = Int8WeightPerChannelFloat
    act_quant: Any = Uint8ActPerTensorFloat
    signed_act_quant: Any = Int8ActPerTensorFloat
    layer_output_quant: Any = ShiftedUint8ActPerTensorFloat
    bias_quant: Any = Int32Bias
    weight_bit_width: int | None = None
    act_bit_width: int | None = None
    bias_bit_width: int | None = None
    quantize_input: bool = True
    quantize_layer_inputs: bool = True
    quantize_layer_outputs: bool = True
    layer_input_quant: bool = False
    quantize_activations: bool = True
    align_eltwise: bool = True
    quantize_mul: bool = True
    fold_batch_norm: bool = True
    keep_float: tuple[Any, ...] = ()

    @field_validator("weight_bit_width", "act_bit_width", "bias_bit_width")
    @classmethod
    def _positive(cls, bits: int | None) -> int | None:
        if bits is not None and not 1 <= bits <= 32:
            raise ValueError(f"bit width must be in [1, 32], got {bits}")
        return bits

    @field_validator("keep_float", mode="before")
    @classmethod
    def _names_or_types(cls, keep: Any) -> tuple:
        items = (keep,) if isinstance(keep, str | type) else tuple(keep)
        for item in items:
            if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
                raise ValueError(
                    f"keep_float entries are module names (fnmatch patterns) or nn.Module types, got {item!r}"
                )
        return items

    def keeps_float(self, name: str, module: nn.Module | None) -> bool:
        """Whether `keep_float` names this op (an fnmatch pattern of its name) or its module type."""
        for item in self.keep_float:
            if isinstance(item, str) and fnmatch.fnmatchcase(name, item):
                return True
            if isinstance(item, type) and module is not None and isinstance(module, item):
                return True
        return False


# What neither "layerwise" nor "weight_only" quantizes: no activation outside the layers, float biases.
_LAYERS_ONLY = dict(
    bias_quant=None,
    quantize_input=False,
    quantize_layer_outputs=False,
    quantize_activations=False,
    align_eltwise=False,
    quantize_mul=False,
)

RECIPES: dict[str, Recipe] = {
    "onnx": Recipe(name="onnx"),
    "layerwise": Recipe(name="layerwise", layer_input_quant=True, fold_batch_norm=False, **_LAYERS_ONLY),
    "weight_only": Recipe(
        name="weight_only", act_quant=None, signed_act_quant=None, quantize_layer_inputs=False, **_LAYERS_ONLY
    ),
    "fixed_point": Recipe(
        name="fixed_point",
        weight_quant=Int8WeightPerChannelFixedPoint,
        act_quant=Uint8ActPerTensorFixedPoint,
        signed_act_quant=Int8ActPerTensorFixedPoint,
        layer_output_quant=Int8ActPerTensorFixedPoint,
    ),
}


def resolve_recipe(recipe: str | Recipe, overrides: dict[str, Any], keep_float: Any = ()) -> Recipe:
    """`recipe` (a name of `RECIPES` or a `Recipe`) with the explicitly given (not None) `overrides`,
    and `keep_float` added to the recipe's own."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(
                f"quantize_model: recipe={recipe!r} is not a recipe; allowed: {sorted(RECIPES)} or a Recipe"
            )
        recipe = RECIPES[recipe]
    elif not isinstance(recipe, Recipe):
        raise TypeError(
            f"quantize_model: recipe must be a name {sorted(RECIPES)} or a Recipe, got {recipe!r}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    if keep_float:
        extra = (keep_float,) if isinstance(keep_float, str | type) else tuple(keep_float)
        given["keep_float"] = (*recipe.keep_float, *extra)
    return Recipe.model_validate({**recipe.model_dump(), **given}) if given else recipe

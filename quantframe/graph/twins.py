"""Quantized twins of float modules: the same configuration and weights, with the recipe's quantizers.

`layer_twin` makes the QuantConv*/QuantLinear/QuantEmbedding of a float layer, `activation_twin` the
quantized ReLU/ReLU6/Hardtanh/Sigmoid/Tanh, both as the graph pass and the module-swapping fallback
use them. Weights and biases are copied as they are (float, to be fine-tuned or calibrated).
"""

from typing import Any

from torch import nn

from quantframe.graph.recipe import Recipe
from quantframe.layers import (
    QuantConv1d,
    QuantConv2d,
    QuantConv3d,
    QuantConvTranspose1d,
    QuantConvTranspose2d,
    QuantConvTranspose3d,
    QuantEmbedding,
    QuantHardTanh,
    QuantIdentity,
    QuantLinear,
    QuantReLU,
    QuantReLU6,
    QuantSigmoid,
    QuantTanh,
)

CONV_TWINS: dict[type, type] = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.ConvTranspose1d: QuantConvTranspose1d,
    nn.ConvTranspose2d: QuantConvTranspose2d,
    nn.ConvTranspose3d: QuantConvTranspose3d,
}
LAYER_TYPES: tuple[type, ...] = (*CONV_TWINS, nn.Linear, nn.Embedding)
RELU_LIKE: tuple[type, ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh)  # quantized after, by `act_quant`
ACTIVATION_TYPES: tuple[type, ...] = (*RELU_LIKE, nn.Sigmoid, nn.Tanh)
# Float modules that need no quantized twin in module swapping: they keep a grid or sit between quantizers.
NEUTRAL: tuple[type, ...] = (
    nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm,
)  # fmt: skip


def _bits(recipe: Recipe, key: str, name: str) -> dict[str, int]:
    value = getattr(recipe, key)
    return {} if value is None else {name: value}


def weight_settings(recipe: Recipe, with_bias: bool = True) -> dict[str, Any]:
    """The keyword arguments a quantized layer gets for its weight (and bias) quantizers."""
    settings: dict[str, Any] = {"weight_quant": recipe.weight_quant}
    if recipe.weight_quant is not None:
        settings |= _bits(recipe, "weight_bit_width", "weight_bit_width")
    if with_bias:
        settings["bias_quant"] = None if accumulator_bias_impossible(recipe) else recipe.bias_quant
        if settings["bias_quant"] is not None:
            settings |= _bits(recipe, "bias_bit_width", "bias_bit_width")
    return settings


def accumulator_bias_impossible(recipe: Recipe) -> bool:
    """A bias on the accumulator grid (input scale x weight scale) needs one weight scale per output
    channel; per-group weights have several, so their layers keep a float bias (noted in the report)."""
    bias, weight = recipe.bias_quant, recipe.weight_quant
    return bool(
        bias is not None
        and weight is not None
        and getattr(bias, "requires_input_scale", False)
        and getattr(weight, "scaling_per_group", False)
    )


def act_settings(recipe: Recipe, quant: Any, prefix: str = "") -> dict[str, Any]:
    """The bit-width override of an activation quantizer `quant` (none when it is None)."""
    return {} if quant is None else _bits(recipe, "act_bit_width", f"{prefix}bit_width")


def layer_kind(module: nn.Module) -> type | None:
    """The torch layer `module` is (a subclass counts when it keeps that layer's forward), or None."""
    for base in LAYER_TYPES:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    return None


def layer_twin(module: nn.Module, recipe: Recipe, input_quant: Any = None) -> nn.Module:
    """The quantized twin of a Conv*/ConvTranspose*/Linear/Embedding, with the float weights."""
    kind = layer_kind(module)
    io: dict[str, Any] = {}
    if input_quant is not None:
        io = {"input_quant": input_quant, **act_settings(recipe, input_quant, "input_")}
    if kind in CONV_TWINS:
        kwargs = dict(
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
        if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            kwargs["output_padding"] = module.output_padding
        twin = CONV_TWINS[kind](
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            **kwargs,
            **weight_settings(recipe),
            **io,
        )
    elif kind is nn.Linear:
        twin = QuantLinear(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            **weight_settings(recipe),
            **io,
        )
    elif kind is nn.Embedding:
        twin = QuantEmbedding(
            module.num_embeddings,
            module.embedding_dim,
            padding_idx=module.padding_idx,
            **weight_settings(recipe, False),
        )
    else:
        raise TypeError(
            f"{type(module).__name__} has no quantized twin; layers with one: "
            f"{[t.__name__ for t in LAYER_TYPES]}"
        )
    twin.load_state_dict(module.state_dict(), strict=False)
    weight = module.weight
    return twin.to(device=weight.device, dtype=weight.dtype).train(module.training)


def activation_twin(module: nn.Module, recipe: Recipe, return_quant_tensor: bool = False) -> nn.Module:
    """The quantized twin of a ReLU/ReLU6/Hardtanh (unsigned or signed grid after it), Sigmoid or Tanh."""
    unsigned, signed = recipe.act_quant, recipe.signed_act_quant
    common = {"return_quant_tensor": return_quant_tensor}
    if isinstance(module, nn.ReLU6):
        twin = QuantReLU6(act_quant=unsigned, **act_settings(recipe, unsigned), **common)
    elif isinstance(module, nn.ReLU):
        twin = QuantReLU(act_quant=unsigned, **act_settings(recipe, unsigned), **common)
    elif isinstance(module, nn.Sigmoid):
        twin = QuantSigmoid(act_quant=unsigned, **act_settings(recipe, unsigned), **common)
    elif isinstance(module, nn.Tanh):
        twin = QuantTanh(act_quant=signed, **act_settings(recipe, signed), **common)
    else:
        twin = QuantHardTanh(
            act_quant=signed,
            min_val=module.min_val,
            max_val=module.max_val,
            **act_settings(recipe, signed),
            **common,
        )
    return twin.train(module.training)


def edge_quantizer(recipe: Recipe, quant: Any, training: bool) -> QuantIdentity:
    """A quantizer on a graph edge (model input, layer input, operand of an add / cat / product)."""
    return QuantIdentity(act_quant=quant, return_quant_tensor=True, **act_settings(recipe, quant)).train(
        training
    )

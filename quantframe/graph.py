"""quantize_model: a quantized copy of a float model, made by swapping supported modules.

Weights and biases are copied as they are (float, to be fine-tuned or calibrated); modules with
no quantized twin are left float and listed in a warning and in `model.unquantized_modules`.
"""

import copy
import warnings
from typing import Any

from torch import nn

from quantframe.layers import (
    QuantConv1d,
    QuantConv2d,
    QuantConv3d,
    QuantConvTranspose1d,
    QuantConvTranspose2d,
    QuantConvTranspose3d,
    QuantEmbedding,
    QuantHardTanh,
    QuantLinear,
    QuantReLU,
    QuantReLU6,
    QuantSigmoid,
    QuantTanh,
)
from quantframe.quantizers import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat

CONV_TWINS = {
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.ConvTranspose1d: QuantConvTranspose1d,
    nn.ConvTranspose2d: QuantConvTranspose2d,
    nn.ConvTranspose3d: QuantConvTranspose3d,
}
# Float modules that need no quantized twin: they keep a quantized grid or sit between quantizers.
NEUTRAL = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
)


def _conv_twin(module: nn.Module, weight: dict[str, Any]) -> nn.Module:
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
    twin = CONV_TWINS[type(module)]
    return twin(module.in_channels, module.out_channels, module.kernel_size, **kwargs, **weight)


def _activation_twin(
    module: nn.Module, act: dict[str, Any], signed_quant: Any, unsigned_quant: Any
) -> nn.Module:
    if isinstance(module, nn.ReLU6):
        return QuantReLU6(act_quant=unsigned_quant, **act)
    if isinstance(module, nn.ReLU):
        return QuantReLU(act_quant=unsigned_quant, **act)
    if isinstance(module, nn.Sigmoid):
        return QuantSigmoid(act_quant=unsigned_quant, **act)
    if isinstance(module, nn.Tanh):
        return QuantTanh(act_quant=signed_quant, **act)
    return QuantHardTanh(act_quant=signed_quant, min_val=module.min_val, max_val=module.max_val, **act)


def _twin(module: nn.Module, settings: dict[str, Any]) -> nn.Module | None:
    weight = {"weight_quant": settings["weight_quant"], "bias_quant": settings["bias_quant"]}
    if settings["weight_bit_width"] is not None:
        weight["weight_bit_width"] = settings["weight_bit_width"]
    act = {} if settings["act_bit_width"] is None else {"bit_width": settings["act_bit_width"]}
    if type(module) in CONV_TWINS:
        twin = _conv_twin(module, weight)
    elif type(module) is nn.Linear:
        twin = QuantLinear(module.in_features, module.out_features, bias=module.bias is not None, **weight)
    elif type(module) is nn.Embedding:
        weight.pop("bias_quant")
        twin = QuantEmbedding(
            module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx, **weight
        )
    elif type(module) in (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.Hardtanh):
        return _activation_twin(module, act, settings["signed_act_quant"], settings["act_quant"])
    else:
        return None
    twin.load_state_dict(module.state_dict(), strict=False)
    return twin.to(next(module.parameters()).device)


def quantize_model(
    float_model: nn.Module,
    weight_bit_width: int | None = 8,
    act_bit_width: int | None = 8,
    weight_quant: Any = Int8WeightPerTensorFloat,
    act_quant: Any = Uint8ActPerTensorFloat,
    signed_act_quant: Any = Int8ActPerTensorFloat,
    bias_quant: Any = None,
) -> nn.Module:
    """A quantized copy of `float_model` (the original is untouched).

    Linear, Conv*, ConvTranspose* and Embedding get `weight_quant` at `weight_bit_width`;
    ReLU/ReLU6/Sigmoid become quantized activations with `act_quant`, Tanh/Hardtanh with
    `signed_act_quant`, at `act_bit_width` (None keeps the quantizers' own bit widths).
    """
    settings = dict(
        weight_bit_width=weight_bit_width,
        act_bit_width=act_bit_width,
        weight_quant=weight_quant,
        act_quant=act_quant,
        signed_act_quant=signed_act_quant,
        bias_quant=bias_quant,
    )
    model = copy.deepcopy(float_model)
    unquantized: list[str] = []
    _swap(model, "", settings, unquantized)
    model.unquantized_modules = unquantized
    if unquantized:
        warnings.warn(
            f"quantize_model: left float (no quantized twin): {', '.join(unquantized)}", stacklevel=2
        )
    return model


def _swap(parent: nn.Module, prefix: str, settings: dict[str, Any], unquantized: list[str]) -> None:
    for name, child in parent.named_children():
        path = f"{prefix}{name}"
        twin = _twin(child, settings)
        if twin is not None:
            twin.train(child.training)
            setattr(parent, name, twin)
        elif len(list(child.children())) > 0:
            _swap(child, path + ".", settings, unquantized)
        elif not isinstance(child, NEUTRAL):
            unquantized.append(f"{path} ({type(child).__name__})")

"""`quantize_model`: a quantized copy of a float model, captured as a graph or by swapping modules."""

import copy
import warnings
from typing import Any

from torch import fx, nn

from quantframe.graph.capture import CaptureError
from quantframe.graph.capture import capture as capture_graph
from quantframe.graph.recipe import Recipe, resolve_recipe
from quantframe.graph.rewrite import Rewrite, has_submodule
from quantframe.graph.twins import ACTIVATION_TYPES, NEUTRAL, activation_twin, layer_kind, layer_twin

CAPTURE_MODES = ("auto", "export", "fx", "modules")


def quantize_model(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    recipe: str | Recipe = "onnx",
    weight_bit_width: int | None = None,
    act_bit_width: int | None = None,
    bias_bit_width: int | None = None,
    weight_quant: Any = None,
    act_quant: Any = None,
    signed_act_quant: Any = None,
    bias_quant: Any = None,
    fold_batch_norm: bool | None = None,
    keep_float: Any = (),
    capture: str = "auto",
) -> nn.Module:
    """A quantized copy of `model` (the original is untouched; float weights are kept).

    The forward is captured (`torch.export` from `example_inputs`, `torch.fx` without them) and the
    recipe's quantizers placed on the graph; explicit arguments override the recipe. A model that
    cannot be captured falls back to swapping its modules, with a warning naming where capture
    stopped (`capture="export"` / `"fx"`: an error; `"modules"`: no capture).
    """
    if capture not in CAPTURE_MODES:
        raise ValueError(
            f"quantize_model: capture={capture!r}; allowed: {', '.join(map(repr, CAPTURE_MODES))}"
        )
    if capture == "export" and example_inputs is None:
        raise ValueError(
            "quantize_model: capture='export' needs example_inputs (a tuple, a dict or a tensor)"
        )
    overrides = dict(
        weight_bit_width=weight_bit_width,
        act_bit_width=act_bit_width,
        bias_bit_width=bias_bit_width,
        weight_quant=weight_quant,
        act_quant=act_quant,
        signed_act_quant=signed_act_quant,
        bias_quant=bias_quant,
        fold_batch_norm=fold_batch_norm,
    )
    chosen = resolve_recipe(recipe, overrides, keep_float)
    source = copy.deepcopy(model)
    if capture != "modules":
        tracer = None if capture == "auto" else capture
        try:
            graph = capture_graph(source, example_inputs, tracer)
        except CaptureError as error:
            if capture != "auto":
                raise
            warnings.warn(
                f"quantize_model: {error}; falling back to swapping modules (functional ops, adds and "
                "the model input stay float). Pass example_inputs for torch.export, or capture='modules'.",
                stacklevel=2,
            )
        else:
            return _quantize_graph(
                graph.train(model.training),
                chosen,
                tracer or ("export" if example_inputs is not None else "fx"),
                model,
            )
    return _swap_modules(source, chosen)


def _quantize_graph(gm: fx.GraphModule, recipe: Recipe, tracer: str, model: nn.Module) -> fx.GraphModule:
    rewrite = Rewrite(gm, recipe)
    rewrite.run()
    if rewrite.rejected:
        warnings.warn(
            "quantize_model: left float, the recipe's quantizer does not fit: " + "; ".join(rewrite.rejected),
            stacklevel=3,
        )
    gm.quantization_info = _info(model, f"torch.{tracer}", recipe, rewrite.notes, rewrite.folded)
    modules = [name for name in rewrite.notes if has_submodule(gm, name)]
    gm.unquantized_modules = [f"{name} ({type(gm.get_submodule(name)).__name__})" for name in modules]
    return gm


def _info(model: nn.Module, capture: str, recipe: Recipe, notes: dict, folded: dict) -> dict[str, Any]:
    return {
        "model": type(model).__name__,
        "capture": capture,
        "recipe": recipe.name,
        "notes": notes,
        "folded": folded,
    }


def _swap_modules(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Module swapping: each supported module gets its quantized twin, the rest stays float.

    There is no graph, so no edge can be quantized: with `quantize_layer_inputs` each layer
    quantizes its own input (`input_quant`).
    """
    notes: dict[str, str] = {}
    _swap(model, "", recipe, notes)
    model.unquantized_modules = [f"{name} ({reason.split(':')[0]})" for name, reason in notes.items()]
    model.quantization_info = _info(model, "modules", recipe, notes, {})
    if notes:
        warnings.warn(
            f"quantize_model: left float (no quantized twin): {', '.join(model.unquantized_modules)}",
            stacklevel=3,
        )
    return model


def _swap(parent: nn.Module, prefix: str, recipe: Recipe, notes: dict[str, str]) -> None:
    for name, child in parent.named_children():
        path = f"{prefix}{name}"
        twin = None
        if recipe.keeps_float(path, child):
            notes[path] = f"{type(child).__name__}: keep_float"
            continue
        if layer_kind(child) is not None:
            input_quant = (
                recipe.signed_act_quant
                if recipe.quantize_layer_inputs and not isinstance(child, nn.Embedding)
                else None
            )
            twin = layer_twin(child, recipe, input_quant)
        elif type(child) in ACTIVATION_TYPES and recipe.quantize_activations and recipe.act_quant is not None:
            twin = activation_twin(child, recipe)
        if twin is not None:
            setattr(parent, name, twin)
        elif len(list(child.children())) > 0:
            _swap(child, path + ".", recipe, notes)
        elif not isinstance(child, NEUTRAL + ACTIVATION_TYPES):
            notes[path] = f"{type(child).__name__}: no quantized twin"

"""The quantization pass over a captured module graph: where the recipe's quantizers go.

One walk in topological order keeps, for every value, whether it is a QuantTensor straight from a
quantizer (or moved by a data-movement op: view, flatten, permute, max pool, dropout), which is what
an ONNX integer kernel needs before a Conv/Gemm/MatMul. The pass then:

- folds each BatchNorm that follows a conv into it and swaps convs/linears for their quantized twins;
- quantizes the model input, every layer input not already on a grid, and the outputs of ReLU-like ops;
- turns each add / cat of two activations into `QuantEltwiseAdd` / `QuantCat` (one shared input
  quantizer: equal scales) and quantizes both operands of a product of two activations;
- unwraps QuantTensors (`layers.base.plain`) before every op it does not know: those see tensors;
- records why each op it left float stayed float (`notes`), for `quantframe.graph.report`.
"""

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from quantframe.graph.capture import module_path
from quantframe.graph.fold import BATCH_NORMS, can_fold, fold_batch_norm
from quantframe.graph.recipe import Recipe
from quantframe.graph.twins import (
    RELU_LIKE,
    accumulator_bias_impossible,
    activation_twin,
    edge_quantizer,
    layer_kind,
    layer_twin,
)
from quantframe.layers import QuantCat, QuantEltwiseAdd, QuantIdentity, QuantReLU, QuantReLU6
from quantframe.layers.base import plain

MOVEMENT_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    F.max_pool2d,
    F.max_pool1d,
    F.dropout,
}
MOVEMENT_METHODS = {
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "contiguous",
    "squeeze",
    "unsqueeze",
}
MOVEMENT_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
QT_SAFE_METHODS = MOVEMENT_METHODS | {"size", "dim"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul}
CAT_FUNCTIONS = {torch.cat, torch.concat}
RELU_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6}
MATMUL_FUNCTIONS = {torch.matmul, operator.matmul}


@dataclass
class Rewrite:
    """The state of one pass: the graph module, the recipe and what was decided."""

    gm: fx.GraphModule
    recipe: Recipe
    on_grid: dict[fx.Node, nn.Module] = field(default_factory=dict)  # quantizer outputs -> their quantizer
    moved: dict[fx.Node, nn.Module] = field(default_factory=dict)  # those moved by view/flatten/max pool
    quant_tensor: set[fx.Node] = field(default_factory=set)  # maybe a QuantTensor (unwrap before float ops)
    notes: dict[str, str] = field(default_factory=dict)  # float op -> why it stayed float
    folded: dict[str, str] = field(default_factory=dict)  # BatchNorm -> the layer it was folded into
    used_names: set[str] = field(default_factory=set)
    layers: list[fx.Node] = field(default_factory=list)  # the quantized Conv/Linear/matmul nodes
    float_readers: set[fx.Node] = field(default_factory=set)  # ops that read tensors, never QuantTensors
    rejected: list[str] = field(default_factory=list)  # left float: the recipe's quantizer does not fit

    # ------------------------------------------------------------------ helpers

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def scope(self, node: fx.Node) -> str:
        """The qualified name a functional node's new module gets: its module's path + the node name."""
        stack = node.meta.get("nn_module_stack")
        base = module_path(list(stack.values())[-1][0]) if stack else ""
        return self.unique(f"{base}.{node.name}" if base else node.name)

    def unique(self, name: str) -> str:
        """`name`, made unique among the graph module's submodules and the names given so far."""
        while name in self.used_names or has_submodule(self.gm, name):
            name += "_"
        self.used_names.add(name)
        return name

    def insert_module(self, before: fx.Node, name: str, module: nn.Module, args: tuple) -> fx.Node:
        self.gm.add_submodule(name, module)
        with self.gm.graph.inserting_before(before):
            new = self.gm.graph.call_module(name, args)
        new.meta = dict(before.meta)
        return new

    def quantize_edge(self, value: fx.Node, user: fx.Node, label: str) -> fx.Node:
        """`value` as `user` reads it, through a quantizer: the one whose grid a view/flatten/max pool
        moved it from (shared: equal scales, so the kernel reads the same integers), else a new one."""
        base = user.target if user.op == "call_module" else self.scope(user)
        name = self.unique(f"{base}_{label}_quant")
        if value in self.moved:
            quantizer = QuantIdentity(act_quant=self.moved[value], return_quant_tensor=True)
        else:
            quantizer = edge_quantizer(self.recipe, self.input_quant(value), self.gm.training)
        new = self.insert_module(user, name, quantizer.train(self.gm.training), (value,))
        user.replace_input_with(value, new)
        self.mark_quantized(new, quantizer.act_quant)
        return new

    def mark_quantized(self, node: fx.Node, proxy: nn.Module) -> None:
        self.on_grid[node] = proxy
        self.quant_tensor.add(node)

    def unwrap_inputs(self, node: fx.Node) -> None:
        """Every QuantTensor input of a float op goes through `plain`."""
        self.float_readers.add(node)
        for value in list(node.all_input_nodes):
            if value in self.quant_tensor:
                with self.gm.graph.inserting_before(node):
                    unwrapped = self.gm.graph.call_function(plain, (value,))
                node.replace_input_with(value, unwrapped)

    def input_quant(self, value: fx.Node) -> Any:
        """The quantizer an activation gets: unsigned after a sigmoid (values in [0, 1]), else signed."""
        module = self.module(value)
        if isinstance(module, nn.Sigmoid | nn.Hardsigmoid) or value.target in (
            torch.sigmoid,
            F.sigmoid,
            F.hardsigmoid,
        ):
            return self.recipe.act_quant or self.recipe.signed_act_quant
        return self.recipe.signed_act_quant

    # ------------------------------------------------------------------ the pass

    def run(self) -> None:
        if accumulator_bias_impossible(self.recipe):
            self.notes["bias"] = (
                f"biases stay float: {self.recipe.bias_quant.__name__} needs a weight scale per output "
                f"channel, {self.recipe.weight_quant.__name__} scales per group"
            )
        if self.recipe.fold_batch_norm:
            self.fold_batch_norms()
        for node in list(self.gm.graph.nodes):
            self.visit(node)
        if self.recipe.quantize_layer_outputs and self.recipe.layer_output_quant is not None:
            for node in self.layers:
                self.quantize_output(node)
        self.gm.graph.eliminate_dead_code()
        self.gm.graph.lint()
        self.gm.recompile()

    def fold_batch_norms(self) -> None:
        for node in list(self.gm.graph.nodes):
            norm = self.module(node)
            if not isinstance(norm, BATCH_NORMS):
                continue
            source = node.args[0] if node.args else None
            layer = self.module(source) if isinstance(source, fx.Node) else None
            if layer is None or len(source.users) != 1 or not can_fold(layer, norm):
                self.notes[node.target] = "BatchNorm not after a conv/linear (not folded)"
                continue
            if self.recipe.keeps_float(source.target, layer) or self.recipe.keeps_float(node.target, norm):
                continue
            fold_batch_norm(layer, norm)
            node.replace_all_uses_with(source)
            self.gm.graph.erase_node(node)
            self.gm.delete_submodule(node.target)
            self.folded[node.target] = source.target

    def visit(self, node: fx.Node) -> None:
        recipe, module = self.recipe, self.module(node)
        if node.op == "placeholder":
            self.visit_input(node)
        elif node.op == "output":
            self.unwrap_inputs(node)
        elif node.op in ("get_attr",):
            return
        elif module is not None and layer_kind(module) is not None:
            self.visit_layer(node, module)
        elif self.recipe.keeps_float(node.target if module is not None else self.name_of(node), module):
            self.unwrap_inputs(node)
            self.notes[self.name_of(node)] = "keep_float"
        elif (
            isinstance(module, RELU_LIKE)
            or node.target in RELU_FUNCTIONS
            or _is_method(node, "relu", "relu_")
        ):
            self.visit_relu(node, module)
        elif _is_movement(node, module):
            self.visit_movement(node)
        elif _binary_of_activations(node, ADD_FUNCTIONS, "add") and recipe.align_eltwise:
            self.visit_eltwise(node, QuantEltwiseAdd, tuple(node.args[:2]))
        elif node.target in CAT_FUNCTIONS and recipe.align_eltwise and _cat_of_activations(node):
            self.visit_eltwise(node, QuantCat, (list(node.args[0]), _cat_dim(node)))
        elif _binary_of_activations(node, MUL_FUNCTIONS, "mul") and recipe.quantize_mul:
            self.visit_operands(node, "mul")
        elif _binary_of_activations(node, MATMUL_FUNCTIONS, "matmul") and recipe.quantize_layer_inputs:
            self.visit_operands(node, "matmul")
        elif _is_method(node, *QT_SAFE_METHODS - MOVEMENT_METHODS):
            return
        else:
            self.unwrap_inputs(node)
            self.notes.setdefault(self.name_of(node), "no quantized form in this recipe")

    def name_of(self, node: fx.Node) -> str:
        return node.target if node.op == "call_module" else node.name

    def visit_input(self, node: fx.Node) -> None:
        value = node.meta.get("val")
        floating = value is None or (isinstance(value, torch.Tensor) and value.is_floating_point())
        if not (self.recipe.quantize_input and floating and self.recipe.signed_act_quant is not None):
            return
        if not node.users:
            return
        self.quantize_after(node, self.unique(f"input_quant_{node.name}"), self.recipe.signed_act_quant)

    def visit_layer(self, node: fx.Node, module: nn.Module) -> None:
        recipe = self.recipe
        if self.recipe.keeps_float(node.target, module):
            self.unwrap_inputs(node)
            self.notes[node.target] = "keep_float"
            return
        value = node.args[0] if node.args else None
        is_embedding = isinstance(module, nn.Embedding)
        quantize_input = (
            not is_embedding and recipe.quantize_layer_inputs and recipe.signed_act_quant is not None
        )
        input_quant = self.input_quant(value) if quantize_input and recipe.layer_input_quant else None
        try:
            twin = layer_twin(module, recipe, input_quant)
        except ValueError as error:  # a quantizer this layer cannot take (a group larger than its inputs)
            self.unwrap_inputs(node)
            self.notes[node.target] = f"{type(module).__name__}: {error}"
            self.rejected.append(f"{node.target}: {error}")
            return
        if (
            quantize_input
            and not recipe.layer_input_quant
            and isinstance(value, fx.Node)
            and value not in self.on_grid
        ):
            self.quantize_edge(value, node, "input")
        if (
            not is_embedding
            and twin.is_bias_quant_enabled
            and twin.bias_quant.requires_input_scale
            and input_quant is None
            and node.args[0] not in self.on_grid
        ):
            raise ValueError(
                f"quantize_model: {node.target} ({type(module).__name__}): "
                f"bias_quant={recipe.bias_quant.__name__} puts the bias on the accumulator grid, which "
                "needs a quantized input, but this recipe leaves "
                "the layer's input float; set quantize_layer_inputs=True or bias_quant=None"
            )
        _replace_module(self.gm, node.target, twin)
        if not is_embedding:
            self.layers.append(node)

    def quantize_output(self, node: fx.Node) -> None:
        """A layer whose output is not read by exactly one quantizer gets one after it, read by all its
        users: an integer kernel (QLinearConv, QLinearMatMul) needs its output quantized once (a
        classifier head, a conv before a GELU, a conv read by a cat and a BatchNorm)."""
        readers = list(node.users)
        if len(readers) == 1 and self.quantizes_input(readers[0]):
            return  # (two quantizers reading it would each need the float output: no integer kernel)
        base = node.target if node.op == "call_module" else self.scope(node)
        self.quantize_after(node, self.unique(f"{base}_output_quant"), self.recipe.layer_output_quant)
        for user in readers:
            if user in self.float_readers:
                self.unwrap_inputs(user)

    def quantize_after(self, node: fx.Node, name: str, quant: Any) -> fx.Node:
        """A new quantizer `name` right after `node`, read by every user `node` had."""
        users = list(node.users)
        quantizer = edge_quantizer(self.recipe, quant, self.gm.training)
        self.gm.add_submodule(name, quantizer)
        with self.gm.graph.inserting_after(node):
            new = self.gm.graph.call_module(name, (node,))
        new.meta = dict(node.meta)
        for user in users:
            user.replace_input_with(node, new)
        self.mark_quantized(new, quantizer.act_quant)
        return new

    def quantizes_input(self, user: fx.Node) -> bool:
        """Whether `user` quantizes what it reads first (an integer kernel's output may feed it)."""
        module = self.module(user)
        if isinstance(module, QuantIdentity | QuantEltwiseAdd | QuantCat):
            return True
        return isinstance(module, QuantReLU | QuantReLU6) and module.act_quant.is_quant_enabled

    def visit_relu(self, node: fx.Node, module: nn.Module | None) -> None:
        if not self.recipe.quantize_activations or self.recipe.act_quant is None:
            self.unwrap_inputs(node)
            self.notes.setdefault(self.name_of(node), "activations are not quantized in this recipe")
            return
        if module is not None:
            _replace_module(
                self.gm, node.target, activation_twin(module, self.recipe, return_quant_tensor=True)
            )
        else:
            float_type = nn.ReLU if node.op == "call_method" else RELU_FUNCTIONS[node.target]
            twin = activation_twin(float_type(), self.recipe, return_quant_tensor=True)
            new = self.insert_module(node, self.scope(node), twin, (node.args[0],))
            node.replace_all_uses_with(new)
            self.gm.graph.erase_node(node)
            node = new
        self.mark_quantized(node, self.gm.get_submodule(node.target).act_quant)

    def visit_movement(self, node: fx.Node) -> None:
        source = node.args[0] if node.args else None
        if source in self.quant_tensor:
            self.quant_tensor.add(node)
        grid = self.on_grid.get(source, self.moved.get(source))
        if grid is not None:
            self.moved[node] = grid

    def visit_eltwise(self, node: fx.Node, layer_type: type, args: tuple) -> None:
        quant = self.recipe.signed_act_quant
        layer = layer_type(input_quant=quant, return_quant_tensor=True, **_input_bits(self.recipe, quant))
        new = self.insert_module(node, self.scope(node), layer.train(self.gm.training), args)
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)
        self.quant_tensor.add(new)  # a sum has one more bit (and a cat feeds no kernel directly)

    def visit_operands(self, node: fx.Node, label: str) -> None:
        for i, value in enumerate(node.args[:2]):
            if value not in self.on_grid:
                self.quantize_edge(value, node, f"{label}{i}")
        self.quant_tensor.add(node)
        if label == "matmul":
            self.layers.append(node)


def _input_bits(recipe: Recipe, quant: Any) -> dict[str, int]:
    return {} if quant is None or recipe.act_bit_width is None else {"input_bit_width": recipe.act_bit_width}


def has_submodule(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
    except AttributeError:
        return False
    return True


def _replace_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(gm.get_submodule(parent_name) if parent_name else gm, child, module)


def _is_method(node: fx.Node, *names: str) -> bool:
    return node.op == "call_method" and node.target in names


def _is_movement(node: fx.Node, module: nn.Module | None) -> bool:
    if module is not None:
        return isinstance(module, MOVEMENT_MODULES)
    if node.op == "call_function" and node.target is F.pad:  # zero padding adds level 0
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        fill = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
        return mode == "constant" and not fill
    return (node.op == "call_function" and node.target in MOVEMENT_FUNCTIONS) or _is_method(
        node, *MOVEMENT_METHODS
    )


def _is_activation(value: Any) -> bool:
    return isinstance(value, fx.Node) and value.op not in ("get_attr",)


def _binary_of_activations(node: fx.Node, functions: set, method: str) -> bool:
    if not (node.op == "call_function" and node.target in functions) and not _is_method(node, method):
        return False
    if len(node.args) < 2 or node.kwargs.get("alpha", 1) != 1:
        return False
    return _is_activation(node.args[0]) and _is_activation(node.args[1])


def _cat_of_activations(node: fx.Node) -> bool:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    return isinstance(tensors, list | tuple) and len(tensors) > 1 and all(_is_activation(t) for t in tensors)


def _cat_dim(node: fx.Node) -> int:
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)


__all__ = ["Rewrite"]

"""Capture a float model's forward as a module graph: `torch.export` from example inputs, or `torch.fx`.

The result is a `torch.fx.GraphModule` whose nodes call the float model's own leaf modules (convs,
linears, norms, activations, pools) under their original qualified names, and torch-level functions
for the model's functional code (`operator.add`, `torch.cat`, `F.relu`, `torch.flatten`, ...), so that
the quantization pass sees one vocabulary whichever tracer ran. `torch.export` records ATen ops with
the module each came from (`nn_module_stack`); `lift_modules` folds each leaf module's ops back into
one call of that module and maps the remaining ATen ops to their torch-level functions.
"""

import operator
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

# Leaf modules a graph calls as modules (the quantization pass replaces or keeps them whole).
LEAF_TYPES: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear, nn.Embedding,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid,
    nn.LeakyReLU, nn.Softmax, nn.Identity, nn.Flatten, nn.Dropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d,
)  # fmt: skip

_aten = torch.ops.aten
# ATen op -> the torch-level function the quantization pass and QuantTensor understand.
ATEN_TO_TORCH: dict[Any, Callable] = {
    _aten.add.Tensor: operator.add,
    _aten.add_.Tensor: operator.add,
    _aten.mul.Tensor: operator.mul,
    _aten.mul_.Tensor: operator.mul,
    _aten.cat.default: torch.cat,
    _aten.relu.default: F.relu,
    _aten.relu_.default: F.relu,
    _aten.hardtanh.default: F.hardtanh,
    _aten.hardtanh_.default: F.hardtanh,
    _aten.flatten.using_ints: torch.flatten,
    _aten.reshape.default: torch.reshape,
    _aten.view.default: torch.reshape,
    _aten.permute.default: torch.permute,
    _aten.transpose.int: torch.transpose,
    _aten.max_pool2d.default: F.max_pool2d,
    _aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    _aten.mean.dim: torch.mean,
    _aten.matmul.default: torch.matmul,
    _aten.linear.default: F.linear,
    _aten.conv2d.default: F.conv2d,
    _aten.dropout.default: F.dropout,
    _aten.pad.default: F.pad,
}
_IGNORED = {_aten._assert_tensor_metadata.default, _aten.sym_constrain_range_for_size.default}


class CaptureError(RuntimeError):
    """The model's forward could not be captured; `where` names the module/line capture stopped at."""

    def __init__(self, tracer: str, where: str, cause: BaseException):
        self.tracer, self.where = tracer, where
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(f"{tracer} could not capture the model at {where}: {first}")


def capture(model: nn.Module, example_inputs: Any = None, tracer: str | None = None) -> fx.GraphModule:
    """`model`'s forward as a module graph (see the module docstring); raises `CaptureError`.

    `example_inputs`: a tuple of positional arguments, a dict of keyword arguments, or one tensor;
    with them `torch.export` (non-strict) runs, without them `torch.fx.symbolic_trace`.
    """
    tracer = tracer or ("export" if example_inputs is not None else "fx")
    try:
        if tracer == "fx":
            return _symbolic_trace(model)
        args, kwargs = _split(example_inputs)
        exported = torch.export.export(
            model, args, kwargs, strict=False, dynamic_shapes=_dynamic_batch(args, kwargs)
        )
    except Exception as error:  # noqa: BLE001 - every tracer failure becomes one CaptureError
        raise CaptureError(
            f"torch.{'fx.symbolic_trace' if tracer == 'fx' else 'export'}", _where(model, error), error
        ) from error
    return lift_modules(model, exported.module())


def _split(example_inputs: Any) -> tuple[tuple, dict]:
    """Positional and keyword example inputs, each batch of one doubled: torch.export fixes a
    dimension of size 1 (it cannot tell 1 from a constant), the graph would then run at batch 1 only."""
    if isinstance(example_inputs, dict):
        return (), {k: _batch_of_two(v) for k, v in example_inputs.items()}
    if isinstance(example_inputs, tuple | list):
        return tuple(_batch_of_two(v) for v in example_inputs), {}
    return (_batch_of_two(example_inputs),), {}


def _batch_of_two(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return torch.cat([value, value])
    return value


def _dynamic_batch(args: tuple, kwargs: dict) -> tuple | dict:
    """Every tensor input's first dimension left to the data (the graph then runs at any batch size,
    unless the model itself fixes it)."""

    def spec(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {0: torch.export.Dim.AUTO} if value.dim() > 0 else None
        if isinstance(value, tuple | list):
            return type(value)(spec(v) for v in value)
        if isinstance(value, dict):
            return {k: spec(v) for k, v in value.items()}
        return None

    return (
        {k: spec(v) for k, v in kwargs.items()}
        if not args
        else (*spec(args), *(spec(v) for v in kwargs.values()))
    )


class _LeafTracer(fx.Tracer):
    """`symbolic_trace` that keeps `LEAF_TYPES` (and torch.nn's own leaves) as module calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    graph = _LeafTracer().trace(model)
    return fx.GraphModule(model, graph, type(model).__name__)


def _where(model: nn.Module, error: BaseException) -> str:
    """The innermost frame of `model`'s own modules in the traceback: 'path (Type.forward, file:line)'."""
    names = {id(m): name for name, m in model.named_modules()}
    found = None
    for frame, line in traceback.walk_tb(error.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            code = frame.f_code
            label = names[id(owner)] or "<model>"
            file = code.co_filename.rsplit("/", 1)[-1]
            found = f"{label} ({type(owner).__name__}.{code.co_name}, {file}:{line})"
    return found or type(model).__name__


# ---------------------------------------------------------------------------------------------- export


def _leaf_of(node: fx.Node, model: nn.Module) -> str | None:
    """The qualified name of the innermost module `node` came from, when it is a `LEAF_TYPES` leaf."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    path = module_path(path)
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return path if isinstance(module, LEAF_TYPES) and not isinstance(module, nn.Identity) else None


def module_path(path: str) -> str:
    """`torch.export`'s module path ('L__self___a_b' in some versions, 'a.b' in others) as 'a.b'."""
    return path.removeprefix("L['self'].").replace("._modules['", ".").replace("']", "")


def lift_modules(model: nn.Module, exported: fx.GraphModule) -> fx.GraphModule:
    """An exported (ATen) graph as a module graph: each leaf module's ops become one call of it."""
    graph = fx.Graph()
    graph._codegen = exported.graph._codegen  # the pytree of inputs and outputs
    env: dict[fx.Node, Any] = {}
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    groups = _leaf_groups(exported.graph, model)
    done: set[str] = set()
    for node in exported.graph.nodes:
        if node.op == "call_module" and node.target == "_guards_fn" or node.target in _IGNORED:
            continue
        path = groups.get(node)
        if path is not None:
            if path not in done:
                done.add(path)
                (entry,) = _group_inputs(exported.graph, groups, path)
                out = graph.call_module(path, (env[entry],))
                out.meta = dict(node.meta)
                for member in (n for n, p in groups.items() if p == path):
                    env[member] = out
            continue
        if node.op == "get_attr":
            if node.target in tensors:  # (others: constants of lifted groups)
                env[node] = graph.get_attr(node.target)
        elif node.op == "call_function" and node.target is _aten.sym_size.int:
            # x.size(d): a traced size, so an ONNX export keeps the batch dimension dynamic
            env[node] = graph.call_method("size", *_mapped(node, env))
            env[node].meta = dict(node.meta)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            target = ATEN_TO_TORCH.get(node.target, node.target)
            if _mutates_a_shared_input(node):
                target = node.target  # x.add_(y) where x is read again: keep torch's aliasing
            env[node] = graph.call_function(target, *_mapped(node, env))
            env[node].meta = dict(node.meta)
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    root: dict[str, Any] = {path: model.get_submodule(path) for path in done}
    root.update({n.target: tensors[n.target] for n in graph.nodes if n.op == "get_attr"})
    return fx.GraphModule(root, graph, type(model).__name__)


def _mutates_a_shared_input(node: fx.Node) -> bool:
    """An in-place ATen op (name ending in '_') whose first input is also read by another node."""
    name = node.target._schema.name
    first = node.args[0] if node.args else None
    return name.endswith("_") and isinstance(first, fx.Node) and len(first.users) > 1


def _mapped(node: fx.Node, env: dict) -> tuple[tuple, dict]:
    return fx.map_arg(node.args, lambda n: env[n]), fx.map_arg(node.kwargs, lambda n: env[n])


def _leaf_groups(graph: fx.Graph, model: nn.Module) -> dict[fx.Node, str]:
    """The ATen nodes of each leaf module call, by module path; a call that is not one input -> one
    output (or a module called twice) is left as ATen ops."""
    groups: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op == "call_function":
            path = _leaf_of(node, model)
            if path is not None:
                groups[node] = path
    for path in set(groups.values()):
        members = [n for n, p in groups.items() if p == path]
        if len(_group_inputs(graph, groups, path)) != 1 or len(_group_outputs(groups, path)) != 1:
            for member in members:
                del groups[member]
    return groups


def _group_inputs(graph: fx.Graph, groups: dict[fx.Node, str], path: str) -> list[fx.Node]:
    """The tensors a group reads from outside (not its own parameters)."""
    inputs: list[fx.Node] = []
    for node in (n for n, p in groups.items() if p == path):
        for arg in node.all_input_nodes:
            if groups.get(arg) == path or arg.op == "get_attr" or arg in inputs:
                continue
            inputs.append(arg)
    return inputs


def _group_outputs(groups: dict[fx.Node, str], path: str) -> list[fx.Node]:
    members = [n for n, p in groups.items() if p == path]
    return [n for n in members if any(groups.get(user) != path for user in n.users)]

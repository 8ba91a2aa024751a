"""Drive torch's exporter inside an export session, then tidy the ONNX graph it wrote.

Tidying: every `Constant` node of the main graph becomes an initializer (integer weights are
integer initializers), initializers nothing reads are dropped, and no initializer is listed among
the graph inputs (onnxruntime would otherwise treat it as overridable and skip constant folding).
Models over 2 GB are saved with ONNX external data next to the file.
"""

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

import quantframe
from quantframe.export.manager import ExportFormat, ExportSession, split_args

_PROTOBUF_LIMIT = 2**31 - 2**26  # leave room for the graph itself under protobuf's 2 GiB


class OnnxFormat(ExportFormat):
    """An ONNX format: the opsets it accepts and how the traced file is finished."""

    function = "export"  # the public function's name, for error messages
    opsets = range(13, 21)
    default_opset = 13
    custom_opsets: dict[str, int] = {}

    def __init__(self, opset: int):
        self.opset = opset

    @property
    def trace_opset(self) -> int:
        """The opset torch's exporter traces at."""
        return self.opset

    def passes(self) -> list[Callable[[onnx.ModelProto], Any]]:
        """Graph passes run while tidying the traced file (after constants become initializers)."""
        return []

    def finish(self, model: onnx.ModelProto) -> None:
        """Last changes to the tidied model."""


def export_onnx(
    model: nn.Module,
    args: Any,
    format_type: type[OnnxFormat],
    export_path: str | Path | io.IOBase | None,
    opset_version: int | None,
    input_names: list[str] | None,
    output_names: list[str] | None,
    dynamic_batch: bool,
    **options: Any,
) -> onnx.ModelProto:
    """The body of every ONNX export function: check the opset, trace in an export session of
    `format_type(opset, **options)`, tidy, finish, write to `export_path` when given."""
    opset = format_type.default_opset if opset_version is None else int(opset_version)
    allowed = format_type.opsets
    if opset not in allowed:
        raise ValueError(
            f"{format_type.function}: opset_version={opset_version}; allowed: {allowed[0]}..{allowed[-1]} "
            f"(default {format_type.default_opset})"
        )
    fmt = format_type(opset, **options)
    onnx_model = run_onnx_export(
        model,
        args,
        fmt,
        fmt.trace_opset,
        fmt.custom_opsets,
        input_names,
        output_names,
        dynamic_batch,
        fmt.passes(),
    )
    fmt.finish(onnx_model)
    if export_path is not None:
        save_model(onnx_model, export_path)
    return onnx_model


def _names(given: list[str] | None, count: int, stem: str) -> list[str]:
    if given is not None:
        return list(given)
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def run_onnx_export(
    model: nn.Module,
    args: Any,
    fmt: ExportFormat,
    opset: int,
    custom_opsets: dict[str, int],
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = False,
    passes: Sequence[Callable[[onnx.ModelProto], Any]] = (),
) -> onnx.ModelProto:
    """Trace with the TorchScript exporter at `opset` in an export session, tidy with `passes`."""
    positional, keywords = split_args(args)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()} - {torch.float32}
    if dtypes:
        raise ValueError(
            f"export: the model has {sorted(str(d) for d in dtypes)} parameters; ONNX Q/DQ scales are "
            "float32 here, so export a float32 model (model.float())"
        )
    with ExportSession(model, fmt) as session:
        session.start_emitting()
        inputs = (
            list(input_names)
            if input_names is not None
            else _names(None, len(positional), "input") + list(keywords)
        )
        dynamic_axes = {name: {0: "batch"} for name in inputs} if dynamic_batch else None
        large = sum(p.numel() * p.element_size() for p in model.parameters()) > _PROTOBUF_LIMIT // 2
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            warnings.filterwarnings("ignore", message=".*torch.tensor results are registered as constants.*")
            export_kwargs = dict(
                kwargs=keywords or None,
                dynamo=False,
                opset_version=opset,
                input_names=inputs,
                dynamic_axes=dynamic_axes,
                custom_opsets=custom_opsets or None,
                do_constant_folding=True,
            )
            traced = _Called(model) if isinstance(model, torch.fx.GraphModule) else model
            with torch.no_grad():
                if large:
                    onnx_model = _export_through_file(traced, positional, export_kwargs)
                else:
                    buffer = io.BytesIO()
                    torch.onnx.export(traced, positional, buffer, **export_kwargs)
                    onnx_model = onnx.load_from_string(buffer.getvalue())
    tidy(onnx_model, passes)
    rename_outputs(onnx_model, _names(output_names, len(onnx_model.graph.output), "output"), dynamic_batch)
    return onnx_model


class _Called(torch.nn.Module):
    """A module that calls `model`: torch's exporter takes anything with a `.graph` (a captured
    `torch.fx.GraphModule`) for a ScriptModule and fails on its dynamic axes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.model(*args, **kwargs)


def rename_outputs(model: onnx.ModelProto, names: list[str], dynamic_batch: bool) -> None:
    """Give the graph outputs `names` (torch numbers them); optionally a symbolic batch dimension."""
    renames = {o.name: new for o, new in zip(model.graph.output, names, strict=False)}
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for output in model.graph.output:
        output.name = renames.get(output.name, output.name)
        dims = output.type.tensor_type.shape.dim
        if dynamic_batch and len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"


def _export_through_file(model: nn.Module, args: tuple, export_kwargs: dict) -> onnx.ModelProto:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        torch.onnx.export(model, args, path, **export_kwargs)
        return onnx.load(path, load_external_data=True)


def tidy(model: onnx.ModelProto, passes: Sequence[Callable[[onnx.ModelProto], Any]] = ()) -> None:
    """Constants -> initializers, `passes`, dead nodes and unused initializers dropped, inputs cleaned."""
    graph = model.graph
    kept = []
    for node in graph.node:
        value = (
            next((a for a in node.attribute if a.name == "value"), None)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
            else None
        )
        if value is None or value.type != onnx.AttributeProto.TENSOR:
            kept.append(node)
            continue
        tensor = graph.initializer.add()  # one copy of the data (append would copy it twice)
        tensor.CopyFrom(value.t)
        tensor.name = node.output[0]
    del graph.node[:]
    graph.node.extend(kept)
    for graph_pass in passes:
        graph_pass(model)
    prune(model)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for index in reversed(range(len(graph.initializer))):  # in place: rebuilding would copy every weight
        if graph.initializer[index].name not in used:
            del graph.initializer[index]
    names = {t.name for t in graph.initializer}
    for index in reversed(range(len(graph.input))):
        if graph.input[index].name in names:
            del graph.input[index]
    model.producer_name = "quantframe"
    model.producer_version = quantframe.__version__


def prune(model: onnx.ModelProto) -> None:
    """Drop nodes none of whose outputs is used (torch's Identity copies of folded parameters)."""
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        live = [n for n in graph.node if any(o in used for o in n.output)]
        if len(live) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(live)


def save_model(model: onnx.ModelProto, path: str | Path | io.IOBase) -> None:
    """Write `model`; past protobuf's size limit its tensors go to `<file>.data` (ONNX external data)."""
    if isinstance(path, io.IOBase):
        path.write(model.SerializeToString())
        return
    large = sum(len(t.raw_data) for t in model.graph.initializer) > _PROTOBUF_LIMIT
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{Path(path).name}.data" if large else None,
    )

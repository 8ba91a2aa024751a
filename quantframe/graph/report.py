"""`report(model)`: what `quantize_model` quantized, with which quantizers and bit widths, and what it
left float and why; `str(report)` is the table a user reads."""

from typing import Any

from pydantic import BaseModel
from torch import fx, nn

from quantframe.layers import QuantCat, QuantEltwiseAdd, QuantIdentity
from quantframe.proxy.base import QuantProxy


class QuantizerInfo(BaseModel):
    """One quantizer of an op: its class, bit width and sign (bit width None: set at run time)."""

    quant: str
    bit_width: int | None
    signed: bool | None


class QuantizedOp(BaseModel):
    """An op that runs on quantized tensors; `aligned`: its inputs share one quantizer (equal scales)."""

    name: str
    op: str
    quantizers: dict[str, QuantizerInfo]
    aligned: bool = False


class FloatOp(BaseModel):
    """An op left float, and why."""

    name: str
    op: str
    reason: str


class QuantizationReport(BaseModel):
    """The whole model: how it was captured, the recipe, and every op quantized or left float."""

    model: str
    capture: str
    recipe: str
    quantized: list[QuantizedOp]
    float_ops: list[FloatOp]
    folded_batch_norms: dict[str, str] = {}

    def op(self, name: str) -> QuantizedOp | FloatOp:
        """The entry named `name` (KeyError listing the names when there is none)."""
        for entry in (*self.quantized, *self.float_ops):
            if entry.name == name:
                return entry
        raise KeyError(f"no op named {name!r}; ops: {[e.name for e in (*self.quantized, *self.float_ops)]}")

    def __str__(self) -> str:
        rows = [("op", "name", "quantized", "details")]
        for entry in self.quantized:
            bits = ", ".join(
                f"{slot} {'?' if info.bit_width is None else info.bit_width}b {'s' if info.signed else 'u'}"
                for slot, info in entry.quantizers.items()
            )
            rows.append((entry.op, entry.name, "yes", bits + (" (aligned)" if entry.aligned else "")))
        rows += [(entry.op, entry.name, "float", entry.reason) for entry in self.float_ops]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"{self.model}: captured by {self.capture}, recipe {self.recipe!r}"]
        lines += [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        lines.append(f"{len(self.quantized)} quantized, {len(self.float_ops)} float")
        return "\n".join(lines)


def _quantizers(module: nn.Module) -> dict[str, QuantizerInfo]:
    found = {}
    for name, child in module.named_children():
        if isinstance(child, QuantProxy) and child.is_quant_enabled:
            bits = child.bit_width()
            found[name.removesuffix("_quant")] = QuantizerInfo(
                quant=child.quant_name, bit_width=None if bits is None else int(bits), signed=child.signed
            )
    return found


def _label(module: nn.Module, name: str) -> str:
    if isinstance(module, QuantEltwiseAdd):
        return "add"
    if isinstance(module, QuantCat):
        return "cat"
    if isinstance(module, QuantIdentity):
        return "input" if name.startswith("input_quant") else "quantizer"
    return type(module).__name__


def report(model: nn.Module) -> QuantizationReport:
    """The `QuantizationReport` of a model made by `quantize_model`."""
    info = getattr(model, "quantization_info", None)
    if info is None:
        raise ValueError(
            f"report: {type(model).__name__} was not made by quantframe.graph.quantize_model "
            "(no quantization_info); quantize it with quantize_model(model, example_inputs) first"
        )
    quantized, float_ops = [], []
    if isinstance(model, fx.GraphModule) and info["capture"] != "modules":
        for node in model.graph.nodes:
            _entry(model, node, info["notes"], quantized, float_ops)
    else:
        for name, module in model.named_modules():
            quantizers = _quantizers(module)
            if quantizers:
                quantized.append(QuantizedOp(name=name, op=type(module).__name__, quantizers=quantizers))
        for name, reason in info["notes"].items():
            float_ops.append(FloatOp(name=name, op=reason.split(":")[0], reason=reason))
    return QuantizationReport(
        model=info["model"],
        capture=info["capture"],
        recipe=info["recipe"],
        quantized=quantized,
        float_ops=float_ops,
        folded_batch_norms=info["folded"],
    )


def _entry(
    gm: fx.GraphModule, node: fx.Node, notes: dict[str, str], quantized: list, float_ops: list
) -> None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        quantizers = _quantizers(module)
        if quantizers:
            aligned = isinstance(module, QuantEltwiseAdd | QuantCat)
            quantized.append(
                QuantizedOp(
                    name=node.target, op=_label(module, node.target), quantizers=quantizers, aligned=aligned
                )
            )
        elif node.target in notes:
            float_ops.append(FloatOp(name=node.target, op=type(module).__name__, reason=notes[node.target]))
    elif node.op in ("call_function", "call_method") and node.name in notes:
        float_ops.append(FloatOp(name=node.name, op=_op_name(node.target), reason=notes[node.name]))


def _op_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))

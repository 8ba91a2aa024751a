"""The `quantframe` command.

    quantframe export MODULE:FACTORY --input-shape 1,3,32,32 --format qcdq|qonnx --out model.onnx

imports MODULE (a dotted module name, or a path to a .py file), calls FACTORY() for the model,
optionally loads `--state-dict`, exports it with a random example input of `--input-shape`, and prints a
one-screen summary: the nodes by op type and the quantized tensors by role and bit width.
"""

import argparse
import importlib
import importlib.util
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _load_factory(spec: str):
    module_name, sep, factory_name = spec.partition(":")
    if not sep or not module_name or not factory_name:
        raise SystemExit(f"quantframe export: expected MODULE:FACTORY, got {spec!r}")
    if module_name.endswith(".py") or Path(module_name).is_file():
        loader_spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
        if loader_spec is None or loader_spec.loader is None:
            raise SystemExit(f"quantframe export: cannot import {module_name}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(module_name)
    factory = getattr(module, factory_name, None)
    if factory is None:
        raise SystemExit(f"quantframe export: {module_name} has no attribute {factory_name!r}")
    return factory


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-shape {text!r}: expected integers such as 1,3,32,32"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: dimensions must be positive")
    return shape


def _role(node_name: str) -> str:
    for part in reversed(node_name.strip("/").split("/")):
        if part.endswith("_quant") or part.startswith("Quantframe"):
            return part
    return "other"


def quantized_tensors(model: onnx.ModelProto) -> Counter:
    """(quantizer role, bits) -> count, read from the graph's DequantizeLinear / Quant nodes."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            source = producers.get(node.input[0])
            if source is not None and source.op_type == "Clip" and source.input[1] in inits:
                lo, hi = int(inits[source.input[1]]), int(inits[source.input[2]])
                bits = int(np.ceil(np.log2(hi - lo + 1)))
            else:
                zero_point = inits.get(node.input[2]) if len(node.input) > 2 else None
                bits = 8 * (zero_point.dtype.itemsize if zero_point is not None else 1)
            found[(_role(node.name), bits)] += 1
        elif node.op_type == "Quant":
            found[(_role(node.name), int(inits[node.input[3]]))] += 1
        elif node.op_type == "BipolarQuant":
            found[(_role(node.name), 1)] += 1
    return found


def summary(model: onnx.ModelProto, path: str, fmt: str, seconds: float) -> str:
    """The one-screen report printed after an export."""
    size = Path(path).stat().st_size
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    lines = [f"exported {fmt} to {path} ({size / 1024:.1f} KiB, opset {opset}) in {seconds:.2f} s"]
    ops = Counter(node.op_type for node in model.graph.node)
    lines.append("nodes: " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))
    lines.append(f"{'quantizer':<16}{'bits':>5}{'count':>7}")
    for (role, bits), count in sorted(quantized_tensors(model).items()):
        lines.append(f"{role:<16}{bits:>5}{count:>7}")
    dtypes = Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer)
    lines.append("initializers: " + ", ".join(f"{dtype} {n}" for dtype, n in sorted(dtypes.items())))
    return "\n".join(lines)


def _export(args: argparse.Namespace) -> int:
    import torch

    from quantframe.export import export_onnx_qcdq, export_qonnx

    model = _load_factory(args.model)()
    if args.state_dict:
        model.load_state_dict(torch.load(args.state_dict, map_location="cpu", weights_only=True))
    example = torch.randn(*args.input_shape)
    exporter = export_onnx_qcdq if args.format == "qcdq" else export_qonnx
    start = time.perf_counter()
    onnx_model = exporter(
        model, example, args.out, opset_version=args.opset, dynamic_batch=args.dynamic_batch
    )
    print(summary(onnx_model, args.out, args.format, time.perf_counter() - start))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantframe", description="quantframe command line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a model to ONNX (QCDQ) or QONNX")
    export.add_argument(
        "model", help="MODULE:FACTORY, FACTORY() returns the model (MODULE may be a .py path)"
    )
    export.add_argument(
        "--input-shape", type=_shape, required=True, help="example input shape, e.g. 1,3,32,32"
    )
    export.add_argument("--format", choices=("qcdq", "qonnx"), default="qcdq")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default 13)")
    export.add_argument("--state-dict", default=None, help="a torch.save'd state_dict to load first")
    export.add_argument("--dynamic-batch", action="store_true", help="make the batch dimension dynamic")
    export.set_defaults(run=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (TypeError, ValueError, RuntimeError) as error:
        print(f"quantframe {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

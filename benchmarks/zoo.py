"""Whole-model quantization of Hugging Face vision models: quantize, calibrate, accuracy, export, onnxruntime.

Each model is built from its transformers config (random weights, nothing downloaded) at the config's
default size with 224x224 inputs (`--quick`: small configs and 64x64 inputs). Random initialisation
can leave activations vanishing, so every BatchNorm's statistics are first re-estimated on random
data. Per model, in one process:

- `quantize_model` time (capture + rewrite), with Brevitas's `preprocess_for_quantize` + `quantize`
  on the same model timed beside it where brevitas is installed (its failure is an error row);
- the calibration forward per batch against the float forward (interleaved medians, `timing.compare`);
- output SQNR against float for W8A8 (the "onnx" recipe) and W4A8 (`weight_bit_width=4`) after
  calibration on random batches, and which ops stayed float (`report(q).float_ops`); beside them the
  "W8 floor": the float model with its weights rounded by hand to 8 bits per channel, the SQNR a
  random-init model allows at all (some amplify any weight error);
- `export_onnx_qcdq` time against `torch.onnx.export(dynamo=False)` of the float model, the file sizes
  (the W4A8 file at opset 21), onnxruntime latency of the QCDQ file (`onnxruntime_session`) against
  the float file (a plain `InferenceSession`) at batch 1 and 32, and how many convolutions / matmuls
  onnxruntime runs as integer and as float kernels (`optimized_op_types`).

Targets: W8A8 SQNR >= 30 dB; quantize time <= 0.5x Brevitas; calibration forward <= 1.3x float;
onnxruntime latency <= 1.0x float at batch 1 and 32.

A stage that fails is kept as an error row (the exception and the frames it came from); the stages
that need its result are skipped and the other models still run.
"""

import argparse
import copy
import itertools
import json
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.export import float_export
from benchmarks.timing import brevitas_available, compare, setup, time_once
from examples.quantize_pretrained_architecture import reestimate_batch_norm, sqnr_db
from quantframe.calibrate import calibration_mode
from quantframe.export import export_onnx_qcdq, onnxruntime_session
from quantframe.export.onnxruntime import FLOAT_KERNELS, INTEGER_KERNELS, optimized_op_types
from quantframe.graph import quantize_model, report

TARGETS = {
    "w8a8_sqnr_db": ">= 30",
    "quantize_vs_brevitas": "<= 0.5",
    "calibration_vs_float": "<= 1.3",
    "ort_b1_vs_float": "<= 1.0",
    "ort_b32_vs_float": "<= 1.0",
}


@dataclass(frozen=True)
class ZooModel:
    """A transformers image classifier and its config's keyword arguments, full size and `--quick`."""

    model_class: str
    config_class: str
    full: dict[str, Any]
    quick: dict[str, Any]
    reinit: bool = False  # He-initialised convs, BatchNorm eps <= 1e-5 (see `revive`)


SMALL = 64  # the --quick input size (the image_size of the configs that take one)
SMALL_STAGES = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], embedding_size=16)
ZOO: dict[str, ZooModel] = {
    "resnet18": ZooModel(
        "ResNetForImageClassification",
        "ResNetConfig",
        dict(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64),
        dict(layer_type="basic", **SMALL_STAGES),
    ),
    "resnet50": ZooModel(
        "ResNetForImageClassification",
        "ResNetConfig",
        dict(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048]),
        dict(layer_type="bottleneck", **SMALL_STAGES | dict(hidden_sizes=[32, 64, 128, 256])),
    ),
    "mobilenet_v1": ZooModel(
        "MobileNetV1ForImageClassification",
        "MobileNetV1Config",
        {},
        dict(depth_multiplier=0.25, image_size=SMALL),
    ),
    "mobilenet_v2": ZooModel(
        "MobileNetV2ForImageClassification",
        "MobileNetV2Config",
        {},
        dict(depth_multiplier=0.35, image_size=SMALL),
    ),
    "efficientnet_b0": ZooModel(  # the config's defaults are B7's; B0 is width and depth 1
        "EfficientNetForImageClassification",
        "EfficientNetConfig",
        dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout_rate=0.2, hidden_dim=1280),
        dict(width_coefficient=0.25, depth_coefficient=0.5, image_size=SMALL, hidden_dim=320),
        reinit=True,
    ),
    "regnet": ZooModel(  # the config's defaults: RegNetY-4.0GF
        "RegNetForImageClassification",
        "RegNetConfig",
        {},
        dict(groups_width=8, **SMALL_STAGES),
    ),
    "convnext_tiny": ZooModel(
        "ConvNextForImageClassification",
        "ConvNextConfig",
        {},
        dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128]),
    ),
}


# ------------------------------------------------------------------------------------------ rows


def failure(error: BaseException) -> str:
    """One line for an error row: the exception, its first message line, the last frames it passed.

    The frames are read from the traceback's code objects, not its source lines: `extract_tb` fails on
    the generated code of some tracers (Brevitas's fx backport).
    """
    frames = [(frame.f_code, line) for frame, line in traceback.walk_tb(error.__traceback__)][-3:]
    where = " <- ".join(f"{Path(c.co_filename).name}:{line} {c.co_name}" for c, line in reversed(frames))
    message = str(error).strip().splitlines()[0][:240] if str(error).strip() else ""
    return f"{type(error).__name__}: {message} [{where}]"


@dataclass
class Row:
    """One model's figures, and the stages that failed (stage -> `failure` line)."""

    model: str
    figures: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def attempt(self, stage: str, fn: Callable[[], Any]) -> Any:
        """`fn()`, or None with the error kept under `stage`: one failure never stops the run."""
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - every failure becomes an error row
            self.errors[stage] = failure(error)
            return None


# ------------------------------------------------------------------------------------------ models


def build(name: str, quick: bool) -> nn.Module:
    """The zoo model `name` with random weights (10 classes in `--quick`, else ImageNet's 1000)."""
    import transformers

    entry = ZOO[name]
    settings = entry.quick if quick else entry.full
    config = getattr(transformers, entry.config_class)(num_labels=10 if quick else 1000, **settings)
    torch.manual_seed(0)
    return getattr(transformers, entry.model_class)(config).eval()


def random_batches(count: int, batch: int, size: int, seed: int) -> list[torch.Tensor]:
    """`count` batches of standard normal images (what a normalised input pipeline feeds)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=generator) for _ in range(count)]


def logits(output: Any) -> torch.Tensor:
    """The logits of a transformers `ModelOutput`, or the tensor itself."""
    return output.logits if hasattr(output, "logits") else output


class Logits(nn.Module):
    """`model(x).logits`: one tensor output, for the ONNX exporters and onnxruntime."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits(self.model(x))


# ------------------------------------------------------------------------------------------ stages


def quantize(model: nn.Module, example: torch.Tensor, **kwargs: Any) -> tuple[nn.Module, list[str]]:
    """`quantize_model(model, example, **kwargs)` and the warnings it gave (a capture fallback)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = quantize_model(model, example, **kwargs)
    return quantized, sorted({str(w.message).splitlines()[0][:200] for w in caught})


def brevitas_quantize(model: nn.Module) -> nn.Module:
    """Brevitas's graph flow on a copy (quantize_model copies too): trace, merge BatchNorm, quantize."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its import and tracer warnings (optional packages, pytree)
        from brevitas.graph.quantize import preprocess_for_quantize
        from brevitas.graph.quantize import quantize as brevitas_graph_quantize

        return brevitas_graph_quantize(preprocess_for_quantize(copy.deepcopy(model)))


def quantize_times(row: Row, model: nn.Module, example: torch.Tensor) -> None:
    """quantize_model against Brevitas, interleaved (quantize_model alone when Brevitas fails)."""
    workloads = {"quantframe": lambda: quantize_model(model, example)}
    if brevitas_available() and row.attempt("brevitas quantize", lambda: brevitas_quantize(model)):
        workloads["brevitas"] = lambda: brevitas_quantize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = compare(workloads, baseline=next(reversed(workloads)), warmup=1, repeats=3)
    row.figures["quantize_ms"] = results["quantframe"]["median_ms"]
    if "brevitas" in results:
        row.figures["brevitas_quantize_ms"] = results["brevitas"]["median_ms"]
        row.figures["quantize_vs_brevitas"] = results["quantframe"]["ratio"]


def cycling(batches: list[torch.Tensor], fn: Callable[[torch.Tensor], Any]) -> Callable[[], Any]:
    """A workload that calls `fn` on the next batch each time (the same order for every workload)."""
    order = itertools.cycle(batches)
    return lambda: fn(next(order))


def calibrate_timed(row: Row, model: nn.Module, q: nn.Module, batches: list[torch.Tensor]) -> None:
    """Calibrate `q` on `batches`, timing each calibration forward against the float forward."""
    with calibration_mode(q):
        results = compare(
            {"float": cycling(batches, model), "calibration": cycling(batches, q)},
            baseline="float",
            warmup=1,
            repeats=5,
        )
    row.figures["float_forward_ms"] = results["float"]["median_ms"]
    row.figures["calibration_ms"] = results["calibration"]["median_ms"]
    row.figures["calibration_vs_float"] = results["calibration"]["ratio"]


@torch.no_grad()
def output_sqnr(model: nn.Module, q: nn.Module, test: torch.Tensor) -> float:
    """The quantized model's logits against the float model's, in eval mode."""
    return sqnr_db(logits(model(test)), logits(q(test)))


@torch.no_grad()
def rounding_floor_sqnr(model: nn.Module, test: torch.Tensor, bits: int = 8) -> float:
    """The float model with only its conv/linear weights rounded by hand to a per-channel abs-max grid.

    Why: a random-init model can amplify small weight errors (a BatchNorm dividing by a near-zero
    variance), so its SQNR can be low whatever the quantizer; this torch-only figure is the floor
    that says whether a low W8A8 figure comes from the model or from quantize_model.
    """
    rounded = copy.deepcopy(model)
    levels = 2 ** (bits - 1) - 1
    for module in rounded.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            weight = module.weight
            scale = weight.abs().flatten(1).amax(1).clamp_min(1e-12) / levels
            scale = scale.reshape(-1, *[1] * (weight.dim() - 1))
            weight.copy_(torch.round(weight / scale) * scale)
    return output_sqnr(model, rounded, test)


def w8a8(row: Row, model: nn.Module, batches: list[torch.Tensor], test: torch.Tensor) -> nn.Module:
    """The default recipe: quantize, calibrate (timed), SQNR, what stayed float."""
    q, caught = quantize(model, batches[0])
    summary = report(q)
    row.figures["capture"] = summary.capture
    row.figures["quantize_warnings"] = caught
    row.figures["quantized_ops"] = len(summary.quantized)
    row.figures["float_ops"] = [f"{op.name} ({op.op})" for op in summary.float_ops]
    calibrate_timed(row, model, q, batches)
    row.figures["w8a8_sqnr_db"] = output_sqnr(model, q, test)
    row.figures["w8_rounding_floor_db"] = rounding_floor_sqnr(model, test)
    return q


def w4a8(row: Row, model: nn.Module, batches: list[torch.Tensor], test: torch.Tensor) -> nn.Module:
    """4-bit weights, 8-bit activations: quantize, calibrate on the same batches, SQNR."""
    q, _ = quantize(model, batches[0], weight_bit_width=4)
    with calibration_mode(q):
        for x in batches:
            q(x)
    row.figures["w4a8_sqnr_db"] = output_sqnr(model, q, test)
    return q


def exports(row: Row, model: nn.Module, q: nn.Module, size: int, folder: Path) -> dict[str, Path]:
    """The float and W8A8 QCDQ files (dynamic batch), export times interleaved, file sizes."""
    x = torch.randn(1, 3, size, size)
    paths = {"float": folder / "float.onnx", "w8a8": folder / "w8a8.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = compare(
            {
                "float": lambda: float_export(Logits(model), x, str(paths["float"]), dynamic=True),
                "qcdq": lambda: export_onnx_qcdq(Logits(q), x, paths["w8a8"], dynamic_batch=True),
            },
            baseline="float",
            warmup=1,
            repeats=3,
        )
    row.figures["float_export_ms"] = results["float"]["median_ms"]
    row.figures["export_ms"] = results["qcdq"]["median_ms"]
    row.figures["export_vs_float"] = results["qcdq"]["ratio"]
    row.figures["float_onnx_bytes"] = paths["float"].stat().st_size
    row.figures["w8a8_onnx_bytes"] = paths["w8a8"].stat().st_size
    row.figures["w8a8_size_vs_float"] = row.figures["w8a8_onnx_bytes"] / row.figures["float_onnx_bytes"]
    return paths


def export_w4a8(row: Row, q4: nn.Module, size: int, folder: Path) -> None:
    """The W4A8 QCDQ file at opset 21 (the opset whose QuantizeLinear/DequantizeLinear take int4)."""
    path = folder / "w4a8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn(1, 3, size, size)
        seconds = time_once(lambda: export_onnx_qcdq(Logits(q4), x, path, opset_version=21))
    row.figures["w4a8_export_ms"] = seconds * 1e3
    row.figures["w4a8_onnx_bytes"] = path.stat().st_size
    if "float_onnx_bytes" in row.figures:
        row.figures["w4a8_size_vs_float"] = row.figures["w4a8_onnx_bytes"] / row.figures["float_onnx_bytes"]


def plain_session(path: Path) -> Any:
    """The float baseline: onnxruntime's own InferenceSession at its default level, 2 threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latency(row: Row, paths: dict[str, Path], size: int) -> None:
    """onnxruntime latency of the QCDQ file against the float file, at batch 1 and 32."""
    sessions = {
        "float": plain_session(paths["float"]),
        "qcdq": onnxruntime_session(paths["w8a8"], intra_op_num_threads=2),
    }
    for batch, warmup, repeats in ((1, 3, 20), (32, 1, 5)):
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        workloads = {
            name: (lambda s=s, x=x: s.run(None, {s.get_inputs()[0].name: x})) for name, s in sessions.items()
        }
        results = compare(workloads, baseline="float", warmup=warmup, repeats=repeats)
        row.figures[f"ort_b{batch}_float_ms"] = results["float"]["median_ms"]
        row.figures[f"ort_b{batch}_qcdq_ms"] = results["qcdq"]["median_ms"]
        row.figures[f"ort_b{batch}_vs_float"] = results["qcdq"]["ratio"]


def kernels(row: Row, path: Path) -> None:
    """How many convolutions / matmuls onnxruntime runs as integer and as float kernels."""
    counts = optimized_op_types(path, intra_op_num_threads=2)
    row.figures["integer_kernels"] = sum(n for op, n in counts.items() if op in INTEGER_KERNELS)
    row.figures["float_kernels"] = sum(n for op, n in counts.items() if op in FLOAT_KERNELS)
    compute = INTEGER_KERNELS | FLOAT_KERNELS
    row.figures["kernel_counts"] = {op: n for op, n in counts.items() if op in compute}


def revive(model: nn.Module) -> nn.Module:
    """He-initialised convolutions and BatchNorm eps capped at 1e-5: Hugging Face's EfficientNet init
    gives ~1e-36 logits (its BatchNorm eps of 1e-3 dwarfs its convs' output variance, so re-estimated
    statistics cannot renormalise them), and every quantized output would round to 0."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, generator=generator)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = min(module.eps, 1e-5)
    return model


def measure(name: str, quick: bool, size: int, batch: int) -> Row:
    """Every stage for one model; a failed stage is an error row and skips the stages needing it."""
    row = Row(name)
    batches = random_batches(4, batch, size, seed=1)
    test = random_batches(1, batch, size, seed=2)[0]
    model = row.attempt("build", lambda: build(name, quick))
    if model is not None and ZOO[name].reinit:
        revive(model)
    if model is None or row.attempt("batch norm", lambda: reestimate_batch_norm(model, batches)) is None:
        return row
    row.attempt("quantize time", lambda: quantize_times(row, model, batches[0]))
    q8 = row.attempt("W8A8", lambda: w8a8(row, model, batches, test))
    q4 = row.attempt("W4A8", lambda: w4a8(row, model, batches, test))
    with tempfile.TemporaryDirectory() as folder:
        paths = None
        if q8 is not None:
            paths = row.attempt("export", lambda: exports(row, model, q8, size, Path(folder)))
        if q4 is not None:
            row.attempt("export W4A8 (opset 21)", lambda: export_w4a8(row, q4, size, Path(folder)))
        if paths is not None:
            row.attempt("onnxruntime latency", lambda: latency(row, paths, size))
            row.attempt("onnxruntime kernels", lambda: kernels(row, paths["w8a8"]))
    return row


# ------------------------------------------------------------------------------------------ output


COLUMNS: list[tuple[str, str, str]] = [  # header, figure key (its TARGETS key too), format
    ("capture", "capture", "{}"),
    ("quantize ms", "quantize_ms", "{:.0f}"),
    ("x Brevitas", "quantize_vs_brevitas", "{:.2f}"),
    ("calib x float", "calibration_vs_float", "{:.2f}"),
    ("W8A8 dB", "w8a8_sqnr_db", "{:.1f}"),
    ("W4A8 dB", "w4a8_sqnr_db", "{:.1f}"),
    ("W8 floor dB", "w8_rounding_floor_db", "{:.1f}"),
    ("float ops", "float_ops", "{}"),
    ("export x float", "export_vs_float", "{:.2f}"),
    ("size W8", "w8a8_size_vs_float", "{:.2f}"),
    ("size W4", "w4a8_size_vs_float", "{:.2f}"),
    ("ORT b1 x", "ort_b1_vs_float", "{:.2f}"),
    ("ORT b32 x", "ort_b32_vs_float", "{:.2f}"),
    ("int/float kernels", "kernels", "{}"),
]


def cell(row: Row, key: str, fmt: str) -> str:
    """A table cell: the figure formatted (a list: its length), '-' when its stage failed or did not run."""
    figures = row.figures
    if key == "kernels":
        found = "integer_kernels" in figures
        return f"{figures['integer_kernels']}/{figures['float_kernels']}" if found else "-"
    if key not in figures:
        return "-"
    value = figures[key]
    return str(len(value)) if isinstance(value, list) else fmt.format(value)


def aligned(line: list[str], widths: list[int]) -> str:
    """The first column left-aligned, the figures right-aligned."""
    figures = [text.rjust(width) for text, width in zip(line[1:], widths[1:], strict=True)]
    return "  ".join([line[0].ljust(widths[0]), *figures])


def print_table(title: str, rows: list[Row]) -> None:
    """The figures under a row of targets, then each model's float ops and its error rows."""
    header = ["model", *(c[0] for c in COLUMNS)]
    lines = [header, ["target", *(TARGETS.get(key, "") for _, key, _ in COLUMNS)]]
    lines += [[row.model, *(cell(row, key, fmt) for _, key, fmt in COLUMNS)] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"\n{title}")
    for line in lines:
        print(aligned(line, widths))
    for row in rows:
        names = row.figures.get("float_ops")
        if names:
            more = f", ... ({len(names)} in all)" if len(names) > 8 else ""
            print(f"{row.model}: left float: {', '.join(names[:8])}{more}")
    for row in rows:
        for stage, error in row.errors.items():
            print(f"{row.model}: ERROR in {stage}: {error}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO), help=f"comma-separated, from: {', '.join(ZOO)}")
    parser.add_argument("--size", type=int, default=None, help=f"input side (224; --quick: {SMALL})")
    parser.add_argument("--quick", action="store_true", help=f"small configs and {SMALL}x{SMALL} inputs")
    parser.add_argument("--batch", type=int, default=8, help="calibration batch size")
    args = parser.parse_args()
    unknown = sorted(set(args.models.split(",")) - set(ZOO))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(ZOO)}")
    args.size = args.size or (SMALL if args.quick else 224)
    return args


def main() -> None:
    args = parse_args()
    setup()
    start = time.perf_counter()
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name, args.quick, args.size, args.batch))
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    configs = "quick configs" if args.quick else "default configs"
    title = f"zoo: whole-model quantization ({configs}, {args.size}x{args.size}, batch {args.batch})"
    print_table(title, rows)
    results = {row.model: {**row.figures, "errors": row.errors} for row in rows}
    print(json.dumps({"benchmark": title, "targets": TARGETS, "results": results}))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

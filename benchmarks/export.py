"""Export of the ResNet-18-shaped model: export time, onnxruntime latency, error against torch eval.

Targets: QCDQ/QONNX export time <= 1.5x the float model's `torch.onnx.export` (the same TorchScript
exporter); onnxruntime latency of the QCDQ file <= 1.2x the float model's ONNX at batch 1 and 32; an
error of at most one output quantization step at onnxruntime's default optimisation level.

The latency table shows which kernels ran: `onnxruntime_session` (quantframe's helper), a plain
`InferenceSession` at the default level (weight dequantization of unfused convs on every run), and the
helper forced to U8U8 kernels (`session.x64quantprecision`, what it selects on CPUs without VNNI).
"""

import io
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.models import finish_statistics, float_resnet18, quant_resnet18
from benchmarks.timing import compare, report, setup
from quantframe.export import export_onnx_qcdq, export_qonnx, onnxruntime_session
from quantframe.export.onnxruntime import u8s8_saturates
from quantframe.layers import QuantIdentity


def calibrated_models() -> tuple[nn.Module, nn.Module]:
    """The quantized model after statistics on random data, and the float model with its weights."""
    quant = quant_resnet18()
    quant.train()
    with torch.no_grad():
        for _ in range(4):
            quant(torch.randn(32, 3, 32, 32))
    finish_statistics(quant)
    quant.eval()
    float_model = float_resnet18()
    float_model.load_state_dict(quant.state_dict(), strict=False)
    return quant, float_model.eval()


def float_export(model: nn.Module, x: torch.Tensor, target: object, dynamic: bool = False) -> None:
    """The float baseline: the TorchScript exporter quantframe drives (its warnings muted as there)."""
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.onnx.export(
        model, (x,), target, dynamo=False, input_names=["input"], output_names=["output"], dynamic_axes=axes
    )


def export_times(quant: nn.Module, float_model: nn.Module) -> None:
    x = torch.randn(1, 3, 32, 32)
    workloads = {
        "float torch.onnx.export (TorchScript)": lambda: float_export(float_model, x, io.BytesIO()),
        "quantframe export_onnx_qcdq": lambda: export_onnx_qcdq(quant, x),
        "quantframe export_qonnx": lambda: export_qonnx(quant, x),
    }
    report(
        "export: time (ResNet-18, batch-1 example)",
        compare(workloads, baseline="float torch.onnx.export (TorchScript)", warmup=3, repeats=20),
    )


def kernels(path: str) -> str:
    """The op types onnxruntime runs for `path` at its default level, with quantframe's helper."""
    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        onnxruntime_session(path, optimized_model_filepath=optimized)
        counts = Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    return ", ".join(f"{op} {n}" for op, n in counts.most_common())


def latency(quant: nn.Module, float_model: nn.Module, folder: Path) -> None:
    qcdq, float_path = str(folder / "qcdq.onnx"), str(folder / "float.onnx")
    export_onnx_qcdq(quant, torch.randn(1, 3, 32, 32), qcdq, dynamic_batch=True)
    float_export(float_model, torch.randn(1, 3, 32, 32), float_path, dynamic=True)
    plain = ort.SessionOptions()
    plain.intra_op_num_threads = 2
    plain.log_severity_level = 3
    sessions = {
        "float ONNX": onnxruntime_session(float_path, intra_op_num_threads=2),
        "QCDQ, onnxruntime_session": onnxruntime_session(qcdq, intra_op_num_threads=2),
        "QCDQ, plain InferenceSession": ort.InferenceSession(qcdq, plain, providers=["CPUExecutionProvider"]),
        "QCDQ, onnxruntime_session U8U8": onnxruntime_session(
            qcdq, intra_op_num_threads=2, exact_integer_kernels=True
        ),
    }
    extra = {"kernels (QCDQ, default level)": kernels(qcdq), "cpu_u8s8_saturates": u8s8_saturates()}
    for batch, repeats in ((1, 50), (32, 20)):
        feed = {"input": np.random.default_rng(0).standard_normal((batch, 3, 32, 32), dtype=np.float32)}
        workloads = {name: (lambda s=s, feed=feed: s.run(None, feed)) for name, s in sessions.items()}
        report(
            f"export: onnxruntime latency, batch {batch}",
            compare(workloads, "float ONNX", repeats=repeats),
            extra,
        )


def errors(quant: nn.Module, folder: Path) -> None:
    """Max error of each runtime in steps of an 8-bit output quantizer appended to the model."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    head = QuantIdentity()
    model = nn.Sequential(quant, head)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(32, 3, 32, 32))
    finish_statistics(model)
    model.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    step = float(head.act_quant.scale().detach())
    path = str(folder / "head.onnx")
    export_onnx_qcdq(model, x, path)
    results = {}
    for level in ("all", "disable"):
        out = onnxruntime_session(path, optimization=level).run(None, {"input": x.numpy()})[0]
        results[f"QCDQ onnxruntime ({level})"] = float(np.abs(out - expected).max() / step)
    wrapper = cleanup_model(ModelWrapper(export_qonnx(model, x[:2])))
    out = execute_onnx(wrapper, {wrapper.graph.input[0].name: x[:2].numpy()})[wrapper.graph.output[0].name]
    results["QONNX qonnx executor (batch 2)"] = float(np.abs(out - expected[:2]).max() / step)
    print("\nexport: max error against torch eval, in output steps")
    for name, value in results.items():
        print(f"{name:<48}{value:>9.3f}")
    print({"benchmark": "export: error", "results": results})


def main() -> None:
    setup()
    quant, float_model = calibrated_models()
    start = time.perf_counter()
    export_times(quant, float_model)
    with tempfile.TemporaryDirectory() as folder:
        latency(quant, float_model, Path(folder))
        errors(quant, Path(folder))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

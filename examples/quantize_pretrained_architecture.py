"""Quantize a model you already have: a Hugging Face ResNet, calibrated on data, exported, checked.

A transformers `ResNetForImageClassification` is not written with quantized layers; `quantize_model`
captures its forward and places 8-bit weight and activation quantizers (the "onnx" recipe). The model
is calibrated on scikit-learn's digits upsampled to 3x64x64, `report` says what was quantized and what
stayed float, `export_onnx_qcdq` writes standard ONNX, and onnxruntime's output is compared with
torch's in steps of the output quantizer. The ResNet is built from a small config so that the example
runs offline in seconds; a trained one (`ResNetForImageClassification.from_pretrained(...)`) goes
through the same calls.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification

from quantframe.calibrate import calibration_mode
from quantframe.export import export_onnx_qcdq, onnxruntime_session
from quantframe.graph import quantize_model, report
from quantframe.layers import QuantIdentity


def digits_images(size: int = 64) -> torch.Tensor:
    """scikit-learn's 1797 digits as (N, 3, size, size) images, normalised to mean 0 and std 1."""
    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    return ((x - x.mean()) / x.std()).contiguous()


def small_resnet(num_labels: int = 10) -> nn.Module:
    """A ResNet-18-like transformers classifier, one basic block per stage, 16 to 128 channels."""
    stages = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], embedding_size=16)
    config = ResNetConfig(layer_type="basic", num_labels=num_labels, **stages)
    torch.manual_seed(0)
    return ResNetForImageClassification(config).eval()


@torch.no_grad()
def reestimate_batch_norm(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Every BatchNorm's running statistics recomputed as the plain mean over `batches`.

    Why: a trained model brings statistics that match its activations; a random-init one has 0 and 1,
    and its activations then shrink or grow layer after layer until the output says nothing.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for x in batches:
        model(x)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def calibrate(qmodel: nn.Module, batches: list[torch.Tensor], show_progress: bool = True) -> None:
    """Activation statistics on `batches`; the scales are fixed when the context exits."""
    from tqdm import tqdm

    with calibration_mode(qmodel):
        for x in tqdm(batches, desc="calibration", unit="batch", disable=not show_progress):
            qmodel(x)


def output_step(qmodel: nn.Module, x: torch.Tensor) -> float:
    """The scale of the quantizer whose output is the logits: one step of the exported output grid."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, out, name=name: outputs.__setitem__(name, out))
        for name, module in qmodel.named_modules()
        if isinstance(module, QuantIdentity)
    ]
    try:
        with torch.no_grad():
            logits = qmodel(x).logits
    finally:
        for hook in hooks:
            hook.remove()
    name = next(name for name, out in outputs.items() if torch.equal(getattr(out, "value", out), logits))
    return float(qmodel.get_submodule(name).act_quant.scale().detach())


def sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    """10 log10(signal power / quantization-noise power)."""
    noise = (reference - approximation).double().pow(2).sum()
    return float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def run(
    calibration_batches: int = 4, batch_size: int = 32, size: int = 64, show_progress: bool = True
) -> dict[str, str]:
    """Quantize, calibrate, report, export, check in onnxruntime; returns the figures of the table."""
    images = digits_images(size)
    batches = list(images[: calibration_batches * batch_size].split(batch_size))
    test = images[-batch_size:]
    model = reestimate_batch_norm(small_resnet(), batches)

    start = time.perf_counter()
    qmodel = quantize_model(model, batches[0])
    results = {"quantize_model": f"{time.perf_counter() - start:.2f} s"}
    start = time.perf_counter()
    calibrate(qmodel, batches, show_progress)
    results["calibration"] = f"{len(batches)} batches of {batch_size}, {time.perf_counter() - start:.2f} s"
    summary = report(qmodel)
    print(summary)
    results["ops quantized / float"] = f"{len(summary.quantized)} / {len(summary.float_ops)}"
    with torch.no_grad():
        expected = qmodel(test).logits
        results["SQNR vs float (held-out digits)"] = f"{sqnr_db(model(test).logits, expected):.1f} dB"

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet_qcdq.onnx"
        export_onnx_qcdq(qmodel, test, path)  # at the batch it is checked with (a fixed batch size)
        results["QCDQ ONNX file"] = f"{path.stat().st_size / 1024:.0f} KiB"
        session = onnxruntime_session(path)
        got = session.run(None, {session.get_inputs()[0].name: test.numpy()})[0]
    difference = float(np.abs(got - expected.numpy()).max())
    steps = difference / output_step(qmodel, test)
    results["onnxruntime vs torch, max |diff|"] = f"{difference:.2e} ({steps:.2f} output steps)"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="calibration batches")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = run(args.batches, args.batch_size, args.size)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Hugging Face ResNet, W8A8 (quantize_model, recipe 'onnx')")
    table.add_column("step")
    table.add_column("result", justify="right")
    for name, value in results.items():
        table.add_row(name, value)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()

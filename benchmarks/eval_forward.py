"""Eval forward (no_grad, cached quantized weights) of the ResNet-18-shaped model vs float.

Targets: <= 1.15x at batch 32, <= 1.5x at batch 1.
"""

import torch

from benchmarks.models import brevitas_resnet18, finish_statistics, float_resnet18, quant_resnet18
from benchmarks.timing import brevitas_available, compare, report, setup


def main() -> None:
    setup()
    models = {"float torch": float_resnet18(), "quantframe": quant_resnet18()}
    if brevitas_available():
        models["brevitas"] = brevitas_resnet18()
    finish_statistics(models["quantframe"])
    for model in models.values():
        model.eval()
    for batch, repeats in ((32, 20), (1, 50)):
        x = torch.randn(batch, 3, 32, 32)

        def run(model, x=x):  # noqa: ANN001, ANN202
            with torch.no_grad():
                return model(x)

        workloads = {name: (lambda m=m: run(m)) for name, m in models.items()}
        report(f"eval_forward: batch {batch}", compare(workloads, baseline="float torch", repeats=repeats))


if __name__ == "__main__":
    main()

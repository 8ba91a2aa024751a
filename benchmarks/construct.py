"""Construction time of the ResNet-18-shaped model: quantized vs float torch. Target <= 1.5x."""

from benchmarks.models import brevitas_resnet18, float_resnet18, quant_resnet18
from benchmarks.timing import brevitas_available, compare, report, setup


def main() -> None:
    setup()
    workloads = {"float torch": float_resnet18, "quantframe": quant_resnet18}
    if brevitas_available():
        workloads["brevitas"] = brevitas_resnet18
    report("construct: ResNet-18-shaped CIFAR model", compare(workloads, baseline="float torch", repeats=20))


if __name__ == "__main__":
    main()

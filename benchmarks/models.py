"""The benchmark workloads' models: float, quantframe and (where installed) Brevitas ResNet-18s."""

from torch import nn

from examples.resnet18_qat import FLOAT_LAYERS, ResNet18, float_resnet18, quant_resnet18


def brevitas_resnet18(num_classes: int = 10) -> nn.Module:
    """The same network from Brevitas's layers (its default quantizers, 8 bits)."""
    from brevitas import nn as qnn

    layers = {
        "input": lambda: qnn.QuantIdentity(),
        "conv": lambda *a, **k: qnn.QuantConv2d(*a, weight_bit_width=8, **k),
        "relu": lambda: qnn.QuantReLU(bit_width=8),
        "linear": lambda *a, **k: qnn.QuantLinear(*a, weight_bit_width=8, **k),
    }
    return ResNet18(layers, num_classes)


def finish_statistics(model: nn.Module) -> None:
    """Switch every activation quantizer from collecting statistics to its learned scale."""
    for module in model.modules():
        finish = getattr(module, "init_from_statistics", None)
        if finish is not None and hasattr(module, "collector") and hasattr(module, "restrict"):
            finish()


__all__ = ["FLOAT_LAYERS", "brevitas_resnet18", "finish_statistics", "float_resnet18", "quant_resnet18"]

"""A ResNet-18-shaped CIFAR model, float and quantized from the same definition; a few QAT steps.

`float_resnet18()` and `quant_resnet18()` build the same network (same state_dict keys for
weights); the quantized one has a `QuantIdentity` input, `QuantConv2d` with the default 8-bit
weight quantizer, `QuantReLU` activations, float BatchNorm and a `QuantLinear` head. The
benchmarks use both. Run as a script for a short QAT run on synthetic CIFAR-shaped data.
"""

import argparse
from collections.abc import Callable

import torch
from torch import nn

from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU

LayerFactories = dict[str, Callable[..., nn.Module]]

FLOAT_LAYERS: LayerFactories = {
    "input": lambda: nn.Identity(),
    "conv": lambda *a, **k: nn.Conv2d(*a, **k),
    "relu": lambda: nn.ReLU(),
    "linear": lambda *a, **k: nn.Linear(*a, **k),
}


def quant_layers(weight_bit_width: int = 8, act_bit_width: int = 8) -> LayerFactories:
    """Factories for the quantized twin, with the given weight and activation bit widths."""
    return {
        "input": lambda: QuantIdentity(bit_width=act_bit_width),
        "conv": lambda *a, **k: QuantConv2d(*a, weight_bit_width=weight_bit_width, **k),
        "relu": lambda: QuantReLU(bit_width=act_bit_width),
        "linear": lambda *a, **k: QuantLinear(*a, weight_bit_width=weight_bit_width, **k),
    }


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm; the residual is added before the second activation."""

    def __init__(self, layers: LayerFactories, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = layers["conv"](in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = layers["relu"]()
        self.conv2 = layers["conv"](planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = layers["relu"]()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                layers["conv"](in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, BasicBlocks 64-128-256-512 (two each), global average pool, linear head."""

    def __init__(self, layers: LayerFactories, num_classes: int = 10):
        super().__init__()
        self.input = layers["input"]()
        self.conv1 = layers["conv"](3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = layers["relu"]()
        blocks, in_planes = [], 64
        for planes, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
            blocks.append(BasicBlock(layers, in_planes, planes, stride))
            in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers["linear"](512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(self.input(x))))
        out = self.pool(self.blocks(out)).flatten(1)
        return self.fc(out)


def float_resnet18(num_classes: int = 10) -> ResNet18:
    return ResNet18(FLOAT_LAYERS, num_classes)


def quant_resnet18(num_classes: int = 10, weight_bit_width: int = 8, act_bit_width: int = 8) -> ResNet18:
    return ResNet18(quant_layers(weight_bit_width, act_bit_width), num_classes)


def qat_steps(model: nn.Module, steps: int, batch: int = 32, seed: int = 0) -> list[float]:
    """SGD steps on synthetic CIFAR-shaped data (a fixed random batch and labels); returns the losses."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = quant_resnet18()
    for step, loss in enumerate(qat_steps(model, args.steps, args.batch)):
        print(f"step {step}: loss {loss:.4f}")


if __name__ == "__main__":
    main()

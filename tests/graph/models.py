"""Models for the whole-model tests: Hugging Face vision models at small configs, and small models
written here for patterns those lack (a DenseNet-style cat, a ShuffleNet channel shuffle, a functional
forward, data-dependent control flow)."""

import torch
import torch.nn.functional as F
from torch import nn


def reestimated(
    model: nn.Module, shape: tuple[int, ...], batches: int = 3, seed: int = 0, reinit: bool = False
) -> nn.Module:
    """`model` in eval mode with BatchNorm statistics re-estimated on random data (and, with `reinit`,
    He-initialised convolutions and BatchNorm eps capped at 1e-5): random-init networks otherwise
    shrink their activations towards 0 layer by layer. Hugging Face's EfficientNet init gives 1e-36
    logits: its BatchNorm eps of 1e-3 dwarfs the variance of its convs' outputs."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if reinit and isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, generator=generator)
        if reinit and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = min(module.eps, 1e-5)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a true mean over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(shape, generator=generator))
    return model.eval()


class DenseBlock(nn.Module):
    """Two layers whose outputs are concatenated with their input (DenseNet)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
        self.b = nn.Sequential(nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 4, 3, padding=1))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.a(x)], dim=1)
        x = torch.cat([x, self.b(x)], dim=1)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ChannelShuffle(nn.Module):
    """Group convs with a channel shuffle between them (ShuffleNet): view, transpose, reshape."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.conv3 = nn.Conv2d(8, 8, 1, groups=groups)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        n, c, h, w = x.shape
        x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


class Functional(nn.Module):
    """A forward written with functional calls: F.relu, torch.flatten, x + y, relu_."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = x + self.conv2(x)
        x = F.max_pool2d(x.relu_(), 2)
        return self.fc(torch.flatten(x, 1))


class DataDependent(nn.Module):
    """A forward whose branch depends on the data: no tracer can capture it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.mean((2, 3)))

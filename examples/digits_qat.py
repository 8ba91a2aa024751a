"""The main job: train a small CNN on scikit-learn's bundled digits, then 4-bit-weight / 8-bit-activation QAT.

Run with `make demo`. Prints a table of test accuracy for the float model and the quantized
model fine-tuned from the float weights (quantization-aware training).
"""

import argparse
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from quantframe import config
from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU


def digits_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Digits as (N, 1, 8, 8) float tensors in [0, 1], with a fixed stratified 80/20 split."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        range(len(y)), test_size=0.2, random_state=seed, stratify=digits.target
    )
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def float_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Identity(),
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def quant_cnn(weight_bit_width: int = 4, act_bit_width: int = 8, collect_stats_steps: int = 100) -> nn.Module:
    """The same network with quantized weights and activations (same state_dict keys for weights)."""
    act = {"bit_width": act_bit_width, "collect_stats_steps": collect_stats_steps}
    return nn.Sequential(
        QuantIdentity(**act),
        QuantConv2d(1, 16, 3, padding=1, bias=False, weight_bit_width=weight_bit_width),
        nn.BatchNorm2d(16),
        QuantReLU(**act),
        QuantConv2d(16, 32, 3, padding=1, bias=False, weight_bit_width=weight_bit_width),
        nn.BatchNorm2d(32),
        QuantReLU(**act),
        nn.MaxPool2d(2),
        nn.Flatten(),
        QuantLinear(32 * 4 * 4, 10, weight_bit_width=weight_bit_width),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, progress=None) -> None:  # noqa: ANN001
    """Adam with a fixed shuffling seed, batch 64."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress is not None:
            progress.update(1)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item() * 100


def run(
    float_epochs: int = 30, qat_epochs: int = 15, weight_bit_width: int = 4, show_progress: bool = True
) -> dict:
    """Train float, then QAT from the float weights; returns test accuracies in percent."""
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits_data()
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=float_epochs + qat_epochs, desc="training (epochs)", unit="ep")
    float_model = float_cnn()
    train(float_model, x_train, y_train, float_epochs, 1e-2, progress)
    results = {"float": accuracy(float_model, x_test, y_test)}

    quant_model = quant_cnn(weight_bit_width)
    previous, config.IGNORE_MISSING_KEYS = config.IGNORE_MISSING_KEYS, True
    try:
        quant_model.load_state_dict(float_model.state_dict())
    finally:
        config.IGNORE_MISSING_KEYS = previous
    results[f"w{weight_bit_width}a8 before QAT"] = accuracy(quant_model, x_test, y_test)
    train(quant_model, x_train, y_train, qat_epochs, 2e-3, progress)
    results[f"w{weight_bit_width}a8 QAT"] = accuracy(quant_model, x_test, y_test)
    if progress is not None:
        progress.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--float-epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=15)
    parser.add_argument("--weight-bit-width", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    results = run(args.float_epochs, args.qat_epochs, args.weight_bit_width)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scikit-learn digits, test accuracy ({time.perf_counter() - start:.0f} s)")
    table.add_column("model")
    table.add_column("accuracy %", justify="right")
    for name, acc in results.items():
        table.add_row(name, f"{acc:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()

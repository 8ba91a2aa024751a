"""Training flags of a model saved on entry and restored, module by module, on exit."""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def training_modes_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, switch modes freely (`model.eval()`, one submodule's `train()`); on exit, also on an
    error, every module of `model` gets back the flag it had on entry (mixed flags included)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training

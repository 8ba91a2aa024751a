"""Post-training calibration: collect activation statistics on data, then fix the scales.

    model.eval()
    with calibration_mode(model):
        for x in calibration_batches:
            model(x)
    # scales are now the running mean of each batch's statistic, as learned parameters

Inside the context only the activation quantizers are in training mode (so they collect);
every other module keeps the mode it had (BatchNorm in eval does not update its running
statistics), gradients are off, and no weight or learned parameter is touched until the exit
writes the collected statistics into the quantizers' scale (and zero-point) parameters.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from quantframe.modes import training_modes_restored
from quantframe.proxy.act import ActQuantProxy
from quantframe.proxy.base import QuantProxy


@contextmanager
def calibration_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Collect statistics (a true running mean over the batches seen) and finalise scales on exit.

    Statistics collected earlier are discarded: calibration starts from the data it is shown.
    """
    collecting = [m for m in model.modules() if isinstance(m, QuantProxy) and m.collects_statistics]
    if not collecting:
        raise ValueError(
            f"calibration_mode: {type(model).__name__} has no activation quantizer that collects "
            "statistics (PARAMETER_FROM_STATS scaling); nothing to calibrate"
        )
    with training_modes_restored(model), ExitStack() as stack:
        for proxy in collecting:
            stack.enter_context(proxy.collecting_all_steps())
        for proxy in model.modules():
            if isinstance(proxy, ActQuantProxy) and proxy.is_quant_enabled:
                proxy.train(True)
        with torch.no_grad():
            yield model
        _finalise(collecting)


def _finalise(collecting: list[QuantProxy]) -> None:
    """Write each collected statistic into its learned parameters."""
    if any(proxy.steps_seen == 0 for proxy in collecting):
        raise RuntimeError(
            "calibration_mode: no batch reached an activation quantizer inside the context; "
            "run the model on calibration data inside `with calibration_mode(model):`"
        )
    for proxy in collecting:
        proxy.finish_collection()


@contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Every quantizer of `model` is a pass-through inside the context; restored on exit.

    A quantized model then computes its float original's function (BatchNorm folding aside, which
    is exact to float rounding): the check that capture and module swapping kept what the model
    does. Statistics are neither collected nor changed, and cached quantized weights are not used.
    """
    proxies = [m for m in model.modules() if isinstance(m, QuantProxy) and m.is_quant_enabled]
    saved = [proxy.tensor_quant for proxy in proxies]
    try:
        for proxy in proxies:
            proxy.tensor_quant, proxy.is_quant_enabled = None, False
        yield model
    finally:
        for proxy, tensor_quant in zip(proxies, saved, strict=True):
            proxy.tensor_quant, proxy.is_quant_enabled = tensor_quant, True


compute_encodings = calibration_mode
"""AIMET's name for the same step: `with compute_encodings(model): model(data)`."""

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
from contextlib import contextmanager

import torch
from torch import nn

from quantframe.core.running_stats import RunningStatistic
from quantframe.core.scaling import ParameterFromStatsScaling
from quantframe.core.zero_point import ParameterFromStatsZeroPoint
from quantframe.proxy.act import ActQuantProxy

_NEVER_DONE = 2**62


def _collecting_components(model: nn.Module) -> list[nn.Module]:
    kinds = (ParameterFromStatsScaling, ParameterFromStatsZeroPoint)
    return [m for m in model.modules() if isinstance(m, kinds)]


@contextmanager
def calibration_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Collect statistics (a true running mean over the batches seen) and finalise scales on exit.

    Statistics collected earlier are discarded: calibration starts from the data it is shown.
    """
    proxies = [m for m in model.modules() if isinstance(m, ActQuantProxy) and m.is_quant_enabled]
    components = _collecting_components(model)
    if not components:
        raise ValueError(
            f"calibration_mode: {type(model).__name__} has no activation quantizer that collects "
            "statistics (PARAMETER_FROM_STATS scaling); nothing to calibrate"
        )
    modes = {m: m.training for m in model.modules()}
    saved = {}
    for component in components:
        collector: RunningStatistic = component.collector
        saved[component] = (collector.collect_stats_steps, collector.momentum)
        collector.collect_stats_steps, collector.momentum = _NEVER_DONE, None
        collector.restart()
    for proxy in proxies:
        proxy.train(True)
    try:
        with torch.no_grad():
            yield model
        _finalise(model, components)
    finally:
        for component, (steps, momentum) in saved.items():
            component.collector.collect_stats_steps, component.collector.momentum = steps, momentum
        for module, training in modes.items():
            module.training = training


def _finalise(model: nn.Module, components: list[nn.Module]) -> None:
    """Write each collected statistic into its learned parameter (scales before zero points)."""
    for component in components:
        if isinstance(component, ParameterFromStatsScaling):
            if component.collector.steps_seen == 0:
                raise RuntimeError(
                    "calibration_mode: no batch reached an activation quantizer inside the context; "
                    "run the model on calibration data inside `with calibration_mode(model):`"
                )
            component.init_from_statistics()
    for quant in model.modules():
        zero_point = getattr(quant, "zero_point_impl", None)
        if isinstance(zero_point, ParameterFromStatsZeroPoint) and zero_point in components:
            with torch.no_grad():
                scale = quant.scaling_impl.current_scale(quant.divisor)
            zero_point.init_from_statistics(scale)


compute_encodings = calibration_mode
"""AIMET's name for the same step: `with compute_encodings(model): model(data)`."""

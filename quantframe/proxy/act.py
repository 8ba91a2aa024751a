"""Activation quantizer proxy: quantizes a tensor into a QuantTensor.

Besides the forward, it answers what a caller that quantizes step by step needs (the recurrent
loops): whether the scale is fixed right now, a step's scale and zero point from its tensor or
from a statistic, and folding many statistics steps into the running statistic at once.
"""

from collections.abc import Callable
from typing import Any

from torch import Tensor

from quantframe.core.restrict_value import FloatRestrict
from quantframe.core.scaling import ConstScaling, ParameterFromStatsScaling, ParameterScaling
from quantframe.core.stats import AbsMaxStats, PercentileStats
from quantframe.core.tensor_quant import IntTensorQuant
from quantframe.core.zero_point import ParameterFromStatsZeroPoint, ZeroZeroPoint
from quantframe.proxy.base import QuantProxy, shared_or_none
from quantframe.tensor import QuantTensor

_FIXED = (ConstScaling, ParameterScaling, ZeroZeroPoint)
_FIXED_AFTER_STATS = (ParameterFromStatsScaling, ParameterFromStatsZeroPoint)


def _fixed_now(component: object) -> bool:
    """Whether a scaling / zero-point component's output is independent of the tensor right now."""
    if isinstance(component, _FIXED):
        return True
    if isinstance(component, _FIXED_AFTER_STATS):
        return not (component.training and component.collector.collecting)
    return False


class ActQuantProxy(QuantProxy):
    """Quantizes activations; statistics are collected in training mode (see the scaling component)."""

    role = "act"

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        """A QuantTensor of `x` (a QuantTensor input is requantized); disabled: `x` unchanged."""
        if self.tensor_quant is None:
            return x
        if isinstance(x, QuantTensor):
            x = x.value
        value, scale, zero_point, bit_width = self.tensor_quant(x)
        return QuantTensor(value, scale, zero_point, bit_width, self.signed, self.training)

    def scale(self) -> Tensor | None:
        """The scale an eval forward uses now (learned, or statistics collected so far)."""
        if self.tensor_quant is None:
            return None
        return self.tensor_quant.scaling_impl.current_scale(self.divisor)

    def zero_point(self) -> Tensor | None:
        """The current zero point (0 for symmetric quantizers)."""
        if self.tensor_quant is None:
            return None
        impl = getattr(self.tensor_quant, "zero_point_impl", None)
        if impl is None or impl.is_zero:
            return self.tensor_quant.zero_point if impl is None else impl.zero
        return impl.current_zero_point(self.scale(), self.max_int)

    # ------------------------------------------------------------------ step by step (recurrent loops)

    @property
    def is_plain_integer(self) -> bool:
        """An integer quantizer rounding to nearest with a constant bit width and no groups: one
        divide-round-clamp with `min_int`/`max_int` reproduces its forward."""
        tq = self.tensor_quant
        return type(tq) is IntTensorQuant and tq.fusable_rounding and tq.group_size is None

    @property
    def parameters_fixed(self) -> bool:
        """Whether the scale and zero point are independent of the tensor right now (a plain integer
        quantizer whose components are constant, learned, or done collecting)."""
        tq = self.tensor_quant
        return self.is_plain_integer and _fixed_now(tq.scaling_impl) and _fixed_now(tq.zero_point_impl)

    @property
    def statistics_only(self) -> bool:
        """Whether a plain integer quantizer's scale and zero point are statistics of each step now,
        carrying no gradient (collecting, or a zero zero point)."""
        if not self.is_plain_integer:
            return False
        tq = self.tensor_quant
        return all(
            isinstance(c, ZeroZeroPoint) or isinstance(c, _FIXED_AFTER_STATS) and not _fixed_now(c)
            for c in (tq.scaling_impl, tq.zero_point_impl)
        )

    def fixed_parameters(self) -> tuple[Tensor, Tensor | None]:
        """(scale, zero point or None when symmetric) of a quantizer whose `parameters_fixed` holds.

        Reading them from a quantizer that has just finished collecting initialises its learned
        parameters: one step per call, as one forward would.
        """
        tq = self.tensor_quant
        scale = tq.scaling_impl(None, tq.divisor)
        impl = tq.zero_point_impl
        zero_point = None if isinstance(impl, ZeroZeroPoint) else impl(None, scale, tq.max_value)
        return scale, zero_point

    def step_parameters(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, zero point) of one step's tensor `x`, as the forward computes them (a collecting
        quantizer counts one statistics step); the values are then `min_int..max_int` integers."""
        tq = self.tensor_quant
        scale = tq.scaling_impl(x, tq.divisor)
        return scale, tq.zero_point_impl(x, scale, tq.max_value)

    @property
    def scale_statistic(self) -> tuple[float, bool] | None:
        """(percentile q, over |x|) of a scale collected from a per-tensor percentile or absolute
        maximum (q = 100), else None: what a caller needs to compute the statistic itself."""
        scaling = getattr(self.tensor_quant, "scaling_impl", None)
        if type(scaling) is not ParameterFromStatsScaling:
            return None
        stats = scaling.stats
        if type(stats) is AbsMaxStats and not stats.keep_dims:
            return 100.0, True
        if type(stats) is PercentileStats and stats.low_q is None and not stats.keep_dims:
            return stats.high_q, stats.absolute
        return None

    @property
    def scale_rule(self) -> tuple:
        """How a threshold becomes a scale (restriction, floor): quantizers with equal rules can share
        one `scale_from_threshold` call."""
        scaling = self.tensor_quant.scaling_impl
        return type(scaling.restrict), scaling.min_val

    def scale_from_threshold(self, threshold: Tensor, divisor: Tensor | float | None = None) -> Tensor:
        """The scale a collecting forward derives from a statistic `threshold`.

        `divisor` (default: this grid's) may be a tensor broadcasting against `threshold`, so that one
        call serves several quantizers of equal restriction stacked along a dimension.
        """
        return self.threshold_to_scale(divisor)(threshold)

    def threshold_to_scale(self, divisor: Tensor | float | None = None) -> Callable[[Tensor], Tensor]:
        """`scale_from_threshold` with this quantizer's rule looked up once, for a loop over timesteps."""
        scaling = self.tensor_quant.scaling_impl
        divisor = self.divisor if divisor is None else divisor
        restrict, floor = scaling.restrict, scaling.min_val
        if type(restrict) is FloatRestrict:
            return lambda threshold: threshold.div(divisor).clamp_min_(floor)
        return lambda threshold: restrict.to_scale(restrict.to_domain(threshold), divisor, floor)

    def collect_statistics(self, stats: Tensor, checked: bool = False) -> None:
        """Fold the scale statistics of `len(stats)` consecutive steps into the running statistic at
        once (`checked`: the caller has verified that every one is finite)."""
        self.tensor_quant.scaling_impl.collector.update_many(stats, checked)


def act_proxy(
    quant: Any, overrides: dict[str, Any], owner: str, argument: str, context: dict | None = None
) -> ActQuantProxy:
    """A proxy for `quant`: a new one for a class or None, the same module when given a proxy (sharing)."""
    shared = shared_or_none(quant, ActQuantProxy, overrides, owner, argument)
    return shared if shared is not None else ActQuantProxy(quant, overrides, owner, context, argument)

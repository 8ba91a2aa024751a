"""The proxy base: a resolved quantizer living inside a layer, and what callers may ask of it.

Code outside `core/` (calibration, export, encodings, the recurrent fast loops) talks to a quantizer
through this API, never to the components inside `tensor_quant`: the grid (`min_int`, `max_int`,
`divisor`), the rounding rule, the current scale / zero point / bit width, and the life cycle of
statistics (collecting, `finish_collection`, `load_parameters`).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from quantframe.core.grid import IntGrid
from quantframe.core.running_stats import RunningStatistic
from quantframe.enums import RestrictValueType
from quantframe.inject import portable_class
from quantframe.proxy.resolve import check_quantizer, resolve_tensor_quant
from quantframe.proxy.state_dict import ignore_missing_quantizer_keys

_NEVER_DONE = 2**62  # a step count no collection reaches


class QuantProxy(nn.Module):
    """A quantizer resolved into components (`tensor_quant`), or disabled when built from None.

    Parameters and buffers of the components live in the owning layer's state_dict. Export
    sets `export_handler` for the duration of an export; the forward passes never read it.
    """

    role = ""
    owns_quantizer_state = True  # its keys may be absent from a float state_dict (IGNORE_MISSING_KEYS)

    def __init__(
        self,
        quant: type | None,
        overrides: dict[str, Any] | None = None,
        owner: str = "",
        context: dict[str, Any] | None = None,
        argument: str = "",
    ):
        super().__init__()
        self.owner = owner
        self.export_handler: Any = None
        self.quant_class = quant
        self.is_quant_enabled = quant is not None
        if quant is None:
            if overrides:
                raise TypeError(f"{owner}: overrides {sorted(overrides)} given but the quantizer is None")
            self.attributes: dict[str, Any] = {}
            self.tensor_quant = None
            return
        check_quantizer(owner, argument or f"{self.role}_quant", quant, self.role)
        ignore_missing_quantizer_keys(self)
        self.attributes, self.tensor_quant = resolve_tensor_quant(
            quant, overrides or {}, context or {}, owner
        )
        self.signed = bool(self.tensor_quant.signed)
        self.narrow_range = bool(self.tensor_quant.narrow_range)

    def __getstate__(self) -> dict:
        # A quantizer made at run time (`Q.let(...)`, `from_spec`) is pickled as its recipe.
        state = dict(super().__getstate__())
        state["quant_class"] = portable_class(state.get("quant_class"))
        return state

    @property
    def quant_name(self) -> str:
        return self.quant_class.__name__ if self.quant_class is not None else "None"

    # ------------------------------------------------------------------ the grid

    def bit_width(self) -> Tensor | None:
        """The bit width as a float tensor (None when disabled)."""
        if self.tensor_quant is None:
            return None
        impl = getattr(self.tensor_quant, "bit_width_impl", None)
        return impl() if impl is not None else self.tensor_quant.bit_width

    @property
    def has_constant_bit_width(self) -> bool:
        """Whether the bit width is fixed at construction (False: a learned bit width)."""
        return getattr(getattr(self.tensor_quant, "bit_width_impl", None), "is_const", True)

    @property
    def min_int(self) -> int | None:
        """The grid's smallest integer at the constructed bit width (None: no integer grid)."""
        return getattr(self.tensor_quant, "min_value", None)

    @property
    def max_int(self) -> int | None:
        """The grid's largest integer at the constructed bit width (None: no integer grid)."""
        return getattr(self.tensor_quant, "max_value", None)

    @property
    def divisor(self) -> Tensor | int:
        """What a threshold is divided by to give the scale (the grid's largest magnitude) now."""
        tq = self.tensor_quant
        if not self.has_constant_bit_width:
            return IntGrid(tq.bit_width_impl(), tq.signed, tq.narrow_range).divisor
        return getattr(tq, "divisor", 1)

    @property
    def rounding(self) -> Any:
        """The float-to-int rule (an enum), for export."""
        impl = getattr(self.tensor_quant, "float_to_int_impl", None)
        return None if impl is None else impl.impl_type

    @property
    def ternary_threshold(self) -> float | None:
        """A ternary quantizer's zero threshold, as a fraction of the scale (None for other kinds)."""
        threshold = getattr(self.tensor_quant, "threshold", None)
        return None if threshold is None else float(threshold)

    @property
    def zero_point_is_zero(self) -> bool:
        """Whether the zero point is 0 by construction (symmetric quantization)."""
        impl = getattr(self.tensor_quant, "zero_point_impl", None)
        return impl is None or bool(getattr(impl, "is_zero", False))

    # ------------------------------------------------------------------ statistics collection

    def _collecting_components(self) -> list[nn.Module]:
        """The scaling / zero-point components that collect statistics, then learn (scale first)."""
        tq = self.tensor_quant
        components = (getattr(tq, "scaling_impl", None), getattr(tq, "zero_point_impl", None))
        return [c for c in components if isinstance(getattr(c, "collector", None), RunningStatistic)]

    @property
    def collects_statistics(self) -> bool:
        """Whether a scale or zero point is initialised from statistics collected over steps."""
        return bool(self._collecting_components())

    @property
    def is_collecting(self) -> bool:
        """Whether the next forward collects a statistics step (training mode, steps remaining)."""
        return any(c.training and c.collector.collecting for c in self._collecting_components())

    @property
    def steps_seen(self) -> int:
        """Statistics steps collected so far (0 for a quantizer that collects none)."""
        components = self._collecting_components()
        return components[0].collector.steps_seen if components else 0

    @property
    def collect_stats_steps(self) -> int:
        """How many steps are collected before the learned parameters take over (0: none)."""
        components = self._collecting_components()
        return components[0].collector.collect_stats_steps if components else 0

    @contextmanager
    def collecting_all_steps(self) -> Iterator["QuantProxy"]:
        """Collect from scratch a true running mean of every step until the context ends (calibration).

        The collected statistics are discarded first; the step count and momentum the quantizer was
        built with are restored on exit. Call `finish_collection` inside to keep what was collected.
        """
        collectors = [c.collector for c in self._collecting_components()]
        saved = [(c.collect_stats_steps, c.momentum) for c in collectors]
        for collector in collectors:
            collector.collect_stats_steps, collector.momentum = _NEVER_DONE, None
            collector.restart()
        try:
            yield self
        finally:
            for collector, (steps, momentum) in zip(collectors, saved, strict=True):
                collector.collect_stats_steps, collector.momentum = steps, momentum

    def finish_collection(self) -> None:
        """The statistics collected so far become the learned scale (then zero point) now."""
        for component in self._collecting_components():
            if component is self.tensor_quant.scaling_impl:
                component.init_from_statistics()
            else:
                with torch.no_grad():
                    scale = self.tensor_quant.scaling_impl.current_scale(self.divisor)
                component.init_from_statistics(scale)

    def load_parameters(self, scale: Tensor, zero_point: Tensor | None = None) -> None:
        """Fix the learned scale (and zero point, in integer units) to given values; collection ends.

        For quantizers whose scale is learned (with or without collected statistics); others keep
        theirs, so a caller compares `scale()` afterwards to see whether the value was taken.
        """
        tq = self.tensor_quant
        scaling = tq.scaling_impl
        threshold = scale * self.divisor
        stored = scaling.restrict.to_domain(threshold)
        if self.attributes.get("restrict_scaling_type") == RestrictValueType.POWER_OF_TWO:
            stored = stored - 1e-6  # to_scale rounds log2 up: stay just below the integer
        with torch.no_grad():
            if isinstance(getattr(scaling, "value", None), nn.Parameter):
                scaling.value.copy_(stored)
            collector = getattr(scaling, "collector", None)
            if collector is not None:
                collector.value.copy_(threshold)
                collector.finish()
            impl = getattr(tq, "zero_point_impl", None)
            zp_collector = getattr(impl, "collector", None)
            if zero_point is not None and zp_collector is not None:
                impl.value.copy_(zero_point.reshape(impl.value.shape))
                offset = zero_point.reshape(-1) * scale.reshape(-1)
                zp_collector.value.copy_(offset.reshape(zp_collector.value.shape))
                zp_collector.finish()

    def extra_repr(self) -> str:
        return f"quant={self.quant_name}" + ("" if self.is_quant_enabled else " (disabled)")


def shared_or_none(quant: Any, proxy_type: type, overrides: dict[str, Any], owner: str, argument: str) -> Any:
    """`quant` itself when it is a `proxy_type` module to share (overrides refused), else None."""
    if not isinstance(quant, proxy_type):
        return None
    if overrides:
        raise TypeError(f"{owner}: cannot override {sorted(overrides)} of a shared {argument}")
    return quant

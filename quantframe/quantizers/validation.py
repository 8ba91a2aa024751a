"""Attribute validation for quantizers: every known attribute's allowed values, checked at resolution.

A layer resolves its quantizer at construction, so a bad value fails there with the quantizer, the
attribute, the value and what is allowed, never at the first forward.
"""

from enum import Enum
from typing import Any

from quantframe.enums import (
    BitWidthImplType,
    FloatToIntImplType,
    QuantType,
    RestrictValueType,
    ScalingImplType,
    StatsOp,
    ZeroPointImplType,
)
from quantframe.inject import solver, value

ENUM_ATTRIBUTES: dict[str, type[Enum]] = {
    "quant_type": QuantType,
    "bit_width_impl_type": BitWidthImplType,
    "float_to_int_impl_type": FloatToIntImplType,
    "restrict_scaling_type": RestrictValueType,
    "scaling_impl_type": ScalingImplType,
    "scaling_stats_op": StatsOp,
    "zero_point_impl_type": ZeroPointImplType,
}
BOOL_ATTRIBUTES = (
    "signed",
    "narrow_range",
    "scaling_per_output_channel",
    "scaling_per_group",
    "requires_input_scale",
    "requires_input_bit_width",
)


def _int_in(lo: int, hi: int | None) -> Any:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            return f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        return None

    return check


def _positive_float(v: Any) -> str | None:
    ok = not isinstance(v, bool) and isinstance(v, int | float) and v > 0
    return None if ok else "a positive number"


def _percent(v: Any) -> str | None:
    ok = not isinstance(v, bool) and isinstance(v, int | float) and 0 < v <= 100
    return None if ok else "a number in (0, 100]"


def _momentum(v: Any) -> str | None:
    ok = v is None or (not isinstance(v, bool) and isinstance(v, int | float) and 0 < v <= 1)
    return None if ok else "None (running mean) or a number in (0, 1]"


def _optional_group(v: Any) -> str | None:
    return None if v is None else _int_in(1, None)(v)


def _role(v: Any) -> str | None:
    return None if v in ("weight", "act", "bias") else "'weight', 'act' or 'bias'"


CHECKS = {
    "bit_width": _int_in(1, 32),
    "min_bit_width": _int_in(1, 32),
    "collect_stats_steps": _int_in(0, None),
    "mse_search_steps": _int_in(1, None),
    "group_size": _optional_group,
    "scaling_min_val": _positive_float,
    "scaling_init": _positive_float,
    "scaling_const": _positive_float,
    "high_percentile_q": _percent,
    "low_percentile_q": lambda v: None if v is None else _percent(v),
    "scaling_stats_momentum": _momentum,
    "quant_role": _role,
}


def _bad(quant_name: str, attribute: str, v: Any, allowed: str) -> ValueError:
    return ValueError(f"{quant_name}.{attribute} = {v!r} is not valid; allowed: {allowed}")


def validate_attributes(quant_name: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Check every known attribute and normalise enum names; returns the updated attributes."""
    out = dict(attrs)
    for name, enum_type in ENUM_ATTRIBUTES.items():
        if name not in attrs or isinstance(attrs[name], value | solver):
            continue
        raw = attrs[name]
        if isinstance(raw, enum_type):
            continue
        key = raw.name if isinstance(raw, Enum) else raw
        try:
            out[name] = enum_type[str(key).upper()]
        except KeyError:
            allowed = ", ".join(m.name for m in enum_type)
            raise _bad(quant_name, name, raw, f"{enum_type.__name__} members {allowed}") from None
    for name in BOOL_ATTRIBUTES:
        if name in attrs and not isinstance(attrs[name], bool | value):
            raise _bad(quant_name, name, attrs[name], "True or False")
    for name, check in CHECKS.items():
        if name in attrs and not isinstance(attrs[name], value | solver):
            problem = check(attrs[name])
            if problem:
                raise _bad(quant_name, name, attrs[name], problem)
    if out.get("scaling_per_group") and out.get("group_size") is None:
        raise _bad(quant_name, "group_size", None, "an integer >= 1 when scaling_per_group is True")
    return out


KNOWN_ATTRIBUTES = frozenset(
    [
        *ENUM_ATTRIBUTES,
        *BOOL_ATTRIBUTES,
        *CHECKS,
        "threshold",
        "mse_search_min",
        "min_val",
        "max_val",
        "per_channel_broadcastable_shape",
    ]
)

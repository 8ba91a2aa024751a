"""Quantizers as data: attribute validation, and `to_spec`/`from_spec` through a pydantic model.

Validation runs when a layer resolves its quantizer, so a bad value fails at construction with
the quantizer, the attribute, the value and what is allowed, never at the first forward.
"""

import importlib
import inspect
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from quantframe.enums import (
    BitWidthImplType,
    FloatToIntImplType,
    QuantType,
    RestrictValueType,
    ScalingImplType,
    StatsOp,
    ZeroPointImplType,
)
from quantframe.inject import quantizer_attributes, solver, value

SPEC_VERSION = 1

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


class QuantizerSpec(BaseModel):
    """A quantizer class as JSON: its data attributes, and import paths of its custom components."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SPEC_VERSION
    name: str
    attributes: dict[str, Any]
    components: dict[str, str] = {}


def _import_path(obj: Any) -> str:
    if inspect.isclass(obj) or inspect.isfunction(obj):
        if "<" in obj.__qualname__:
            raise ValueError(f"cannot serialise {obj!r}: define it at module level so it can be imported")
        return f"{obj.__module__}:{obj.__qualname__}"
    raise ValueError(f"cannot serialise {obj!r}")


def _import(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def to_spec(quant: type) -> QuantizerSpec:
    """A JSON-serialisable description of `quant` from which `from_spec` rebuilds an equivalent class."""
    from quantframe.quantizers.base import QuantBase

    base_attrs = quantizer_attributes(QuantBase)
    attributes: dict[str, Any] = {}
    components: dict[str, str] = {}
    for name, attr in quantizer_attributes(quant).items():
        if name in base_attrs and base_attrs[name] is attr and isinstance(attr, value | solver | type):
            continue  # the shared solvers: from_spec's base provides them
        if isinstance(attr, Enum):
            attributes[name] = attr.name
        elif attr is None or isinstance(attr, bool | int | float | str):
            attributes[name] = attr
        elif isinstance(attr, tuple | list):
            attributes[name] = list(attr)
        elif isinstance(attr, value | solver):
            components[name] = f"{type(attr).__name__}={_import_path(attr.fn)}"
        else:
            components[name] = _import_path(attr)
    return QuantizerSpec(name=quant.__name__, attributes=attributes, components=components)


def from_spec(spec: QuantizerSpec | dict | str) -> type:
    """The quantizer class a spec (model, dict or JSON string) describes."""
    from quantframe.quantizers.base import QuantBase

    if isinstance(spec, str):
        spec = QuantizerSpec.model_validate_json(spec)
    elif isinstance(spec, dict):
        spec = QuantizerSpec.model_validate(spec)
    attrs: dict[str, Any] = {}
    for name, raw in spec.attributes.items():
        attrs[name] = tuple(raw) if isinstance(raw, list) else raw  # enum names: validate_attributes
    for name, path in spec.components.items():
        kind, sep, rest = path.partition("=")
        if sep and kind in ("value", "solver"):
            target = _import(rest)
            wrap = {"value": value, "solver": solver}[kind]
            attrs[name] = target if isinstance(target, value | solver) else wrap(target)
        else:
            attrs[name] = _import(path)
    attrs = validate_attributes(spec.name, attrs)
    return type(spec.name, (QuantBase,), attrs)

"""Quantizers as data: `to_spec`/`from_spec` through a versioned pydantic model.

This module imports pydantic; `quantframe.quantizers` loads it only when one of its names is used,
so importing the quantizers or the layers stays cheap.
"""

import importlib
import inspect
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from quantframe.inject import quantizer_attributes, solver, value
from quantframe.quantizers.validation import validate_attributes

SPEC_VERSION = 1


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

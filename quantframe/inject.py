"""The injector adapter: plain declarative quantizer classes, resolved with `dependencies`.

Quantizers are ordinary Python classes deriving from `QuantInjector` (never from
`dependencies.Injector` with class syntax: on Python 3.13 that fails with "Magic methods are
not allowed"). Resolving one merges its attributes along the MRO, applies keyword overrides,
evaluates `@solver` functions that pick component classes from enums, and hands the result to
`dependencies.Injector.let(...)`, which builds the components by constructor injection
(arguments resolved by name). Only the public API of `dependencies` is used, and only here, so
the injector can be swapped without touching quantizers or layers. Resolution happens once per
layer construction; no forward pass touches an injector.
"""

import importlib
import inspect
import re
import sys
from collections.abc import Callable
from typing import Any

import dependencies


class value:  # noqa: N801 - lower case like the decorator it stands for
    """Marks a derived attribute: a function whose arguments are other attributes, by name."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __reduce__(self) -> tuple:
        return _reduce_marker(self)


class solver:  # noqa: N801
    """Marks an enum-to-component rule: a function of attributes returning the component class to build.

    Solvers run before injection, so the class they return is then built by constructor
    injection like any component the user sets directly (`scaling_impl = MyScaling`).
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __reduce__(self) -> tuple:
        return _reduce_marker(self)


def _lookup(module: str, qualname: str) -> Any:
    """The object importable as `module:qualname` (a decorated marker sits under its function's name)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _reduce_marker(marker: Any) -> tuple:
    """Pickle a module- or class-level marker by reference.

    `@value def f` leaves the marker, not `f`, under f's name, so pickling `f` by reference fails
    ("not the same object"); the marker itself is what that name holds. Other markers (built
    inline) are rebuilt from their function.
    """
    fn = marker.fn
    try:
        if _lookup(fn.__module__, fn.__qualname__) is marker:
            return (_lookup, (fn.__module__, fn.__qualname__))
    except (AttributeError, ImportError, TypeError):
        pass
    return (type(marker), (fn,))


class QuantizerResolutionError(ValueError):
    """A quantizer could not be resolved into components."""


class QuantInjector:
    """Base of every quantizer: a declarative class of attributes, resolved when a layer is built.

    Subclass it and override attributes, or derive a variant with `Q.let(bit_width=4)`.
    """

    @classmethod
    def let(cls, **overrides: Any) -> type:
        """A subclass of this quantizer with `overrides` as class attributes."""
        return type(cls.__name__, (cls,), overrides)


ExtendedInjector = QuantInjector  # the name Brevitas users import

_ATTRIBUTE_CACHE: dict[type, dict[str, Any]] = {}


def quantizer_attributes(quant: type) -> dict[str, Any]:
    """The merged public attributes of a quantizer class (subclasses win), cached per class."""
    cached = _ATTRIBUTE_CACHE.get(quant)
    if cached is not None:
        return cached
    merged: dict[str, Any] = {}
    for klass in reversed(quant.__mro__):
        if klass is object:
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_") or isinstance(attr, classmethod | staticmethod):
                continue
            merged[name] = attr
    _ATTRIBUTE_CACHE[quant] = merged
    return merged


def attribute_providers(name: str, root: type = QuantInjector) -> list[str]:
    """Names of the importable quantizer classes and mixins that define attribute `name`.

    Mixins (classes without a `quant_role`) come first: they are what a user composes from.
    Classes built at run time (`let`, `from_spec`) are left out: they cannot be imported.
    """
    found, stack, seen = set(), [root], set()
    while stack:
        klass = stack.pop()
        for sub in klass.__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            stack.append(sub)
            if name in vars(sub) and not sub.__name__.startswith("_") and _importable(sub):
                found.add(sub)
    ordered = sorted(found, key=lambda k: (getattr(k, "quant_role", None) is not None, k.__name__))
    return list(dict.fromkeys(k.__name__ for k in ordered))


def _importable(klass: type) -> bool:
    if klass.__module__ not in sys.modules:
        return False
    try:
        return _lookup(klass.__module__, klass.__qualname__) is klass
    except AttributeError:
        return False


class _PortableClass:
    """Pickles as the recipe of a quantizer class built at run time, and unpickles as that class.

    `Q.let(bit_width=4)` and `from_spec(...)` make classes that no module holds, so pickle cannot
    find them by name; this stands in for one in a pickled proxy and rebuilds it with `type()`.
    """

    __slots__ = ("klass",)

    def __init__(self, klass: type):
        self.klass = klass

    def __reduce__(self) -> tuple:
        klass = self.klass
        namespace = {k: v for k, v in vars(klass).items() if k not in ("__dict__", "__weakref__")}
        return (type, (klass.__name__, tuple(portable_class(b) for b in klass.__bases__), namespace))


def portable_class(klass: Any) -> Any:
    """`klass` itself when pickle can find it by name, else a stand-in that unpickles as a rebuilt copy."""
    if not isinstance(klass, type) or _importable(klass):
        return klass
    return _PortableClass(klass)


def _call_with_attributes(
    fn: Callable[..., Any], attrs: dict[str, Any], quant_name: str, needed_by: str | None = None
) -> Any:
    kwargs = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name in attrs:
            kwargs[param.name] = _plain(attrs[param.name], attrs, quant_name)
        elif param.default is inspect.Parameter.empty:
            raise _missing(quant_name, param.name, needed_by or fn.__name__)
    return fn(**kwargs)


def _plain(attr: Any, attrs: dict[str, Any], quant_name: str) -> Any:
    if isinstance(attr, value | solver):
        return _call_with_attributes(attr.fn, attrs, quant_name)
    return attr


def _missing(quant_name: str, attribute: str, needed_by: str) -> QuantizerResolutionError:
    providers = attribute_providers(attribute)
    hint = f" or derive from one that provides it: {', '.join(providers[:6])}" if providers else ""
    return QuantizerResolutionError(
        f"{quant_name}: cannot resolve attribute '{attribute}' (needed to build '{needed_by}'); "
        f"set it as a class attribute or a keyword override{hint}"
    )


class _Unresolved:
    """A solver that could not run for want of an attribute; an error only if the component is needed."""

    def __init__(self, error: QuantizerResolutionError):
        self.error = error


def evaluate_solvers(quant_name: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Replace every `@solver` attribute by the component class it picks (values stay lazy).

    A solver whose inputs are missing is left out: a quantizer with a constant scale never
    needs the statistics solver. Its error is raised only if a component turns out to need it.
    """
    out = dict(attrs)
    for name, attr in attrs.items():
        if isinstance(attr, solver):
            try:
                out[name] = _call_with_attributes(attr.fn, out, quant_name, name)
            except QuantizerResolutionError as exc:
                out[name] = _Unresolved(exc)
    return out


def make_injector(attrs: dict[str, Any]) -> type:
    """The `dependencies` injector for resolved attributes; reusable: fresh components per access."""
    injected = {
        name: dependencies.value(attr.fn) if isinstance(attr, value) else attr
        for name, attr in attrs.items()
        if not isinstance(attr, _Unresolved)
    }
    return dependencies.Injector.let(**injected)


def build(quant: type, attrs: dict[str, Any], target: str, injector: type | None = None) -> Any:
    """Build `target` (a component tree) from resolved attributes by constructor injection."""
    try:
        return getattr(injector if injector is not None else make_injector(attrs), target)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{quant.__name__}: {exc}") from exc
    except Exception as exc:
        if type(exc).__name__ != "DependencyError":
            raise
        match = re.search(r"attribute '(\w+)'(?: while building '(\w+)')?", str(exc))
        if match and isinstance(attrs.get(match.group(1)), _Unresolved):
            raise attrs[match.group(1)].error from None
        if match:
            raise _missing(quant.__name__, match.group(1), match.group(2) or target) from None
        raise QuantizerResolutionError(f"{quant.__name__}: {exc}") from None

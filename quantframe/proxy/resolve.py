"""Resolve a quantizer class (+ overrides) into its component module, once per layer construction."""

from typing import Any

from torch import nn

from quantframe.inject import QuantInjector, build, evaluate_solvers, make_injector, quantizer_attributes
from quantframe.quantizers.validation import validate_attributes

ROLE_NAMES = {"weight": "a weight quantizer", "act": "an activation quantizer", "bias": "a bias quantizer"}
ROLE_EXAMPLES = {"weight": "Int8WeightPerTensorFloat", "act": "Int8ActPerTensorFloat", "bias": "Int32Bias"}


def check_quantizer(owner: str, argument: str, quant: Any, role: str) -> None:
    """Fail early when `quant` is not a quantizer class for `role`."""
    if not (isinstance(quant, type) and issubclass(quant, QuantInjector)):
        raise TypeError(
            f"{owner}: {argument}={quant!r} is not a quantizer; expected None, a quantizer class "
            f"such as {ROLE_EXAMPLES[role]}, or a quantizer module of another layer to share"
        )
    found = getattr(quant, "quant_role", None)
    if found != role:
        what = ROLE_NAMES.get(
            found, "not tied to a role (no WeightQuantSolver/ActQuantSolver/BiasQuantSolver)"
        )
        raise TypeError(
            f"{owner}: {argument}={quant.__name__} is {what}; {argument} needs {ROLE_NAMES[role]} "
            f"such as {ROLE_EXAMPLES[role]}"
        )


_RESOLVED: dict[tuple, tuple[dict, type]] = {}
_RESOLVED_LIMIT = 1024


def _cache_key(quant: type, overrides: dict[str, Any], context: dict[str, Any]) -> tuple | None:
    key = (quant, tuple(sorted(overrides.items())), tuple(sorted(context.items())))
    try:
        hash(key)
    except TypeError:  # an unhashable override (a list, a tensor): resolve without the cache
        return None
    return key


def resolve_tensor_quant(
    quant: type, overrides: dict[str, Any], context: dict[str, Any], owner: str = ""
) -> tuple[dict, nn.Module]:
    """Validated attributes and a freshly built `tensor_quant` component of `quant`.

    Validation, solvers and the injector are computed once per (quantizer, overrides, context)
    and reused, so building the 40 quantizers of a ResNet costs little more than its modules.
    Errors are re-raised with the owning layer's name in front.
    """
    name = quant.__name__
    try:
        key = _cache_key(quant, overrides, context)
        cached = _RESOLVED.get(key) if key is not None else None
        if cached is None:
            attrs = {**quantizer_attributes(quant), **overrides, **context, "quant_name": name}
            attrs = evaluate_solvers(name, validate_attributes(name, attrs))
            cached = (attrs, make_injector(attrs))
            if key is not None:
                if len(_RESOLVED) >= _RESOLVED_LIMIT:
                    _RESOLVED.clear()
                _RESOLVED[key] = cached
        attrs, injector = cached
        return dict(attrs), build(quant, attrs, "tensor_quant", injector)
    except (ValueError, TypeError) as exc:
        if not owner:
            raise
        raise type(exc)(f"{owner}: {exc}") from None

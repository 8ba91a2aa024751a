"""Prefixed keyword overrides: route `weight_bit_width=4` to the weight quantizer, reject typos."""

import difflib
from typing import Any

from quantframe.inject import quantizer_attributes
from quantframe.quantizers.validation import KNOWN_ATTRIBUTES


def accepted_attributes(quant: Any) -> set[str]:
    """Attribute names an override may set on `quant` (a quantizer class, or a proxy when shared)."""
    if isinstance(quant, type):
        return set(KNOWN_ATTRIBUTES) | set(quantizer_attributes(quant))
    return set()


def route_overrides(
    owner: str,
    kwargs: dict[str, Any],
    quants: dict[str, Any],
    unprefixed: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Split `kwargs` into per-prefix override dicts.

    `quants` maps a prefix ("weight", "act", ...) to that slot's quantizer (None when disabled).
    With `unprefixed` set, keys without a known prefix go to that slot (`QuantReLU(bit_width=4)`).
    A key that no quantizer consumes raises `TypeError` naming the closest valid key.
    """
    routed: dict[str, dict[str, Any]] = {prefix: {} for prefix in quants}
    accepted = {prefix: accepted_attributes(q) for prefix, q in quants.items()}
    prefixes = sorted(quants, key=len, reverse=True)
    for key, val in kwargs.items():
        target = next(
            (p for p in prefixes if key.startswith(p + "_") and key[len(p) + 1 :] in accepted[p]), None
        )
        attr = key[len(target) + 1 :] if target else None
        if target is None and unprefixed is not None and key in accepted[unprefixed]:
            target, attr = unprefixed, key
        if target is None:
            prefix = next((p for p in prefixes if key.startswith(p + "_")), None)
            if prefix is not None and quants[prefix] is None:
                raise TypeError(
                    f"{owner}: got {key}={val!r} but {prefix}_quant is None; set {prefix}_quant first"
                )
            raise TypeError(
                f"{owner}: unexpected keyword argument '{key}'{_did_you_mean(key, accepted, unprefixed)}"
            )
        routed[target][attr] = val
    return routed


def _did_you_mean(key: str, accepted: dict[str, set[str]], unprefixed: str | None) -> str:
    candidates = [f"{p}_{a}" for p, attrs in accepted.items() for a in attrs]
    if unprefixed is not None:
        candidates += list(accepted[unprefixed])
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""

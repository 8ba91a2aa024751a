"""The proxy base: a resolved quantizer living inside a layer, with its export-handler slot."""

from typing import Any

from torch import Tensor, nn

from quantframe.inject import portable_class
from quantframe.proxy.resolve import check_quantizer, resolve_tensor_quant
from quantframe.proxy.state_dict import ignore_missing_quantizer_keys


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

    def bit_width(self) -> Tensor | None:
        """The bit width as a float tensor (None when disabled)."""
        if self.tensor_quant is None:
            return None
        impl = getattr(self.tensor_quant, "bit_width_impl", None)
        return impl() if impl is not None else self.tensor_quant.bit_width

    @property
    def rounding(self) -> Any:
        """The float-to-int rule (an enum), for export."""
        impl = getattr(self.tensor_quant, "float_to_int_impl", None)
        return None if impl is None else impl.impl_type

    def extra_repr(self) -> str:
        return f"quant={self.quant_name}" + ("" if self.is_quant_enabled else " (disabled)")

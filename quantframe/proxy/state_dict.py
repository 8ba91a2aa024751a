"""State-dict loading of quantized layers: a float model's state_dict may lack the quantizers' keys.

Weights and biases map 1:1 between a torch layer and its quantized twin; the quantizers (QuantProxy
submodules) own extra keys (`input_quant.tensor_quant.scaling_impl.value`, ...). They are reported
missing, as torch reports any missing key, unless `quantframe.config.IGNORE_MISSING_KEYS` is True.
"""

from typing import Any

from torch import nn

from quantframe import config


def _remember_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre hook: where the module sits in the loaded model."""
    module._state_dict_prefix = prefix


def _drop_quantizer_missing_keys(module: nn.Module, incompatible_keys: Any) -> None:
    """load_state_dict post hook: with config.IGNORE_MISSING_KEYS, quantizer-owned keys are not missing."""
    prefix = getattr(module, "_state_dict_prefix", None)
    if not config.IGNORE_MISSING_KEYS or prefix is None:
        return
    # remove_duplicate=False: a quantizer shared inside the module owns keys under each of its paths
    owned = tuple(
        f"{prefix}{name}." if name else prefix
        for name, sub in module.named_modules(remove_duplicate=False)
        if getattr(sub, "owns_quantizer_state", False)
    )
    if owned:
        missing = incompatible_keys.missing_keys
        missing[:] = [key for key in missing if not key.startswith(owned)]


def ignore_missing_quantizer_keys(module: nn.Module) -> None:
    """Make `module` honour `config.IGNORE_MISSING_KEYS`: keys of its quantizers (QuantProxy submodules)
    are not reported missing when the flag is set, so a float model's state_dict loads strictly."""
    module.register_load_state_dict_pre_hook(_remember_prefix)
    module.register_load_state_dict_post_hook(_drop_quantizer_missing_keys)

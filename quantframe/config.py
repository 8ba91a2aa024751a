"""Library-wide settings. Explicit module attributes: nothing here reads environment variables."""

IGNORE_MISSING_KEYS: bool = False
"""Let a float model's state_dict load into a quantized model whose quantizers own extra keys."""

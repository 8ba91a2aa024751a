"""quantframe: quantization-aware training and post-training quantization with declarative quantizers."""

from quantframe import config
from quantframe.tensor import QuantTensor

__version__ = "0.1.0"

__all__ = ["QuantTensor", "__version__", "config"]

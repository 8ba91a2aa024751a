"""Resolved runtime quantizers attached to layers."""

from quantframe.proxy.act import ActQuantProxy
from quantframe.proxy.base import QuantProxy
from quantframe.proxy.bias import BiasQuantProxy
from quantframe.proxy.weight import WeightQuantProxy

__all__ = ["ActQuantProxy", "BiasQuantProxy", "QuantProxy", "WeightQuantProxy"]

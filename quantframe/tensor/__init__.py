"""QuantTensor and the rules of what operators and torch functions do to its grid.

`quant_tensor` holds the class, `ops` the grid rules of the operators and of the grid-keeping
torch functions, `shape` what shape ops do to per-channel metadata, `torch_function` the table that
routes torch functions to those rules. The rule modules never import the class: they return the
fields of the result, `(value, scale, zero_point, bit_width, signed, training)`, or None (decay).
"""

from quantframe.tensor.quant_tensor import QuantTensor

__all__ = ["QuantTensor"]

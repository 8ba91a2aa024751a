"""quantframe.core.bit_width: constant and learned bit widths."""

import torch

from quantframe.core.bit_width import ConstBitWidth, ParameterBitWidth


def test_const_bit_width_is_a_non_persistent_tensor():
    b = ConstBitWidth(4)
    assert b().item() == 4.0 and b().dtype == torch.float32
    assert b.int_value == 4 and b.is_const
    assert len(b.state_dict()) == 0
    assert list(b.parameters()) == []
    assert b.half()().dtype == torch.float16


def test_parameter_bit_width_rounds_and_learns():
    b = ParameterBitWidth(6, min_bit_width=2)
    assert not b.is_const
    assert b().item() == 6.0
    assert set(b.state_dict()) == {"offset"}
    with torch.no_grad():
        b.offset.fill_(3.4)
    assert b().item() == 5.0  # 2 + round(3.4)
    with torch.no_grad():
        b.offset.fill_(-3.6)
    assert b().item() == 6.0  # 2 + round(|-3.6|)
    b().backward()
    assert b.offset.grad.item() == -1.0  # straight-through of |offset| at a negative offset

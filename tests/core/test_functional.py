"""quantframe.core.functional: binary and ternary quantization, values and gradients by hand."""

import torch

from quantframe.core.functional import binary_quant, ternary_quant


def test_binary_quant_values_and_gradient():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 1.5], requires_grad=True)
    scale = torch.tensor(0.5)
    out = binary_quant(x, scale)
    assert torch.equal(out, torch.tensor([-0.5, -0.5, 0.5, 0.5, 0.5]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_ternary_quant_values_and_gradient():
    x = torch.tensor([-2.0, -0.6, -0.4, 0.0, 0.5, 0.51, 3.0], requires_grad=True)
    scale = torch.tensor(1.0)
    out = ternary_quant(x, scale, 0.5)
    assert torch.equal(out, torch.tensor([-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]))

"""quantframe.core.ste: each op rounds in forward and passes the gradient unchanged in backward."""

import pytest
import torch

from quantframe.core.ste import ceil_ste, floor_ste, round_ste, round_to_zero_ste, stochastic_round_ste

X = [-2.5, -1.5, -0.5, -0.2, 0.5, 1.5, 2.5, 2.7]

CASES = [
    (round_ste, [-2.0, -2.0, -0.0, -0.0, 0.0, 2.0, 2.0, 3.0]),  # half to even
    (floor_ste, [-3.0, -2.0, -1.0, -1.0, 0.0, 1.0, 2.0, 2.0]),
    (ceil_ste, [-2.0, -1.0, -0.0, -0.0, 1.0, 2.0, 3.0, 3.0]),
    (round_to_zero_ste, [-2.0, -1.0, -0.0, -0.0, 0.0, 1.0, 2.0, 2.0]),
]


@pytest.mark.parametrize("fn, expected", CASES)
def test_forward_values_and_identity_gradient(fn, expected):
    x = torch.tensor(X, requires_grad=True)
    out = fn(x)
    assert torch.equal(out, torch.tensor(expected))
    grad = torch.arange(1.0, 9.0)
    out.backward(grad)
    assert torch.equal(x.grad, grad)


def test_stochastic_round_is_floor_or_ceil_and_unbiased():
    torch.manual_seed(0)
    x = torch.full((20000,), 0.3, requires_grad=True)
    out = stochastic_round_ste(x)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert abs(out.mean().item() - 0.3) < 0.02
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    integers = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.equal(stochastic_round_ste(integers), integers)

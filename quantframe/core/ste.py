"""Straight-through estimator ops: the forward rounds, the backward passes the gradient unchanged."""

from collections.abc import Callable

import torch
from torch import Tensor


def _straight_through(name: str, op: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The autograd function `op(x)` forward, identity backward: one mechanism for every rule below.

    A class per rule rather than one taking `op` as an argument: tracers and exporters then see a
    function of tensors only.
    """

    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        return op(x)

    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad

    body = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    return type(name, (torch.autograd.Function,), body).apply


def _stochastic_round(x: Tensor) -> Tensor:
    return torch.floor(x + torch.rand_like(x))


_round = _straight_through("RoundSte", torch.round)  # half to even
_floor = _straight_through("FloorSte", torch.floor)
_ceil = _straight_through("CeilSte", torch.ceil)
_trunc = _straight_through("TruncSte", torch.trunc)
_stochastic = _straight_through("StochasticRoundSte", _stochastic_round)


def round_ste(x: Tensor) -> Tensor:
    """Round half to even; gradient 1."""
    return _round(x)


def floor_ste(x: Tensor) -> Tensor:
    """Floor; gradient 1."""
    return _floor(x)


def ceil_ste(x: Tensor) -> Tensor:
    """Ceil; gradient 1."""
    return _ceil(x)


def round_to_zero_ste(x: Tensor) -> Tensor:
    """Truncate towards zero; gradient 1."""
    return _trunc(x)


def stochastic_round_ste(x: Tensor) -> Tensor:
    """floor(x + u), u ~ U[0, 1): unbiased rounding in expectation; gradient 1."""
    return _stochastic(x)

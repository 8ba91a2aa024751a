"""Straight-through estimator ops: the forward rounds, the backward passes the gradient unchanged."""

import torch
from torch import Tensor


class _RoundSte(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x)  # half to even

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class _FloorSte(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class _CeilSte(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.ceil(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class _TruncSte(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.trunc(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class _StochasticRoundSte(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.floor(x + torch.rand_like(x))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


def round_ste(x: Tensor) -> Tensor:
    """Round half to even; gradient 1."""
    return _RoundSte.apply(x)


def floor_ste(x: Tensor) -> Tensor:
    """Floor; gradient 1."""
    return _FloorSte.apply(x)


def ceil_ste(x: Tensor) -> Tensor:
    """Ceil; gradient 1."""
    return _CeilSte.apply(x)


def round_to_zero_ste(x: Tensor) -> Tensor:
    """Truncate towards zero; gradient 1."""
    return _TruncSte.apply(x)


def stochastic_round_ste(x: Tensor) -> Tensor:
    """floor(x + u), u ~ U[0, 1): unbiased rounding in expectation; gradient 1."""
    return _StochasticRoundSte.apply(x)

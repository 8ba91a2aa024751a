"""The eval-mode cache of a recurrent layer: prepared quantizers and weights kept between forwards."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.proxy.act import ActQuantProxy


class EvalCache:
    """What an eval forward without autograd would recompute identically, kept between forwards.

    Prepared quantizers are reused while every parameter and buffer of their components keeps its
    version (in-place updates, `load_state_dict` and calibration bump it) and no proxy is in
    training mode; other entries are reused while the objects they were computed from are the
    same (the weight proxies return the same cached QuantTensor while their weight is unchanged).
    The owner clears it on `train()`, `.to()` and pickling (see `EvalCacheMixin`).
    """

    def __init__(self) -> None:
        self.entries: dict = {}

    def step_quant(
        self, key: str, proxies: Sequence[ActQuantProxy], chunk: int, dtype: torch.dtype
    ) -> StepQuant:
        """A `StepQuant` of `proxies`, reused while their state is unchanged."""
        key = (key, dtype)
        entry = self.entries.get(key)
        if (
            entry is not None
            and all(t._version == v for t, v in entry[0])
            and not any(p.training for p in proxies)
        ):
            return entry[1]
        quant = StepQuant(proxies, chunk, dtype)
        distinct = {id(p): p for p in proxies if p.is_quant_enabled}.values()
        tensors = [t for p in distinct for t in (*p.parameters(), *p.buffers())]
        self.entries[key] = ([(t, t._version) for t in tensors], quant)
        return quant

    def memo(self, key: object, sources: tuple, compute: Callable[[], object]) -> object:
        """`compute()`, reused while `sources` are the same objects (and tensors among them unchanged)."""
        stamp = tuple((s, _version(s)) for s in sources)
        entry = self.entries.get(key)
        if (
            entry is not None
            and len(entry[0]) == len(stamp)
            and all(a[0] is b[0] and a[1] == b[1] for a, b in zip(entry[0], stamp, strict=True))
        ):
            return entry[1]
        value = compute()
        self.entries[key] = (stamp, value)
        return value


def _version(source: object) -> int | None:
    """A tensor's in-place version; None for other objects and inference tensors (immutable outside
    inference mode, so their identity suffices)."""
    if not isinstance(source, Tensor) or source.is_inference():
        return None
    return source._version


class EvalCacheMixin:
    """Gives an nn.Module an `EvalCache`, active in eval mode without autograd, dropped on mode changes."""

    def eval_cache(self) -> EvalCache | None:
        """The cache, or None when this forward must recompute (training, or autograd enabled)."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return None
        cache = self.__dict__.get("_eval_cache")
        if cache is None:
            cache = self.__dict__["_eval_cache"] = EvalCache()
        return cache

    def train(self, mode: bool = True):  # noqa: ANN201 - returns self, as nn.Module.train
        self.__dict__.pop("_eval_cache", None)
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - nn.Module's signature
        self.__dict__.pop("_eval_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state = dict(state)
        state.pop("_eval_cache", None)
        return state

"""Shared timing method for the benchmarks: interleaved repeats, medians, median of per-pair ratios."""

import json
import statistics
import time
from collections.abc import Callable

import torch


def setup() -> None:
    """The fixed conditions every benchmark runs under."""
    torch.set_num_threads(2)
    torch.manual_seed(0)


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    workloads: dict[str, Callable[[], object]], baseline: str, warmup: int = 5, repeats: int = 20
) -> dict[str, dict[str, float]]:
    """Alternate the workloads `repeats` times after `warmup`; medians and median ratio to `baseline`."""
    for _ in range(warmup):
        for fn in workloads.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, fn in workloads.items():
            times[name].append(time_once(fn))
    base = times[baseline]
    return {
        name: {
            "median_ms": statistics.median(ts) * 1e3,
            "ratio": statistics.median(t / b for t, b in zip(ts, base, strict=True)),
        }
        for name, ts in times.items()
    }


def report(title: str, results: dict[str, dict[str, float]], extra: dict | None = None) -> None:
    """Print a table and one JSON line."""
    print(f"\n{title}")
    print(f"{'workload':<48}{'median ms':>12}{'ratio':>9}")
    for name, r in results.items():
        print(f"{name:<48}{r['median_ms']:>12.3f}{r['ratio']:>9.3f}")
    print(json.dumps({"benchmark": title, "results": results, **(extra or {})}))


def brevitas_available() -> bool:
    try:
        import brevitas  # noqa: F401
    except Exception:
        return False
    return True

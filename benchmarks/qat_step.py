"""One QAT training step (fwd+bwd+SGD, batch 32, 3x32x32, 8-bit weights and activations) vs float.

Both while activation statistics are collected and after the switch to learned scales; also
the peak resident memory added by 3 training steps, each model in a fresh process.
Targets: <= 1.2x time in both phases, <= 1.5x peak memory.
"""

import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.models import brevitas_resnet18, finish_statistics, float_resnet18, quant_resnet18
from benchmarks.timing import brevitas_available, compare, report, setup

ROOT = Path(__file__).resolve().parents[1]  # where `benchmarks` is importable
MEMORY_RUNS = 3
BUILDERS = {"float torch": float_resnet18, "quantframe": quant_resnet18, "brevitas": brevitas_resnet18}


def step_fn(model: nn.Module, batch: int = 32):  # noqa: ANN201
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def rss_mib() -> float:
    """Current resident set size of this process, in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure_peak_memory(name: str) -> float:
    """Peak RSS added by 3 training steps over the RSS after one warm-up step (sampled every ms)."""
    setup()
    step = step_fn(BUILDERS[name]())
    step()
    base, peak, done = rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        step()
    done.set()
    sampler.join()
    return max(peak[0], rss_mib()) - base


def saved_for_backward_mib(model: nn.Module, batch: int = 32) -> float:
    """The bytes of the distinct storages autograd keeps for backward after one training forward: the
    deterministic part of training memory (activations), free of the RSS measurement's noise."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randn(batch, 3, 32, 32))
    return sum(storages.values()) / 2**20


def peak_memory_added(name: str) -> float:
    """`measure_peak_memory` in a fresh interpreter, so no model or allocator cache carries over."""
    code = f"from benchmarks import qat_step; print(qat_step.measure_peak_memory({name!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    setup()
    names = ["float torch", "quantframe"] + (["brevitas"] if brevitas_available() else [])
    models = {name: BUILDERS[name]() for name in names}
    steps = {name: step_fn(model) for name, model in models.items()}
    report("qat_step: collecting statistics", compare(steps, baseline="float torch", warmup=3, repeats=20))
    for name in names[1:]:
        if name == "quantframe":
            finish_statistics(models[name])
        else:  # Brevitas: run past its collection phase
            for module in models[name].modules():
                if hasattr(module, "collect_stats_steps"):
                    module.counter = module.collect_stats_steps + 1
    report("qat_step: learned scales", compare(steps, baseline="float torch", warmup=3, repeats=20))
    # RSS moves by tens of MiB between identical runs (allocator timing): the median of fresh processes
    memory = {name: statistics.median(peak_memory_added(name) for _ in range(MEMORY_RUNS)) for name in names}
    ratios = {name: memory[name] / memory["float torch"] for name in names}
    print(f"\npeak RSS added by 3 training steps (MiB, median of {MEMORY_RUNS} processes):")
    for name in names:
        print(f"  {name:<14}{memory[name]:>10.1f}   ratio {ratios[name]:.3f}")
    print(json.dumps({"benchmark": "qat_step peak memory", "mib": memory, "ratio": ratios}))
    saved = {name: saved_for_backward_mib(models[name]) for name in names}
    print("\ntensors saved for backward by one training forward (MiB, exact):")
    for name in names:
        print(f"  {name:<14}{saved[name]:>10.1f}   ratio {saved[name] / saved['float torch']:.3f}")


if __name__ == "__main__":
    main()

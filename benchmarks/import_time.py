"""Import cost: fresh interpreters importing torch alone vs torch plus quantframe's layers and quantizers.

Each statement runs in 5 fresh processes (after one warm-up of the file cache); the figure is the
difference of the wall-clock medians. The CPU seconds of the same processes are printed beside it:
on a loaded machine they move less than wall time. Target: quantframe adds <= 0.15 s to `import torch`.
"""

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.timing import brevitas_available, report

ROOT = Path(__file__).resolve().parents[1]  # so the fresh processes import this checkout's quantframe
REPEATS = 5
TARGET_SECONDS = 0.15
STATEMENTS = {
    "import torch": "import torch",
    "import torch + quantframe": "import torch, quantframe.layers, quantframe.quantizers",
}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_import_seconds(statement: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds of a new interpreter that runs `statement` and exits."""
    cpu, start = children_cpu_seconds(), time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True)
    return time.perf_counter() - start, children_cpu_seconds() - cpu


def main(repeats: int = REPEATS) -> None:
    statements = dict(STATEMENTS)
    if brevitas_available():
        statements["import torch + brevitas"] = "import torch, brevitas.nn, brevitas.quant"
    fresh_import_seconds("import torch")  # warm the file cache
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in statements}
    for _ in range(repeats):
        for name, statement in statements.items():
            runs[name].append(fresh_import_seconds(statement))
    wall = {name: statistics.median(w for w, _ in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(c for _, c in rs) for name, rs in runs.items()}
    base = wall["import torch"]
    results = {name: {"median_ms": m * 1e3, "ratio": m / base} for name, m in wall.items()}
    added = {name: m - base for name, m in wall.items()}
    added_cpu = {name: m - cpu["import torch"] for name, m in cpu.items()}
    extra = {"added_seconds": added, "added_cpu_seconds": added_cpu}
    report(f"import_time (fresh interpreter, median of {repeats})", results, extra)
    for name in statements:
        if name != "import torch":
            print(f"{name}: adds {added[name]:.3f} s wall ({added_cpu[name]:.3f} s CPU) over import torch")
    if sys.flags.dont_write_bytecode:
        print("bytecode caching is off (PYTHONDONTWRITEBYTECODE): each process compiles quantframe's sources")
    verdict = "holds" if added["import torch + quantframe"] <= TARGET_SECONDS else "MISSED"
    print(f"target <= {TARGET_SECONDS} s added by quantframe: {verdict}")


if __name__ == "__main__":
    main()

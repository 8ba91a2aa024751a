"""Import cost: a fresh interpreter importing torch alone vs torch plus quantframe's layers and quantizers.

Target: quantframe adds <= 0.3 s.
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import brevitas_available, report  # noqa: E402

STATEMENTS = {
    "import torch": "import torch",
    "import torch + quantframe": "import torch, quantframe.layers, quantframe.quantizers",
}


def fresh_import_seconds(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


def main(repeats: int = 5) -> None:
    statements = dict(STATEMENTS)
    if brevitas_available():
        statements["import torch + brevitas"] = "import torch, brevitas.nn, brevitas.quant"
    fresh_import_seconds("import torch")  # warm the file cache
    times: dict[str, list[float]] = {name: [] for name in statements}
    for _ in range(repeats):
        for name, statement in statements.items():
            times[name].append(fresh_import_seconds(statement))
    base = statistics.median(times["import torch"])
    results = {
        name: {"median_ms": statistics.median(ts) * 1e3, "ratio": statistics.median(ts) / base}
        for name, ts in times.items()
    }
    added = {name: (r["median_ms"] / 1e3 - base) for name, r in results.items()}
    report("import_time (fresh interpreter, median of 5)", results, {"added_seconds": added})
    for name, seconds in added.items():
        print(f"{name}: adds {seconds:.3f} s over import torch")


if __name__ == "__main__":
    main()

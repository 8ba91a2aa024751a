"""QuantLSTM(64, 128) and QuantRNN(64, 128), default quantizers, seq 32, batch 16, vs torch.nn.LSTM / RNN.

Workloads: forward+backward in training mode, after the activation quantizers switched to learned
scales (the steady state: every timestep is one statistics step, so the 300 collection steps of the
default quantizers end within the first ~10 forwards of a 32-step sequence) and, for reference,
while they still collect statistics; then the eval forward under `torch.no_grad()`.
Targets: QuantLSTM <= 5x nn.LSTM for fwd+bwd and for eval; QuantRNN <= 3x nn.RNN.
"""

import torch
from torch import nn

from benchmarks.models import finish_statistics
from benchmarks.timing import brevitas_available, compare, report, setup
from quantframe.layers import QuantLSTM, QuantRNN

SEQ, BATCH, INPUT, HIDDEN = 32, 16, 64, 128
NEVER = 10**9  # collect_stats_steps that keeps the activation quantizers collecting for the whole run
LEARNED, COLLECTING = "quantframe (learned scales)", "quantframe (collecting stats)"


def collecting(kind: str) -> dict:
    """Overrides keeping every activation quantizer of `kind` ("lstm"/"rnn") in its statistics phase."""
    prefixes = ["io", "gate_acc"] + (["sigmoid", "tanh", "cell_state"] if kind == "lstm" else [])
    return {f"{p}_collect_stats_steps": NEVER for p in prefixes}


def build(kind: str, x: torch.Tensor) -> dict[str, nn.Module]:
    """The float layer, quantframe's layer in both training phases, and brevitas's where installed."""
    float_cls, quant_cls = (nn.LSTM, QuantLSTM) if kind == "lstm" else (nn.RNN, QuantRNN)
    models = {
        "float torch": float_cls(INPUT, HIDDEN),
        LEARNED: quant_cls(INPUT, HIDDEN),
        COLLECTING: quant_cls(INPUT, HIDDEN, **collecting(kind)),
    }
    if brevitas_available():
        import brevitas.nn as bnn

        models["brevitas"] = (bnn.QuantLSTM if kind == "lstm" else bnn.QuantRNN)(INPUT, HIDDEN)
    for model in models.values():  # one statistics step each, then learned scales where asked
        model(x)
    finish_statistics(models[LEARNED])
    return models


def fwd_bwd(model: nn.Module, x: torch.Tensor) -> None:
    model(x)[0].sum().backward()


def evaluate(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def main() -> None:
    setup()
    x = torch.randn(SEQ, BATCH, INPUT)
    for kind, name in (("lstm", "QuantLSTM"), ("rnn", "QuantRNN")):
        models = build(kind, x)
        for model in models.values():
            model.train()
        workloads = {n: (lambda m=m: fwd_bwd(m, x)) for n, m in models.items()}
        report(
            f"recurrent: {name}(64, 128) seq 32 batch 16, fwd+bwd (train)",
            compare(workloads, baseline="float torch", warmup=5, repeats=20),
        )
        del models[COLLECTING]
        for model in models.values():
            model.eval()
        workloads = {
            n.replace(" (learned scales)", ""): (lambda m=m: evaluate(m, x)) for n, m in models.items()
        }
        report(
            f"recurrent: {name}(64, 128) seq 32 batch 16, eval forward (no_grad)",
            compare(workloads, baseline="float torch", warmup=5, repeats=30),
        )


if __name__ == "__main__":
    main()

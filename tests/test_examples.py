"""Every example runs end to end (small settings)."""

import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_digits_qat_trains_and_keeps_accuracy():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import digits_qat
    finally:
        sys.path.remove(str(EXAMPLES))
    results = digits_qat.run(float_epochs=8, qat_epochs=4, show_progress=False)
    assert results["float"] > 90.0
    assert results["w4a8 QAT"] > results["float"] - 5.0


@pytest.mark.slow
def test_resnet18_example_runs_as_a_script(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["resnet18_qat.py", "--steps", "2", "--batch", "2"])
    torch.manual_seed(0)
    runpy.run_path(str(EXAMPLES / "resnet18_qat.py"), run_name="__main__")
    assert "step 1: loss" in capsys.readouterr().out

"""Every example runs end to end (small settings): as a script, and through its functions."""

import runpy
import sys
from pathlib import Path

import pytest
import torch

from examples import digits_qat

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT_ARGS = {  # small settings for each example file; a new example adds its line here
    "digits_qat.py": (["--float-epochs", "1", "--qat-epochs", "1"], "accuracy"),
    "resnet18_qat.py": (["--steps", "2", "--batch", "2"], "step 1: loss"),
    "quantize_pretrained_architecture.py": (
        ["--batches", "2", "--batch-size", "8", "--size", "32"],
        "output steps",
    ),
}


def test_every_example_file_has_script_settings():
    assert {p.name for p in EXAMPLES.glob("*.py") if p.name != "__init__.py"} == set(SCRIPT_ARGS)


@pytest.mark.slow
def test_digits_qat_trains_and_keeps_accuracy():
    results = digits_qat.run(float_epochs=8, qat_epochs=4, show_progress=False)
    assert results["float"] > 90.0
    assert results["w4a8 QAT"] > results["float"] - 5.0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPT_ARGS))
def test_example_runs_as_a_script(name, monkeypatch, capsys):
    args, expected = SCRIPT_ARGS[name]
    monkeypatch.setattr(sys, "argv", [name, *args])
    torch.manual_seed(0)
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert expected in capsys.readouterr().out

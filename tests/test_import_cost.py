"""Importing the layers and quantizers stays cheap: pydantic, onnx and onnxruntime load only on use."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pydantic", "onnx", "onnxruntime", "torch.onnx")


def _loaded_after(statement: str) -> list[str]:
    """The HEAVY modules present in `sys.modules` of a fresh interpreter after `statement`."""
    code = f"import json, sys; {statement}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_layers_and_quantizers_import_without_pydantic_or_onnx():
    assert _loaded_after("import quantframe.layers, quantframe.quantizers") == []


def test_building_a_layer_imports_no_pydantic():
    statement = (
        "from quantframe.layers import QuantConv2d, QuantReLU; "
        "QuantConv2d(3, 8, 3, weight_bit_width=4); QuantReLU(bit_width=4)"
    )
    assert _loaded_after(statement) == []


def test_spec_names_load_pydantic_on_first_use():
    assert "pydantic" in _loaded_after("from quantframe.quantizers import to_spec")

"""The `quantframe export` command: a model from MODULE:FACTORY to a file, with a one-screen summary."""

import subprocess
import sys
import textwrap

import onnx
import pytest

from quantframe.cli import main

FACTORY = textwrap.dedent("""
    from torch import nn
    from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear, QuantMaxPool2d, QuantReLU
    from quantframe.quantizers import Int32Bias

    def tiny():
        return nn.Sequential(
            QuantIdentity(return_quant_tensor=True),
            QuantConv2d(3, 4, 3, weight_bit_width=4, bias_quant=Int32Bias),
            QuantReLU(return_quant_tensor=True),
            QuantMaxPool2d(2),
            nn.Flatten(),
            QuantLinear(4 * 3 * 3, 5, bias_quant=Int32Bias),
        )
""")


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "tiny_models.py"
    path.write_text(FACTORY)
    return path


@pytest.mark.parametrize("fmt", ["qcdq", "qonnx"])
def test_export_command_writes_the_file_and_a_summary(factory_file, tmp_path, capsys, fmt):
    out = tmp_path / f"tiny_{fmt}.onnx"
    code = main(
        ["export", f"{factory_file}:tiny", "--input-shape", "1,3,8,8", "--format", fmt, "--out", str(out)]
    )
    assert code == 0
    model = onnx.load(str(out))
    text = capsys.readouterr().out
    assert f"exported {fmt} to {out}" in text
    assert ("QuantizeLinear 2" if fmt == "qcdq" else "Quant 6") in text
    assert "weight_quant        4      1" in text and "bias_quant         32      2" in text
    assert len(text.splitlines()) < 25
    assert {n.op_type for n in model.graph.node} >= {"Conv", "Gemm"}


def test_module_name_form_and_console_script(factory_file, tmp_path):
    out = tmp_path / "m.onnx"
    script = [
        sys.executable,
        "-m",
        "quantframe.cli",
        "export",
        "tiny_models:tiny",
        "--input-shape",
        "2,3,8,8",
        "--out",
        str(out),
        "--dynamic-batch",
    ]
    done = subprocess.run(script, cwd=factory_file.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_bad_arguments_are_reported(factory_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "no_colon", "--input-shape", "1,3,8,8", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit):
        main(["export", f"{factory_file}:tiny", "--input-shape", "1,x", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit, match="has no attribute 'missing'"):
        main(
            [
                "export",
                f"{factory_file}:missing",
                "--input-shape",
                "1,3,8,8",
                "--out",
                str(tmp_path / "x.onnx"),
            ]
        )
    code = main(
        [
            "export",
            f"{factory_file}:tiny",
            "--input-shape",
            "1,3,8,8",
            "--out",
            str(tmp_path / "x.onnx"),
            "--opset",
            "9",
        ]
    )
    assert code == 1 and "opset_version=9" in capsys.readouterr().err

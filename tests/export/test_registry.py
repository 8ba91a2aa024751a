"""quantframe.export.registry: one table from layer class to a handler per format."""

import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from quantframe import layers
from quantframe.export.registry import (
    EXPORT_TABLE,
    FORWARD,
    Deferred,
    check_supported,
    layer_export,
    register_layer,
)


def test_every_public_layer_has_a_row():
    for name in layers.__all__:
        assert layer_export(getattr(layers, name)(*_args(name))) is not None, name


def _args(name):
    if "Conv" in name:
        return (2, 2, 1)
    if name in ("QuantLinear", "QuantEmbedding", "QuantRNN", "QuantLSTM"):
        return (3, 2)
    if name in ("QuantMaxPool1d", "QuantMaxPool2d", "TruncAvgPool2d"):
        return (2,)
    if name in ("QuantAdaptiveAvgPool2d", "TruncAdaptiveAvgPool2d"):
        return (1,)
    return ()


def test_recurrent_layers_are_exported_by_their_own_handlers_only():
    from quantframe.export import recurrent

    row = EXPORT_TABLE[layers.QuantLSTM]
    handler = row.handlers["qcdq"]
    assert (handler.resolve() if isinstance(handler, Deferred) else handler) is recurrent.attach_qcdq
    assert row.handlers["record"] is None
    model = nn.Sequential(layers.QuantLSTM(3, 2))
    attached = check_supported(model, "qonnx")
    assert [path for path, _, _ in attached] == ["0"]


def test_truncated_pooling_has_a_handler_per_format():
    row = EXPORT_TABLE[layers.TruncAvgPool2d]
    assert set(row.formats) == {"qcdq", "qonnx"}
    assert all(callable(row.handlers[f].resolve()) for f in row.formats)


def test_importing_the_export_package_registers_nothing_by_side_effect():
    handlers = ("quantframe.export.trunc", "quantframe.export.recurrent")
    code = (
        "import sys, quantframe.export; from quantframe.export.registry import EXPORT_TABLE as T; "
        f"print(sorted(m for m in {handlers!r} if m in sys.modules), "
        "[type(h).__name__ for h in T[quantframe.layers.QuantLSTM].handlers.values()], "
        "T[quantframe.layers.QuantRNN].drives_parts)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["[]", "['Deferred',", "'Deferred',", "'NoneType']", "True"]


def test_register_layer_rows_and_errors():
    class Custom(nn.Module):
        pass

    class Derived(Custom):
        pass

    try:
        register_layer(Custom)
        assert layer_export(Derived()) == FORWARD
        with pytest.raises(ValueError, match=r"unknown formats \['tflite'\]; allowed"):
            register_layer(Custom, {"tflite": None})
        register_layer(Custom, {"qcdq": None})
        with pytest.raises(TypeError, match=r"cannot be exported to qonnx; it supports \['qcdq'\]"):
            check_supported(nn.Sequential(Custom()), "qonnx")
    finally:
        EXPORT_TABLE.pop(Custom, None)

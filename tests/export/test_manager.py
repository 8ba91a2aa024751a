"""The export manager: models come out of an export exactly as they went in, also when it raises."""

import numpy as np
import pytest
import torch
from torch import nn

from quantframe.export import export_onnx_qcdq, export_qonnx, register_layer
from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear
from quantframe.proxy.act import act_proxy
from quantframe.quantizers import Int8ActPerTensorFloat, SignedBinaryActPerTensorConst
from tests.helpers import (
    assert_unchanged,
    calibrate,
    cnn,
    example,
    output_step,
    run_onnxruntime,
    snapshot,
    torch_eval,
)


@pytest.mark.parametrize("exporter", [export_onnx_qcdq, export_qonnx])
def test_export_leaves_model_bit_identical(exporter):
    model = cnn(True, 8, True)
    model[2].train()  # mixed training flags are restored module by module
    x = example()
    before = snapshot(model, x)
    exporter(model, x)
    assert_unchanged(model, x, before)


class Unknown(nn.Module):
    """A module holding a quantizer proxy, which no export handler knows."""

    def __init__(self):
        super().__init__()
        self.act_quant = act_proxy(Int8ActPerTensorFloat, {}, "Unknown", "act_quant")

    def forward(self, x):
        return self.act_quant(x).value


def with_module(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(QuantIdentity(), nn.Sequential(nn.Linear(4, 4), module))


@pytest.mark.parametrize("exporter", [export_onnx_qcdq, export_qonnx])
def test_float_lstm_is_refused_by_path_and_type_and_nothing_changes(exporter):
    class LastStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 4)

        def forward(self, x):
            return self.lstm(x)[0]

    model = with_module(LastStep())
    x = torch.randn(3, 4)
    before = snapshot(model, x)
    with pytest.raises(TypeError, match=r"module '1.1.lstm' \(LSTM\) is a float recurrent layer"):
        exporter(model, x)
    assert_unchanged(model, x, before)


def test_unknown_module_holding_a_proxy_is_refused():
    model = with_module(Unknown())
    x = torch.randn(3, 4)
    before = snapshot(model, x)
    with pytest.raises(
        TypeError, match=r"module '1.1' \(Unknown\) holds quantizers but has no export handler"
    ):
        export_onnx_qcdq(model, x)
    assert_unchanged(model, x, before)


def test_error_while_tracing_detaches_everything():
    model = nn.Sequential(QuantConv2d(3, 4, 3), QuantIdentity(act_quant=SignedBinaryActPerTensorConst))
    x = example((2, 3, 6, 6))
    before = snapshot(model, x)
    with pytest.raises(ValueError, match="binary"):
        export_onnx_qcdq(model, x)
    assert_unchanged(model, x, before)


class Registered(Unknown):
    """The same module, declared exportable (its forward uses its proxy as a layer would)."""


register_layer(Registered)


def test_registered_layer_exports_through_its_proxies():
    model = calibrate(with_module(Registered()), (5, 4))
    x = torch.randn(3, 4)
    exported = export_onnx_qcdq(model, x)
    assert [n.op_type for n in exported.graph.node].count("QuantizeLinear") == 2
    step = float(model[1][1].act_quant.scale().detach())
    assert np.abs(run_onnxruntime(exported, x) - torch_eval(model, x)).max() <= step * 1.0001


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = QuantLinear(4, 3, input_quant=Int8ActPerTensorFloat, output_quant=Int8ActPerTensorFloat)
        self.b = QuantLinear(
            4,
            3,
            weight_quant=self.a.weight_quant,
            input_quant=Int8ActPerTensorFloat,
            output_quant=Int8ActPerTensorFloat,
        )

    def forward(self, x, y=None):
        return self.a(x), self.b(y)


@pytest.mark.parametrize("as_dict", [False, True])
def test_tuple_and_keyword_inputs_and_a_shared_weight_quantizer(as_dict):
    model = TwoInputs()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(5, 4), torch.randn(5, 4))
    model.eval()
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    args = (x, {"y": y}) if as_dict else (x, y)
    exported = export_onnx_qcdq(model, args)
    assert [o.name for o in exported.graph.output] == ["output_0", "output_1"]
    names = [i.name for i in exported.graph.input]
    assert names == (["input", "y"] if as_dict else ["input_0", "input_1"])
    from quantframe.export import onnxruntime_session

    outputs = onnxruntime_session(exported.SerializeToString()).run(
        None, dict(zip(names, (x.numpy(), y.numpy()), strict=True))
    )
    with torch.no_grad():
        expected = model(x, y)
    for got, want, layer in zip(outputs, expected, (model.a, model.b), strict=True):
        assert np.abs(got - want.numpy()).max() <= float(layer.output_quant.scale().detach()) * 1.0001
    # one proxy serves both weights: both stored as initializers of the shared quantizer
    stored = sorted(t.name for t in exported.graph.initializer if "int_weight" in t.name)
    assert stored == ["a.weight_quant.int_weight_0", "a.weight_quant.int_weight_1"]


def test_weights_are_named_integer_initializers_and_removed_afterwards():
    model = cnn(False, 8)
    exported = export_onnx_qcdq(model, example())
    names = {t.name for t in exported.graph.initializer}
    assert {"1.weight_quant.int_weight", "5.weight_quant.int_weight"} <= names
    assert not any("int_weight" in key for key in model.state_dict())
    assert output_step(model) > 0

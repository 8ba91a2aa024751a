"""QONNX export: Quant/BipolarQuant/Trunc nodes per the QONNX op spec, run by the qonnx executor."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from quantframe.export import export_qonnx
from quantframe.layers import QuantAdaptiveAvgPool2d, QuantIdentity, QuantLinear, QuantReLU, TruncAvgPool2d
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryActPerTensorConst,
)
from tests.helpers import CNN_CASES, calibrate, cnn, example, output_step, run_qonnx, torch_eval

DOMAIN = "qonnx.custom_op.general"


def attributes(node: onnx.NodeProto) -> dict:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


@pytest.mark.parametrize(("per_channel", "bits", "int32_bias"), CNN_CASES)
def test_cnn_matches_torch_in_the_qonnx_executor(per_channel, bits, int32_bias, record_property):
    model = cnn(per_channel, bits, int32_bias)
    x = example()
    exported = export_qonnx(model, x)
    error = np.abs(run_qonnx(exported, x) - torch_eval(model, x)).max()
    record_property("max_abs_error", float(error))
    assert error <= output_step(model) * 1.0001


def test_quant_nodes_carry_the_spec_inputs_and_attributes():
    model = cnn(True, 4, True)
    exported = export_qonnx(model, example())
    assert {(o.domain, o.version) for o in exported.opset_import} >= {(DOMAIN, 2)}
    inits = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    quants = [n for n in exported.graph.node if n.op_type == "Quant"]
    assert len(quants) == 7 and all(n.domain == DOMAIN and len(n.input) == 4 for n in quants)
    weight = next(n for n in exported.graph.node if n.op_type == "Quant" and "/1/weight_quant/" in n.name)
    assert attributes(weight) == {"signed": 1, "narrow": 1, "rounding_mode": "ROUND"}
    assert float(inits[weight.input[3]]) == 4.0
    np.testing.assert_allclose(inits[weight.input[1]], model[1].quant_weight_scale().detach().numpy(), rtol=0)
    assert inits[weight.input[1]].shape == (8, 1, 1, 1)  # per output channel, broadcastable
    np.testing.assert_array_equal(inits[weight.input[0]], model[1].quant_weight().value.detach().numpy())
    relu = next(n for n in exported.graph.node if n.op_type == "Quant" and "/2/act_quant/" in n.name)
    assert attributes(relu) == {"signed": 0, "narrow": 0, "rounding_mode": "ROUND"}
    bias = next(n for n in exported.graph.node if n.op_type == "Quant" and "/1/bias_quant/" in n.name)
    assert float(inits[bias.input[3]]) == 32.0


def test_binary_and_ternary_grids():
    torch.manual_seed(0)
    model = calibrate(
        nn.Sequential(
            QuantIdentity(act_quant=SignedTernaryActPerTensorConst, return_quant_tensor=True),
            QuantLinear(6, 5, weight_quant=SignedBinaryWeightPerTensorConst),
            QuantIdentity(act_quant=SignedBinaryActPerTensorConst),
        ),
        (4, 6),
    )
    x = example((3, 6))
    exported = export_qonnx(model, x)
    ops = [n.op_type for n in exported.graph.node]
    assert ops.count("BipolarQuant") == 2 and ops.count("Quant") == 1
    ternary = next(n for n in exported.graph.node if n.op_type == "Quant")
    assert attributes(ternary)["narrow"] == 1
    np.testing.assert_array_equal(run_qonnx(exported, x), torch_eval(model, x))


@pytest.mark.parametrize("pool", ["trunc", "adaptive"])
def test_truncated_average_pooling_becomes_trunc(pool):
    torch.manual_seed(0)
    layer = TruncAvgPool2d(2, bit_width=6) if pool == "trunc" else QuantAdaptiveAvgPool2d((2, 2), bit_width=5)
    model = calibrate(
        nn.Sequential(
            QuantIdentity(return_quant_tensor=True, bit_width=5),
            QuantReLU(return_quant_tensor=True, bit_width=4),
            layer,
            nn.Flatten(),
            QuantLinear(3 * 4 if pool == "adaptive" else 3 * 16, 4, output_quant=Int8ActPerTensorFloat),
        ),
        (2, 3, 8, 8),
    )
    x = example((2, 3, 8, 8))
    exported = export_qonnx(model, x)
    trunc = next(n for n in exported.graph.node if n.op_type == "Trunc")
    assert trunc.domain == DOMAIN and len(trunc.input) == 6
    assert attributes(trunc)["rounding_mode"] == "FLOOR"
    assert np.abs(run_qonnx(exported, x) - torch_eval(model, x)).max() <= output_step(model) * 1.0001


def test_ternary_threshold_other_than_half_is_refused():
    class Ternary(SignedTernaryActPerTensorConst):
        threshold = 0.3

    model = nn.Sequential(QuantIdentity(act_quant=Ternary)).eval()
    with pytest.raises(ValueError, match=r"'0.act_quant' is ternary with threshold 0.3"):
        export_qonnx(model, torch.randn(1, 4))

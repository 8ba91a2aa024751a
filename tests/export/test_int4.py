"""4-bit weights as INT4/UINT4 initializers in QCDQ files at opset >= 21 (quantframe/export/int4.py)."""

from functools import cache

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from quantframe.export import export_onnx_qcdq, export_qonnx
from quantframe.export.int4 import store_4bit_weights
from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int32Bias,
    ShiftedUint8WeightPerTensorFloat,
)
from tests.helpers import calibrate, example, output_step, run_onnxruntime, torch_eval

INPUT = (2, 64, 4, 4)
FOUR_BIT = (TensorProto.INT4, TensorProto.UINT4)


@cache
def weight_heavy(bits: int, weight_quant: type = Int8WeightPerChannelFloat) -> nn.Module:
    """Two 64->64 3x3 convs and a 1024-wide linear, so that weights dominate the file."""
    torch.manual_seed(0)
    weights = dict(weight_quant=weight_quant, weight_bit_width=bits, bias_quant=Int32Bias)
    model = nn.Sequential(
        QuantIdentity(return_quant_tensor=True),
        QuantConv2d(64, 64, 3, padding=1, **weights),
        QuantReLU(return_quant_tensor=True),
        QuantConv2d(64, 64, 3, padding=1, **weights),
        QuantReLU(return_quant_tensor=True),
        nn.Flatten(),
        QuantLinear(1024, 256, output_quant=Int8ActPerTensorFloat, **weights),
    )
    return calibrate(model, INPUT)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [model[1], model[3], model[6]]


def weight_dequantizers(exported: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in exported.graph.node if n.op_type == "DequantizeLinear" and "weight_quant" in n.name]


def initializers(exported: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in exported.graph.initializer}


QUANTIZERS = [
    pytest.param(Int8WeightPerChannelFloat, TensorProto.INT4, id="signed-narrow-per-channel"),
    pytest.param(ShiftedUint8WeightPerTensorFloat, TensorProto.UINT4, id="unsigned-asymmetric"),
]


@pytest.mark.parametrize(("weight_quant", "data_type"), QUANTIZERS)
def test_4bit_weights_are_4bit_initializers_without_clip_at_opset_21(weight_quant, data_type):
    model = weight_heavy(4, weight_quant)
    exported = export_onnx_qcdq(model, example(INPUT), opset_version=21)
    onnx.checker.check_model(exported, full_check=True)
    inits = initializers(exported)
    nodes = weight_dequantizers(exported)
    assert len(nodes) == 3
    for node, layer in zip(nodes, weight_layers(model), strict=True):
        ints, zero_point = inits[node.input[0]], inits[node.input[2]]
        assert ints.data_type == data_type and zero_point.data_type == data_type
        assert ints.name.endswith("weight_quant.int_weight")  # retyped in place: the name stays
        stored = numpy_helper.to_array(ints).astype(np.int64)
        np.testing.assert_array_equal(stored, layer.int_weight().numpy())
    # no Clip on the weights; the activations (8 bits, full range) need none either
    assert "Clip" not in {n.op_type for n in exported.graph.node}
    biases = [n for n in exported.graph.node if n.op_type == "DequantizeLinear" and "bias_quant" in n.name]
    assert {inits[n.input[0]].data_type for n in biases} == {TensorProto.INT32}


@pytest.mark.parametrize(("weight_quant", "data_type"), QUANTIZERS)
def test_4bit_file_matches_torch_in_onnxruntime(weight_quant, data_type):
    model = weight_heavy(4, weight_quant)
    x = example(INPUT)
    exported = export_onnx_qcdq(model, x, opset_version=21)
    expected, step = torch_eval(model, x), output_step(model)
    for level in ("all", "disable"):
        error = np.abs(run_onnxruntime(exported, x, level) - expected).max()
        assert error <= step * 1.0001, f"{level}: {error / step:.3f} output steps"


def test_4bit_file_is_at_most_0_6_of_the_8bit_file():
    x = example(INPUT)
    four = len(export_onnx_qcdq(weight_heavy(4), x, opset_version=21).SerializeToString())
    eight = len(export_onnx_qcdq(weight_heavy(8), x, opset_version=21).SerializeToString())
    assert four <= 0.6 * eight, f"{four} / {eight} = {four / eight:.3f}"


def test_below_opset_21_a_4bit_weight_stays_int8_with_its_clip():
    exported = export_onnx_qcdq(weight_heavy(4), example(INPUT), opset_version=13)
    inits = initializers(exported)
    producers = {o: n for n in exported.graph.node for o in n.output}
    for node in weight_dequantizers(exported):
        clip = producers[node.input[0]]
        assert clip.op_type == "Clip"
        ints, lo, hi = (inits[name] for name in clip.input)
        assert ints.data_type == TensorProto.INT8
        assert (int(numpy_helper.to_array(lo)), int(numpy_helper.to_array(hi))) == (-7, 7)


def test_8bit_weights_stay_int8_at_opset_21():
    exported = export_onnx_qcdq(weight_heavy(8), example(INPUT), opset_version=21)
    inits = initializers(exported)
    assert not {t.data_type for t in exported.graph.initializer} & set(FOUR_BIT)
    producers = {o: n for n in exported.graph.node for o in n.output}
    for node in weight_dequantizers(exported):
        assert inits[producers[node.input[0]].input[0]].data_type == TensorProto.INT8  # through its Clip


def test_qonnx_export_keeps_float_weights_and_4bit_quant_nodes():
    exported = export_qonnx(weight_heavy(4), example(INPUT))
    inits = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    assert not {t.data_type for t in exported.graph.initializer} & set(FOUR_BIT)
    weight_quants = [n for n in exported.graph.node if n.op_type == "Quant" and "weight_quant" in n.name]
    assert len(weight_quants) == 3
    for node in weight_quants:
        assert inits[node.input[0]].dtype == np.float32 and float(inits[node.input[3]]) == 4.0


def dequantized_graph(
    ints: np.ndarray, grids: list[tuple[int, int]], zero_point: int = 0, dtype: type = np.int8
) -> onnx.ModelProto:
    """Clip(w, lo_i, hi_i) -> DequantizeLinear(scale 0.5, z) per grid of `grids`; every node reads the
    same integers `w` and zero point `z`."""
    inits = [
        numpy_helper.from_array(ints.astype(dtype), "w"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(zero_point, dtype=dtype), "z"),
    ]
    nodes, outputs = [], []
    for i, (lo, hi) in enumerate(grids):
        inits.append(numpy_helper.from_array(np.array(lo, dtype=dtype), f"lo{i}"))
        inits.append(numpy_helper.from_array(np.array(hi, dtype=dtype), f"hi{i}"))
        nodes.append(helper.make_node("Clip", ["w", f"lo{i}", f"hi{i}"], [f"c{i}"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"c{i}", "s", "z"], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, list(ints.shape)))
    graph = helper.make_graph(nodes, "g", [], outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def evaluated(model: onnx.ModelProto) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {})


@pytest.mark.parametrize(
    ("lo", "hi", "dtype", "data_type"),
    [
        (-7, 7, np.int8, TensorProto.INT4),
        (-8, 7, np.int8, TensorProto.INT4),
        (0, 15, np.uint8, TensorProto.UINT4),
    ],
)
def test_grids_within_4_bits_are_packed_and_keep_their_values(lo, hi, dtype, data_type):
    ints = np.arange(lo, hi + 1).reshape(1, -1)  # an odd count for [-7, 7]: the last byte is half used
    model = dequantized_graph(ints, [(lo, hi)], dtype=dtype)
    before = evaluated(model)
    assert store_4bit_weights(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear"]
    packed = initializers(model)["w"]
    assert packed.data_type == data_type and len(packed.raw_data) == (ints.size + 1) // 2
    assert initializers(model)["z"].data_type == data_type
    assert set(initializers(model)) == {"w", "s", "z"}  # the Clip bounds are gone
    np.testing.assert_array_equal(evaluated(model)[0], before[0])


@pytest.mark.parametrize(("lo", "hi", "dtype"), [(-15, 15, np.int8), (0, 31, np.uint8), (-128, 127, np.int8)])
def test_grids_wider_than_4_bits_are_left_alone(lo, hi, dtype):
    model = dequantized_graph(np.array([lo, 0, hi]), [(lo, hi)], dtype=dtype)
    assert store_4bit_weights(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Clip", "DequantizeLinear"]


def test_integers_off_their_grid_or_an_out_of_range_zero_point_keep_the_clip():
    off_grid = dequantized_graph(np.array([-8, 0, 7]), [(-7, 7)])  # -8 is below the narrow grid
    assert store_4bit_weights(off_grid) == 0
    wide_zero_point = dequantized_graph(np.array([0, 3]), [(0, 15)], zero_point=20, dtype=np.uint8)
    assert store_4bit_weights(wide_zero_point) == 0
    assert initializers(wide_zero_point)["w"].data_type == TensorProto.UINT8


def test_initializers_other_nodes_read_too_are_copied():
    model = dequantized_graph(np.array([-3, 0, 5]), [(-8, 7), (-100, 100)])  # the second grid is 8-bit
    before = evaluated(model)
    assert store_4bit_weights(model) == 1
    onnx.checker.check_model(model, full_check=True)
    inits = initializers(model)
    assert inits["w"].data_type == TensorProto.INT8 and inits["z"].data_type == TensorProto.INT8
    assert inits["w_int4"].data_type == TensorProto.INT4 and inits["z_int4"].data_type == TensorProto.INT4
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Clip", "DequantizeLinear"]
    assert list(model.graph.node[0].input) == ["w_int4", "s", "z_int4"]
    for got, want in zip(evaluated(model), before, strict=True):
        np.testing.assert_array_equal(got, want)

"""ONNX QCDQ export: graph structure and onnxruntime parity at both optimisation levels."""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from quantframe.export import export_onnx_qcdq
from quantframe.export.onnxruntime import u8s8_saturates
from quantframe.layers import (
    QuantCat,
    QuantConv2d,
    QuantConvTranspose2d,
    QuantEltwiseAdd,
    QuantIdentity,
    QuantReLU,
    QuantUpsample,
    TruncAvgPool2d,
)
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int32Bias,
    SignedBinaryActPerTensorConst,
    Uint8ActPerTensorFloat,
)
from tests.helpers import (
    CNN_CASES,
    calibrate,
    cnn,
    example,
    output_step,
    run_onnxruntime,
    torch_eval,
)


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if name in n.output), None)


def attribute(node: onnx.NodeProto, name: str) -> object:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


@pytest.mark.parametrize(("per_channel", "bits", "int32_bias"), CNN_CASES)
def test_cnn_matches_torch_in_onnxruntime_at_both_levels(
    per_channel, bits, int32_bias, tmp_path, record_property
):
    model = cnn(per_channel, bits, int32_bias)
    x = example()
    path = tmp_path / "cnn.onnx"
    exported = export_onnx_qcdq(model, x, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    expected, step = torch_eval(model, x), output_step(model)
    for level in ("all", "disable"):
        error = np.abs(run_onnxruntime(str(path), x, level) - expected).max()
        record_property(f"max_abs_error_{level}", float(error))
        assert error <= step * 1.0001, f"{level}: {error / step:.3f} output steps"
    # a plain session at the default level too (its float-bias rounding: next test), where its U8S8
    # kernels do not saturate (see quantframe.export.onnxruntime)
    if int32_bias and not u8s8_saturates():
        plain = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
        assert np.abs(plain.run(None, {"input": x.numpy()})[0] - expected).max() <= step * 1.0001


def test_plain_onnxruntime_rounds_float_biases_which_the_helper_prevents():
    """onnxruntime's WeightBiasQuantization puts a float conv bias on the int32 accumulator grid."""
    model = cnn(False, 4, False)
    x = example()
    exported = export_onnx_qcdq(model, x)
    expected, step = torch_eval(model, x), output_step(model)
    plain = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(plain.run(None, {"input": x.numpy()})[0] - expected).max() > step * 1.5
    assert np.abs(run_onnxruntime(exported, x) - expected).max() <= step * 1.0001


@pytest.mark.parametrize(("per_channel", "bits", "int32_bias"), CNN_CASES)
def test_cnn_graph_follows_the_qcdq_rules(per_channel, bits, int32_bias):
    model = cnn(per_channel, bits, int32_bias)
    exported = export_onnx_qcdq(model, example())
    inits = initializers(exported)
    assert exported.opset_import[0].version == 13
    assert not {i.name for i in exported.graph.input} & set(inits)
    conv, linear = model[1], model[5]
    dequantize = [n for n in exported.graph.node if n.op_type == "DequantizeLinear"]
    weights = [n for n in dequantize if "weight_quant" in n.name]
    assert len(weights) == 2
    for node, layer in zip(weights, (conv, linear), strict=True):
        clip = producer(exported, node.input[0])
        # narrow-range weights: Clip to [-(2^(b-1) - 1), 2^(b-1) - 1] in the int8 container
        assert clip is not None and clip.op_type == "Clip"
        ints, lo, hi = (inits[name] for name in clip.input)
        assert ints.dtype == np.int8 and lo.dtype == np.int8 and hi.dtype == np.int8
        assert (int(lo), int(hi)) == (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1)
        np.testing.assert_array_equal(ints, layer.int_weight().numpy())
        scale = inits[node.input[1]]
        np.testing.assert_allclose(scale, layer.quant_weight_scale().detach().reshape(-1).numpy(), rtol=0)
        assert attribute(node, "axis") == (0 if per_channel else None)
    biases = [n for n in dequantize if "bias_quant" in n.name]
    assert len(biases) == (2 if int32_bias else 0)
    for node in biases:
        assert inits[node.input[0]].dtype == np.int32 and inits[node.input[2]].dtype == np.int32
        assert producer(exported, node.input[0]) is None  # no Clip on a 32-bit grid
    relu_q = next(n for n in exported.graph.node if n.op_type == "QuantizeLinear" and "/2/" in n.name)
    assert inits[relu_q.input[2]].dtype == np.uint8
    clips = [n for n in exported.graph.node if n.op_type == "Clip"]
    # 8 bits: only the two narrow weight grids are clipped; 4 bits: the two 4-bit activations too
    assert len(clips) == (2 if bits == 8 else 4)


def test_transposed_conv_per_channel_weights_use_axis_1():
    torch.manual_seed(0)
    model = calibrate(
        nn.Sequential(
            QuantIdentity(return_quant_tensor=True),
            QuantConvTranspose2d(
                4,
                6,
                3,
                stride=2,
                weight_quant=Int8WeightPerChannelFloat,
                bias_quant=Int32Bias,
                output_quant=Int8ActPerTensorFloat,
            ),
        ),
        (2, 4, 5, 5),
    )
    x = example((2, 4, 5, 5))
    exported = export_onnx_qcdq(model, x)
    node = next(
        n for n in exported.graph.node if n.op_type == "DequantizeLinear" and "weight_quant" in n.name
    )
    assert attribute(node, "axis") == 1
    step = float(model[1].output_quant.scale().detach())
    for level in ("all", "disable"):
        assert np.abs(run_onnxruntime(exported, x, level) - torch_eval(model, x)).max() <= step * 1.0001


class Branches(nn.Module):
    """Eltwise add, concatenation and upsampling of quantized tensors."""

    def __init__(self, out_bits: int = 8):
        super().__init__()
        self.inp = QuantIdentity(return_quant_tensor=True)
        self.conv = QuantConv2d(3, 4, 3, padding=1)
        self.add = QuantEltwiseAdd(return_quant_tensor=True)
        self.cat = QuantCat(return_quant_tensor=True)
        self.up = QuantUpsample(scale_factor=2)
        self.out = QuantIdentity(bit_width=out_bits)

    def forward(self, x):
        y = self.conv(self.inp(x))
        z = self.add(y, y * 0.5)
        return self.out(self.up(self.cat([z, y], dim=1)))


def test_eltwise_cat_upsample_match_torch():
    model = calibrate(Branches(), (2, 3, 6, 6))
    x = example((2, 3, 6, 6))
    exported = export_onnx_qcdq(model, x)
    step = float(model.out.act_quant.scale().detach())
    for level in ("all", "disable"):
        assert np.abs(run_onnxruntime(exported, x, level) - torch_eval(model, x)).max() <= step * 1.0001


def test_activation_above_8_bits_needs_opset_21():
    model = calibrate(Branches(out_bits=12), (2, 3, 6, 6))
    x = example((2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"'out.act_quant' has 12 bits.*opset_version=21"):
        export_onnx_qcdq(model, x)
    exported = export_onnx_qcdq(model, x, opset_version=21)
    onnx.checker.check_model(exported, full_check=True)
    assert exported.opset_import[0].version == 21
    out_q = next(n for n in exported.graph.node if n.op_type == "QuantizeLinear" and "/out/" in n.name)
    assert initializers(exported)[out_q.input[2]].dtype == np.int16
    step = float(model.out.act_quant.scale().detach())
    for level in ("all", "disable"):
        assert np.abs(run_onnxruntime(exported, x, level) - torch_eval(model, x)).max() <= step * 1.0001


def test_binary_activation_is_refused_with_a_pointer_to_qonnx():
    model = nn.Sequential(QuantIdentity(act_quant=SignedBinaryActPerTensorConst))
    with pytest.raises(ValueError, match=r"'0.act_quant' is binary.*export_qonnx"):
        export_onnx_qcdq(model.eval(), torch.randn(1, 4))


def conv_bn_relu() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        QuantIdentity(return_quant_tensor=True),
        QuantConv2d(3, 6, 3, bias=False),
        nn.BatchNorm2d(6),
        QuantReLU(),
    )
    with torch.no_grad():
        model[2].weight.uniform_(0.5, 2.0)
        model[2].bias.uniform_(-0.5, 0.5)
    return calibrate(model, (4, 3, 8, 8))


def test_batch_norm_folds_into_the_weight_scale():
    model = conv_bn_relu()
    x = example((3, 3, 8, 8))
    folded = export_onnx_qcdq(model, x)
    kept = export_onnx_qcdq(model, x, fold_batch_norm=False)
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    assert "BatchNormalization" in {n.op_type for n in kept.graph.node}
    onnx.checker.check_model(folded, full_check=True)
    node = next(n for n in folded.graph.node if n.op_type == "DequantizeLinear" and "weight_quant" in n.name)
    ints = initializers(folded)[producer(folded, node.input[0]).input[0]]
    np.testing.assert_array_equal(ints, model[1].int_weight().numpy())  # the integers are untouched
    assert attribute(node, "axis") == 0
    step = float(model[3].act_quant.scale().detach())
    expected = torch_eval(model, x)
    for graph in (folded, kept):
        for level in ("all", "disable"):
            assert np.abs(run_onnxruntime(graph, x, level) - expected).max() <= step * 1.0001


def test_trunc_avg_pool_matches_torch():
    torch.manual_seed(0)
    model = calibrate(
        nn.Sequential(
            QuantIdentity(return_quant_tensor=True),
            QuantReLU(return_quant_tensor=True, act_quant=Uint8ActPerTensorFloat, bit_width=4),
            TruncAvgPool2d(2, bit_width=5),
            nn.Flatten(),
        ),
        (2, 3, 8, 8),
    )
    x = example((2, 3, 8, 8))
    exported = export_onnx_qcdq(model, x)
    expected = torch_eval(model, x)
    for level in ("all", "disable"):
        np.testing.assert_allclose(run_onnxruntime(exported, x, level), expected, rtol=0, atol=1e-6)


def test_dynamic_batch_file_and_file_objects(tmp_path):
    model = cnn(True, 8)
    buffer = io.BytesIO()
    exported = export_onnx_qcdq(model, example((1, 3, 8, 8)), buffer, dynamic_batch=True)
    assert buffer.getvalue() == exported.SerializeToString()
    x = example((7, 3, 8, 8))
    assert np.abs(run_onnxruntime(exported, x) - torch_eval(model, x)).max() <= output_step(model) * 1.0001


def test_no_onnxruntime_warning_about_initializers_in_graph_inputs(tmp_path, capfd):
    path = tmp_path / "cnn.onnx"
    export_onnx_qcdq(cnn(False, 8, True), example(), path)
    capfd.readouterr()
    options = ort.SessionOptions()
    options.log_severity_level = 1  # info and above
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert "graph inputs" not in capfd.readouterr().err


def test_opset_outside_13_to_21_is_refused():
    with pytest.raises(ValueError, match="opset_version=11; allowed: 13..21"):
        export_onnx_qcdq(cnn(False, 8), example(), opset_version=11)


@pytest.mark.slow
def test_resnet18_example_exports_in_both_formats(tmp_path, capfd):
    from examples.resnet18_qat import quant_resnet18
    from quantframe.export import export_qonnx

    torch.manual_seed(0)
    head = QuantIdentity()
    model = calibrate(nn.Sequential(quant_resnet18(), head), (4, 3, 32, 32), steps=1)
    x = example((2, 3, 32, 32))
    path = tmp_path / "resnet.onnx"
    export_onnx_qcdq(model, x, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    capfd.readouterr()
    options = ort.SessionOptions()
    options.log_severity_level = 1
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert "graph inputs" not in capfd.readouterr().err
    expected, step = torch_eval(model, x), float(head.act_quant.scale().detach())
    for level in ("all", "disable"):
        assert np.abs(run_onnxruntime(str(path), x, level) - expected).max() <= step * 1.0001
    qonnx_ops = {n.op_type for n in export_qonnx(model, x).graph.node}  # executed: test_qonnx.py
    assert {"Quant", "Conv", "Add"} <= qonnx_ops and "QuantizeLinear" not in qonnx_ops

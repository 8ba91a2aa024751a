"""The onnxruntime helper: CPU detection, session configuration, and folding of unfused weights."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from quantframe.export import export_onnx_qcdq, onnxruntime_session
from quantframe.export import onnxruntime as helper
from quantframe.layers import QuantConv2d, QuantIdentity, QuantReLU
from quantframe.quantizers import Int32Bias
from tests.helpers import calibrate, cnn, example, output_step, torch_eval


def config(options: ort.SessionOptions, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # not set
        return None


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse4_1 avx2 {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(
    ("extra", "saturates"),
    [("", True), ("avx512_vnni", False), ("avx_vnni", False), ("amx_int8 amx_tile", False)],
)
def test_vnni_detection_from_cpu_flags(tmp_path, monkeypatch, extra, saturates):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    read = helper.cpu_flags
    assert "avx2" in read(path)
    monkeypatch.setattr(helper, "cpu_flags", lambda: read(path))
    monkeypatch.setattr(helper.platform, "machine", lambda: "x86_64")
    helper.u8s8_saturates.cache_clear()
    try:
        assert helper.u8s8_saturates() is saturates
        options = helper.session_options()
        assert (config(options, helper.PRECISION_OPTION) == "1") is saturates
    finally:
        helper.u8s8_saturates.cache_clear()


def test_unreadable_flags_count_as_saturating_and_arm_never_does(tmp_path, monkeypatch):
    assert helper.cpu_flags(tmp_path / "missing") is None
    monkeypatch.setattr(helper, "cpu_flags", lambda: None)
    for machine, saturates in (("x86_64", True), ("aarch64", False)):
        monkeypatch.setattr(helper.platform, "machine", lambda m=machine: m)
        helper.u8s8_saturates.cache_clear()
        assert helper.u8s8_saturates() is saturates
    helper.u8s8_saturates.cache_clear()


def test_session_options_levels_and_forced_precision_mode():
    options = helper.session_options("disable", exact_integer_kernels=True, intra_op_num_threads=1)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert config(options, helper.PRECISION_OPTION) == "1"
    with pytest.raises(ValueError, match="optimization='max'; allowed"):
        helper.session_options("max")


def test_precision_mode_turns_integer_weights_unsigned(tmp_path):
    """The U8U8 option (the documented remedy) turns QLinearConv's int8 weights into uint8."""
    model = calibrate(
        nn.Sequential(
            QuantReLU(return_quant_tensor=True), QuantConv2d(16, 8, 3, bias_quant=Int32Bias), QuantIdentity()
        ),
        (2, 16, 6, 6),
    )
    x = example((2, 16, 6, 6)).abs() * 3
    exported = export_onnx_qcdq(model, x)
    step = float(model[2].act_quant.scale().detach())
    for exact in (False, True):
        saved = tmp_path / f"optimized_{exact}.onnx"
        session = onnxruntime_session(exported, exact_integer_kernels=exact, optimized_model_filepath=saved)
        error = np.abs(session.run(None, {"input": x.numpy()})[0] - torch_eval(model, x)).max()
        if exact or not helper.u8s8_saturates():  # U8S8 on a CPU without VNNI: tens of steps off
            assert error <= step * 1.0001
        graph = onnx.load(str(saved)).graph
        conv = next(n for n in graph.node if n.op_type == "QLinearConv")
        weight = next(t for t in graph.initializer if t.name == conv.input[3])
        assert weight.data_type == (onnx.TensorProto.UINT8 if exact else onnx.TensorProto.INT8)


def test_weights_of_unfused_nodes_are_folded_with_identical_results():
    torch.manual_seed(0)
    model = calibrate(
        nn.Sequential(QuantIdentity(return_quant_tensor=True), QuantConv2d(3, 4, 3), nn.Tanh()), (2, 3, 6, 6)
    )
    exported = export_onnx_qcdq(model, example((2, 3, 6, 6)))
    folded = onnx.ModelProto()
    folded.CopyFrom(exported)
    assert helper.fold_unfused_dequantize(folded) == 1  # the conv's output is not quantized
    assert [n.op_type for n in folded.graph.node].count("DequantizeLinear") == 1  # the input's remains
    x = example((2, 3, 6, 6))
    outputs = [
        onnxruntime_session(exported, fold_weights=fold).run(None, {"input": x.numpy()})[0]
        for fold in (False, True)
    ]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-6)  # summation order only
    graph = export_onnx_qcdq(cnn(True, 8, True), example())
    # the conv (DQ -> Conv -> Relu -> Q) fuses; the Gemm after the max-pool does not: its weight and bias fold
    assert helper.fold_unfused_dequantize(graph) == 2


def test_helper_accepts_paths_bytes_and_models(tmp_path):
    model = cnn(False, 8)
    path = tmp_path / "m.onnx"
    exported = export_onnx_qcdq(model, example(), path)
    x = example()
    for source in (path, str(path), exported, exported.SerializeToString()):
        out = onnxruntime_session(source).run(None, {"input": x.numpy()})[0]
        assert np.abs(out - torch_eval(model, x)).max() <= output_step(model) * 1.0001


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_folded_weights_equal_onnxruntime_dequantize_linear_bit_for_bit(axis):
    rng = np.random.default_rng(0)
    ints = rng.integers(-127, 128, size=(4, 3, 2), dtype=np.int8)
    shape = () if axis is None else (ints.shape[axis],)
    scale = rng.uniform(1e-3, 1e-1, size=shape).astype(np.float32)
    zero_point = rng.integers(-3, 4, size=shape, dtype=np.int8)
    attrs = {} if axis is None else {"axis": axis}
    node = onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
    graph = onnx.helper.make_graph(
        [node],
        "dq",
        [],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(ints.shape))],
        initializer=[
            onnx.numpy_helper.from_array(a, n) for a, n in ((ints, "q"), (scale, "s"), (zero_point, "z"))
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    expected = ort.InferenceSession(model.SerializeToString(), options).run(None, {})[0]
    inits = {t.name: t for t in graph.initializer}
    np.testing.assert_array_equal(helper.dequantized_value(node, ints, inits), expected)


@pytest.mark.parametrize("fold_weights", [False, True])
def test_precision_mode_folds_int8_weights_that_reach_several_nodes(fold_weights):
    """onnxruntime's S8-to-U8 conversion fails on one int8 weight read twice; the session folds it."""
    from quantframe.layers import QuantLSTM

    torch.manual_seed(0)
    off = dict(bias_quant=None, io_quant=None, gate_acc_quant=None, sigmoid_quant=None, tanh_quant=None)
    off["cell_state_quant"] = None
    model = QuantLSTM(4, 5, bidirectional=True, shared_input_hidden_weights=True, **off)
    x = torch.randn(3, 2, 4)
    exported = export_onnx_qcdq(model.eval(), x, opset_version=14)
    copy = onnx.ModelProto()
    copy.CopyFrom(exported)
    assert helper.fold_unfused_dequantize(copy) == 0  # nothing feeds a Conv/Gemm/MatMul
    assert helper.fold_unfused_dequantize(copy, unfused=False, shared=True) == 1  # the shared weights
    assert [n.op_type for n in copy.graph.node].count("DequantizeLinear") == 2  # the hidden weights'
    session = onnxruntime_session(exported, exact_integer_kernels=True, fold_weights=fold_weights)
    with torch.no_grad():
        expected = model(x)[0].numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=0, atol=1e-5)


def test_optimized_op_types_counts_the_kernels_onnxruntime_runs():
    torch.manual_seed(0)
    quantized = nn.Sequential(
        QuantIdentity(return_quant_tensor=True),
        QuantConv2d(3, 4, 3, bias_quant=Int32Bias, return_quant_tensor=False),
        QuantReLU(return_quant_tensor=True),
        QuantConv2d(4, 4, 3, bias_quant=Int32Bias),
        QuantIdentity(),
    )
    x = torch.randn(2, 3, 8, 8)
    calibrate(quantized, tuple(x.shape))
    exported = export_onnx_qcdq(quantized, (x,))
    counts = helper.optimized_op_types(exported)
    assert counts.get("QLinearConv") == 2 and not set(counts) & helper.FLOAT_KERNELS
    float_counts = helper.optimized_op_types(exported, optimization="disable")
    assert float_counts.get("Conv") == 2 and not set(float_counts) & helper.INTEGER_KERNELS

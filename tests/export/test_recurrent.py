"""quantframe.export.recurrent: QuantLSTM / QuantRNN to the standard ONNX LSTM/RNN operators (weight-only,
onnxruntime) and, fully quantized, to the unrolled recurrence (QONNX in the qonnx executor, QCDQ)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from quantframe.export import export_encodings, export_onnx_qcdq, export_qonnx, onnxruntime_session
from quantframe.layers import QuantLSTM, QuantRNN
from quantframe.proxy import QuantProxy
from quantframe.tensor import QuantTensor
from tests.helpers import NONE, calibrate

WEIGHT_ONLY = {k: v for k, v in NONE.items() if k != "weight_quant"}  # every quantizer but the weights
LSTM_CASES = {
    "1-layer": dict(),
    "2-layer-bidirectional": dict(num_layers=2, bidirectional=True),
    "shared-input-hidden": dict(bidirectional=True, shared_input_hidden_weights=True),
    "cifg": dict(coupled_input_forget_gates=True),
    "batch-first-4bit-per-channel": dict(
        num_layers=2, batch_first=True, weight_bit_width=4, weight_scaling_per_output_channel=True
    ),
}
SEQ, BATCH, INPUT, HIDDEN = 3, 2, 4, 5


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def flat(out: object) -> list[torch.Tensor]:
    """Every tensor of a recurrent layer's (nested) outputs, in order."""
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flat(item)]
    return [out.value if isinstance(out, QuantTensor) else out]


def example(model: torch.nn.Module, states: bool) -> tuple:
    x = _randn(BATCH, SEQ, INPUT) if model.batch_first else _randn(SEQ, BATCH, INPUT)
    if not states:
        return (x,)
    shape = (model.num_layers * model.num_directions, BATCH, HIDDEN)
    h0 = _randn(*shape, seed=2) * 0.5
    return (x, (h0, _randn(*shape, seed=3)) if isinstance(model, QuantLSTM) else h0)


def torch_outputs(model: torch.nn.Module, args: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in flat(model.eval()(*args))]


def run_onnxruntime(exported: onnx.ModelProto, args: tuple) -> list[np.ndarray]:
    session = onnxruntime_session(exported)  # default optimisation level ("all")
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, [t.numpy() for t in flat(args)], strict=True)))


def run_qonnx(exported: onnx.ModelProto, x: torch.Tensor) -> list[np.ndarray]:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    wrapper = cleanup_model(ModelWrapper(exported))
    results = execute_onnx(wrapper, {wrapper.graph.input[0].name: x.numpy()})
    return [results[o.name] for o in wrapper.graph.output]


def producer(exported: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in exported.graph.node if name in n.output), None)


def attribute(node: onnx.NodeProto, name: str) -> object:
    found = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name]
    return found[0] if found else None


def dequantized_sources(exported: onnx.ModelProto, name: str) -> list[onnx.TensorProto]:
    """The integer initializers that reach a W/R input through (Concat,) DequantizeLinear (and Clip)."""
    inits = {t.name: t for t in exported.graph.initializer}
    node = producer(exported, name)
    dqs = [producer(exported, i) for i in node.input] if node.op_type == "Concat" else [node]
    sources = []
    for dq in dqs:
        assert dq.op_type == "DequantizeLinear"
        ints = producer(exported, dq.input[0])
        sources.append(inits[ints.input[0] if ints is not None and ints.op_type == "Clip" else dq.input[0]])
    return sources


def snapshot(model: torch.nn.Module, args: tuple) -> tuple[list[np.ndarray], dict]:
    return torch_outputs(model, args), {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, args: tuple, before: tuple) -> None:
    outputs, state = snapshot(model, args)
    assert all(np.array_equal(a, b) for a, b in zip(outputs, before[0], strict=True))
    assert state.keys() == before[1].keys() and all(torch.equal(state[k], before[1][k]) for k in state)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(m.export_handler is None for m in model.modules() if isinstance(m, QuantProxy))


@pytest.mark.parametrize("states", [False, True], ids=["zero-states", "initial-states"])
@pytest.mark.parametrize("case", list(LSTM_CASES))
def test_weight_only_lstm_is_the_onnx_lstm_operator(case, states, record_property):
    torch.manual_seed(0)
    model = QuantLSTM(INPUT, HIDDEN, **WEIGHT_ONLY, **LSTM_CASES[case]).eval()
    args = example(model, states)
    before = snapshot(model, args)
    exported = export_onnx_qcdq(model, args, opset_version=14)
    assert_unchanged(model, args, before)
    onnx.checker.check_model(exported, full_check=True)
    errors = [np.abs(a - b).max() for a, b in zip(run_onnxruntime(exported, args), before[0], strict=True)]
    record_property("max_abs_error", float(max(errors)))
    assert len(errors) == 3 and max(errors) <= 1e-4

    lstms = [n for n in exported.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == model.num_layers
    assert not [n for n in exported.graph.node if n.op_type in ("MatMul", "Gemm", "QuantizeLinear")]
    bits = LSTM_CASES[case].get("weight_bit_width", 8)
    for node in lstms:
        assert attribute(node, "hidden_size") == HIDDEN
        assert attribute(node, "input_forget") == int(model.coupled_input_forget_gates)
        direction = attribute(node, "direction")
        assert (direction or b"forward") == (b"bidirectional" if model.bidirectional else b"forward")
        for weight, features in ((node.input[1], None), (node.input[2], HIDDEN)):
            sources = dequantized_sources(exported, weight)
            assert len(sources) == model.num_directions
            for tensor in sources:
                ints = numpy_helper.to_array(tensor)
                assert ints.dtype == np.int8 and ints.shape[:2] == (1, 4 * HIDDEN)
                assert features is None or ints.shape[2] == features
                assert np.abs(ints).max() <= 2 ** (bits - 1) - 1  # narrow-range signed grid
    if model.shared_input_hidden_weights:  # both directions read one initializer
        names = {t.name for t in dequantized_sources(exported, lstms[0].input[1])}
        assert len(names) == 1


def dequantized_scales(exported: onnx.ModelProto, name: str) -> list[np.ndarray]:
    """The scale of each DequantizeLinear that reaches a W/R input (one per direction), per row."""
    inits = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    node = producer(exported, name)
    dqs = [producer(exported, i) for i in node.input] if node.op_type == "Concat" else [node]
    return [np.broadcast_to(inits[dq.input[1]], (4 * HIDDEN,)).copy() for dq in dqs]


@pytest.mark.parametrize("one_for_all_gates", [False, True], ids=["one-per-gate", "one-for-all-gates"])
def test_weight_only_lstm_w_and_r_share_each_gates_scale(one_for_all_gates):
    torch.manual_seed(0)
    model = QuantLSTM(INPUT, HIDDEN, **WEIGHT_ONLY, shared_intra_layer_weight_quant=one_for_all_gates).eval()
    exported = export_onnx_qcdq(model, example(model, False), opset_version=14)
    lstm = next(n for n in exported.graph.node if n.op_type == "LSTM")
    (w_scale,), (r_scale,) = (
        dequantized_scales(exported, lstm.input[1]),
        dequantized_scales(exported, lstm.input[2]),
    )
    np.testing.assert_array_equal(w_scale, r_scale)
    layer = model.layers[0][0]
    gates = [getattr(layer, f"{g}_gate_params") for g in ("input", "forget", "cell", "output")]
    maxima = [
        max(g.input_weight.weight.abs().max().item(), g.hidden_weight.weight.abs().max().item())
        for g in gates
    ]
    expected = [max(maxima)] * 4 if one_for_all_gates else maxima
    np.testing.assert_allclose(
        sorted(set(w_scale.tolist())), sorted(set(m / 127 for m in expected)), rtol=1e-6
    )
    assert len(set(w_scale.tolist())) == (1 if one_for_all_gates else 4)


def test_cifg_forget_rows_are_zero_so_only_input_forget_couples_the_gates():
    model = QuantLSTM(INPUT, HIDDEN, **WEIGHT_ONLY, coupled_input_forget_gates=True).eval()
    exported = export_onnx_qcdq(model, example(model, False))
    lstm = next(n for n in exported.graph.node if n.op_type == "LSTM")
    (weights,) = dequantized_sources(exported, lstm.input[1])
    rows = numpy_helper.to_array(weights)[0]
    forget = rows[2 * HIDDEN : 3 * HIDDEN]  # ONNX order i, o, f, c
    assert not forget.any() and rows[:HIDDEN].any()
    bias = numpy_helper.to_array(next(t for t in exported.graph.initializer if t.name == lstm.input[3]))
    assert not bias[0, 2 * HIDDEN : 3 * HIDDEN].any() and not bias[0, 4 * HIDDEN :].any()


def test_unbatched_lstm_and_dynamic_batch():
    model = QuantLSTM(INPUT, HIDDEN, **WEIGHT_ONLY, num_layers=2).eval()
    x = _randn(SEQ, INPUT)
    states = (_randn(2, HIDDEN, seed=2), _randn(2, HIDDEN, seed=3))
    exported = export_onnx_qcdq(model, (x, states))
    errors = [
        np.abs(a - b).max()
        for a, b in zip(
            run_onnxruntime(exported, (x, states)), torch_outputs(model, (x, states)), strict=True
        )
    ]
    assert max(errors) <= 1e-4
    model = QuantLSTM(INPUT, HIDDEN, **WEIGHT_ONLY, batch_first=True).eval()  # dynamic_batch: axis 0
    batched = export_onnx_qcdq(model, _randn(BATCH, SEQ, INPUT), dynamic_batch=True)
    x = _randn(7, SEQ, INPUT, seed=4)  # another batch size than the example's
    errors = [
        np.abs(a - b).max()
        for a, b in zip(run_onnxruntime(batched, (x,)), torch_outputs(model, (x,)), strict=True)
    ]
    assert max(errors) <= 1e-4


def test_weight_only_rnn_is_the_onnx_rnn_operator():
    torch.manual_seed(0)
    model = QuantRNN(
        INPUT,
        HIDDEN,
        num_layers=2,
        bidirectional=True,
        nonlinearity="relu",
        bias_quant=None,
        io_quant=None,
        gate_acc_quant=None,
    ).eval()
    args = example(model, True)
    exported = export_onnx_qcdq(model, args, opset_version=14)
    errors = [
        np.abs(a - b).max()
        for a, b in zip(run_onnxruntime(exported, args), torch_outputs(model, args), strict=True)
    ]
    assert max(errors) <= 1e-4
    rnns = [n for n in exported.graph.node if n.op_type == "RNN"]
    assert len(rnns) == 2 and all(attribute(n, "activations") == [b"Relu", b"Relu"] for n in rnns)


def _quantized_lstm(**kwargs: object) -> QuantLSTM:
    torch.manual_seed(0)
    return calibrate(QuantLSTM(INPUT, HIDDEN, **kwargs), (SEQ, BATCH, INPUT))


def test_fully_quantized_lstm_to_qonnx_matches_within_one_step(record_property):
    model = _quantized_lstm()
    x = _randn(SEQ, BATCH, INPUT) * 2
    before = snapshot(model, (x,))
    exported = export_qonnx(model, x)
    assert_unchanged(model, (x,), before)
    output, h_n, c_n = run_qonnx(exported, x)
    io_step = float(model.io_quant.scale())
    cell_step = float(model.layers[0][0].cell.cell_state_quant.scale())
    errors = [np.abs(output - before[0][0]).max(), np.abs(h_n - before[0][1]).max()]
    record_property("max_abs_error_in_io_steps", float(max(errors) / io_step))
    assert max(errors) <= io_step * 1.0001
    assert np.abs(c_n - before[0][2]).max() <= cell_step * 1.0001
    quants = [n for n in exported.graph.node if n.op_type == "Quant"]
    assert all(n.domain == "qonnx.custom_op.general" for n in quants)
    # io: input + one per step; per gate: 2 weights + bias; per step: 4 accumulators, 4 activations,
    # cell state, tanh of the cell state
    assert len(quants) == (1 + SEQ) + 4 * 3 + SEQ * (4 + 4 + 1 + 1)
    assert not [n for n in exported.graph.node if n.op_type == "LSTM"]


def test_fully_quantized_rnn_to_qonnx():
    torch.manual_seed(0)
    model = calibrate(QuantRNN(INPUT, HIDDEN, bidirectional=True), (SEQ, BATCH, INPUT))
    x = _randn(SEQ, BATCH, INPUT) * 2
    expected = torch_outputs(model, (x,))
    output, h_n = run_qonnx(export_qonnx(model, x), x)
    io_step = float(model.io_quant.scale())
    assert np.abs(output - expected[0]).max() <= io_step * 1.0001
    assert np.abs(h_n - expected[1]).max() <= io_step * 1.0001


def test_fully_quantized_lstm_to_qcdq_is_unrolled():
    model = _quantized_lstm(coupled_input_forget_gates=True, batch_first=True)
    x = _randn(BATCH, SEQ, INPUT) * 2
    exported = export_onnx_qcdq(model, x)
    output = run_onnxruntime(exported, (x,))[0]
    assert np.abs(output - torch_outputs(model, (x,))[0]).max() <= float(model.io_quant.scale()) * 1.0001
    assert not [n for n in exported.graph.node if n.op_type == "LSTM"]
    assert [n for n in exported.graph.node if n.op_type == "QuantizeLinear"]


def test_encodings_of_every_quantizer(tmp_path):
    model = _quantized_lstm()
    enabled = {n for n, m in model.named_modules() if isinstance(m, QuantProxy) and m.is_quant_enabled}
    with_input = export_encodings(model, tmp_path / "a.json", _randn(SEQ, BATCH, INPUT))
    without = export_encodings(model, tmp_path / "b.json")
    assert set(with_input.encodings) == enabled == set(without.encodings)
    io = with_input.encodings["layers.0.0.io_quant"]
    assert io.scale == pytest.approx([float(model.io_quant.scale())])

"""quantframe.graph.capture: torch.export and torch.fx graphs as module graphs with the float names."""

import operator

import pytest
import torch
import torch.nn.functional as F

from quantframe.graph import CaptureError, capture
from tests.graph.models import ChannelShuffle, DataDependent, DenseBlock, Functional


@pytest.mark.parametrize("model_type", [Functional, DenseBlock, ChannelShuffle])
@pytest.mark.parametrize("tracer", ["export", "fx"])
def test_captured_graph_computes_the_model_and_calls_its_modules(model_type, tracer):
    torch.manual_seed(0)
    model, x = model_type().eval(), torch.randn(2, 3, 8, 8)
    graph = capture(model, (x,) if tracer == "export" else None, tracer)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=0, atol=0)
    called = {n.target for n in graph.graph.nodes if n.op == "call_module"}
    leaves = {name for name, m in model.named_modules() if name and not list(m.children())}
    assert called == leaves  # every leaf module is one call, under its own name
    params = dict(model.named_parameters())
    for name, value in graph.named_parameters():
        assert value is params[name]


def test_export_maps_functional_aten_ops_to_torch_functions():
    torch.manual_seed(0)
    model, x = Functional().eval(), torch.randn(2, 3, 8, 8)
    graph = capture(model, {"x": x})
    targets = {n.target for n in graph.graph.nodes if n.op == "call_function"}
    assert {operator.add, F.relu, F.max_pool2d, torch.flatten} <= targets
    assert not any(isinstance(t, torch._ops.OpOverload) for t in targets)


@pytest.mark.parametrize("tracer", ["export", "fx"])
def test_capture_error_names_the_module_and_line(tracer):
    model, x = DataDependent(), torch.randn(1, 3, 5, 5)
    with pytest.raises(CaptureError, match=r"at <model> \(DataDependent\.forward, models\.py:\d+\)") as error:
        capture(model, (x,) if tracer == "export" else None, tracer)
    assert error.value.where.startswith("<model>")


def test_a_batch_of_one_example_still_captures_any_batch():
    torch.manual_seed(0)
    model = ChannelShuffle().eval()
    graph = capture(model, (torch.randn(1, 3, 8, 8),))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=0, atol=0)

"""quantframe.graph.rewrite: where the quantizers go on a captured graph."""

import torch
import torch.nn.functional as F
from torch import fx, nn

from quantframe.graph import quantize_model
from quantframe.layers import QuantEltwiseAdd, QuantIdentity
from quantframe.layers.base import plain


class PoolThenConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.max_pool2d(torch.relu(self.conv1(x)), 2))


class TwoReaders(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        return a + self.conv2(F.gelu(a))


def _callers(model: fx.GraphModule, name: str) -> list[fx.Node]:
    return [
        n
        for n in model.graph.nodes
        if any(i.op == "call_module" and i.target == name for i in n.all_input_nodes)
    ]


def test_a_moved_tensor_is_requantized_by_its_source_quantizer():
    model = quantize_model(PoolThenConv(), (torch.randn(2, 3, 8, 8),))
    requantizer = model.get_submodule("conv2_input_quant")
    relu = next(m for name, m in model.named_modules() if name.endswith("relu"))
    assert isinstance(requantizer, QuantIdentity) and requantizer.act_quant is relu.act_quant  # shared
    assert {n.target for n in model.graph.nodes if n.op == "call_module"} >= {"conv1", "conv2"}


def test_a_layer_output_read_twice_gets_one_quantizer_read_by_all():
    model = quantize_model(TwoReaders(), (torch.randn(2, 3, 4, 4),))
    readers = _callers(model, "conv1_output_quant")
    assert len(readers) == 2  # the add and (through plain) the GELU
    assert not model.get_submodule("conv1_output_quant").act_quant.signed  # uint8: onnxruntime converts it
    assert any(n.target is plain for n in readers)
    assert [type(model.get_submodule(n.target)) for n in _callers(model, "conv1")] == [QuantIdentity]
    adds = [m for m in model.modules() if isinstance(m, QuantEltwiseAdd)]
    assert len(adds) == 1


def test_unknown_ops_read_tensors_never_quant_tensors():
    model = quantize_model(TwoReaders(), (torch.randn(2, 3, 4, 4),))
    gelu = next(n for n in model.graph.nodes if n.op == "call_function" and "gelu" in str(n.target))
    assert all(i.target is plain for i in gelu.all_input_nodes)
    assert model.quantization_info["notes"][gelu.name] == "no quantized form in this recipe"
    with torch.no_grad():
        model(torch.randn(3, 3, 4, 4))

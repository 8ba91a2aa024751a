"""Shared models and runners for the tests: tiny, calibrated, deterministic."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear, QuantMaxPool2d, QuantReLU
from quantframe.proxy.act import act_proxy
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    Int32Bias,
)
from quantframe.tensor import QuantTensor


def calibrate(model: nn.Module, shape: tuple[int, ...], steps: int = 3, seed: int = 0) -> nn.Module:
    """Collect activation statistics in training mode on random data, then switch to eval."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(shape, generator=gen) * 2)
    return model.eval()


def cnn(per_channel: bool, bits: int, int32_bias: bool = False, seed: int = 0) -> nn.Module:
    """QuantIdentity -> QuantConv2d -> QuantReLU -> QuantMaxPool2d -> flatten -> QuantLinear(output quant)."""
    torch.manual_seed(seed)
    weight_quant = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
    bias_quant = Int32Bias if int32_bias else None
    model = nn.Sequential(
        QuantIdentity(return_quant_tensor=True, bit_width=bits),
        QuantConv2d(
            3, 8, 3, padding=1, weight_quant=weight_quant, weight_bit_width=bits, bias_quant=bias_quant
        ),
        QuantReLU(return_quant_tensor=True, bit_width=bits),
        QuantMaxPool2d(2),
        nn.Flatten(),
        QuantLinear(
            8 * 4 * 4,
            10,
            weight_quant=weight_quant,
            weight_bit_width=bits,
            bias_quant=bias_quant,
            output_quant=Int8ActPerTensorFloat,
        ),
    )
    return calibrate(model, (4, 3, 8, 8))


CNN_INPUT = (5, 3, 8, 8)
CNN_CASES = [
    pytest.param(per_channel, bits, bias, id=f"{'channel' if per_channel else 'tensor'}-{bits}bit-{bias_id}")
    for per_channel in (False, True)
    for bits in (8, 4)
    for bias, bias_id in ((False, "floatbias"), (True, "int32bias"))
]


def example(shape: tuple[int, ...] = CNN_INPUT, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def output_step(model: nn.Module) -> float:
    """The scale of the last layer's output quantizer."""
    return float(model[-1].output_quant.scale().detach())


def run_onnxruntime(model_or_path: object, x: torch.Tensor, optimization: str = "all") -> np.ndarray:
    from quantframe.export import onnxruntime_session

    model = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else model_or_path
    session = onnxruntime_session(model, optimization=optimization)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def run_qonnx(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    wrapper = cleanup_model(ModelWrapper(model))
    return execute_onnx(wrapper, {wrapper.graph.input[0].name: x.numpy()})[wrapper.graph.output[0].name]


def torch_eval(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model(x)
    return (out.value if isinstance(out, QuantTensor) else out).numpy()


def snapshot(model: nn.Module, x: torch.Tensor) -> tuple:
    """Outputs, state_dict and training flags, to compare before and after an export."""
    was_training = [m.training for m in model.modules()]
    model.eval()
    with torch.no_grad():
        out = model(x)
        out = (out.value if isinstance(out, QuantTensor) else out).clone()
    for module, flag in zip(model.modules(), was_training, strict=True):
        module.training = flag
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out, state, was_training


def assert_unchanged(model: nn.Module, x: torch.Tensor, before: tuple) -> None:
    from quantframe.proxy import QuantProxy

    out, state, flags = snapshot(model, x)
    assert flags == before[2]
    assert torch.equal(out, before[0])
    assert state.keys() == before[1].keys()
    assert all(torch.equal(state[k], before[1][k]) for k in state)
    for module in model.modules():
        if isinstance(module, QuantProxy):
            assert module.export_handler is None
            assert "forward" not in module.__dict__
    assert all("forward" not in m.__dict__ for m in model.modules())


# --- recurrent layers ---

# QuantLSTM with every quantizer off (QuantRNN takes the first four)
NONE = dict(
    weight_quant=None,
    bias_quant=None,
    io_quant=None,
    gate_acc_quant=None,
    sigmoid_quant=None,
    tanh_quant=None,
    cell_state_quant=None,
)


def learned_proxy(quant=Int8ActPerTensorFloat, threshold=2.0, **overrides):
    """A proxy past statistics collection whose learned threshold is `threshold`."""
    proxy = act_proxy(quant, overrides, "test", "act_quant")
    proxy.collect_statistics(torch.tensor([threshold]))
    proxy.finish_collection()
    return proxy

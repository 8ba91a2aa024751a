"""quantframe.graph.quantize: quantize_model on captured graphs (recipes, keep_float, fallback) and
by module swapping (capture="modules")."""

import numpy as np
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from quantframe.calibrate import quantization_disabled
from quantframe.export import export_onnx_qcdq, onnxruntime_session
from quantframe.graph import RECIPES, CaptureError, quantize_model
from quantframe.layers import (
    QuantConv2d,
    QuantConvTranspose2d,
    QuantEltwiseAdd,
    QuantLinear,
    QuantReLU,
    QuantTanh,
)
from quantframe.proxy import QuantProxy
from quantframe.quantizers import Int8WeightPerGroupFloat
from tests.graph.checks import calibrate, output_step, sqnr_db
from tests.graph.models import ChannelShuffle, DataDependent, Functional, reestimated


def float_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, groups=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.ConvTranspose2d(4, 4, 2, stride=2), nn.Tanh()),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 5),
    )


def test_supported_modules_are_swapped_and_weights_kept():
    source = float_model()
    with pytest.warns(UserWarning, match=r"4 \(GELU\)"):
        model = quantize_model(source, weight_bit_width=4, act_bit_width=6, capture="modules")
    assert isinstance(model[0], QuantConv2d) and isinstance(model[6], QuantLinear)
    assert isinstance(model[2], QuantReLU) and isinstance(model[3][0], QuantConvTranspose2d)
    assert isinstance(model[3][1], QuantTanh)
    assert model.unquantized_modules == ["4 (GELU)"]
    assert torch.equal(model[0].weight, source[0].weight) and torch.equal(model[6].bias, source[6].bias)
    assert model[0].quant_weight_bit_width().item() == 4
    assert isinstance(source[0], nn.Conv2d)  # the original is untouched


def test_quantized_copy_stays_close_to_float_at_8_bits():
    source = float_model().eval()
    with pytest.warns(UserWarning):
        model = quantize_model(source, capture="modules").train()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        model(x)  # one statistics step
    model.eval()
    with torch.no_grad():
        error = (model(x) - source(x)).abs().max() / source(x).abs().max()
    assert error < 0.05


# ---------------------------------------------------------------- captured graphs


def _functional(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    return reestimated(Functional(), (8, 3, 8, 8)), torch.randn(2, 3, 8, 8)


def _layers(model: nn.Module, layer_type: type) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, layer_type)}


def test_default_recipe_quantizes_inputs_weights_activations_and_aligns_adds():
    source, x = _functional()
    model = quantize_model(source, (x,))
    assert set(_layers(model, QuantConv2d)) == {"conv1", "conv2"} and set(_layers(model, QuantLinear)) == {
        "fc"
    }
    assert not _layers(model, nn.BatchNorm2d)  # folded into conv1
    assert model.quantization_info["folded"] == {"bn1": "conv1"}
    adds = _layers(model, QuantEltwiseAdd)
    assert len(adds) == 1 and next(iter(adds.values())).input_quant.is_quant_enabled
    assert "input_quant_x" in dict(model.named_modules())
    assert model.get_submodule("conv1").weight_quant.attributes.get("scaling_per_output_channel")
    assert model.state_dict()["conv2.weight"].shape == source.conv2.weight.shape  # the float names


def test_explicit_arguments_override_the_recipe():
    source, x = _functional()
    model = quantize_model(source, (x,), weight_bit_width=4, act_bit_width=6, bias_bit_width=16)
    assert model.get_submodule("conv1").quant_weight_bit_width().item() == 4
    assert int(model.get_submodule("input_quant_x").act_quant.bit_width()) == 6
    assert int(model.get_submodule("fc").bias_quant.bit_width()) == 16
    assert model.get_submodule("fc").weight_quant.quant_class.__name__ == "Int8WeightPerChannelFloat"


@pytest.mark.parametrize("keep", [["fc"], [nn.Linear], "f*"])
def test_keep_float_leaves_exactly_those_float(keep):
    source, x = _functional()
    model = quantize_model(source, (x,), keep_float=keep)
    assert type(model.get_submodule("fc")) is nn.Linear
    assert set(_layers(model, QuantConv2d)) == {"conv1", "conv2"}
    assert model.quantization_info["notes"]["fc"] == "keep_float"
    with torch.no_grad():
        model(x)  # the float layer is handed a tensor, not a QuantTensor


def test_layerwise_quantizes_only_layer_inputs_and_weights():
    source, x = _functional()
    model = quantize_model(source, (x,), recipe="layerwise")
    for layer in (model.get_submodule(n) for n in ("conv1", "conv2", "fc")):
        assert layer.input_quant.is_quant_enabled and layer.weight_quant.is_quant_enabled
        assert not layer.bias_quant.is_quant_enabled
    assert not _layers(model, QuantEltwiseAdd) and not _layers(model, QuantReLU)
    assert _layers(model, nn.BatchNorm2d)  # not folded
    with torch.no_grad():
        torch.testing.assert_close(quantize_model(source, (x,), recipe="layerwise")(x), model(x))


def test_weight_only_quantizes_only_weights():
    source, x = _functional()
    model = quantize_model(source, (x,), recipe="weight_only")
    proxies = [m for m in model.modules() if isinstance(m, QuantProxy) and m.is_quant_enabled]
    assert proxies and all(p.role == "weight" for p in proxies)
    assert len(proxies) == 3


def test_fixed_point_export_has_only_power_of_two_scales():
    source, x = _functional()
    model = quantize_model(source, (x,), recipe="fixed_point")
    calibrate(model, (4, 3, 8, 8))
    exported = export_onnx_qcdq(model, (x,))
    scales = [
        numpy_helper.to_array(init)
        for node in exported.graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear")
        for init in exported.graph.initializer
        if init.name == node.input[1]
    ]
    assert scales
    for scale in scales:
        exponents = np.log2(scale.astype(np.float64))
        assert np.array_equal(exponents, np.round(exponents)), scale
    assert _layers(model, QuantEltwiseAdd)  # residual adds stay aligned


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(torch.relu(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def test_custom_recipe_with_per_group_4_bit_weights():
    torch.manual_seed(0)
    source, x = Wide().eval(), torch.randn(2, 3, 8, 8)
    recipe = RECIPES["onnx"].model_copy(
        update={"weight_quant": Int8WeightPerGroupFloat, "weight_bit_width": 4}
    )
    with pytest.warns(
        UserWarning, match=r"stem: .*group_size = 32 does not divide the weight's 3 input channels"
    ):
        model = quantize_model(source, (x,), recipe=recipe)
    calibrate(model, (4, 3, 8, 8))
    for name in ("conv", "fc"):
        layer = model.get_submodule(name)
        assert (
            layer.weight_quant.quant_class is Int8WeightPerGroupFloat
            and layer.quant_weight_bit_width().item() == 4
        )
    assert type(model.get_submodule("stem")) is nn.Conv2d  # 3 input channels: no group of 32
    assert "group_size" in model.quantization_info["notes"]["stem"]
    assert "biases stay float" in model.quantization_info["notes"]["bias"]
    with torch.no_grad():
        assert sqnr_db(model(x), source(x)) > 10


def test_untraceable_model_falls_back_with_a_warning_naming_where_capture_stopped():
    torch.manual_seed(0)
    source, x = DataDependent(), torch.randn(2, 3, 6, 6)
    with pytest.warns(UserWarning, match=r"DataDependent\.forward, models\.py:\d+.*falling back to swapping"):
        model = quantize_model(source, (x,))
    assert isinstance(model.conv, QuantConv2d) and isinstance(model.fc, QuantLinear)
    assert model.quantization_info["capture"] == "modules"
    with torch.no_grad():
        model(x)
    with pytest.raises(CaptureError, match=r"DataDependent\.forward"):
        quantize_model(source, capture="fx")
    with pytest.raises(CaptureError, match=r"DataDependent\.forward"):
        quantize_model(source, (x,), capture="export")


def test_fx_capture_without_example_inputs():
    source, x = _functional()
    model = quantize_model(source)
    assert model.quantization_info["capture"] == "torch.fx"
    assert set(_layers(model, QuantConv2d)) == {"conv1", "conv2"} and _layers(model, QuantEltwiseAdd)
    with torch.no_grad(), quantization_disabled(model):
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-6)


def test_captured_model_exports_with_a_dynamic_batch():
    torch.manual_seed(0)
    source, x = reestimated(ChannelShuffle(), (4, 3, 8, 8)), torch.randn(2, 3, 8, 8)
    model = quantize_model(source, (x,))  # its forward reads x.shape: a traced size, not a constant
    calibrate(model, (4, 3, 8, 8))
    exported = export_onnx_qcdq(model, (x[:1],), dynamic_batch=True)
    session = onnxruntime_session(exported)
    batch = torch.randn(5, 3, 8, 8)
    ours = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    with torch.no_grad():
        expected = model(batch)
    assert ours.shape == (5, 4)
    assert np.abs(ours - expected.numpy()).max() <= output_step(model) * 1.001 + 1e-6

"""calibration_mode: running-mean statistics, nothing else touched, scales fixed on exit."""

import copy

import pytest
import torch
from torch import nn

from quantframe.calibrate import calibration_mode, compute_encodings, quantization_disabled
from quantframe.layers import QuantConv2d, QuantIdentity, QuantLinear, QuantLSTM, QuantReLU
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int32Bias,
    ShiftedUint8ActPerTensorFloat,
)


def model_and_batches():
    torch.manual_seed(0)
    model = nn.Sequential(QuantIdentity(), QuantConv2d(3, 4, 3), nn.BatchNorm2d(4), QuantReLU())
    model.eval()
    return model, [torch.randn(8, 3, 6, 6) * (i + 1) for i in range(3)]


def test_scale_is_the_running_mean_of_batch_percentiles():
    model, batches = model_and_batches()
    with calibration_mode(model):
        for x in batches:
            model(x)
    n = batches[0].numel()
    k = int(0.01 * 99.999 * n + 0.5)
    expected = sum(x.abs().reshape(-1).kthvalue(k).values for x in batches) / len(batches)
    assert torch.allclose(model[0].act_quant.scale(), expected / 128, rtol=1e-6)
    assert model[0].act_quant.tensor_quant.scaling_impl.learning  # the parameter took over


def test_weights_batch_norm_and_modes_are_untouched():
    model, batches = model_and_batches()
    before = copy.deepcopy(model.state_dict())
    with calibration_mode(model):
        for x in batches:
            out = model(x)
            assert not out.requires_grad
    after = model.state_dict()
    for key in ("1.weight", "1.bias", "2.running_mean", "2.running_var", "2.num_batches_tracked"):
        assert torch.equal(before[key], after[key])
    assert not any(m.training for m in model.modules())


def test_zero_point_is_finalised_after_its_scale():
    torch.manual_seed(1)
    model = QuantIdentity(ShiftedUint8ActPerTensorFloat, return_quant_tensor=True).eval()
    with compute_encodings(model):
        model(torch.randn(64, 16) + 1.0)
    out = model(torch.randn(64, 16) + 1.0)
    assert out.is_valid
    assert 0 < float(out.zero_point.detach()) < 255


def test_calibrating_without_data_or_quantizers_fails_clearly():
    model, _ = model_and_batches()
    with pytest.raises(RuntimeError, match="no batch reached"), calibration_mode(model):
        pass
    with pytest.raises(ValueError, match="nothing to calibrate"), calibration_mode(nn.Linear(2, 2)):
        pass


def test_quantization_disabled_makes_quantized_layers_compute_their_float_function():
    torch.manual_seed(0)
    conv = QuantConv2d(3, 4, 3, weight_bit_width=2, bias_quant=Int32Bias, input_quant=Int8ActPerTensorFloat)
    head = QuantLinear(4 * 6 * 6, 5, weight_quant=Int8WeightPerChannelFloat, weight_bit_width=2)
    model = nn.Sequential(
        QuantIdentity(return_quant_tensor=True), conv, QuantReLU(bit_width=2), nn.Flatten(), head
    )
    model.eval()
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    reference[0].load_state_dict(conv.state_dict(), strict=False)
    reference[3].load_state_dict(model[4].state_dict(), strict=False)
    float_lstm = nn.LSTM(4, 6)
    lstm = QuantLSTM(4, 6, weight_bit_width=2).eval()
    lstm.load_state_dict(float_lstm.state_dict(), strict=False)
    x, seq = torch.randn(2, 3, 8, 8), torch.randn(5, 2, 4)
    with torch.no_grad():
        quantized = model(x)
        with quantization_disabled(model), quantization_disabled(lstm):
            torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(lstm(seq)[0], float_lstm(seq)[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x), quantized)  # restored on exit
        assert (model(x) - reference(x)).abs().max() > 1e-3

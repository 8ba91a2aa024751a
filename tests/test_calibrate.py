"""calibration_mode: running-mean statistics, nothing else touched, scales fixed on exit."""

import copy

import pytest
import torch
from torch import nn

from quantframe.calibrate import calibration_mode, compute_encodings
from quantframe.layers import QuantConv2d, QuantIdentity, QuantReLU
from quantframe.quantizers import ShiftedUint8ActPerTensorFloat


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

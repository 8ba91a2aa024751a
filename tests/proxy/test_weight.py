"""quantframe.proxy.weight: WeightQuantProxy resolution, disabled mode, sharing and the eval cache."""

import pickle

import pytest
import torch
from torch import nn

from quantframe import QuantTensor
from quantframe.enums import FloatToIntImplType
from quantframe.proxy.weight import WeightQuantProxy, weight_proxy
from quantframe.quantizers import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerGroupFloat,
    Int8WeightPerTensorFloat,
)


def _weight(*shape, seed=0):
    return nn.Parameter(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)))


def test_resolved_proxy_exposes_its_quantizer():
    w = _weight(4, 3)
    proxy = WeightQuantProxy(Int8WeightPerTensorFloat, {"bit_width": 6}, "MyLinear", w)
    assert proxy.is_quant_enabled and proxy.signed and proxy.narrow_range
    assert proxy.attributes["bit_width"] == 6 and proxy.attributes["quant_name"] == "Int8WeightPerTensorFloat"
    assert proxy.rounding == FloatToIntImplType.ROUND
    assert proxy.export_handler is None
    assert proxy.bit_width().item() == 6
    assert torch.allclose(proxy.scale(), w.detach().abs().max() / 31)
    assert proxy.zero_point().item() == 0
    assert len(proxy.state_dict()) == 0  # statistics of the weight itself: no state


def test_disabled_proxy_passes_the_weight_through():
    w = _weight(4, 3)
    proxy = WeightQuantProxy(None, {}, "MyLinear", w)
    out = proxy(w)
    assert isinstance(out, QuantTensor) and out.value is w
    assert out.scale is None and out.bit_width is None and not out.is_valid
    assert not proxy.is_quant_enabled
    assert proxy.scale() is None and proxy.zero_point() is None and proxy.bit_width() is None
    with pytest.raises(TypeError, match="MyLinear"):
        WeightQuantProxy(None, {"bit_width": 4}, "MyLinear", w)


def test_wrong_kind_of_quantizer_is_rejected():
    w = _weight(4, 3)
    with pytest.raises(
        TypeError, match="MyLinear: weight_quant=Int8ActPerTensorFloat is an activation quantizer"
    ):
        WeightQuantProxy(Int8ActPerTensorFloat, {}, "MyLinear", w)
    with pytest.raises(TypeError, match="is not a quantizer"):
        WeightQuantProxy(nn.ReLU, {}, "MyLinear", w)


def test_eval_cache_reuses_and_invalidates():
    w = _weight(4, 3)
    proxy = WeightQuantProxy(Int8WeightPerTensorFloat, {}, "test", w).eval()
    with torch.no_grad():
        first = proxy(w)
        assert proxy(w) is first
        w.mul_(2)  # an optimiser-style in-place update
        second = proxy(w)
    assert second is not first
    assert torch.allclose(second.scale, first.scale * 2)
    assert proxy(w) is not second  # grad mode on: no cache
    proxy.train()
    with torch.no_grad():
        assert proxy(w) is not proxy(w)


def test_eval_cache_tells_views_apart():
    w = _weight(4, 3)
    proxy = WeightQuantProxy(Int8WeightPerTensorFloat, {}, "test", w).eval()
    with torch.no_grad():
        for view in (w.t(), w.reshape(3, 4), w.t()):
            assert proxy(view).shape == view.shape


def test_sharing_takes_statistics_from_every_weight():
    w1, w2 = _weight(4, 3, seed=1), _weight(5, 3, seed=2)
    with torch.no_grad():
        w2[0, 0] = 50.0
    proxy = weight_proxy(Int8WeightPerTensorFloat, {}, "First", w1)
    assert weight_proxy(proxy, {}, "Second", w2) is proxy
    assert proxy.tracked == [w1, w2]
    for w in (w1, w2):
        qt = proxy(w)
        assert torch.allclose(qt.scale, torch.tensor(50.0 / 127))
    with pytest.raises(TypeError, match="Third: cannot override"):
        weight_proxy(proxy, {"bit_width": 4}, "Third", w2)


def test_sharing_per_channel_needs_equal_output_channels():
    w1, w2 = _weight(4, 3, seed=1), _weight(4, 6, seed=2)
    proxy = weight_proxy(Int8WeightPerChannelFloat, {}, "First", w1)
    weight_proxy(proxy, {}, "Second", w2)
    expected = torch.cat([w1.detach(), w2.detach()], dim=1).abs().amax(1) / 127
    assert torch.allclose(proxy(w1).scale.flatten(), expected)
    with pytest.raises(ValueError, match="Third.*output channels"):
        weight_proxy(proxy, {}, "Third", _weight(5, 3))


def test_per_group_cannot_be_shared():
    proxy = weight_proxy(Int8WeightPerGroupFloat, {"group_size": 4}, "First", _weight(2, 8))
    with pytest.raises(ValueError, match="Second: a per-group"):
        weight_proxy(proxy, {}, "Second", _weight(2, 8))


def test_pickle_drops_the_cache():
    w = _weight(4, 3)
    proxy = WeightQuantProxy(Int8WeightPerTensorFloat, {}, "test", w).eval()
    with torch.no_grad():
        proxy(w)
    clone = pickle.loads(pickle.dumps(proxy))
    assert clone._cache == {}
    assert torch.equal(clone(clone.tracked[0]).value, proxy(w).value)

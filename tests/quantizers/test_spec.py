"""quantframe.quantizers.spec: quantizers as JSON data, and back."""

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from quantframe.core.scaling import StatsScaling
from quantframe.proxy.act import ActQuantProxy
from quantframe.proxy.bias import BiasQuantProxy
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.quantizers import (
    ACT_QUANTIZERS,
    BIAS_QUANTIZERS,
    WEIGHT_QUANTIZERS,
    Int8ActPerTensorFloat,
    Int8ActPerTensorFloatMinMaxInit,
    Int8WeightPerTensorFloat,
    QuantizerSpec,
    from_spec,
    to_spec,
)


class Int4Act(Int8ActPerTensorFloat):
    bit_width = 4


class HalvedScaling(StatsScaling):
    """A user component, importable by path, so it can live in a spec."""

    def forward(self, x, divisor):
        return super().forward(x, divisor) / 2


class Int8WeightHalved(Int8WeightPerTensorFloat):
    scaling_impl = HalvedScaling


ALL = WEIGHT_QUANTIZERS + ACT_QUANTIZERS + BIAS_QUANTIZERS + (Int4Act, Int8WeightHalved)


def _outputs(quant):
    """Quantize fixed inputs with `quant` (a few training steps for activations, then eval)."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(8, 64, generator=generator)
    if quant.quant_role == "weight":
        proxy = WeightQuantProxy(quant, {}, "test", nn.Parameter(w))
        results = [proxy(proxy.tracked[0])]
    elif quant.quant_role == "act":
        needs_range = (
            quant.__name__ == Int8ActPerTensorFloatMinMaxInit.__name__
        )  # a rebuilt class is no subclass
        overrides = {"min_val": -2.0, "max_val": 2.0} if needs_range else {}
        if "collect_stats_steps" in dir(quant):
            overrides["collect_stats_steps"] = 2
        proxy = ActQuantProxy(quant, overrides, "test")
        results = [proxy(w * (i + 1)) for i in range(4)]
        proxy.eval()
        results.append(proxy(w * 3))
    else:
        proxy = BiasQuantProxy(quant, {}, "test")
        results = [proxy(w[0], torch.tensor(0.1), torch.tensor(0.01))]
    return proxy, results


@pytest.mark.parametrize("quant", ALL, ids=lambda q: q.__name__)
def test_json_round_trip_gives_an_equivalent_quantizer(quant):
    text = to_spec(quant).model_dump_json()
    json.loads(text)  # plain JSON
    rebuilt = from_spec(text)
    assert rebuilt.__name__ == quant.__name__
    proxy_a, out_a = _outputs(quant)
    proxy_b, out_b = _outputs(rebuilt)
    assert list(proxy_a.state_dict()) == list(proxy_b.state_dict())
    for a, b in zip(out_a, out_b, strict=True):
        assert torch.equal(a.value, b.value) and torch.equal(a.scale, b.scale)
        assert torch.equal(a.zero_point, b.zero_point) and torch.equal(a.bit_width, b.bit_width)


def test_spec_content():
    spec = to_spec(Int4Act)
    assert spec.version == 1 and spec.name == "Int4Act"
    assert spec.attributes["bit_width"] == 4
    assert spec.attributes["scaling_impl_type"] == "PARAMETER_FROM_STATS"
    assert spec.attributes["quant_role"] == "act"
    assert to_spec(Int8WeightHalved).components["scaling_impl"].endswith("test_spec:HalvedScaling")
    assert from_spec(spec.model_dump()).__name__ == "Int4Act"
    assert from_spec(spec).__name__ == "Int4Act"


def test_bad_specs_are_rejected():
    data = to_spec(Int8WeightPerTensorFloat).model_dump()
    with pytest.raises(ValidationError):
        from_spec({**data, "unknown_field": 1})
    with pytest.raises(ValidationError):
        from_spec({**data, "version": 2})
    with pytest.raises(ValueError, match="bit_width"):
        from_spec({**data, "attributes": {**data["attributes"], "bit_width": 0}})
    with pytest.raises(ValueError, match="Int8WeightPerTensorFloat.restrict_scaling_type"):
        from_spec({**data, "attributes": {**data["attributes"], "restrict_scaling_type": "POWER_OF_3"}})


def test_local_components_cannot_be_serialised():
    class Local(StatsScaling):
        pass

    with pytest.raises(ValueError, match="module level"):
        to_spec(Int8WeightPerTensorFloat.let(scaling_impl=Local))


def test_spec_model_forbids_extra_fields():
    with pytest.raises(ValidationError):
        QuantizerSpec(name="Q", attributes={}, extra=1)

"""quantframe.graph.report: every quantized op with its bit widths, every float op with its reason."""

import pytest
import torch

from quantframe.graph import QuantizationReport, quantize_model, report
from tests.graph.models import DataDependent, Functional

transformers = pytest.importorskip("transformers")


def resnet18_shaped() -> torch.nn.Module:
    """Hugging Face's ResNet with ResNet-18's block structure (basic blocks, 2-2-2-2), narrow."""
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[2, 2, 2, 2], layer_type="basic", num_labels=10
    )
    torch.manual_seed(0)
    return transformers.ResNetForImageClassification(config).eval()


def test_resnet18_report_every_conv_and_the_classifier_quantized_adds_aligned_input_quantized():
    source = resnet18_shaped()
    convs = [n for n, m in source.named_modules() if isinstance(m, torch.nn.Conv2d)]
    model = quantize_model(source, (torch.randn(1, 3, 32, 32),))
    summary = report(model)
    assert isinstance(summary, QuantizationReport) and summary.capture == "torch.export"
    by_name = {entry.name: entry for entry in summary.quantized}
    for name in [*convs, "classifier.1"]:
        entry = by_name[name]
        assert entry.quantizers["weight"].bit_width == 8 and entry.quantizers["bias"].bit_width == 32
    adds = [e for e in summary.quantized if e.op == "add"]
    assert len(adds) == 8 and all(e.aligned and e.quantizers["input"].bit_width == 8 for e in adds)
    inputs = [e for e in summary.quantized if e.op == "input"]
    assert len(inputs) == 1 and inputs[0].quantizers["act"].signed
    assert [e.name for e in summary.float_ops] == ["resnet.pooler"]
    assert summary.float_ops[0].reason
    assert len(summary.folded_batch_norms) == len(convs)
    table = str(summary)
    assert "resnet.encoder.stages.0.layers.0.add" in table and "float" in table and "(aligned)" in table


def test_report_of_a_model_quantized_by_module_swapping():
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        model = quantize_model(DataDependent(), (torch.randn(1, 3, 5, 5),))
    summary = report(model)
    assert summary.capture == "modules"
    assert {e.name for e in summary.quantized} == {"conv", "fc"}


def test_report_bit_widths_follow_overrides_and_needs_a_quantized_model():
    model = quantize_model(Functional(), (torch.randn(1, 3, 8, 8),), weight_bit_width=4, act_bit_width=6)
    summary = report(model)
    assert summary.op("conv1").quantizers["weight"].bit_width == 4
    assert summary.op("input_quant_x").quantizers["act"].bit_width == 6
    with pytest.raises(KeyError, match="no op named 'nope'"):
        summary.op("nope")
    with pytest.raises(ValueError, match="not made by quantframe.graph.quantize_model"):
        report(Functional())

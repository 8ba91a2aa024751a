"""quantize_model on architectures nobody here wrote: Hugging Face vision models built from small
configs (no weights downloaded) and small models for the patterns they lack. Each must keep its float
function (quantization disabled), export to a QCDQ graph that onnxruntime runs with an integer kernel
for every convolution and matmul, match torch eval within one output step, and have no float add or
cat between quantized tensors (`tests/graph/checks.py`)."""

import io
import warnings

import pytest
import torch

from quantframe.export import export_onnx_qcdq
from quantframe.graph import quantize_model
from tests.graph.checks import calibrate, check_whole_model, first_tensor, sqnr_db
from tests.graph.models import ChannelShuffle, DenseBlock, Functional, reestimated

transformers = pytest.importorskip("transformers")

SIZE = 32


def _hf(model_name: str, config_name: str, reinit: bool = False, **config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**config))
    return reestimated(model, (4, 3, SIZE, SIZE), reinit=reinit)


ZOO = {
    "resnet18": lambda: _hf(
        "ResNetForImageClassification", "ResNetConfig",
        embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[2, 2, 2, 2], layer_type="basic",
        num_labels=10,
    ),
    "resnet50": lambda: _hf(
        "ResNetForImageClassification", "ResNetConfig",
        embedding_size=8, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], layer_type="bottleneck",
        num_labels=10,
    ),
    "mobilenet_v1": lambda: _hf(
        "MobileNetV1ForImageClassification", "MobileNetV1Config",
        depth_multiplier=0.25, image_size=SIZE, num_labels=10,
    ),
    "mobilenet_v2": lambda: _hf(
        "MobileNetV2ForImageClassification", "MobileNetV2Config",
        depth_multiplier=0.25, image_size=SIZE, num_labels=10,
    ),
    "efficientnet": lambda: _hf(
        "EfficientNetForImageClassification", "EfficientNetConfig", reinit=True,
        image_size=SIZE, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=10,
    ),
    "regnet": lambda: _hf(
        "RegNetForImageClassification", "RegNetConfig",
        embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, layer_type="y", num_labels=10,
    ),
    "convnext": lambda: _hf(
        "ConvNextForImageClassification", "ConvNextConfig",
        hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=10,
    ),
    "densenet_cat": lambda: reestimated(DenseBlock(), (4, 3, SIZE, SIZE)),
    "channel_shuffle": lambda: reestimated(ChannelShuffle(), (4, 3, SIZE, SIZE)),
    "functional": lambda: reestimated(Functional(), (4, 3, 8, 8)),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_quantizes_to_an_integer_graph(name, record_property):
    model = ZOO[name]()
    size = 8 if name == "functional" else SIZE
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    quantized, exported, kernels = check_whole_model(model, example, (4, 3, size, size))
    with torch.no_grad():
        sqnr = sqnr_db(first_tensor(quantized(example)), first_tensor(model(example)))
    record_property("sqnr_db", sqnr)
    record_property("kernels", kernels)
    # Random-init deep networks amplify any perturbation layer by layer (8-bit weights alone keep each
    # layer at ~45 dB but MobileNetV1's output at ~10 dB here), so the output SQNR is only recorded;
    # benchmarks/zoo.py quotes it at full size.
    assert sqnr > 0


@pytest.mark.slow
def test_whole_model_file_shrinks_with_the_bit_width():
    """8-bit weights: <= 0.3x the float ONNX; 4-bit weights at opset 21 (int4): <= 0.6x the 8-bit file."""
    config = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[2, 2, 2, 2], layer_type="basic"
    )
    torch.manual_seed(0)
    model = reestimated(transformers.ResNetForImageClassification(config), (4, 3, SIZE, SIZE))
    x = torch.randn(1, 3, SIZE, SIZE)
    sizes = {}
    for bits in (8, 4):
        quantized = quantize_model(model, (x,), weight_bit_width=bits)
        calibrate(quantized, (4, 3, SIZE, SIZE))
        sizes[bits] = export_onnx_qcdq(quantized, (x,), opset_version=21).ByteSize()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False)
    assert sizes[8] <= 0.3 * len(buffer.getvalue()), (sizes, len(buffer.getvalue()))
    assert sizes[4] <= 0.6 * sizes[8], sizes

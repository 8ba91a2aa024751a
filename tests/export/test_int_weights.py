"""Integer weight dumps: two's-complement hex files and npz arrays reconstruct int_weight() exactly."""

import json
import math

import numpy as np
import pytest
import torch

from quantframe.export import export_int_weights
from quantframe.layers import QuantLinear
from quantframe.quantizers import Int8WeightPerTensorFixedPoint, SignedBinaryWeightPerTensorConst
from tests.helpers import cnn


def read_hex(path, bits: int, signed: bool) -> np.ndarray:
    """An independent reader: one two's-complement number per line."""
    values = np.array([int(line, 16) for line in path.read_text().split()], dtype=np.int64)
    if signed:
        values = np.where(values >= 2 ** (bits - 1), values - 2**bits, values)
    return values


def test_negative_values_are_twos_complement(tmp_path):
    layer = QuantLinear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.27, -0.02, 0.05, 0.0]]))
    manifest = export_int_weights(layer, tmp_path)
    assert layer.int_weight().tolist() == [[127, -2, 5, 0]]
    assert (tmp_path / "weight.hex").read_text().split() == ["7F", "FE", "05", "00"]
    assert manifest["weight"]["bit_width"] == 8 and manifest["weight"]["shape"] == [1, 4]


@pytest.mark.parametrize("bits", [8, 4])
def test_hex_dump_reconstructs_every_layer(tmp_path, bits):
    model = cnn(True, bits)
    manifest = export_int_weights(model, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    for name, layer in (("1.weight", model[1]), ("5.weight", model[5])):
        entry = manifest[name]
        lines = (tmp_path / entry["file"]).read_text().split()
        assert {len(line) for line in lines} == {math.ceil(bits / 4)}
        ints = read_hex(tmp_path / entry["file"], entry["bit_width"], entry["signed"]).reshape(entry["shape"])
        np.testing.assert_array_equal(ints, layer.int_weight().numpy())
        assert entry["axis"] == 0 and entry["scale"] == pytest.approx(
            layer.quant_weight_scale().detach().reshape(-1).tolist(), rel=1e-7
        )


def test_npz_dump_and_fixed_point_position(tmp_path):
    torch.manual_seed(0)
    layer = QuantLinear(6, 3, weight_quant=Int8WeightPerTensorFixedPoint)
    manifest = export_int_weights(layer, tmp_path / "weights.npz", fmt="npz")
    data = np.load(tmp_path / "weights.npz")
    assert data["weight"].dtype == np.int8
    np.testing.assert_array_equal(data["weight"], layer.int_weight().numpy())
    assert json.loads(str(data["manifest"])) == manifest
    fractional = manifest["weight"]["fractional_bits"]
    assert 2.0**-fractional == pytest.approx(float(layer.quant_weight_scale()), rel=0)
    assert (
        export_int_weights(cnn(False, 8), tmp_path / "float.npz", fmt="npz")["1.weight"]["fractional_bits"]
        is None
    )


def test_binary_weights_are_one_bit(tmp_path):
    layer = QuantLinear(3, 2, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2, 0.0], [-1.0, 2.0, -0.1]]))
    export_int_weights(layer, tmp_path)
    assert (tmp_path / "weight.hex").read_text().split() == ["1", "0", "1", "0", "1", "0"]


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"fmt='bin'; allowed: \['hex', 'npz'\]"):
        export_int_weights(cnn(False, 8), tmp_path, fmt="bin")

"""Encodings JSON: the schema, the round trip, and restoring activation encodings into a model."""

import json

import pydantic
import pytest
import torch

from quantframe.export import Encodings, export_encodings, load_encodings
from tests.helpers import calibrate, cnn, example, torch_eval


def test_round_trip_and_contents(tmp_path):
    model = cnn(True, 4, True)
    path = tmp_path / "enc.json"
    written = export_encodings(model, path, args=example())
    loaded = load_encodings(path)
    assert loaded == written
    assert Encodings.model_validate_json(loaded.model_dump_json()) == loaded
    entries = loaded.encodings
    assert set(entries) == {
        "0.act_quant",
        "1.weight_quant",
        "1.bias_quant",
        "2.act_quant",
        "5.weight_quant",
        "5.bias_quant",
        "5.output_quant",
    }
    weight = entries["1.weight_quant"]
    assert (weight.role, weight.bit_width, weight.signed, weight.narrow_range, weight.axis) == (
        "weight",
        4,
        True,
        True,
        0,
    )
    assert weight.scale == pytest.approx(
        model[1].quant_weight_scale().detach().reshape(-1).tolist(), rel=1e-7
    )
    assert weight.scale_shape == [8, 1, 1, 1]
    relu = entries["2.act_quant"]
    assert (relu.signed, relu.axis, relu.zero_point, relu.offset) == (False, None, [0.0], [-0.0])
    assert relu.scale == pytest.approx([float(model[2].act_quant.scale())])
    bias = entries["1.bias_quant"]
    expected = model[0].act_quant.scale().detach() * model[1].quant_weight_scale().detach().reshape(-1)
    assert bias.bit_width == 32 and bias.scale == pytest.approx(expected.tolist(), rel=1e-6)


def test_without_inputs_an_accumulator_bias_scale_is_unknown(tmp_path):
    encodings = export_encodings(cnn(False, 8, True), tmp_path / "enc.json")
    assert encodings.encodings["1.bias_quant"].scale is None  # its scale comes with the input
    assert encodings.encodings["1.weight_quant"].scale is not None


def test_loading_restores_activation_scales_into_a_fresh_model(tmp_path):
    calibrated = cnn(False, 8, True)
    path = tmp_path / "enc.json"
    export_encodings(calibrated, path)
    fresh = calibrate(cnn(False, 8, True), (4, 3, 8, 8), seed=7)  # same weights, other statistics
    x = example()
    assert not torch.equal(
        torch.as_tensor(torch_eval(fresh.eval(), x)), torch.as_tensor(torch_eval(calibrated, x))
    )
    load_encodings(path, fresh)
    torch.testing.assert_close(
        torch.as_tensor(torch_eval(fresh.eval(), x)),
        torch.as_tensor(torch_eval(calibrated, x)),
        rtol=0,
        atol=1e-6,
    )


def test_invalid_files_and_mismatches_are_refused(tmp_path):
    model = cnn(False, 8)
    path = tmp_path / "enc.json"
    export_encodings(model, path)
    data = json.loads(path.read_text())
    data["encodings"]["0.act_quant"]["bit_width"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(pydantic.ValidationError):
        load_encodings(tmp_path / "bad.json")
    data["encodings"]["0.act_quant"]["bit_width"] = 6
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"'0.act_quant' is 6-bit signed=True in the file but 8-bit"):
        load_encodings(tmp_path / "other.json", model)

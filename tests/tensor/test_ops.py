"""quantframe.tensor.ops and torch_function: rules return fields without the class; one dropout rule."""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import quantframe.tensor
from quantframe.layers import QuantDropout
from quantframe.tensor import QuantTensor, ops


def _qt(bit_width=8.0, signed=True, training=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ints = torch.randint(-8, 8, (4, 6), generator=gen).float()
    if bit_width == 1:
        ints = torch.where(ints >= 0, 1.0, -1.0)
    scale = torch.tensor(0.25)
    return QuantTensor(ints * scale, scale, torch.zeros(()), torch.tensor(bit_width), signed, training)


@pytest.mark.parametrize("name", ["ops.py", "shape.py", "metadata.py", "torch_function.py"])
def test_rule_modules_never_import_the_class(name):
    tree = ast.parse((Path(quantframe.tensor.__file__).parent / name).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "QuantTensor" not in imported and "quantframe.tensor.quant_tensor" not in modules


def test_rules_return_fields():
    a, b = _qt(seed=1), _qt(seed=2)
    fields = ops.add(a, b)
    assert isinstance(fields, tuple) and len(fields) == 6
    assert torch.equal(fields[0], a.value + b.value) and fields[3].item() == 9
    assert ops.add(a, QuantTensor(b.value)) is None
    assert ops.neg(_qt(signed=False))[3].item() == 9


@pytest.mark.parametrize("bit_width", [8.0, 1.0])
def test_dropout_layer_and_function_follow_one_rule(bit_width):
    x = _qt(bit_width)
    functional = F.dropout(x, 0.3, training=False)
    layer = QuantDropout(0.3).eval()(x)
    for got in (functional, layer):
        assert isinstance(got, QuantTensor) and got.is_valid
        assert torch.equal(got.value, x.value) and torch.equal(got.scale, x.scale)
        assert torch.equal(got.bit_width, x.bit_width)
    torch.manual_seed(0)
    trained = QuantDropout(0.3)(x)
    torch.manual_seed(0)
    value = F.dropout(x.value, 0.3, True)
    expected = ops.dropout(x, value, 0.3, True)
    assert torch.equal(trained.value, expected[0]) and torch.equal(trained.scale, expected[1])
    assert torch.equal(trained.bit_width, expected[3]) and trained.is_valid

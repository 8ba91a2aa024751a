"""quantframe.inject: declarative quantizer classes resolved with `dependencies`, and its errors."""

import copy
import pathlib
import pickle

import pytest
import torch

import quantframe
from quantframe.inject import (
    QuantInjector,
    QuantizerResolutionError,
    attribute_providers,
    build,
    evaluate_solvers,
    portable_class,
    quantizer_attributes,
    solver,
    value,
)
from quantframe.proxy.weight import WeightQuantProxy
from quantframe.quantizers import Int8WeightPerTensorFloat, solvers
from quantframe.quantizers.base import MaxStatsScaling, NarrowIntQuant, QuantBase, WeightQuantSolver


class Adder:
    """A component built by constructor injection: its arguments are attributes, by name."""

    def __init__(self, a, b, offset=0):
        self.total = a + b + offset


class Base(QuantInjector):
    a = 1
    b = 2
    target = Adder


class Child(Base):
    b = 10

    @value
    def offset(a, b):  # noqa: N805 - a value's arguments are attribute names
        return a * b


def test_attributes_merge_along_the_mro_and_subclasses_win():
    attrs = quantizer_attributes(Child)
    assert attrs["a"] == 1 and attrs["b"] == 10 and attrs["target"] is Adder
    assert isinstance(attrs["offset"], value)
    assert quantizer_attributes(Child) is attrs  # cached per class
    assert "let" not in attrs


def test_build_resolves_values_and_components():
    assert build(Base, quantizer_attributes(Base), "target").total == 3
    assert build(Child, quantizer_attributes(Child), "target").total == 1 + 10 + 10


def test_let_makes_a_subclass_with_overrides():
    derived = Child.let(a=5)
    assert issubclass(derived, Child) and derived.__name__ == "Child"
    assert build(derived, quantizer_attributes(derived), "target").total == 5 + 10 + 50
    assert quantizer_attributes(Child)["a"] == 1


def test_solvers_pick_components_and_missing_inputs_stay_lazy():
    class WithSolver(QuantInjector):
        kind = "adder"

        @solver
        def target(kind):  # noqa: N805
            return {"adder": Adder}[kind]

        @solver
        def unused(not_there):  # noqa: N805
            return Adder

    attrs = evaluate_solvers("WithSolver", quantizer_attributes(WithSolver) | {"a": 1, "b": 1})
    assert attrs["target"] is Adder
    assert build(WithSolver, attrs, "target").total == 2  # `unused` is never needed, never an error


def test_missing_attribute_names_quantizer_attribute_and_component():
    class Missing(QuantInjector):
        a = 1
        target = Adder

    with pytest.raises(QuantizerResolutionError, match=r"Missing: cannot resolve attribute 'b'") as info:
        build(Missing, quantizer_attributes(Missing), "target")
    assert isinstance(info.value, ValueError)


class NoBitWidth(NarrowIntQuant, MaxStatsScaling, WeightQuantSolver):
    """A quantizer assembled without a granularity mixin: nobody provides bit_width."""


def test_quantizer_missing_bit_width_fails_at_construction_naming_a_mixin():
    weight = torch.nn.Parameter(torch.randn(3, 4))
    with pytest.raises(QuantizerResolutionError) as info:
        WeightQuantProxy(NoBitWidth, {}, "MyLayer", weight)
    message = str(info.value)
    assert "MyLayer" in message and "NoBitWidth" in message and "'bit_width'" in message
    assert "PerTensorFloatScaling8bit" in message  # a mixin that provides it


def test_missing_solver_input_is_reported_when_needed():
    class NoScalingSource(WeightQuantSolver):
        bit_width = 8
        signed = True
        narrow_range = True

    with pytest.raises(QuantizerResolutionError, match="scaling_impl_type") as info:
        WeightQuantProxy(NoScalingSource, {}, "MyLayer", torch.nn.Parameter(torch.randn(3, 4)))
    assert "MaxStatsScaling" in str(info.value)


def test_attribute_providers_list_mixins_first_and_skip_runtime_classes():
    Int8WeightPerTensorFloat.let(bit_width=3)  # a run-time class that also defines bit_width
    providers = attribute_providers("bit_width")
    assert providers[0] == "PerTensorFloatScaling8bit"
    assert "Int4WeightPerTensorFloat" in providers
    assert len(providers) == len(set(providers))
    assert "Int8WeightPerTensorFloat" not in providers


def test_markers_pickle_by_reference_and_copy():
    marker = solvers.stats_keep_dims
    assert pickle.loads(pickle.dumps(marker)) is marker
    assert pickle.loads(pickle.dumps(QuantBase.tensor_quant)) is QuantBase.tensor_quant
    assert pickle.loads(pickle.dumps(Child.offset)) is Child.offset
    inline = value(len)  # not importable under len's name: rebuilt from its function
    clone = pickle.loads(pickle.dumps(inline))
    assert isinstance(clone, value) and clone.fn is len
    assert copy.deepcopy(marker).fn is marker.fn


def test_only_the_adapter_imports_dependencies_and_only_its_public_api():
    root = pathlib.Path(quantframe.__file__).parent
    importers = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "_dependencies" not in text, path
        if "import dependencies" in text or "from dependencies" in text:
            importers.append(path.relative_to(root).as_posix())
    assert importers == ["inject.py"]


def test_portable_class_rebuilds_run_time_classes():
    made = Child.let(a=7).let(b=3)
    assert portable_class(Child) is Child and portable_class(None) is None
    clone = pickle.loads(pickle.dumps(portable_class(made)))
    assert clone is not made and clone.__name__ == "Child" and issubclass(clone, Child)
    assert build(clone, quantizer_attributes(clone), "target").total == 7 + 3 + 21

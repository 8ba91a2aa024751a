"""4-bit weights in QCDQ files at opset >= 21: the int8/uint8 initializers of grids of <= 4 bits are
rewritten as ONNX INT4/UINT4 tensors (two values per byte), so that a file shrinks with the bit width.

DequantizeLinear reads int4 and uint4 from opset 21. torch's TorchScript exporter traces at opset 20
at most and has no 4-bit dtype, so the QCDQ format writes its integers in int8/uint8 containers while
tracing and `store_4bit_weights` retypes them on the finished ModelProto:

    integers int8 -> Clip(lo, hi) -> DequantizeLinear(scale, zero point int8)
    becomes
    integers int4 ------------------> DequantizeLinear(scale, zero point int4)

Rule. A DequantizeLinear is rewritten when it reads constant integers through a Clip of constant
bounds [lo, hi] (QCDQ clips exactly the grids narrower than their container, so every grid of <= 4 bits
has one, and its bounds are the grid), and [lo, hi] lies within int4's [-8, 7] for an int8 container or
uint4's [0, 15] for a uint8 one. The Clip is dropped, not retyped: ONNX's Clip takes no 4-bit type
(neither does onnxruntime's), and on constants it has nothing to do, because the exporter computed the
integers on the grid. The pass checks that: a node whose integers leave [lo, hi], or whose zero point
leaves the 4-bit range, stays as it was. So a narrow 4-bit weight ([-7, 7]) is stored as int4 without a
Clip, like a full-range one ([-8, 7]). Activations are computed, not constants, so they keep their
containers; a constant bias of <= 4 bits would be retyped like a weight.

Names. An initializer read only by rewritten nodes is retyped in place and keeps its name (a weight
stays `<proxy>.int_weight`); one that other nodes read too (a zero point shared with another node) is
copied as `<name>_int4` / `<name>_uint4`, and the original stays for its other readers.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

FOUR_BIT_RANGES: dict[int, tuple[int, int]] = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}
_FOUR_BIT_OF = {TensorProto.INT8: TensorProto.INT4, TensorProto.UINT8: TensorProto.UINT4}
_SUFFIX = {TensorProto.INT4: "int4", TensorProto.UINT4: "uint4"}


@dataclass(frozen=True, eq=False)
class Rewrite:
    """One DequantizeLinear to retype: its Clip, the names of its integers and zero point, the 4-bit type."""

    dequantize: onnx.NodeProto
    clip: onnx.NodeProto
    ints: str
    zero_point: str
    data_type: int


def store_4bit_weights(model: onnx.ModelProto) -> int:
    """Retype the constant integers of grids of <= 4 bits as INT4/UINT4 and drop their Clips (rules in
    the module docstring); returns how many DequantizeLinear nodes now read 4-bit integers.

    Changes `model` in place. Only for opset >= 21, where DequantizeLinear accepts 4-bit types.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers = read_counts(graph)
    producers = {name: node for node in graph.node for name in node.output}
    rewrites = [r for node in graph.node if (r := rewrite_of(node, inits, producers, readers)) is not None]
    if not rewrites:
        return 0
    names = retyped_names(rewrites, readers)
    for name, new_name in names.items():
        tensor = four_bit_tensor(inits[name], new_name)
        if new_name == name:
            inits[name].CopyFrom(tensor)
        else:
            graph.initializer.append(tensor)
    for r in rewrites:
        r.dequantize.input[0] = names[r.ints]
        r.dequantize.input[2] = names[r.zero_point]
    _remove(graph, {r.clip.output[0] for r in rewrites}, set(names))
    return len(rewrites)


def read_counts(graph: onnx.GraphProto) -> Counter[str]:
    """How many times each name is read by a node of `graph` or is a graph output."""
    counts: Counter[str] = Counter(name for node in graph.node for name in node.input if name)
    counts.update(output.name for output in graph.output)
    return counts


def _scalar(tensor: onnx.TensorProto) -> int | None:
    value = numpy_helper.to_array(tensor)
    return int(value.reshape(())) if value.size == 1 else None


def rewrite_of(node: onnx.NodeProto, inits: dict, producers: dict, readers: Counter[str]) -> Rewrite | None:
    """The rewrite of `node` if it is a DequantizeLinear of constant integers on a grid of <= 4 bits
    (module docstring), else None."""
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.input) < 3 or node.input[2] not in inits:
        return None
    clip = producers.get(node.input[0])
    if clip is None or clip.op_type != "Clip" or len(clip.input) != 3 or readers[clip.output[0]] != 1:
        return None
    ints, lo, hi = clip.input
    if not all(name in inits for name in (ints, lo, hi)):
        return None
    container = inits[ints].data_type
    data_type = _FOUR_BIT_OF.get(container)
    if data_type is None or inits[node.input[2]].data_type != container:
        return None
    low, high = FOUR_BIT_RANGES[data_type]
    grid = _scalar(inits[lo]), _scalar(inits[hi])
    if grid[0] is None or grid[1] is None or grid[0] < low or grid[1] > high:
        return None
    if not _within(numpy_helper.to_array(inits[ints]), *grid):
        return None
    if not _within(numpy_helper.to_array(inits[node.input[2]]), low, high):
        return None
    return Rewrite(node, clip, ints, node.input[2], data_type)


def _within(values: np.ndarray, lo: int, hi: int) -> bool:
    return values.size == 0 or (int(values.min()) >= lo and int(values.max()) <= hi)


def retyped_names(rewrites: list[Rewrite], readers: Counter[str]) -> dict[str, str]:
    """Initializer -> the name of its 4-bit tensor: its own name where rewritten nodes are its only
    readers, else a suffixed copy. (An initializer's one container type fixes its one 4-bit type.)"""
    reads: Counter[str] = Counter()
    suffixes = {}
    for r in rewrites:
        reads.update((r.ints, r.zero_point))  # read by r.clip and by r.dequantize
        suffixes[r.ints] = suffixes[r.zero_point] = _SUFFIX[r.data_type]
    return {
        name: name if count == readers[name] else f"{name}_{suffixes[name]}" for name, count in reads.items()
    }


def four_bit_tensor(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    """`tensor`'s int8 (uint8) values as a packed INT4 (UINT4) tensor named `name` (values must fit):
    raw data, two values per byte, low nibble first, as ONNX lays them out."""
    values = numpy_helper.to_array(tensor)
    data_type = _FOUR_BIT_OF[tensor.data_type]
    return onnx.helper.make_tensor(name, data_type, list(tensor.dims), values, raw=True)


def _remove(graph: onnx.GraphProto, clip_outputs: set[str], retyped: set[str]) -> None:
    """Drop the rewritten Clips, initializers nothing reads any more (their integers, bounds), and
    the shape information of the names whose type changed or that are gone."""
    kept = [n for n in graph.node if not (n.op_type == "Clip" and n.output[0] in clip_outputs)]
    del graph.node[:]
    graph.node.extend(kept)
    used = set(read_counts(graph))
    for index in reversed(range(len(graph.initializer))):  # in place: rebuilding would copy every weight
        if graph.initializer[index].name not in used:
            del graph.initializer[index]
    stale = clip_outputs | retyped
    for index in reversed(range(len(graph.value_info))):
        if graph.value_info[index].name in stale:
            del graph.value_info[index]

"""An onnxruntime session configured so that its integer kernels compute QCDQ files exactly.

Cause. At its default optimisation level onnxruntime fuses DequantizeLinear -> Conv/MatMul/Gemm ->
QuantizeLinear into integer kernels (QLinearConv, QGemm, ...) that multiply uint8 activations by int8
weights (U8S8). On x86-64 CPUs without VNNI (SSE4.1, AVX2, AVX-512 without VNNI) its MLAS kernels do
that with VPMADDUBSW, which adds two u8 x s8 products into a *saturating int16*: 255 * 127 * 2 = 64770
does not fit in 32767, so sums of large activations and weights are clipped before reaching the int32
accumulator. onnxruntime documents it (session option keys header: "x64 SSE4.1/AVX2/AVX512 (with no
VNNI) has overflow problem with quantized matrix multiplication with U8S8"; quantization guide: use
reduce_range (7-bit weights) or U8U8 against saturation). With optimisations off, the Q/DQ nodes run
in float and nothing saturates; CPUs with VNNI or AMX (VPDPBUSD adds the products into int32) are exact.

Remedy. The documented session option `session.x64quantprecision = "1"` makes onnxruntime convert
the int8 weights of those kernels to uint8 (+128) and use its U8U8 kernels, which widen to int16
before multiplying and never saturate. `onnxruntime_session` sets it on x86-64 CPUs that lack VNNI
(read from /proc/cpuinfo flags `avx512_vnni`, `avx_vnni`, `amx_int8`; unknown is treated as lacking),
where the U8S8 kernels would saturate; elsewhere the faster U8S8 kernels are exact and stay.

Float biases. At its default level onnxruntime also quantizes the float bias of a Conv between
DequantizeLinear nodes to int32 on the accumulator grid (its `WeightBiasQuantization` optimizer, so that
the Conv can become a QLinearConv). The model computes with the float bias; the rounding (up to half
an accumulator step per output channel) moved a 4-bit CNN's outputs by 3 output steps in the tests.
`onnxruntime_session` disables that optimizer: a float bias stays float (and its Conv runs in float);
a bias quantized by `Int32Bias` is exported as the int32 initializer the integer kernels take, which
is the way to get both exact results and integer kernels.

Shared weights. In the precision mode onnxruntime's QDQS8ToU8Transformer fails ("Attempt to replace
the existing tensor", onnxruntime 1.32) on int8 weights that reach two nodes: one DequantizeLinear read
twice (the input-hidden weights both directions of `shared_input_hidden_weights` share, weights an
unrolled recurrence reads each timestep) is first split per consumer, and the copies convert one
initializer twice. `onnxruntime_session` hands it those weights already dequantized (the same float32
values), so their nodes run in float.

Speed. onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv, but leaves a
Conv/Gemm whose output is not quantized (a residual branch before its add, a classifier head) in float
with its DequantizeLinear *on the weights*, which then runs on every inference (36% of the QCDQ
ResNet-18's time at batch 1). `onnxruntime_session` therefore hands onnxruntime a copy of the graph in
which the DequantizeLinear of constant integer weights and biases feeding such an unfused node is
evaluated once, (int - zero_point) * scale in float32 as onnxruntime computes it: the weights are
bit-identical (onnxruntime may then pick another float convolution algorithm for constant weights,
which sums in another order). The file on disk keeps its integer initializers.
"""

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})
PRECISION_OPTION = "session.x64quantprecision"

_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU feature flags the kernel reports, or None where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


@lru_cache(maxsize=1)
def u8s8_saturates() -> bool:
    """Whether this CPU runs onnxruntime's U8S8 integer kernels with a saturating int16 step."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i686"):
        return False  # ARM and others: dot-product instructions without the int16 step
    flags = cpu_flags()
    return flags is None or not (flags & _VNNI_FLAGS)


_INTEGER_OPS = ("Conv", "Gemm", "MatMul")
_ACTIVATIONS = ("Relu", "Clip")


def _fusable(node: onnx.NodeProto, producers: dict, consumers: dict) -> bool:
    """Whether onnxruntime can run `node` as an integer kernel: a dequantized input, no float bias
    (its quantization is disabled here) and, for Conv, an output quantized by one QuantizeLinear
    (through a Relu/Clip)."""
    source = producers.get(node.input[0])
    if source is None or source.op_type != "DequantizeLinear":
        return False
    bias = producers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and (bias is None or bias.op_type != "DequantizeLinear"):
        return False
    if node.op_type in ("Gemm", "MatMul"):
        return True
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type in _ACTIVATIONS:
        users = consumers.get(users[0].output[0], [])
    return len(users) == 1 and users[0].op_type == "QuantizeLinear"


def dequantized_value(dq: onnx.NodeProto, ints: np.ndarray, inits: dict) -> np.ndarray:
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero_point = (
        numpy_helper.to_array(inits[dq.input[2]]).astype(np.int64)
        if len(dq.input) > 2 and dq.input[2]
        else np.zeros(1, dtype=np.int64)
    )
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % max(ints.ndim, 1)
    shape = [1] * ints.ndim
    if scale.size > 1:
        shape[axis] = -1
    centred = (ints.astype(np.int64) - zero_point.reshape(shape if zero_point.size > 1 else [])).astype(
        np.float32
    )
    return centred * scale.reshape(shape if scale.size > 1 else [])


def _constant_source(dq: onnx.NodeProto, producers: dict, inits: dict) -> str | None:
    """The initializer of integers a DequantizeLinear reads (directly or through a Clip), if constant."""
    source = producers.get(dq.input[0])
    ints = source.input[0] if source is not None and source.op_type == "Clip" else dq.input[0]
    params = dq.input[1:]
    if ints not in inits or any(name and name not in inits for name in params):
        return None
    return ints


def _unfused(dq: onnx.NodeProto, producers: dict, consumers: dict) -> bool:
    """Whether `dq` dequantizes the weights of one Conv/Gemm/MatMul that onnxruntime will not fuse."""
    users = consumers.get(dq.output[0], [])
    if len(users) != 1 or users[0].op_type not in _INTEGER_OPS:
        return False
    return list(users[0].input).index(dq.output[0]) != 0 and not _fusable(users[0], producers, consumers)


def _reaches_several(dq: onnx.NodeProto, ints: str, consumers: dict) -> bool:
    """Whether the integers of `dq` reach more than one node: read twice, or its output (through a
    Transpose, as in an unrolled recurrence) read by several nodes or several times by one."""
    if len(consumers.get(ints, [])) > 1 or len(consumers.get(dq.input[0], [])) > 1:
        return True
    users = consumers.get(dq.output[0], [])
    if len(users) == 1 and users[0].op_type == "Transpose":
        users = consumers.get(users[0].output[0], [])
    return len(users) > 1 or any(list(u.input).count(dq.output[0]) > 1 for u in users)


def fold_unfused_dequantize(model: onnx.ModelProto, unfused: bool = True, shared: bool = False) -> int:
    """Replace DequantizeLinear(constant integers) by its float value (see the module docstring) where it
    feeds an unfusable Conv/Gemm/MatMul (`unfused`) or where its integers reach more than one node
    (`shared`: the precision mode's workaround); returns how many were folded. Changes `model` in place."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = set()
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear":
            continue
        ints = _constant_source(dq, producers, inits)
        if ints is None:
            continue
        if not (
            (unfused and _unfused(dq, producers, consumers))
            or (shared and _reaches_several(dq, ints, consumers))
        ):
            continue
        value = dequantized_value(dq, numpy_helper.to_array(inits[ints]), inits)
        graph.initializer.append(numpy_helper.from_array(value, dq.output[0]))
        folded.add(dq.output[0])
    if folded:
        nodes = [n for n in graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] in folded)]
        read = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
        nodes = [n for n in nodes if n.op_type != "Clip" or n.output[0] in read]  # the folded ones' Clips
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return len(folded)


def session_options(
    optimization: str = "all",
    intra_op_num_threads: int | None = None,
    exact_integer_kernels: bool | None = None,
    config_entries: dict[str, str] | None = None,
    optimized_model_filepath: str | Path | None = None,
) -> Any:
    """The `onnxruntime.SessionOptions` of `onnxruntime_session` (arguments: there)."""
    import onnxruntime as ort

    if optimization not in _LEVELS:
        raise ValueError(f"onnxruntime_session: optimization={optimization!r}; allowed: {list(_LEVELS)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = int(intra_op_num_threads)
    if optimized_model_filepath is not None:
        options.optimized_model_filepath = str(optimized_model_filepath)
        options.log_severity_level = 3  # its warning that the saved graph is hardware specific
    if u8s8_saturates() if exact_integer_kernels is None else exact_integer_kernels:
        options.add_session_config_entry(PRECISION_OPTION, "1")
    for key, value in (config_entries or {}).items():
        options.add_session_config_entry(key, str(value))
    return options


def _model_bytes(
    model: str | Path | bytes | onnx.ModelProto, fold_weights: bool, fold_shared: bool
) -> str | bytes:
    """What InferenceSession is given: the file itself, or a copy with constant weights folded."""
    if not (fold_weights or fold_shared):
        return (
            model.SerializeToString()
            if isinstance(model, onnx.ModelProto)
            else str(model)
            if isinstance(model, Path)
            else model
        )
    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    elif not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    fold_unfused_dequantize(copy, unfused=fold_weights, shared=fold_shared)
    return copy.SerializeToString()


def onnxruntime_session(
    path_or_bytes: str | Path | bytes | onnx.ModelProto,
    optimization: str = "all",
    providers: list[str] | None = None,
    intra_op_num_threads: int | None = None,
    exact_integer_kernels: bool | None = None,
    fold_weights: bool = True,
    config_entries: dict[str, str] | None = None,
    optimized_model_filepath: str | Path | None = None,
    disabled_optimizers: tuple[str, ...] = ("WeightBiasQuantization",),
) -> Any:
    """An `onnxruntime.InferenceSession` whose fused integer kernels compute the exported graph exactly.

    `optimization`: "disable", "basic", "extended" or "all" (onnxruntime's default). With
    `exact_integer_kernels` None (default) the U8U8 precision mode is set where `u8s8_saturates()`;
    True/False force it. `fold_weights`: evaluate once the weight dequantization of nodes onnxruntime
    will not fuse (module docstring); in the precision mode, constant weights that reach several nodes
    are folded whatever `fold_weights` says (module docstring, "Shared weights"). `config_entries`: more
    session config entries.
    `optimized_model_filepath`: where onnxruntime saves the graph it runs (its fused kernels).
    `disabled_optimizers`: onnxruntime optimizers not to run (default: the one quantizing float biases).
    """
    import onnxruntime as ort

    if exact_integer_kernels is None:
        exact_integer_kernels = u8s8_saturates()
    options = session_options(
        optimization, intra_op_num_threads, exact_integer_kernels, config_entries, optimized_model_filepath
    )
    optimized = optimization != "disable"
    model = _model_bytes(path_or_bytes, fold_weights and optimized, exact_integer_kernels and optimized)
    return ort.InferenceSession(
        model,
        options,
        providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=list(disabled_optimizers) or None,
    )


INTEGER_KERNELS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "MatMulIntegerToFloat",
        "QAttention",
    }
)
FLOAT_KERNELS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"}
)


def optimized_op_types(
    path_or_bytes: str | Path | bytes | onnx.ModelProto, **session_kwargs: Any
) -> dict[str, int]:
    """How many nodes of each op type the graph onnxruntime runs has (after its fusions), counted from
    the optimized model file it writes: the proof of which convolutions and matmuls run as integer
    kernels (`INTEGER_KERNELS`) and which in float (`FLOAT_KERNELS`)."""
    import tempfile
    from collections import Counter

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "optimized.onnx"
        onnxruntime_session(path_or_bytes, optimized_model_filepath=target, **session_kwargs)
        optimized = onnx.load(str(target))
    return dict(Counter(node.op_type for node in optimized.graph.node))

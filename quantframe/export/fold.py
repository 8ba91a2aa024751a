"""Fold inference BatchNormalization into the dequantization of the convolution before it.

    BN(Conv(x, (w - z) s) + b) = Conv(x, (w - z) s f) + (b - mean) f + beta,   f = gamma / sqrt(var + eps)

The integer weights w and zero point z stay as they are; only the DequantizeLinear scale changes, to a
per-output-channel s f (axis 0), so the fold is exact up to float rounding. torch's exporter folds
BatchNorm into float convolutions the same way; without the fold onnxruntime could not fuse
DequantizeLinear -> Conv -> QuantizeLinear into its integer QLinearConv (the BatchNormalization sits
between them) and would dequantize the weights on every run. The new bias is put back on the
accumulator grid as an int32 initializer (scale = input scale x new weight scale, rounding it moves
the output by at most half an accumulator step) when the input comes from a per-tensor
DequantizeLinear; otherwise it stays float. A BatchNormalization is left alone when its convolution
has other consumers, its weights are not an integer initializer -> (Clip ->) DequantizeLinear, or
some f is not positive (a negative scale would flip the grid).
"""

import numpy as np
import onnx
from onnx import numpy_helper


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer, following Identity nodes (torch's deduplicated parameters)."""
        while name not in self.inits:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return numpy_helper.to_array(self.inits[name])

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def add(self, name: str, value: np.ndarray) -> str:
        while name in self.inits:
            name += "_"
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def _same(a: onnx.NodeProto | None, b: onnx.NodeProto) -> bool:
    """Node identity by outputs (protobuf hands out new wrapper objects on every access)."""
    return a is not None and list(a.output) == list(b.output)


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _dequantizer(g: _Graph, conv: onnx.NodeProto) -> onnx.NodeProto | None:
    """The DequantizeLinear of integer initializers feeding the conv's weight, used by it alone."""
    dq = g.producer.get(conv.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or not _same(g.only_consumer(dq.output[0]), conv):
        return None
    source = g.producer.get(dq.input[0])
    ints = dq.input[0] if source is None else (source.input[0] if source.op_type == "Clip" else None)
    if ints is None or ints not in g.inits or dq.input[1] not in g.inits:
        return None
    return dq


def _input_scale(g: _Graph, conv: onnx.NodeProto) -> np.ndarray | None:
    dq = g.producer.get(conv.input[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    scale = g.constant(dq.input[1])
    return scale if scale is not None and scale.size == 1 else None


def _bias(g: _Graph, conv: onnx.NodeProto, channels: int) -> np.ndarray | None:
    if len(conv.input) < 3 or not conv.input[2]:
        return np.zeros(channels, dtype=np.float64)
    value = g.constant(conv.input[2])
    if value is not None:
        return value.astype(np.float64)
    dq = g.producer.get(conv.input[2])
    if dq is None or dq.op_type != "DequantizeLinear" or not _same(g.only_consumer(dq.output[0]), conv):
        return None
    ints, scale = g.constant(dq.input[0]), g.constant(dq.input[1])
    zero_point = g.constant(dq.input[2]) if len(dq.input) > 2 else np.zeros(1)
    if ints is None or scale is None or zero_point is None:
        return None
    return (ints.astype(np.float64) - zero_point.astype(np.float64)) * scale.astype(np.float64)


def _fold(g: _Graph, bn: onnx.NodeProto) -> bool:
    conv = g.producer.get(bn.input[0])
    if conv is None or conv.op_type != "Conv" or not _same(g.only_consumer(conv.output[0]), bn):
        return False
    if _attr(bn, "training_mode", 0) or len(bn.output) != 1:
        return False
    dq = _dequantizer(g, conv)
    stats = [g.constant(name) for name in bn.input[1:5]]
    if dq is None or any(s is None for s in stats):
        return False
    gamma, beta, mean, var = (s.astype(np.float64) for s in stats)
    factor = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
    bias = _bias(g, conv, factor.size)
    if bias is None or not np.all(factor > 0):
        return False
    scale = g.constant(dq.input[1]).astype(np.float64)
    new_scale = (np.broadcast_to(scale, factor.shape) * factor).astype(np.float32)
    new_bias = (bias - mean) * factor + beta
    dq.input[1] = g.add(f"{dq.input[1]}_bn", new_scale)
    if len(dq.input) > 2 and dq.input[2]:
        zero_point = g.constant(dq.input[2])
        dq.input[2] = g.add(f"{dq.input[2]}_bn", np.broadcast_to(zero_point, factor.shape).copy())
    kept = [a for a in dq.attribute if a.name != "axis"]
    del dq.attribute[:]
    dq.attribute.extend([*kept, onnx.helper.make_attribute("axis", 0)])
    _set_bias(g, conv, new_bias, new_scale)
    conv.output[0] = bn.output[0]
    return True


def _set_bias(g: _Graph, conv: onnx.NodeProto, bias: np.ndarray, weight_scale: np.ndarray) -> None:
    """The folded bias: int32 on the accumulator grid when the input scale is known, else float."""
    input_scale = _input_scale(g, conv)
    stem = f"{conv.output[0]}_bias"
    if input_scale is None:
        name = g.add(stem, bias.astype(np.float32))
    else:
        bias_scale = (weight_scale.astype(np.float64) * float(input_scale.reshape(()))).astype(np.float32)
        ints = np.round(bias / bias_scale.astype(np.float64))
        if np.abs(ints).max(initial=0) >= 2**31:
            name = g.add(stem, bias.astype(np.float32))
        else:
            dq = onnx.helper.make_node(
                "DequantizeLinear",
                [
                    g.add(f"{stem}_int", ints.astype(np.int32)),
                    g.add(f"{stem}_scale", bias_scale),
                    g.add(f"{stem}_zero_point", np.zeros_like(ints, dtype=np.int32)),
                ],
                [f"{stem}_dequantized"],
                name=f"{conv.name}_bias_DequantizeLinear",
                axis=0,
            )
            g.graph.node.insert(list(g.graph.node).index(conv), dq)
            name = dq.output[0]
    if len(conv.input) < 3:
        conv.input.append(name)
    else:
        conv.input[2] = name


def fold_batch_norm(model: onnx.ModelProto) -> int:
    """Fold every eligible BatchNormalization (module docstring); returns how many were folded."""
    g = _Graph(model)
    folded = {
        bn.output[0] for bn in list(model.graph.node) if bn.op_type == "BatchNormalization" and _fold(g, bn)
    }
    if folded:
        nodes = [
            n for n in model.graph.node if not (n.op_type == "BatchNormalization" and n.output[0] in folded)
        ]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return len(folded)

"""Fake-quantization fwd+bwd cost against torch's own fused kernels on the same tensors.

Target: per-tensor activation fake-quant <= 1.3x `torch.fake_quantize_per_tensor_affine`.
"""

import torch

from benchmarks.timing import brevitas_available, compare, report, setup
from quantframe.proxy import ActQuantProxy, WeightQuantProxy
from quantframe.quantizers import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat


def fwd_bwd(fn, x):  # noqa: ANN001, ANN201
    def run():  # noqa: ANN202
        x.grad = None
        fn(x).sum().backward()

    return run


def main() -> None:
    setup()
    act = torch.randn(32, 64, 32, 32, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(64, 64, 3, 3))

    learned = ActQuantProxy(Int8ActPerTensorFloat, {"collect_stats_steps": 1}, "bench", None, "act_quant")
    learned.train()
    learned(act.detach())  # collect one step
    learned(act.detach())  # switch to the learned scale
    never_done = {"collect_stats_steps": 10**9}
    collecting = ActQuantProxy(Int8ActPerTensorFloat, never_done, "bench", None, "act_quant")
    collecting.train()
    scale = learned.scale().detach().clone().requires_grad_(True)
    zero = torch.zeros(1)

    def torch_learnable(x):  # noqa: ANN001, ANN202
        return torch._fake_quantize_learnable_per_tensor_affine(x, scale.reshape(1), zero, -128, 127, 1.0)

    def torch_fixed(x):  # noqa: ANN001, ANN202
        return torch.fake_quantize_per_tensor_affine(x, float(scale.detach()), 0, -128, 127)

    workloads = {
        "torch.fake_quantize_per_tensor_affine": fwd_bwd(torch_fixed, act),
        "torch learnable per-tensor kernel": fwd_bwd(torch_learnable, act),
        "quantframe Int8ActPerTensorFloat (learned)": fwd_bwd(lambda x: learned(x).value, act),
        "quantframe Int8ActPerTensorFloat (collecting)": fwd_bwd(lambda x: collecting(x).value, act),
    }
    if brevitas_available():
        from brevitas.nn import QuantIdentity

        bq = QuantIdentity(return_quant_tensor=False)
        bq.train()
        workloads["brevitas QuantIdentity (collecting)"] = fwd_bwd(bq, act)
    results = compare(workloads, baseline="torch.fake_quantize_per_tensor_affine")
    report("fake_quant: activation 32x64x32x32 fwd+bwd", results)

    wt = WeightQuantProxy(Int8WeightPerTensorFloat, {}, "bench", weight)
    wc = WeightQuantProxy(Int8WeightPerChannelFloat, {}, "bench", weight)

    def torch_weight(w):  # noqa: ANN001, ANN202
        s = w.detach().abs().amax(dim=(1, 2, 3)) / 127
        return torch.fake_quantize_per_channel_affine(w, s, torch.zeros(64, dtype=torch.int32), 0, -127, 127)

    weights = {
        "torch.fake_quantize_per_channel_affine": fwd_bwd(torch_weight, weight),
        "quantframe Int8WeightPerTensorFloat": fwd_bwd(lambda w: wt(w).value, weight),
        "quantframe Int8WeightPerChannelFloat": fwd_bwd(lambda w: wc(w).value, weight),
    }
    baseline = "torch.fake_quantize_per_channel_affine"
    report("fake_quant: weight 64x64x3x3 fwd+bwd", compare(weights, baseline=baseline))


if __name__ == "__main__":
    main()

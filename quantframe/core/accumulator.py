"""Worst-case accumulator bit width of a quantized dot product.

    bits = ceil(log2((2^b_in - 1) * (2^b_w - 1) * K))

`K` is the number of products summed into one output (`in_features` of a Linear, `in_channels / groups`
times the kernel elements of a convolution). The rule is the same whatever the signs: it bounds the
largest magnitude of the integer sum.
"""

import torch
from torch import Tensor

# Above this many bits the exact product no longer fits an int64 and the float64 estimate is kept.
_EXACT_BITS = 62


def accumulator_bit_width(
    input_bit_width: Tensor | float,
    weight_bit_width: Tensor | float,
    inputs_per_output: Tensor | int,
) -> Tensor:
    """ceil(log2((2^b_in - 1) * (2^b_w - 1) * K)) as a float32 tensor (elementwise, broadcasting).

    log2 is estimated in float64, then checked against the exact int64 product wherever that fits
    (below 2^62), so products next to a power of two land on the right side of it. Bit widths are
    rounded to integers first (learned bit widths are integral values carried in floats).
    """
    given_args = {
        "input_bit_width": input_bit_width,
        "weight_bit_width": weight_bit_width,
        "inputs_per_output": inputs_per_output,
    }
    device = next((arg.device for arg in given_args.values() if isinstance(arg, Tensor)), None)
    for name, given in given_args.items():
        # Plain numbers are checked here; tensors come from validated quantizers (no device sync).
        if not isinstance(given, Tensor) and given < 1:
            raise ValueError(f"accumulator_bit_width: {name}={given!r}; allowed: a number >= 1")
    b_in = torch.as_tensor(input_bit_width, dtype=torch.float64, device=device).detach().round()
    b_w = torch.as_tensor(weight_bit_width, dtype=torch.float64, device=b_in.device).detach().round()
    k_int = torch.as_tensor(inputs_per_output, device=b_in.device).detach()
    k_int = (k_int.round() if k_int.is_floating_point() else k_int).to(torch.int64)
    log2_product = (
        torch.log2(torch.exp2(b_in) - 1) + torch.log2(torch.exp2(b_w) - 1) + torch.log2(k_int.double())
    )
    estimate = torch.ceil(log2_product)
    exact = log2_product < _EXACT_BITS
    one = torch.ones((), dtype=torch.int64, device=b_in.device)

    def levels(bits: Tensor) -> Tensor:
        """2^b - 1 as int64 where the product is exact (1 elsewhere: those entries keep the estimate)."""
        return torch.where(exact, torch.bitwise_left_shift(one, bits.clamp(max=_EXACT_BITS).long()) - 1, one)

    product = levels(b_in) * levels(b_w) * torch.where(exact, k_int, one)
    bits = torch.where(exact, estimate, 1.0).to(torch.int64)
    # ceil(log2(n)) is the smallest r with n <= 2^r: step r down if 2^(r-1) >= n, up if 2^r < n.
    bits = bits - ((bits > 0) & (torch.bitwise_left_shift(one, (bits - 1).clamp(min=0)) >= product)).long()
    bits = bits + (torch.bitwise_left_shift(one, bits) < product).long()
    return torch.where(exact, bits.to(torch.float64), estimate).to(torch.float32)

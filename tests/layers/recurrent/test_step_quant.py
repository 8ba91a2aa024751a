"""quantframe.layers.recurrent.step_quant: per-timestep quantizers prepared once per forward."""

import torch

from quantframe.layers.recurrent.step_quant import StepQuant
from quantframe.proxy.act import act_proxy
from quantframe.quantizers import Int8ActPerTensorFloat, SignedBinaryActPerTensorConst, Uint8ActPerTensorFloat
from tests.helpers import learned_proxy


def _x(shape=(6, 8), seed=0, spread=3.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * spread


def _torch_fake_quant(x, scale, lo, hi):
    """torch's kernel with a float32 scale (the threshold divided in float32, as the quantizers do)."""
    scale = torch.as_tensor(scale, dtype=torch.float32).item()
    return torch.fake_quantize_per_tensor_affine(x, scale, 0, lo, hi)


def test_fixed_chain_is_bit_identical_to_torch_fake_quant():
    proxy = learned_proxy(threshold=2.0).eval()
    quant = StepQuant([proxy], 8)
    assert quant.mode == "fixed"
    scale = torch.tensor(2.0) / 128
    x = torch.cat([_x().flatten(), torch.arange(-300, 300) * (scale / 2)])  # ties and out-of-range values
    expected = _torch_fake_quant(x, scale, -128, 127)
    assert torch.equal(quant.apply(x.clone(), torch.empty_like(x)), expected)
    assert torch.equal(quant.apply(x.clone(), x.clone()), expected)
    with torch.no_grad():
        assert torch.equal(quant.quant(x), expected)
    assert torch.equal(quant.quant(x), expected)


def test_grouped_ranges_clamp_each_chunk_to_its_own_bounds():
    sigmoid = [learned_proxy(Uint8ActPerTensorFloat, t).eval() for t in (1.0, 0.8, 0.6)]
    tanh = learned_proxy(Int8ActPerTensorFloat, 1.0).eval()
    quant = StepQuant([*sigmoid, tanh], 8)
    assert quant.mode == "fixed" and quant.zero_row is None and isinstance(quant.lo, torch.Tensor)
    x = _x((5, 32), spread=1.0)
    chunks = x.split(8, dim=1)
    expected = torch.cat(
        [
            _torch_fake_quant(c, torch.tensor(t) / 255, 0, 255)
            for c, t in zip(chunks[:3], (1.0, 0.8, 0.6), strict=True)
        ]
        + [_torch_fake_quant(chunks[3], torch.tensor(1.0) / 128, -128, 127)],
        dim=1,
    )
    assert torch.equal(quant.apply(x.clone(), x.clone()), expected)
    assert torch.equal(quant.quant(x), expected)


def test_different_range_widths_fall_back_to_chunk_by_chunk():
    proxies = [learned_proxy(threshold=1.0).eval(), learned_proxy(threshold=1.0, bit_width=4).eval()]
    quant = StepQuant(proxies, 8)
    assert quant.mode == "dynamic"
    x = _x((3, 16), spread=1.0)
    expected = torch.cat(
        [_torch_fake_quant(x[:, :8], 1 / 128, -128, 127), _torch_fake_quant(x[:, 8:], 1 / 8, -8, 7)], dim=1
    )
    assert torch.equal(quant.quant(x), expected)


def test_collecting_quantizer_counts_every_timestep_as_a_statistics_step():
    proxy = act_proxy(Int8ActPerTensorFloat, {}, "test", "act_quant")
    quant = StepQuant([proxy], 8)
    assert quant.mode == "dynamic" and quant.bptt
    x = _x()
    for t in range(3):
        value = quant.apply(x * (t + 1), torch.empty_like(x))
        top = (x * (t + 1)).abs().max()  # the 99.999th percentile of 48 values is the largest
        assert torch.equal(value, _torch_fake_quant(x * (t + 1), top / 128, -128, 127))
    assert proxy.tensor_quant.scaling_impl.collector.steps_seen == 3


def test_binary_quantizer_runs_step_by_step():
    proxy = act_proxy(SignedBinaryActPerTensorConst, {}, "test", "act_quant")
    quant = StepQuant([proxy], 8)
    assert quant.mode == "dynamic" and not quant.bptt  # the hand-written backward does not cover it
    assert set(quant.quant(_x()).unique().tolist()) == {-1.0, 1.0}


def test_record_gives_the_straight_through_mask_and_the_lsq_scale_gradient():
    proxy = learned_proxy(threshold=2.0).train()
    quant = StepQuant([proxy], 8)
    assert quant.scale_grad
    xs = _x((3, 4, 8))
    record = quant.record(3, (4, 8), xs)
    for t in range(3):
        quant.apply(xs[t], torch.empty_like(xs[t]), record, t)
    grads = _x((3, 4, 8), seed=1)
    masked = [quant.mask_grad(grads[t].clone(), record, t) for t in range(3)]
    # reference: torch's learnable fake-quant kernel with autograd, one call per step
    value = proxy.tensor_quant.scaling_impl.value
    reference_grad = torch.zeros(())
    for t in range(3):
        x = xs[t].clone().requires_grad_()
        scale = (value / 128).reshape(1)
        out = torch._fake_quantize_learnable_per_tensor_affine(x, scale, torch.zeros(1), -128, 127, 1.0)
        dx, dscale = torch.autograd.grad(out, (x, value), grads[t])
        assert torch.equal(masked[t], dx)
        reference_grad = reference_grad + dscale
    ours = torch.autograd.grad(quant.scale, value, quant.scale_gradient(record))[0]
    torch.testing.assert_close(ours, reference_grad, rtol=1e-5, atol=1e-6)


def test_collecting_chain_without_autograd_equals_the_quantizers_own_forward():
    def proxies():  # a low percentile, so that the largest values clip
        return [
            act_proxy(Int8ActPerTensorFloat, {"high_percentile_q": 80.0}, "test", "a"),
            act_proxy(None, {}, "test", "b"),
            act_proxy(Uint8ActPerTensorFloat, {"high_percentile_q": 80.0}, "test", "c"),
        ]

    fast, reference = proxies(), proxies()
    x = _x((4, 24), spread=2.0)
    x[:, 16:] = x[:, 16:].abs()
    quant = StepQuant(fast, 8)
    assert quant.mode == "dynamic" and quant.plain
    record = quant.record(3, (4, 24), x)
    bounds = [(-128, 127), None, (0, 255)]
    for t in range(3):
        value = quant.apply(x * (t + 1), torch.empty_like(x), record, t)
        chunks = (x * (t + 1)).split(8, dim=1)
        expected = [p(c) for p, c in zip(reference, chunks, strict=True)]
        plain = [e.value if n != 1 else e for n, e in enumerate(expected)]
        assert torch.equal(value, torch.cat(plain, dim=1))
        masks = [
            torch.ones_like(c, dtype=torch.bool)
            if b is None
            else ((c / e.scale).round() >= b[0]) & ((c / e.scale).round() <= b[1])
            for c, e, b in zip(chunks, expected, bounds, strict=True)
        ]
        assert torch.equal(record.mask_at[t].bool(), torch.cat(masks, dim=1))
        assert not record.mask_at[t].bool().all()  # some values clipped
    for ours, theirs in zip(fast, reference, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(ours.buffers(), theirs.buffers(), strict=True))

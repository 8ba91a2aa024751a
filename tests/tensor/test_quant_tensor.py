"""QuantTensor: validity, integer round trip, arithmetic rules, shape ops and the torch function table.

Every QuantTensor here is built from integers by hand, value = (int - zero_point) * scale, so the
expected integers of a result are computed independently of the code under test.
"""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from quantframe import QuantTensor

SETTINGS = settings(derandomize=True, deadline=None, max_examples=50)


def grid(bit_width: int, signed: bool) -> tuple[int, int]:
    """Hand-written integer range of a grid."""
    if signed:
        return -(2 ** (bit_width - 1)), 2 ** (bit_width - 1) - 1
    return 0, 2**bit_width - 1


def random_ints(shape, bit_width, signed, seed):
    low, high = grid(bit_width, signed)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, shape, generator=generator, dtype=torch.int64)


def make(ints, scale, zero_point=0.0, bit_width=8, signed=True, training=False):
    """QuantTensor whose integers are `ints`: value = (ints - zero_point) * scale in float32."""
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point, dtype=torch.float32)
    value = ((ints.double() - zero_point.double()) * scale.double()).float()
    return QuantTensor(value, scale, zero_point, torch.tensor(float(bit_width)), signed, training)


def integers_of(qt):
    """The integers a result represents, computed from its fields (not through QuantTensor.int())."""
    return torch.round(qt.value.double() / qt.scale.double() + qt.zero_point.double()).long()


@st.composite
def grids(draw, max_bits=16):
    bit_width = draw(st.integers(2, max_bits))
    signed = draw(st.booleans())
    low, high = grid(bit_width, signed)
    zero_point = draw(st.integers(low, high))
    scale = draw(st.floats(1e-3, 10.0))
    seed = draw(st.integers(0, 2**31 - 1))
    return bit_width, signed, zero_point, scale, seed


# ---------------------------------------------------------------- validity and int()


def test_valid_from_integers_signed_and_unsigned():
    ints = torch.tensor([-128, -1, 0, 5, 127])
    assert make(ints, 0.05, bit_width=8, signed=True).is_valid
    assert make(ints + 128, 0.05, zero_point=128, bit_width=8, signed=False).is_valid


def test_invalid_off_grid_out_of_range_and_none():
    ints = torch.tensor([-3, 0, 4])
    qt = make(ints, 0.1)
    assert not QuantTensor(qt.value + 0.03, qt.scale, qt.zero_point, qt.bit_width, True, False).is_valid
    assert not make(torch.tensor([128]), 0.1, bit_width=8, signed=True).is_valid
    assert not make(torch.tensor([-129]), 0.1, bit_width=8, signed=True).is_valid
    assert not make(torch.tensor([-1]), 0.1, bit_width=8, signed=False).is_valid
    assert not make(torch.tensor([256]), 0.1, bit_width=8, signed=False).is_valid
    assert make(torch.tensor([255]), 0.1, bit_width=8, signed=False).is_valid
    fields = [qt.value, qt.scale, qt.zero_point, qt.bit_width, True, False]
    for missing in range(1, 5):
        args = list(fields)
        args[missing] = None
        assert not QuantTensor(*args).is_valid
    assert not QuantTensor(qt.value).is_valid


def test_bipolar_one_bit_signed():
    assert make(torch.tensor([-1, 1, 1, -1]), 0.5, bit_width=1, signed=True).is_valid
    assert not make(torch.tensor([-1, 0, 1]), 0.5, bit_width=1, signed=True).is_valid
    assert make(torch.tensor([0, 1]), 0.5, bit_width=1, signed=False).is_valid


def test_wide_grids_within_dtype_precision():
    ints = torch.tensor([0, 1, 65534, 65535])
    assert make(ints, 0.1, 0, 16, False).is_valid  # float32 rounding of 65535 * 0.1 is ~0.004 levels
    qt = make(ints, 0.1, 0, 16, False)
    assert not QuantTensor(qt.value + 0.03, qt.scale, qt.zero_point, qt.bit_width, False).is_valid
    bias_ints = torch.tensor([-(2**31), -5, 2**31 - 1])
    scale = torch.tensor(1e-4, dtype=torch.float64)
    bias = QuantTensor(bias_ints.double() * scale, scale, torch.tensor(0.0), torch.tensor(32.0), True, False)
    assert bias.is_valid and torch.equal(bias.int().long(), bias_ints)
    assert not QuantTensor(bias.value + 0.3 * scale, scale, bias.zero_point, bias.bit_width, True).is_valid


@SETTINGS
@given(grids())
def test_int_round_trip(params):
    bit_width, signed, zero_point, scale, seed = params
    ints = random_ints((3, 5), bit_width, signed, seed)
    qt = make(ints, scale, zero_point, bit_width, signed)
    assert qt.is_valid
    out = qt.int()
    assert out.dtype == torch.int32
    assert torch.equal(out.long(), ints)
    restored = (out.double() - zero_point) * qt.scale.double()
    torch.testing.assert_close(restored, qt.value.double(), rtol=1e-6, atol=1e-6 * scale)
    assert torch.equal(qt.int(float_datatype=True), ints.float())


def test_int_dtype_and_missing_metadata():
    ints = torch.tensor([0, 2**32 - 1])
    wide = QuantTensor(ints.double(), torch.tensor(1.0), torch.tensor(0.0), torch.tensor(32.0), False, False)
    assert wide.int().dtype == torch.int64 and wide.int().tolist() == [0, 2**32 - 1]
    one, zero = torch.tensor(1.0), torch.tensor(0.0)
    signed32 = QuantTensor(torch.tensor([-(2.0**31)]), one, zero, torch.tensor(32.0), True)
    assert signed32.int().dtype == torch.int32
    with pytest.raises(ValueError, match="scale"):
        QuantTensor(torch.ones(2)).int()


# ---------------------------------------------------------------- arithmetic


@SETTINGS
@given(grids(12), grids(12))
def test_add_same_scale(first, second):
    b1, s1, z1, scale, seed1 = first
    b2, s2, z2, _, seed2 = second
    i1, i2 = random_ints((4, 3), b1, s1, seed1), random_ints((4, 3), b2, s2, seed2)
    out = make(i1, scale, z1, b1, s1) + make(i2, scale, z2, b2, s2)
    assert isinstance(out, QuantTensor)
    assert out.signed == (s1 or s2)
    assert out.zero_point.item() == z1 + z2
    assert torch.equal(integers_of(out), i1 + i2)
    if s1 == s2:
        assert out.bit_width.item() == max(b1, b2) + 1
    else:  # an unsigned b-bit operand counts as b + 1 signed bits
        unsigned_bits, signed_bits = (b1, b2) if s2 else (b2, b1)
        assert out.bit_width.item() == max(signed_bits, unsigned_bits + 1) + 1
    assert out.is_valid


def test_add_extremes_and_bipolar_stay_valid():
    for signed in (True, False):
        low, high = grid(8, signed)
        ints = torch.tensor([low, high])
        assert (make(ints, 0.1, 0, 8, signed) + make(ints, 0.1, 0, 8, signed)).is_valid
    mixed = make(torch.tensor([127]), 0.1, 0, 8, True) + make(torch.tensor([255]), 0.1, 0, 8, False)
    assert mixed.is_valid and integers_of(mixed).item() == 382
    bipolar = make(torch.tensor([1, -1]), 0.5, 0, 1, True)
    assert (bipolar + bipolar).is_valid


def test_add_eval_scale_mismatch_raises_naming_both():
    a, b = make(torch.tensor([1, 2]), 0.125), make(torch.tensor([1, 2]), 0.375)
    with pytest.raises(ValueError, match=r"0\.125.*0\.375"):
        a + b


def test_add_training_mismatch_averages_scale_and_keeps_gradients():
    a = make(torch.tensor([1.0, 2.0]), 0.25, training=True)
    b = make(torch.tensor([3.0, -4.0]), 0.75, training=False)
    a.value.requires_grad_(True)
    b.value.requires_grad_(True)
    out = a + b
    assert out.training is True
    assert out.scale.item() == pytest.approx(0.5)
    torch.testing.assert_close(out.value, a.value + b.value)
    out.value.sum().backward()
    assert torch.equal(a.value.grad, torch.ones(2)) and torch.equal(b.value.grad, torch.ones(2))


def test_add_with_plain_operands_is_plain():
    qt, t = make(torch.tensor([1, 2]), 0.5), torch.tensor([0.25, 0.5])
    for out in (qt + t, t + qt, qt + 1.0, 1.0 + qt, qt - t, t - qt, 2.0 - qt):
        assert type(out) is torch.Tensor
    torch.testing.assert_close(t + qt, torch.tensor([0.75, 1.5]))
    torch.testing.assert_close(2.0 - qt, torch.tensor([1.5, 1.0]))
    assert isinstance(torch.add(qt, qt), QuantTensor)


def test_sub_of_quant_tensors():
    i1, i2 = torch.tensor([-128, 127, 0]), torch.tensor([127, -128, 5])
    out = make(i1, 0.1) - make(i2, 0.1)
    assert isinstance(out, QuantTensor) and out.is_valid
    assert torch.equal(integers_of(out), i1 - i2)


@SETTINGS
@given(grids(10), grids(10))
def test_mul_rules(first, second):
    b1, s1, _, sc1, seed1 = first
    b2, s2, _, sc2, seed2 = second
    i1, i2 = random_ints((5,), b1, s1, seed1), random_ints((5,), b2, s2, seed2)
    out = make(i1, sc1, 0, b1, s1) * make(i2, sc2, 0, b2, s2)
    assert isinstance(out, QuantTensor)
    assert out.bit_width.item() == b1 + b2 and out.signed == (s1 or s2)
    assert out.scale.item() == pytest.approx(sc1 * sc2, rel=1e-6)
    assert torch.equal(integers_of(out), i1 * i2)
    assert out.is_valid


def test_mul_nonzero_zero_point_and_plain_operands_decay():
    a = make(torch.tensor([3, 4]), 0.5, zero_point=1, signed=False)
    b = make(torch.tensor([1, 2]), 0.5)
    assert type(a * b) is torch.Tensor
    torch.testing.assert_close(a * b, a.value * b.value)
    for out in (b * 2.0, 2.0 * b, b * torch.ones(2), torch.ones(2) * b, b / 2, 1.0 / b):
        assert type(out) is torch.Tensor


def test_neg_rules():
    unsigned = make(torch.tensor([0, 7, 255]), 0.1, 0, 8, False)
    out = -unsigned
    assert out.signed is True and out.bit_width.item() == 9 and out.is_valid
    assert torch.equal(integers_of(out), torch.tensor([0, -7, -255]))
    shifted = -make(torch.tensor([0, 200]), 0.1, 100, 8, False)
    assert shifted.zero_point.item() == -100 and shifted.is_valid
    narrow = -make(torch.tensor([-127, 3, 127]), 0.1, 0, 8, True)
    assert narrow.bit_width.item() == 8 and narrow.is_valid
    # documented: the most negative level of a full signed grid leaves the grid when negated
    assert not (-make(torch.tensor([-128]), 0.1, 0, 8, True)).is_valid
    assert (-make(torch.tensor([-1, 1]), 1.0, 0, 1, True)).is_valid


# ---------------------------------------------------------------- shape ops


def per_channel(seed=0, zero_point=False):
    """(N, C, H, W) = (2, 3, 4, 4) activation with (1, C, 1, 1) scale (and zero point), unsigned 8-bit."""
    ints = random_ints((2, 3, 4, 4), 8, False, seed)
    scale = torch.tensor([0.5, 0.125, 2.0]).reshape(1, 3, 1, 1)
    zp = torch.tensor([0.0, 10.0, 255.0]).reshape(1, 3, 1, 1) if zero_point else torch.zeros(1, 3, 1, 1)
    return ints, make(ints, scale, zp, 8, False)


SHAPE_OPS = {
    "flatten1": lambda t: t.flatten(1),
    "flatten": lambda t: t.flatten(),
    "view": lambda t: t.view(6, -1),
    "reshape": lambda t: t.reshape(4, 24),
    "permute": lambda t: t.permute(0, 2, 3, 1),
    "transpose": lambda t: t.transpose(1, 3),
    "unsqueeze": lambda t: t.unsqueeze(2),
    "squeeze": lambda t: t[:1].squeeze(),
    "squeeze_dim": lambda t: t[:, :, :1].squeeze(2),
    "index_channel": lambda t: t[:, 1],
    "index_batch": lambda t: t[1],
    "slice": lambda t: t[:, 1:, ::2],
    "mask": lambda t: t[t > 100] if isinstance(t, torch.Tensor) else t[t.value > t.value.mean()],
    "torch_flatten": lambda t: torch.flatten(t, 1),
    "torch_reshape": lambda t: torch.reshape(t, (2, -1)),
    "torch_permute": lambda t: torch.permute(t, (3, 2, 1, 0)),
    "torch_transpose": lambda t: torch.transpose(t, 0, 1),
    "torch_squeeze": lambda t: torch.squeeze(t[:, :1], 1),
    "torch_unsqueeze": lambda t: torch.unsqueeze(t, -1),
    "unflatten": lambda t: t.unflatten(2, (2, 2)),
    "nn_flatten": lambda t: torch.nn.Flatten()(t),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
@pytest.mark.parametrize("zero_point", [False, True])
def test_shape_ops_keep_per_channel_grid(name, zero_point):
    op = SHAPE_OPS[name]
    ints, qt = per_channel(zero_point=zero_point)
    out = op(qt)
    assert isinstance(out, QuantTensor)
    expected_ints = ints[qt.value > qt.value.mean()] if name == "mask" else op(ints)
    assert out.shape == expected_ints.shape
    assert out.is_valid
    assert torch.equal(out.int().long(), expected_ints)


def test_per_tensor_metadata_passes_through():
    qt = make(random_ints((2, 3, 4), 8, True, 1), 0.2)
    out = qt.flatten(1).transpose(0, 1)
    assert out.scale is qt.scale and out.zero_point is qt.zero_point and out.bit_width is qt.bit_width
    boxed = QuantTensor(qt.value, qt.scale.reshape(1, 1, 1), qt.zero_point, qt.bit_width, True, False)
    assert boxed.flatten().int().shape == (24,)
    assert boxed[0, 0, 0].int().shape == ()


def prime_factors(number):
    factors, divisor = [], 2
    while number > 1:
        while number % divisor == 0:
            factors.append(divisor)
            number //= divisor
        divisor += 1
    return factors


@st.composite
def reshapes(draw):
    """(in_shape, per-dim 'metadata varies here' flags, out_shape with the same number of elements)."""
    in_shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    varies = draw(st.lists(st.booleans(), min_size=len(in_shape), max_size=len(in_shape)))
    factors = draw(st.permutations(prime_factors(int(torch.tensor(in_shape).prod()))))
    cuts = sorted(draw(st.lists(st.integers(0, len(factors)), max_size=3)))
    bounds = [0, *cuts, len(factors)]
    pairs = zip(bounds, bounds[1:], strict=False)
    out_shape = [int(torch.tensor(factors[a:b]).prod()) if b > a else 1 for a, b in pairs]
    return tuple(in_shape), varies, tuple(out_shape)


@SETTINGS
@given(reshapes())
def test_reshape_moves_broadcast_metadata_exactly(case):
    in_shape, varies, out_shape = case
    meta_shape = [size if vary else 1 for size, vary in zip(in_shape, varies, strict=True)]
    scale = torch.arange(1.0, 1.0 + torch.tensor(meta_shape).prod().item()).reshape(meta_shape)
    qt = QuantTensor(torch.zeros(in_shape), scale, torch.tensor(0.0), torch.tensor(8.0), True, False)
    out = qt.reshape(out_shape)
    assert out.shape == out_shape
    reference = scale.expand(in_shape).reshape(out_shape)  # every element keeps its own scale
    assert torch.equal(out.scale.broadcast_to(out_shape), reference)


def test_flatten_keeps_channel_metadata_compact():
    _, qt = per_channel()
    assert qt.flatten(2).scale.shape == (1, 3, 1)
    assert qt.flatten(1).scale.shape == (1, 48)


# ---------------------------------------------------------------- torch functions


def test_max_pool_keeps_grid():
    ints, qt = per_channel(zero_point=True)
    out = F.max_pool2d(qt, 2)
    assert isinstance(out, QuantTensor) and out.is_valid
    assert torch.equal(out.int().long(), F.max_pool2d(ints.double(), 2).long())
    pooled, indices = F.max_pool2d(qt, 2, return_indices=True)
    assert isinstance(pooled, QuantTensor) and indices.dtype == torch.int64
    assert isinstance(torch.nn.AdaptiveMaxPool2d(1)(qt), QuantTensor)
    assert isinstance(F.max_pool1d(qt.flatten(2), 2), QuantTensor)


def test_other_ops_decay_to_plain_tensors():
    _, qt = per_channel()
    modules = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Sigmoid())
    for out in (torch.tanh(qt), F.sigmoid(qt), F.tanh(qt), torch.sum(qt), torch.exp(qt), modules(qt)):
        assert type(out) is torch.Tensor
    torch.testing.assert_close(torch.tanh(qt), torch.tanh(qt.value))
    assert type(F.interpolate(qt, scale_factor=2, mode="bilinear")) is torch.Tensor


def test_relu_keeps_grid_only_with_zero_zero_point():
    ints = torch.tensor([-5, 0, 7])
    out = F.relu(make(ints, 0.1))
    assert isinstance(out, QuantTensor) and out.is_valid
    assert torch.equal(integers_of(out), torch.tensor([0, 0, 7]))
    assert isinstance(torch.relu(make(ints, 0.1)), QuantTensor)
    assert type(F.relu(make(ints + 10, 0.1, zero_point=10))) is torch.Tensor
    assert type(F.relu(make(torch.tensor([-1, 1]), 0.1, 0, 1, True))) is torch.Tensor  # bipolar has no 0


def test_pad_interpolate_pixel_shuffle():
    ints, qt = per_channel()
    padded = F.pad(qt, (1, 1, 2, 0))
    assert isinstance(padded, QuantTensor) and padded.is_valid
    assert torch.equal(padded.int().long(), F.pad(ints, (1, 1, 2, 0)))
    assert type(F.pad(qt, (1, 1), value=1.0)) is torch.Tensor
    assert type(F.pad(qt, (1, 1, 1, 1), mode="reflect")) is torch.Tensor
    assert type(F.pad(per_channel(zero_point=True)[1], (1, 1))) is torch.Tensor
    up = F.interpolate(qt, scale_factor=2, mode="nearest")
    assert isinstance(up, QuantTensor) and up.is_valid and up.shape == (2, 3, 8, 8)
    assert type(F.pixel_shuffle(qt.reshape(2, 12, 2, 2)[:, :4], 2)) is torch.Tensor
    flat = make(random_ints((1, 4, 2, 2), 4, True, 3), 0.3, 0, 4, True)
    shuffled = F.pixel_shuffle(flat, 2)
    assert isinstance(shuffled, QuantTensor) and shuffled.is_valid and shuffled.shape == (1, 1, 4, 4)


def test_cat_and_stack():
    i1, i2 = random_ints((2, 3), 8, True, 4), random_ints((2, 3), 6, False, 5)
    a, b = make(i1, 0.1, 0, 8, True), make(i2, 0.1, 0, 6, False)
    out = torch.cat([a, b], dim=1)
    assert isinstance(out, QuantTensor) and out.is_valid and out.signed
    assert out.bit_width.item() == 8 and torch.equal(out.int().long(), torch.cat([i1, i2], 1))
    stacked = torch.stack([a, a])
    assert isinstance(stacked, QuantTensor) and stacked.shape == (2, 2, 3) and stacked.is_valid
    assert type(torch.cat([a, make(i1, 0.2)])) is torch.Tensor  # eval mismatch decays, no error
    assert type(torch.cat([a, a.value])) is torch.Tensor
    mean = torch.cat([make(i1, 0.1, training=True), make(i1, 0.3)])
    assert isinstance(mean, QuantTensor) and mean.scale.item() == pytest.approx(0.2)
    _, pc = per_channel()
    assert torch.cat([pc, pc], 0).is_valid
    assert torch.stack([pc, pc], -1).is_valid


def test_dropout_keeps_grid_in_eval_and_rescales_it_in_training():
    qt = make(random_ints((4, 4), 8, True, 6), 0.1)
    assert isinstance(F.dropout(qt, 0.5, training=False), QuantTensor)
    assert isinstance(torch.nn.Dropout(0.5).eval()(qt), QuantTensor)
    torch.manual_seed(0)
    out = F.dropout(qt, 0.5)  # functional default is training=True: the rescaled grid of QuantDropout
    assert isinstance(out, QuantTensor) and out.is_valid
    torch.testing.assert_close(out.scale, qt.scale / 0.5)
    kept = out.value != 0
    torch.testing.assert_close(out.value[kept], qt.value[kept] * 2)


def test_avg_pool_is_an_accumulator():
    ints, qt = per_channel()
    out = F.avg_pool2d(qt, 2)
    assert isinstance(out, QuantTensor) and out.is_valid
    torch.testing.assert_close(out.scale, qt.scale / 4)
    assert out.bit_width.item() == 8 + 2
    window_sums = F.avg_pool2d(ints.double(), 2) * 4
    assert torch.equal(out.int().long(), window_sums.round().long())
    assert isinstance(F.avg_pool2d(qt, 3, stride=1, padding=1), QuantTensor)
    assert F.avg_pool2d(qt, 3, stride=1, padding=1).bit_width.item() == 8 + 4
    assert type(F.avg_pool2d(qt, 3, padding=1, count_include_pad=False)) is torch.Tensor
    assert type(F.avg_pool2d(qt, 3, ceil_mode=True)) is torch.Tensor
    assert type(F.avg_pool2d(per_channel(zero_point=True)[1], 2)) is torch.Tensor
    assert F.avg_pool1d(qt.flatten(2), 4).is_valid


# ---------------------------------------------------------------- object protocol


def test_copy_pickle_to_detach_clone():
    ints, qt = per_channel(zero_point=True)
    for copied in (copy.deepcopy(qt), pickle.loads(pickle.dumps(qt))):
        assert isinstance(copied, QuantTensor) and copied.is_valid
        assert torch.equal(copied.value, qt.value) and torch.equal(copied.scale, qt.scale)
        assert (copied.signed, copied.training) == (qt.signed, qt.training)
    double = qt.to(torch.float64)
    assert double.dtype == torch.float64 and double.scale.dtype == torch.float64 and double.is_valid
    assert double.to(torch.float32).scale.dtype == torch.float32
    assert qt.to("cpu").scale.device.type == "cpu" and qt.cpu().is_valid
    with pytest.raises(TypeError, match="int"):
        qt.to(torch.int8)
    qt.value.requires_grad_(True)
    assert qt.requires_grad and not qt.detach().requires_grad
    clone = torch.clone(qt)
    assert isinstance(clone, QuantTensor) and clone.value is not qt.value and clone.is_valid


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_moves_metadata():
    _, qt = per_channel()
    moved = qt.cuda()
    assert moved.device.type == "cuda" and moved.scale.device.type == "cuda" and moved.is_valid
    assert F.max_pool2d(moved, 2).is_valid and moved.cpu().scale.device.type == "cpu"


def test_tensor_like_surface():
    _, qt = per_channel()
    assert qt.shape == (2, 3, 4, 4) and qt.size() == (2, 3, 4, 4) and qt.size(1) == 3
    assert qt.dim() == qt.ndim == 4 and qt.numel() == 96 and len(qt) == 2
    assert qt.device == torch.device("cpu") and qt.dtype == torch.float32
    assert qt.signed_t.dtype == torch.bool and not bool(qt.signed_t) and not bool(qt.training_t)
    text = repr(qt)
    assert "(2, 3, 4, 4)" in text and "bit_width=8" in text and "signed=False" in text and "scale=" in text
    assert type(qt > 1.0) is torch.Tensor

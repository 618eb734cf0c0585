"""Adaptive discriminator augmentation: the p controller and the non-leaking augmentation pipeline."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from toon3d.nn.upfirdn2d import upfirdn2d
from toon3d.train.ada import (
    SYM6,
    AdaptiveAugment,
    _downsample2x,
    _upsample2x,
    apply_colour,
    apply_geometric,
    augment,
    sample_colour,
    sample_geometric,
)


def smooth_image(batch: int = 2, size: int = 32) -> torch.Tensor:
    """Band-limited RGB test pattern in [-1,1] (periods of 10+ px), different per sample."""
    y, x = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    images = []
    for b in range(batch):
        r = torch.sin(x / 3 + b) + 0.3 * torch.cos(y / 5)
        g = torch.cos((x + y) / 4 - b)
        blue = 0.8 * torch.sin(y / 2.5 + 0.5 * b)
        images.append(torch.stack([r, g, blue]) * 0.7)
    return torch.stack(images)


def matrices(m: list[list[float]], batch: int) -> torch.Tensor:
    return torch.tensor(m, dtype=torch.float64).expand(batch, 3, 3).clone()


# --- augment --------------------------------------------------------------------------------


def test_p0_returns_the_input_untouched_without_drawing():
    img = smooth_image()
    gen = torch.Generator().manual_seed(3)
    before = gen.get_state()
    out, (G, C) = augment(img, 0.0, gen)
    assert out is img  # no filtering at all, so colour statistics are preserved exactly
    assert torch.equal(G, torch.eye(3).expand(2, 3, 3)) and torch.equal(C, torch.eye(4).expand(2, 4, 4))
    assert torch.equal(gen.get_state(), before)


def test_p1_changes_every_image():
    img = smooth_image(batch=4)
    out, (G, C) = augment(img, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and torch.isfinite(out).all()
    assert G.shape == (4, 3, 3) and C.shape == (4, 4, 4)
    assert ((out - img).abs().flatten(1).mean(1) > 0.05).all()


def test_seeded_generator_makes_augment_deterministic():
    img = smooth_image(batch=3, size=16)
    a, (Ga, Ca) = augment(img, 0.7, torch.Generator().manual_seed(11))
    b, (Gb, Cb) = augment(img, 0.7, torch.Generator().manual_seed(11))
    c, _ = augment(img, 0.7, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and torch.equal(Ga, Gb) and torch.equal(Ca, Cb)
    assert not torch.equal(a, c)


def test_returned_matrices_reproduce_the_output():
    img = smooth_image(batch=3)
    out, (G, C) = augment(img, 1.0, torch.Generator().manual_seed(5))
    again = apply_colour(apply_geometric(img, G.double()), C.double())
    torch.testing.assert_close(again, out, atol=1e-4, rtol=0)


def test_probability_must_lie_in_unit_interval():
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        augment(smooth_image(), 1.5)


def test_gradient_reaches_the_input_and_r1_double_backward_works():
    # R1 as in train.py: D sees augmented reals, the penalty is the gradient w.r.t. the
    # un-augmented image, and its backward must reach D's weights.
    torch.manual_seed(0)
    img = smooth_image(batch=2, size=16).requires_grad_(True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    augmented, _ = augment(img, 1.0, torch.Generator().manual_seed(1))
    pred = F.leaky_relu(F.conv2d(augmented, weight), 0.2).mean(dim=(1, 2, 3))
    (grad,) = torch.autograd.grad(pred.sum(), img, create_graph=True)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    penalty = grad.square().flatten(1).sum(1).mean()
    penalty.backward()
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0


# --- geometric execution --------------------------------------------------------------------


def test_sym6_is_an_orthogonal_lowpass_filter():
    h = torch.tensor(SYM6, dtype=torch.float64)
    assert h.sum().item() == pytest.approx(math.sqrt(2), abs=1e-12)
    for shift in range(-5, 6):
        overlap = sum(h[k] * h[k + 2 * shift] for k in range(12) if 0 <= k + 2 * shift < 12)
        assert float(overlap) == pytest.approx(1.0 if shift == 0 else 0.0, abs=1e-11)


def test_polyphase_resampling_equals_upfirdn2d_definition():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 7, generator=gen)
    taps = torch.randn(12, generator=gen)
    kernel = torch.outer(taps, taps)
    torch.testing.assert_close(_upsample2x(x, taps), upfirdn2d(x, kernel, up=2, pad=(6, 5)), atol=1e-5, rtol=1e-5)
    y = torch.randn(2, 3, 30, 26, generator=gen)
    torch.testing.assert_close(_downsample2x(y, taps), upfirdn2d(y, kernel, down=2), atol=1e-5, rtol=1e-5)


def test_near_identity_warp_reproduces_the_image():
    # Upsampling with SYM6 and downsampling with its mirror is exactly the identity
    # (orthogonal wavelet), so only rounding remains. 1e-9 px keeps the sample from being
    # skipped as an exact identity.
    img = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = apply_geometric(img, matrices([[1, 0, 1e-9], [0, 1, 0], [0, 0, 1]], 2))
    torch.testing.assert_close(out, img, atol=2e-5, rtol=0)


def test_integer_translation_moves_pixels_exactly():
    # Coordinates are centred pixels with G mapping input to output: +3 in x moves content
    # right by 3 pixels, -2 in y moves it up by 2. Full-band noise: any half-pixel slip shows.
    img = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = apply_geometric(img, matrices([[1, 0, 3], [0, 1, -2], [0, 0, 1]], 2))
    torch.testing.assert_close(out[:, :, :-2, 3:], img[:, :, 2:, :-3], atol=2e-5, rtol=0)


def test_xflip_and_rot90_match_torch_up_to_filter_error():
    # SYM6 is not symmetric (group delay 5.10 taps, not 5.5): after a mirror the up and down
    # filters no longer cancel and the result sits ~0.4 px off, as in the references. On
    # this smooth pattern (amplitude ~0.7) that costs < 0.05 mean and < 0.2 max error, while
    # the wrong orientation is off by ~0.4 on average.
    img = smooth_image(batch=2, size=32)
    flipped = apply_geometric(img, matrices([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], 2))
    turned = apply_geometric(img, matrices([[0, -1, 0], [1, 0, 0], [0, 0, 1]], 2))
    # x right and y down: the quarter turn (1,0) -> (0,1) is clockwise, torch's k = -1.
    for out, expected, wrong in [(flipped, img.flip(3), img), (turned, torch.rot90(img, -1, (2, 3)), img)]:
        err = (out - expected).abs()
        assert err.mean() < 0.05 and err.max() < 0.2
        assert (out - wrong).abs().mean() > 0.3


def test_identity_samples_are_left_alone():
    img = smooth_image(batch=3)
    G = matrices([[1, 0, 0], [0, 1, 0], [0, 0, 1]], 3)
    G[1] = torch.tensor([[1.0, 0, 0.5], [0, 1, 0], [0, 0, 1]])
    out = apply_geometric(img, G)
    assert torch.equal(out[0], img[0]) and torch.equal(out[2], img[2])
    assert not torch.equal(out[1], img[1])


def test_sampled_warps_are_identity_at_p0_and_bounded_integer_translations():
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_geometric(8, 32, 32, 0.0, gen), torch.eye(3, dtype=torch.float64).expand(8, 3, 3))
    G = sample_geometric(256, 32, 32, 1.0, gen)
    assert torch.allclose(G[:, 2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # Determinant = xflip sign · iso scale²: |log2 det| ~ N(0, 2·0.2), so it stays within ±2.
    det = torch.linalg.det(G[:, :2, :2])
    assert (det.abs().log2().abs() < 2).all() and (det < 0).any() and (det > 0).any()


# --- colour ---------------------------------------------------------------------------------


def test_colour_ops_keep_grey_grey_and_p0_is_identity():
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_colour(4, 0.0, gen), torch.eye(4, dtype=torch.float64).expand(4, 4, 4))
    C = sample_colour(64, 1.0, gen)
    grey = torch.linspace(-1, 1, 64, dtype=torch.float64)[:, None, None, None].expand(64, 3, 4, 4)
    out = apply_colour(grey, C)
    # Brightness, contrast and luma flip act along the grey axis; hue rotates about it and
    # saturation scales what is orthogonal to it.
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-9, rtol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], atol=1e-9, rtol=0)
    assert not torch.allclose(out, grey)


def test_apply_colour_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        apply_colour(torch.zeros(2, 1, 8, 8), torch.eye(4).expand(2, 4, 4) * 2)


def test_augmentation_does_not_leak_at_moderate_p():
    # Weak check of "non-leaking": at p = 0.5 the clean image is still the most likely
    # outcome, so the mean of 128 augmented copies of an off-centre blob correlates best
    # (> 0.5) with the blurred original, better than with any other of its 8 flips/turns.
    # (Deterministic seed; at p = 0.9 the same statistic falls to ~0.)
    size = 32
    y, x = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    blob = torch.exp(-((x - 7) ** 2 + (y - 12) ** 2) / (2 * 3.0**2))
    img = (torch.stack([blob, 0.6 * blob, 0.2 * blob]) * 1.6 - 0.8)[None]
    mean = augment(img.expand(128, -1, -1, -1), 0.5, torch.Generator().manual_seed(0))[0].mean(0)

    taps = torch.exp(-torch.arange(-6, 7.0) ** 2 / 8)
    taps = taps / taps.sum()

    def blurred(im: torch.Tensor) -> torch.Tensor:
        padded = F.pad(im, [6] * 4, mode="reflect")
        return upfirdn2d(upfirdn2d(padded, taps[None, :]), taps[:, None])[0]

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
        return float(a @ b / (a.norm() * b.norm()))

    variants = [torch.rot90(im, k, (2, 3)) for im in (img, img.flip(3)) for k in range(4)]
    scores = [correlation(mean, blurred(v)) for v in variants]
    assert scores[0] > 0.5
    assert scores[0] == max(scores) and sorted(scores)[-2] < scores[0] - 0.03


# --- AdaptiveAugment ------------------------------------------------------------------------


def test_p_steps_by_n_over_length_every_update_every_calls():
    ada = AdaptiveAugment(target=0.6, length=1000, update_every=8)
    positive = torch.ones(4, 1)
    for _ in range(7):
        assert ada.tune(positive) == 0.0  # accumulating, no update yet
    # r_t = 1 > 0.6: p rises by N/length with N = 8 calls x 4 predictions.
    assert ada.tune(positive) == pytest.approx(32 / 1000, abs=1e-12)
    assert ada.r_t == 1.0
    for _ in range(8):
        ada.tune(positive)
    assert ada.p == pytest.approx(64 / 1000, abs=1e-12)
    # Three of four positive: r_t = 0.5 < 0.6, so p falls by 32/1000.
    mixed = torch.tensor([[1.0], [2.0], [0.5], [-3.0]])
    for _ in range(8):
        p = ada.tune(mixed)
    assert ada.r_t == pytest.approx(0.5) and p == pytest.approx(32 / 1000, abs=1e-12)


def test_p_is_clamped_to_unit_interval():
    ada = AdaptiveAugment(target=0.6, length=10, update_every=1)
    for _ in range(5):
        assert 0.0 <= ada.tune(torch.ones(16)) <= 1.0
    assert ada.p == 1.0
    for _ in range(5):
        ada.tune(-torch.ones(16))
    assert ada.p == 0.0
    ada.tune(-torch.ones(16))
    assert ada.p == 0.0


def test_state_dict_round_trip_resumes_exactly():
    gen = torch.Generator().manual_seed(0)
    preds = [torch.randn(4, 1, generator=gen) + 1.0 for _ in range(40)]
    reference = AdaptiveAugment(length=200, update_every=8)
    saved = None
    for i, pred in enumerate(preds[:21]):
        reference.tune(pred)
        if i == 12:  # mid-interval: the partial accumulators must survive
            saved = json.loads(json.dumps(reference.state_dict()))
    resumed = AdaptiveAugment(length=200, update_every=8)
    resumed.load_state_dict(saved)
    for pred in preds[13:21]:
        resumed.tune(pred)
    assert resumed.state_dict() == reference.state_dict()
    trail_a = [reference.tune(p) for p in preds[21:]]
    trail_b = [resumed.tune(p) for p in preds[21:]]
    assert trail_a == trail_b and trail_a[-1] > 0


def test_load_state_dict_names_missing_keys():
    with pytest.raises(KeyError, match="sign_sum"):
        AdaptiveAugment().load_state_dict({"p": 0.1, "r_t": 0.0, "count": 0, "calls": 0})


@pytest.mark.parametrize("in_place", [False, True])
def test_reduce_hook_sees_totals_before_the_update(in_place):
    seen = []

    def reduce(t: torch.Tensor):
        # Two ranks that saw the same predictions: all_reduce(SUM) doubles the totals.
        seen.append(t.tolist())
        if in_place:
            t.mul_(2)  # like torch.distributed.all_reduce, which returns None
            return None
        return t * 2

    ada = AdaptiveAugment(target=0.6, length=1000, update_every=2, reduce=reduce)
    ada.tune(torch.ones(3))
    assert seen == []  # one collective per update, not per call
    ada.tune(torch.ones(3))
    assert seen == [[6.0, 6.0]]
    assert ada.p == pytest.approx(12 / 1000, abs=1e-12)

"""Adaptive discriminator augmentation (ADA, Karras et al. 2020) as rosinality's train.py uses it.

Two parts:

* `AdaptiveAugment` tunes the augmentation probability p from the sign of D(real): every
  `update_every` iterations, ``p += sign(r_t - target) * N / length`` with
  ``r_t = mean(sign(D(real)))`` over the N predictions seen, clamped to [0, 1].
* `augment` applies the "non-leaking" pipeline at probability p: geometric ops (xflip,
  rot90, integer translation, isotropic scale, pre-rotation, anisotropic scale,
  post-rotation, fractional translation) composed into one 3x3 matrix per sample and
  executed once (reflect pad, 2x SYM6 upsample, bilinear `grid_sample`, 2x SYM6
  downsample), then colour ops (brightness, contrast, luma flip, hue rotation, saturation)
  composed into one 4x4 matrix per sample. Every op is applied per sample with
  probability p, so for p < 1 the clean image stays the most likely outcome and D cannot
  teach G to produce augmented images.

Conventions. Images are [B,C,H,W] in [-1,1] (the colour ops act around 0, like the
references). Geometric matrices act on *centred pixel coordinates* (x right, y down,
origin at the image centre, one unit per pixel): ``G @ [x_in, y_in, 1] = [x_out, y_out, 1]``.
The references' constants (probabilities, standard deviations, ranges) are kept; the
geometry follows the ADA paper: translations per axis in pixels, rot90 over all four
quarter turns (rosinality's code uses one random offset for both axes, half-pixel
"integer" steps in [-1,1] units, and quarter turns {0, 3} only).

All randomness comes from the `torch.Generator` passed in (parameters are drawn on its
device in float64, CPU by default, then moved to the image's device), so a seeded run is
reproducible and a resumed run repeats the same draws. The result is differentiable with
respect to the input image, double backward included (R1 is taken through the
augmentation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from toon3d.nn.upfirdn2d import upfirdn2d

# Symlet-6 low-pass (scaling) filter, 12 taps summing to sqrt(2): the anti-aliasing filter
# of ADA's geometric ops (stylegan2-ada `wavelets['sym6']`, rosinality `SYM6`). Being an
# orthogonal wavelet, upsampling with it and downsampling with its mirror image is exactly
# the identity when the warp is (tests check the orthogonality).
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

# Augmentation constants of ADA (`AugmentPipe` defaults, 'bgc' pipeline) and of
# rosinality's non_leaking.py, which uses the same values.
XINT_MAX = 0.125          # integer translation: uniform in ±0.125 of the image size, rounded to pixels
SCALE_STD = 0.2           # isotropic scale: log2 standard deviation
ROTATE_MAX = 1.0          # arbitrary rotation: uniform in ±ROTATE_MAX·π (1 = full circle)
ANISO_STD = 0.2           # anisotropic scale: log2 standard deviation
XFRAC_STD = 0.125         # fractional translation: standard deviation, fraction of the image size
BRIGHTNESS_STD = 0.2      # brightness: standard deviation of the added offset ([-1,1] images)
CONTRAST_STD = 0.5        # contrast: log2 standard deviation of the gain
HUE_MAX = 1.0             # hue rotation about the grey axis: uniform in ±HUE_MAX·π
SATURATION_STD = 1.0      # saturation: log2 standard deviation of the chroma gain
# Grey axis of the colour ops: the references use (1,1,1)/sqrt(3), not a luma weighting.
GREY_AXIS = (1 / math.sqrt(3),) * 3

# Input pixels the padded image must extend beyond the sampled region: half the upsampling
# filter's support (12 taps at 2x = 3 input pixels) plus one for the bilinear neighbours.
_SAMPLE_MARGIN = len(SYM6) // 4 + 1


# ---------------------------------------------------------------------------------------
# Adaptive probability
# ---------------------------------------------------------------------------------------


class AdaptiveAugment:
    """ADA's p controller: r_t = mean sign(D(real)); p += sign(r_t - target)·N/length every `update_every` calls.

    N counts predictions (images), so p moves at most 1/length per image whatever the
    interval. The interval counts `tune` calls, i.e. iterations, as in stylegan2-ada;
    rosinality's train.py compares the accumulated *image* count with 8 instead, which for
    batches of 8 or more updates every iteration (same rate per image). With r_t exactly
    on target p stays put. Under DDP the accumulators are per rank between updates; a
    checkpoint saved from one rank restores that rank's partial sums on all of them.
    """

    def __init__(
        self,
        target: float = 0.6,
        length: int = 500_000,
        update_every: int = 8,
        device: torch.device | str = "cpu",
        reduce: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
    ):
        if length <= 0:
            raise ValueError(f"ADA length must be a positive number of images, got {length}")
        if update_every < 1:
            raise ValueError(f"ADA update_every must be >= 1 iteration, got {update_every}")
        self.target = float(target)
        self.length = int(length)
        self.update_every = int(update_every)
        # `reduce` sums the [Σsign, count] tensor over DDP ranks before each update
        # (e.g. `torch.distributed.all_reduce`, in place or returning the result) so that
        # all ranks step p identically.
        self.reduce = reduce
        self.p = 0.0
        self.r_t = 0.0
        # [Σ sign(D(real)), number of predictions] since the last update; kept on the
        # device so `tune` never waits for the accelerator except when p is updated.
        self._sums = torch.zeros(2, device=device)
        self._calls = 0

    @torch.no_grad()
    def tune(self, real_pred: torch.Tensor) -> float:
        """Add one iteration's D(real) logits [B] or [B,1]; every `update_every` calls step p: -> p in [0,1]."""
        self._sums[0] += torch.sign(real_pred.detach()).sum().to(self._sums)
        self._sums[1] += real_pred.numel()
        self._calls += 1
        if self._calls >= self.update_every:
            totals = self._sums.clone()
            if self.reduce is not None:
                reduced = self.reduce(totals)
                totals = reduced if isinstance(reduced, torch.Tensor) else totals
            sign_sum, count = totals.tolist()
            if count > 0:
                self.r_t = sign_sum / count
                step = math.copysign(1.0, self.r_t - self.target) if self.r_t != self.target else 0.0
                self.p = min(1.0, max(0.0, self.p + step * count / self.length))
            self._sums.zero_()
            self._calls = 0
        return self.p

    def state_dict(self) -> dict[str, float | int]:
        """Plain numbers to store in a checkpoint: p, r_t and the partial accumulators."""
        sign_sum, count = self._sums.tolist()
        return {"p": self.p, "r_t": self.r_t, "sign_sum": sign_sum, "count": count, "calls": self._calls}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Restore what `state_dict` returned (exactly: the next `tune` behaves as in the saved run)."""
        missing = {"p", "r_t", "sign_sum", "count", "calls"} - set(state)
        if missing:
            raise KeyError(f"ADA state lacks {sorted(missing)}; pass the dict AdaptiveAugment.state_dict() returned")
        p = float(state["p"])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"ADA state has p={p}, outside [0,1]")
        self.p = p
        self.r_t = float(state["r_t"])
        self._sums = torch.tensor([float(state["sign_sum"]), float(state["count"])],
                                  dtype=self._sums.dtype, device=self._sums.device)
        self._calls = int(state["calls"])


# ---------------------------------------------------------------------------------------
# Random parameters
# ---------------------------------------------------------------------------------------


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=_draw_device(generator), dtype=torch.float64)
    return low + (high - low) * u


def _normal(n: int, std: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, generator=generator, device=_draw_device(generator), dtype=torch.float64) * std


def _gate(n: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    # One Bernoulli(p) per sample and op. Drawn for every op whatever p is, so the stream of
    # draws (and thus the run) does not depend on which ops happened to fire.
    return torch.rand(n, generator=generator, device=_draw_device(generator), dtype=torch.float64) < p


def _eye(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(size, dtype=like.dtype, device=like.device).expand(n, size, size).clone()


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(theta.shape[0], 3, theta)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _quarter_turns(k: torch.Tensor) -> torch.Tensor:
    # Exact entries for multiples of 90 degrees (cos(pi/2) is 6e-17 in floating point).
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=k.device)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64, device=k.device)[k]
    m = _eye(k.shape[0], 3, cos)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def sample_geometric(
    batch: int, height: int, width: int, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random forward warps in centred pixel coordinates, each op with probability p: -> G [B,3,3] float64."""
    n = batch
    zero = torch.zeros(n, dtype=torch.float64, device=_draw_device(generator))
    one = zero + 1
    G = _eye(n, 3, zero)

    # xflip: a fair coin, applied with probability p (so p/2 of the samples are mirrored).
    flip = torch.randint(0, 2, (n,), generator=generator, device=zero.device).to(torch.float64)
    flip = torch.where(_gate(n, p, generator), flip, zero)
    G = _scale2d(1 - 2 * flip, one) @ G

    # rot90: 0..3 quarter turns.
    turns = torch.randint(0, 4, (n,), generator=generator, device=zero.device)
    turns = torch.where(_gate(n, p, generator), turns, torch.zeros_like(turns))
    G = _quarter_turns(turns) @ G

    # Integer translation, a whole number of pixels per axis.
    tx = torch.round(_uniform(n, -XINT_MAX, XINT_MAX, generator) * width)
    ty = torch.round(_uniform(n, -XINT_MAX, XINT_MAX, generator) * height)
    on = _gate(n, p, generator)
    G = _translate2d(torch.where(on, tx, zero), torch.where(on, ty, zero)) @ G

    # Isotropic scale, log-normal in base 2.
    s = torch.exp2(_normal(n, SCALE_STD, generator))
    s = torch.where(_gate(n, p, generator), s, one)
    G = _scale2d(s, s) @ G

    # Pre- and post-rotation each with p_rot, so that P(pre or post) = p.
    p_rot = 1 - math.sqrt(max(0.0, 1 - p))
    theta = _uniform(n, -math.pi * ROTATE_MAX, math.pi * ROTATE_MAX, generator)
    G = _rotate2d(torch.where(_gate(n, p_rot, generator), theta, zero)) @ G

    # Anisotropic scale: stretch x, squeeze y by the same factor (area kept).
    s = torch.exp2(_normal(n, ANISO_STD, generator))
    s = torch.where(_gate(n, p, generator), s, one)
    G = _scale2d(s, 1 / s) @ G

    theta = _uniform(n, -math.pi * ROTATE_MAX, math.pi * ROTATE_MAX, generator)
    G = _rotate2d(torch.where(_gate(n, p_rot, generator), theta, zero)) @ G

    # Fractional translation, normal per axis in units of the image size.
    tx = _normal(n, XFRAC_STD, generator) * width
    ty = _normal(n, XFRAC_STD, generator) * height
    on = _gate(n, p, generator)
    G = _translate2d(torch.where(on, tx, zero), torch.where(on, ty, zero)) @ G
    return G


def _grey_projector(like: torch.Tensor) -> torch.Tensor:
    v = torch.tensor(GREY_AXIS + (0.0,), dtype=like.dtype, device=like.device)
    return torch.outer(v, v)


def sample_colour(batch: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random colour transforms of [-1,1] RGB, each op with probability p: -> C [B,4,4] float64 (C @ [r,g,b,1])."""
    n = batch
    zero = torch.zeros(n, dtype=torch.float64, device=_draw_device(generator))
    one = zero + 1
    eye = _eye(n, 4, zero)
    vv = _grey_projector(zero)
    C = eye.clone()

    # Brightness: add the same offset to r, g, b.
    b = _normal(n, BRIGHTNESS_STD, generator)
    b = torch.where(_gate(n, p, generator), b, zero)
    Cb = eye.clone()
    Cb[:, :3, 3] = b[:, None]
    C = Cb @ C

    # Contrast: scale r, g, b around 0 (mid-grey of [-1,1] images).
    c = torch.exp2(_normal(n, CONTRAST_STD, generator))
    c = torch.where(_gate(n, p, generator), c, one)
    Cc = eye.clone()
    Cc[:, 0, 0], Cc[:, 1, 1], Cc[:, 2, 2] = c, c, c
    C = Cc @ C

    # Luma flip: Householder reflection across the plane orthogonal to the grey axis
    # (negates brightness, keeps chroma), a fair coin applied with probability p.
    flip = torch.randint(0, 2, (n,), generator=generator, device=zero.device).to(torch.float64)
    flip = torch.where(_gate(n, p, generator), flip, zero)
    C = (eye - 2 * vv * flip[:, None, None]) @ C

    # Hue: rotate about the grey axis (Rodrigues' formula).
    theta = _uniform(n, -math.pi * HUE_MAX, math.pi * HUE_MAX, generator)
    theta = torch.where(_gate(n, p, generator), theta, zero)[:, None, None]
    vx, vy, vz = GREY_AXIS
    cross = torch.tensor([[0.0, -vz, vy, 0.0], [vz, 0.0, -vx, 0.0], [-vy, vx, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                         dtype=torch.float64, device=zero.device)
    e3 = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64, device=zero.device))
    rot = torch.cos(theta) * e3 + torch.sin(theta) * cross + (1 - torch.cos(theta)) * vv
    rot[:, 3, 3] = 1
    C = rot @ C

    # Saturation: scale the chroma (the part orthogonal to the grey axis).
    s = torch.exp2(_normal(n, SATURATION_STD, generator))
    s = torch.where(_gate(n, p, generator), s, one)[:, None, None]
    # Written as I + (s - 1)(I - vvᵀ) so that s = 1 gives the identity exactly.
    C = (eye + (s - 1) * (eye - vv)) @ C
    return C


# ---------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------


def _filters(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.tensor(SYM6, dtype=like.dtype, device=like.device)
    h = h / h.sum()
    # Upsampling filter with gain 2 per axis (zero insertion halves the mean); the
    # downsampling filter is its mirror image, so up then down is h convolved with its own
    # reverse: a zero-phase half-band filter.
    return 2 * h, torch.flip(h, [0])


def _upsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    # Equals upfirdn2d(x, outer(taps, taps), up=2, pad=(k/2, k/2 - 1)), computed per
    # polyphase component: even output samples use the odd taps, odd ones the even taps,
    # each an ordinary FIR at the input rate. Same numbers, a quarter of the work, and a
    # backward pass several times faster on CPU than the strided transposed convolution.
    assert len(taps) % 4 == 0, "polyphase pads below are derived for 4k taps (SYM6 has 12)"
    half = len(taps) // 2
    phases = ((taps[1::2], (half // 2, half - 1 - half // 2)), (taps[0::2], (half // 2 - 1, half - half // 2)))
    rows = []
    for ky, pad_y in phases:
        cols = [upfirdn2d(x, torch.outer(ky, kx), pad=(*pad_x, *pad_y)) for kx, pad_x in phases]
        rows.append(torch.stack(cols, dim=-1).flatten(-2))
    return torch.stack(rows, dim=-2).flatten(-3, -2)


def _downsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    # Equals upfirdn2d(x, outer(taps, taps), down=2) (no padding), per polyphase component:
    # even input samples meet the odd taps, odd ones the even taps.
    phases = ((0, taps[1::2]), (1, taps[0::2]))
    out = 0
    for oy, ky in phases:
        for ox, kx in phases:
            out = out + upfirdn2d(x[:, :, oy::2, ox::2], torch.outer(ky, kx))
    return out


def _is_identity(M: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return (M == eye).flatten(1).all(dim=1)


def _warp(img: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    b, c, h, w = img.shape
    taps = len(SYM6)
    G_inv = torch.linalg.inv(G.to(torch.float64))

    # Output canvas at 2x with (taps - 2) extra samples so that a valid (unpadded) 2x
    # downsample returns exactly [H,W]. Canvas sample n sits at output pixel
    # (n - (taps - 1)/2)/2, which makes affine_grid's normalised coordinate u map to
    # centred output pixels as u·N/4 (N the canvas size).
    canvas_h, canvas_w = 2 * h + taps - 2, 2 * w + taps - 2
    from_canvas = torch.diag(torch.tensor([canvas_w / 4, canvas_h / 4, 1.0], dtype=torch.float64,
                                          device=G.device))

    # Reflect-pad the input so every sampled point, with the filters' support, lies inside
    # it; one pad for the batch. Reflect padding cannot exceed the size - 1, beyond that
    # grid_sample reads zeros (as in the references).
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
                           dtype=torch.float64, device=G.device).T
    reach = (G_inv @ from_canvas @ corners)[:, :2]  # [B, xy, corner] in centred input pixels
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64, device=G.device)
    limit = 2 * centre  # the largest reflect padding: size - 1
    before = (_SAMPLE_MARGIN - centre - reach.amin(dim=(0, 2))).clamp(min=0).ceil().minimum(limit)
    after = (_SAMPLE_MARGIN - centre + reach.amax(dim=(0, 2))).clamp(min=0).ceil().minimum(limit)
    px0, py0 = before.to(torch.int64).tolist()
    px1, py1 = after.to(torch.int64).tolist()
    padded = F.pad(img, [px0, px1, py0, py1], mode="reflect")
    ph, pw = padded.shape[2], padded.shape[3]

    # 2x upsampling; sample j of the result sits at padded-input pixel (j - 0.5)/2.
    h_up, h_down = _filters(img)
    up = _upsample2x(padded, h_up)

    # grid_sample's normalised g (align_corners=False) on `up` is centred input pixel
    # g·W'/2 + (px1 - px0)/2; invert that and chain: canvas -> output -> input -> g.
    to_grid = torch.tensor([[2 / pw, 0.0, (px0 - px1) / pw], [0.0, 2 / ph, (py0 - py1) / ph], [0.0, 0.0, 1.0]],
                           dtype=torch.float64, device=G.device)
    theta = (to_grid @ G_inv @ from_canvas)[:, :2].to(img.dtype).to(img.device)
    grid = F.affine_grid(theta, [b, c, canvas_h, canvas_w], align_corners=False)
    canvas = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    return _downsample2x(canvas, h_down)


def apply_geometric(img: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Warp img [B,C,H,W] by forward matrices G [B,3,3] (centred pixels) with SYM6 anti-aliasing: -> [B,C,H,W]."""
    if img.ndim != 4 or G.shape != (img.shape[0], 3, 3):
        raise ValueError(f"apply_geometric expects img [B,C,H,W] and G [B,3,3], got {tuple(img.shape)} "
                         f"and {tuple(G.shape)}")
    moved = (~_is_identity(G)).nonzero().flatten()
    if moved.numel() == 0:
        return img
    # Samples whose warp is the identity are left untouched (the up/down filter pair
    # would reproduce them to rounding error anyway).
    idx = moved.to(img.device)
    return img.index_copy(0, idx, _warp(img.index_select(0, idx), G[moved]))


def apply_colour(img: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Apply colour matrices C [B,4,4] to RGB img [B,3,H,W] in [-1,1]: -> [B,3,H,W] (not clamped)."""
    if img.ndim != 4 or img.shape[1] != 3 or C.shape != (img.shape[0], 4, 4):
        raise ValueError(f"apply_colour expects RGB img [B,3,H,W] and C [B,4,4], got {tuple(img.shape)} "
                         f"and {tuple(C.shape)}")
    if bool(_is_identity(C).all()):
        return img
    C = C.to(img.dtype).to(img.device)
    return torch.einsum("bij,bjhw->bihw", C[:, :3, :3], img) + C[:, :3, 3, None, None]


def augment(
    img: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """ADA at probability p of RGB img [B,3,H,W] in [-1,1]: -> (augmented [B,3,H,W], (G [B,3,3], C [B,4,4]))."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability must be in [0,1], got {p}")
    b, _, h, w = img.shape
    if p == 0.0:
        # Cheap path: no draws, no filtering; the image itself comes back.
        eye = torch.eye(4, device=img.device, dtype=img.dtype)
        return img, (eye[:3, :3].expand(b, 3, 3).clone(), eye.expand(b, 4, 4).clone())
    G = sample_geometric(b, h, w, p, generator)
    C = sample_colour(b, p, generator)
    out = apply_colour(apply_geometric(img, G), C)
    return out, (G.to(img.dtype).to(img.device), C.to(img.dtype).to(img.device))

"""SIDE / MAD exactly as Unsup3d (§7.5)."""

import math

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.metrics.depth_metrics import (depth_scores, erode_mask, evaluation_mask,
                                          gt_depth_from_synface_png, mad, side)
from toon3d.shape.camera import intrinsics, normals_from_depth


def test_erosion_is_3x3_average_pool_above_0_99():
    mask = torch.zeros(1, 7, 7)
    mask[0, 1:6, 1:6] = 1
    eroded = erode_mask(mask)
    expected = torch.zeros(1, 7, 7)
    expected[0, 2:5, 2:5] = 1
    assert torch.equal(eroded, expected)
    # Zero padding: a full mask loses its 1-px border.
    full = erode_mask(torch.ones(1, 5, 5))
    assert full[0, 0].sum() == 0 and full[0, 1:4, 1:4].min() == 1
    # One missing pixel removes its whole 3x3 neighbourhood (8/9 = 0.89 < 0.99).
    holed = torch.ones(1, 9, 9)
    holed[0, 4, 4] = 0
    assert erode_mask(holed)[0, 3:6, 3:6].sum() == 0


def test_evaluation_mask_uses_gt_below_its_max_and_pred_mask():
    gt = torch.full((1, 8, 8), 1.1)
    gt[0, 1:7, 1:7] = 1.0
    mask = evaluation_mask(gt)
    assert mask.sum() == 16 and mask[0, 2:6, 2:6].min() == 1
    pred = torch.ones(1, 8, 8)
    pred[0, :, 4:] = 0
    # The eroded prediction keeps columns 1-2; with the eroded GT (rows/cols 2-5) only column 2 stays.
    both = evaluation_mask(gt, pred)
    assert both.sum() == 4 and both[0, 2:6, 2].min() == 1


def test_evaluation_mask_background_is_the_batch_max_like_unsup3d():
    # Image 0 has a background at 1.1; image 1 is all foreground (no pixel at the batch max).
    gt = torch.full((2, 8, 8), 1.1)
    gt[0, 1:7, 1:7] = 1.0
    gt[1] = 0.95
    gt[1, 3:5, 3:5] = 1.05  # image 1's own maximum, still below the batch maximum
    batch = evaluation_mask(gt)
    torch.testing.assert_close(batch, evaluation_mask(gt, gt_max="batch"))
    # Unsup3d (batch max): image 1 is foreground everywhere; only the zero-padded border erodes.
    assert batch[1].sum() == 36 and batch[1, 1:7, 1:7].min() == 1
    assert batch[0].sum() == 16
    # Per image: image 1's own farthest pixels become "background" and their neighbourhood goes.
    image = evaluation_mask(gt, gt_max="image")
    assert image[1, 2:6, 2:6].sum() == 0 and image[1].sum() == 36 - 16
    torch.testing.assert_close(image[0], batch[0])
    with pytest.raises(Toon3dError, match="gt_max"):
        evaluation_mask(gt, gt_max="pixel")


def test_depth_scores_passes_the_gt_max_rule():
    size = 8
    K = intrinsics(size)
    gt = torch.full((2, size, size), 1.1)
    gt[0, 1:7, 1:7] = 1.0
    gt[1] = 0.95
    gt[1, 3:5, 3:5] = 1.05
    pred = torch.ones(2, 1, size, size)
    assert scores_mask_sum(depth_scores(gt, gt, K, pred_mask=pred)) == 16 + 36
    assert scores_mask_sum(depth_scores(gt, gt, K, pred_mask=pred, gt_max="image")) == 16 + 20


def scores_mask_sum(scores):
    return scores["mask"].sum().item()


def test_side_is_scale_invariant_and_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 10, 10, generator=g) * 0.2 + 0.9
    mask = torch.ones(2, 10, 10)
    for c in (0.5, 1.0, 3.0):
        torch.testing.assert_close(side(c * gt, gt, mask), torch.zeros(2), atol=1e-6, rtol=0)
    pred = gt * torch.exp(0.01 * torch.randn(2, 10, 10, generator=g))
    diff = (pred.log() - gt.log()).flatten(1)
    torch.testing.assert_close(side(pred, gt, mask), diff.std(1, unbiased=False))


def test_mad_of_identical_normals_is_zero_and_tilted_plane_is_theta():
    size = 16
    K = intrinsics(size, dtype=torch.float64)
    frontal = torch.ones(1, size, size, dtype=torch.float64)
    n = normals_from_depth(frontal, K)
    mask = torch.ones(1, size, size, dtype=torch.float64)
    assert mad(n, n, mask).item() == pytest.approx(0.0, abs=1e-6)
    theta = 25.0
    # Plane z = 1 + tanθ·x: along the ray (a, b, 1), z = 1 / (1 − a·tanθ); normal tilted by θ.
    a = (torch.arange(size, dtype=torch.float64) - K[0, 2]) / K[0, 0]
    tilted = (1.0 / (1.0 - a * math.tan(math.radians(theta)))).expand(1, size, size)
    inner = torch.zeros(1, size, size, dtype=torch.float64)
    inner[:, 1:-1, 1:-1] = 1  # the 1-px normal border is (0,0,1) by convention
    score = mad(normals_from_depth(tilted, K), n, inner)
    assert score.item() == pytest.approx(theta, abs=1e-6)


def test_depth_scores_protocol_on_a_perfect_prediction():
    size = 16
    K = intrinsics(size)
    gt = torch.full((1, size, size), 1.1)
    gt[0, 2:14, 2:14] = 1.0 - 0.01 * torch.rand(12, 12, generator=torch.Generator().manual_seed(2))
    scores = depth_scores(gt * 1.05, gt, K, pred_mask=torch.ones(1, 1, size, size))
    assert scores["side"].item() == pytest.approx(0.0, abs=1e-6)
    assert scores["mad_deg"].item() == pytest.approx(0.0, abs=1e-2)
    torch.testing.assert_close(scores["side_x100"], scores["side"] * 100)


def test_synface_gt_mapping():
    torch.testing.assert_close(gt_depth_from_synface_png(torch.tensor([[[0.0, 1.0, 0.5]]])),
                               torch.tensor([[[1.1, 0.9, 1.0]]]))


def test_bad_inputs():
    with pytest.raises(Toon3dError, match="differ in shape"):
        side(torch.ones(1, 4, 4), torch.ones(1, 5, 5), torch.ones(1, 4, 4))
    with pytest.raises(Toon3dError, match="empty"):
        side(torch.ones(1, 4, 4), torch.ones(1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(Toon3dError, match="NaN"):
        side(torch.full((1, 4, 4), float("nan")), torch.ones(1, 4, 4), torch.ones(1, 4, 4))

"""Distilling the per-image ellipsoid prior into the depth net (toon3d.shape.pretrain_depth, train-shape-depth)."""

from __future__ import annotations

import pytest
import torch

from shape_fakes import STYLE_DIM, one_line_error, tiny_gan
from toon3d.errors import Toon3dError
from toon3d.shape.networks import ShapeNets
from toon3d.shape.pretrain_depth import DepthPriorConfig, distill_depth_prior, draw_latents, prior_targets
from toon3d.shape.prior import ellipsoid_depth, representable_shift
from toon3d.shape.settings import preset


def _mask(images: torch.Tensor) -> torch.Tensor:
    """An image-dependent 'parser': a box whose width follows the image's mean red value."""
    b, _, s, _ = images.shape
    out = torch.zeros(b, 1, s, s)
    for i, image in enumerate(images):
        half = int(s * (0.2 + 0.15 * (float(image[0].mean()) + 1) / 2))
        out[i, 0, s // 4: s - s // 8, s // 2 - half: s // 2 + half] = 1.0
    return out


def _setup(seed: int = 0):
    g, _ = tiny_gan()
    settings = preset("tiny", prior_centre=True, prior_near=0.95)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = ShapeNets(settings.net_config(STYLE_DIM))
    with torch.no_grad():
        mean = g.mapping(torch.randn(64, STYLE_DIM, generator=torch.Generator().manual_seed(3))).mean(0, keepdim=True)
    return g, settings, nets, mean


def test_targets_are_each_images_shifted_ellipsoid():
    settings = preset("tiny", prior_centre=True)
    masks = _mask(torch.stack([torch.full((3, 32, 32), -1.0), torch.full((3, 32, 32), 1.0)]))
    targets = prior_targets(masks, settings)
    for mask, target in zip(masks, targets):
        plain = ellipsoid_depth(mask[0] >= settings.prior_mask_threshold, settings.prior_kind, settings.prior_near,
                                settings.prior_far, settings.prior_radius)
        shift = representable_shift(plain, settings.min_depth, settings.max_depth)
        assert torch.allclose(target, plain + shift, atol=1e-6)
    assert not torch.allclose(targets[0], targets[1])  # the prior follows the mask


def test_only_depth_learns_and_fits_each_images_prior():
    g, settings, nets, mean = _setup()
    before = {k: v.clone() for k, v in nets.state_dict().items()}
    history = distill_depth_prior(nets, g, mean, settings, _mask, DepthPriorConfig(iters=60, batch=4, lr=3e-3),
                                  progress=False)
    after = nets.state_dict()
    changed = {k.split(".", 1)[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"depth"}
    assert all(p.grad is None for p in g.parameters())
    assert all(p.requires_grad for p in nets.parameters())  # the frozen nets are released again
    first = sum(h["mse"] for h in history[:5]) / 5
    last = sum(h["mse"] for h in history[-5:]) / 5
    assert last < 0.5 * first


def test_resume_after_a_kill_is_bit_identical(tmp_path):
    config = DepthPriorConfig(iters=4, batch=2, checkpoint_every=2)
    g, settings, nets, mean = _setup()
    distill_depth_prior(nets, g, mean, settings, _mask, config, checkpoint_dir=tmp_path / "a", progress=False)

    def kill(it, _losses):
        if it == 2:
            raise KeyboardInterrupt("killed")

    g2, _, nets2, _ = _setup()
    with pytest.raises(KeyboardInterrupt):
        distill_depth_prior(nets2, g2, mean, settings, _mask, config, checkpoint_dir=tmp_path / "b",
                            progress=False, log=kill)
    g3, _, nets3, _ = _setup()
    distill_depth_prior(nets3, g3, mean, settings, _mask, config, checkpoint_dir=tmp_path / "b", progress=False)
    for key, value in nets.depth.state_dict().items():
        assert torch.equal(value, nets3.depth.state_dict()[key]), key
    other = DepthPriorConfig(iters=4, batch=2, checkpoint_every=2, lr=5e-3)
    assert "other settings" in one_line_error(distill_depth_prior, nets3, g3, mean, settings, _mask, other,
                                              checkpoint_dir=tmp_path / "b", progress=False)


def test_latents_and_bad_config():
    g, _, _, mean = _setup()
    a = draw_latents(g, mean, 0, 5, 3, 1.0)
    assert a.shape == (3, STYLE_DIM) and torch.equal(a, draw_latents(g, mean, 0, 5, 3, 1.0))
    assert not torch.equal(a, draw_latents(g, mean, 0, 6, 3, 1.0))
    with pytest.raises(Toon3dError, match="batch must be at least 1"):
        DepthPriorConfig(batch=0).check()
    with pytest.raises(Toon3dError, match="truncation"):
        DepthPriorConfig(truncation=0).check()


def test_cli_trains_only_d_of_the_shipped_reconstructor_and_refuses_bad_folders(tmp_path, capsys):
    import json

    from toon3d.cli import main
    from toon3d.shape.instant import builtin_shape_path, load_shape_model

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    for argv, message in [(["--out", str(tmp_path / "new"), "--resume"], "nothing to resume"),
                          (["--out", str(tmp_path / "used")], "not empty"),
                          (["--out", str(tmp_path / "n2"), "--batch", "0"], "batch must be at least 1")]:
        code = main(["train-shape-depth", "--ckpt", "toon", "--reconstructor", "toon", *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    out = tmp_path / "run"
    assert main(["train-shape-depth", "--ckpt", "toon", "--reconstructor", "toon", "--out", str(out), "--iters", "2",
                 "--batch", "2", "--threads", "1", "--no-progress"]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["mask"]["source"] == "synface" and record["prior"]["prior_centre"] is True
    shipped, _, meta = load_shape_model(builtin_shape_path("toon"))
    trained, _, meta2 = load_shape_model(out / "model.safetensors")
    assert meta2["encoder_loaded"] and meta2["depth"]["iters"] == 2
    for part in ("albedo", "view", "light", "encoder"):
        ours, theirs = getattr(trained, part).state_dict(), getattr(shipped, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), part
    assert any(not torch.equal(v, shipped.depth.state_dict()[k]) for k, v in trained.depth.state_dict().items())

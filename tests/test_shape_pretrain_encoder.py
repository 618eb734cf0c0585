"""Pretraining the latent encoder E over generator images (toon3d.shape.pretrain_encoder) and shipping it."""

from __future__ import annotations

import pytest
import torch

from shape_fakes import STYLE_DIM, TinyPerceptual, one_line_error, tiny_gan
from toon3d.errors import Toon3dError
from toon3d.shape.instant import load_shape_model, save_shape_model
from toon3d.shape.networks import ShapeNets
from toon3d.shape.pretrain_encoder import EncoderPretrainConfig, draw_latent, pretrain_encoder
from toon3d.shape.settings import preset, without


def _setup(seed: int = 0):
    g, d = tiny_gan()
    settings = without(preset("tiny", perceptual="none"), identity=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = ShapeNets(settings.net_config(STYLE_DIM))
    with torch.no_grad():
        mean = g.mapping(torch.randn(64, STYLE_DIM, generator=torch.Generator().manual_seed(3))).mean(0, keepdim=True)
    return g, d, settings, nets, mean


def test_only_the_encoder_learns_and_the_step2_loss_falls():
    g, d, settings, nets, mean = _setup()
    before = {k: v.clone() for k, v in nets.state_dict().items()}
    config = EncoderPretrainConfig(iters=30, batch=2, lr=3e-3)
    history = pretrain_encoder(nets, g, mean, settings, config, discriminator=d, progress=False)
    after = nets.state_dict()
    changed = {k.split(".", 1)[0] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"encoder"}
    assert all(p.grad is None for p in g.parameters()) and all(p.grad is None for p in d.parameters())
    first = sum(h["total"] for h in history[:5]) / 5
    last = sum(h["total"] for h in history[-5:]) / 5
    assert last < first


def test_resume_after_a_kill_is_bit_identical(tmp_path):
    config = EncoderPretrainConfig(iters=4, batch=2, checkpoint_every=2)
    g, d, settings, nets, mean = _setup()
    pretrain_encoder(nets, g, mean, settings, config, discriminator=d, checkpoint_dir=tmp_path / "a", progress=False)

    def kill(it, _losses):
        if it == 2:
            raise KeyboardInterrupt("killed")

    g2, d2, _, nets2, _ = _setup()
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(nets2, g2, mean, settings, config, discriminator=d2, checkpoint_dir=tmp_path / "b",
                         progress=False, log=kill)
    g3, d3, _, nets3, _ = _setup()
    pretrain_encoder(nets3, g3, mean, settings, config, discriminator=d3, checkpoint_dir=tmp_path / "b",
                     progress=False)
    for key, value in nets.encoder.state_dict().items():
        assert torch.equal(value, nets3.encoder.state_dict()[key]), key
    other = EncoderPretrainConfig(iters=4, batch=2, checkpoint_every=2, lr=5e-3)
    assert "other settings" in one_line_error(pretrain_encoder, nets3, g3, mean, settings, other, discriminator=d3,
                                              checkpoint_dir=tmp_path / "b", progress=False)


def test_the_perceptual_substitute_stands_in_for_a_missing_discriminator():
    g, _, settings, nets, mean = _setup()
    settings = preset("tiny", perceptual="dlib", dis_features="perceptual", identity=False)
    history = pretrain_encoder(nets, g, mean, settings, EncoderPretrainConfig(iters=2, batch=2),
                               perceptual=TinyPerceptual(), progress=False)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["total"])) for h in history)


def test_latents_are_a_function_of_seed_and_index():
    g, _, _, _, mean = _setup()
    a = draw_latent(g, mean, 0, 5, 0.7)
    assert torch.equal(a, draw_latent(g, mean, 0, 5, 0.7))
    assert not torch.equal(a, draw_latent(g, mean, 0, 6, 0.7)) and not torch.equal(a, draw_latent(g, mean, 1, 5, 0.7))
    with pytest.raises(Toon3dError, match="iters must be at least 1"):
        EncoderPretrainConfig(iters=0).check()


def test_a_shape_model_file_carries_the_encoder_and_the_avatar_starts_from_it(tmp_path):
    from toon3d.pipeline_shape import pretrained_encoder_fits

    g, _, settings, nets, _ = _setup()
    with torch.no_grad():
        for p in nets.encoder.parameters():
            p.add_(0.01)
    path = save_shape_model(tmp_path / "with_e.safetensors", nets, settings.geometry(), {"note": "e"},
                            with_encoder=True)
    loaded, _, meta = load_shape_model(path)
    assert meta["encoder_loaded"] and meta["note"] == "e"
    for key, value in nets.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value)
    assert pretrained_encoder_fits((loaded, None, meta, str(path)), g)
    # another generator's W width: a fresh E, not this one
    other, _, meta2 = load_shape_model(path, {"latent_dim": STYLE_DIM * 2})
    assert not meta2["encoder_loaded"] and other.config.latent_dim == STYLE_DIM * 2
    plain = save_shape_model(tmp_path / "plain.safetensors", nets, settings.geometry())
    assert not load_shape_model(plain)[2]["encoder_loaded"]


def test_cli_refuses_a_resume_without_state_and_a_used_folder(tmp_path, capsys):
    from toon3d.cli import main

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    for argv, message in [(["--out", str(tmp_path / "new"), "--resume"], "nothing to resume"),
                          (["--out", str(tmp_path / "used")], "not empty"),
                          (["--out", str(tmp_path / "n2"), "--iters", "0"], "iters must be at least 1")]:
        code = main(["train-shape-encoder", "--ckpt", "cartoon", "--reconstructor", "cartoon", *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "new").exists() and not (tmp_path / "n2").exists()


def test_cli_starts_a_fresh_encoder_unless_asked_to_continue(tmp_path, capsys):
    import json

    from toon3d.cli import main

    from toon3d.shape.instant import builtin_shape_path

    shipped, _, meta = load_shape_model(builtin_shape_path("toon"))
    assert meta["encoder_loaded"]  # the shipped toon reconstructor holds its pretrained E
    for flag, start in [([], "fresh (seed 0)"), (["--continue-encoder"], "the reconstructor's E")]:
        out = tmp_path / ("b" if flag else "a")
        assert main(["train-shape-encoder", "--ckpt", "toon", "--reconstructor", "toon", "--out", str(out),
                     "--iters", "1", "--threads", "1", "--no-progress", *flag]) == 0
        assert json.loads((out / "config.json").read_text())["encoder_start"] == start
        trained, _, meta2 = load_shape_model(out / "model.safetensors")
        assert meta2["encoder_loaded"]
        moved = max((trained.encoder.state_dict()[k] - v).abs().max().item()
                    for k, v in shipped.encoder.state_dict().items())
        assert (moved < 0.05) == bool(flag), moved  # one step from the shipped E stays near it; a fresh E does not
    capsys.readouterr()

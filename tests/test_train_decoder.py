"""SynFace regression decoder: the z -> parameter map, the loss, exact resume, CLI."""

from __future__ import annotations

import pytest
import torch

from toon3d.cli import main
from toon3d.synth.face_params import PARAM_NAMES, PARAM_SPECS, SynFaceParams
from toon3d.synth.latent_params import NUM_LATENT_PARAMS, latent_from_params, params_from_latent
from toon3d.train.decoder import DecoderConfig, DecoderRun, decoder_loss, region_weights

TINY = {"style_dim": 64, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 16}


def test_latent_map_reproduces_synface_distribution():
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    p = params_from_latent(z)
    table = p.to_tensor()
    for k, (name, (_, lo, hi)) in enumerate(PARAM_SPECS.items()):
        assert table[:, k].min() >= lo - 1e-5 and table[:, k].max() <= hi + 1e-5, name
    # the same neutral / glasses frequencies as SynFace's own sampler (5000-face reference)
    ref = SynFaceParams.sample(3000, seed=1).to_tensor()
    for name in ("smile", "mouth_open", "eyes_closed", "brows_raised", "glasses"):
        k = PARAM_NAMES.index(name)
        ours = (table[:, k] == 0).float().mean()
        theirs = (ref[:, k] == 0).float().mean()
        assert abs(ours - theirs) < 0.04, name
    # dimensions past the parameters carry nothing
    z2 = z.clone()
    z2[:, NUM_LATENT_PARAMS:] = torch.randn(20000, 64 - NUM_LATENT_PARAMS)
    assert torch.equal(params_from_latent(z2).to_tensor(), table)


def test_latent_round_trip():
    params = SynFaceParams.sample(64, seed=3)
    z = latent_from_params(params, 64, generator=torch.Generator().manual_seed(0))
    back = params_from_latent(z).to_tensor()
    torch.testing.assert_close(back, params.to_tensor(), atol=2e-4, rtol=0)


def test_region_weights_and_loss():
    seg = torch.zeros(1, 16, 16, dtype=torch.uint8)
    seg[0, 8, 8] = 3  # one eye pixel
    w = region_weights(seg, 6.0)
    assert w[0, 0, 8, 8] == 7.0 and w[0, 0, 7, 7] == 7.0  # dilated by one pixel
    assert w[0, 0, 0, 0] == 1.0
    cfg = DecoderConfig(size=16)
    x = torch.zeros(1, 3, 16, 16)
    assert decoder_loss(x, x, seg, cfg)["total"].item() == 0.0
    y = x.clone()
    y[0, :, 8, 8] = 1.0
    far = x.clone()
    far[0, :, 0, 0] = 1.0
    assert decoder_loss(y, x, seg, cfg)["l1"] > decoder_loss(far, x, seg, cfg)["l1"]  # an eye error costs more


def test_decoder_resume_is_bit_identical(tmp_path):
    cfg = DecoderConfig(size=32, generator=dict(TINY), batch=2, iters=4, eval_count=4, eval_every=2, ckpt_every=2,
                        sample_every=100)
    full = DecoderRun(tmp_path / "a", cfg)
    full.train(progress=False)
    part = DecoderRun(tmp_path / "b", cfg)
    part.train(until=2, progress=False)
    resumed = DecoderRun(tmp_path / "b", cfg)
    resumed.load()
    resumed.train(progress=False)
    for a, b in ((full.g, resumed.g), (full.g_ema, resumed.g_ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full.history[-1]["l1"] == resumed.history[-1]["l1"]


def test_decoder_cli(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-decoder", "--out", str(out), "--size", "32", "--channel-max", "16", "--n-mlp", "2",
            "--iters", "2", "--batch", "2", "--ckpt-every", "1", "--no-progress"]
    assert main(args) == 0
    assert (out / "generator.safetensors").is_file() and (out / "state.pt").is_file()
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args[:-5], "--iters", "3", "--batch", "4", "--ckpt-every", "1", "--no-progress", "--resume"]) == 2
    assert "other settings (batch)" in capsys.readouterr().err
    from toon3d.models import resolve_generator

    loaded = resolve_generator(str(out / "generator.safetensors"))
    assert loaded.meta["recipe"] == "synface-decoder" and loaded.config["size"] == 32


def test_decoder_init_from_a_generator(tmp_path, capsys):
    first = tmp_path / "a"
    args = ["train-decoder", "--size", "32", "--channel-max", "16", "--n-mlp", "2", "--style-dim", "64",
            "--iters", "1", "--batch", "2", "--no-progress"]
    assert main([*args, "--out", str(first)]) == 0
    second = tmp_path / "b"
    assert main([*args, "--out", str(second), "--init", str(first / "generator.safetensors")]) == 0
    other = [a if a != "16" else "32" for a in args]  # --channel-max 32
    assert main([*other, "--out", str(tmp_path / "c"), "--init", str(first / "generator.safetensors")]) == 2
    assert "another architecture (channel_max 16 vs 32)" in capsys.readouterr().err


def _adv_cfg(**kw) -> DecoderConfig:
    base = dict(size=32, generator=dict(TINY), batch=2, iters=4, eval_count=4, eval_every=2, ckpt_every=2,
                sample_every=100, adv_weight=0.1, d_channel_max=16, d_reg_every=2)
    return DecoderConfig(**{**base, **kw})


def test_adversarial_phase_resume_is_bit_identical(tmp_path):
    cfg = _adv_cfg()
    full = DecoderRun(tmp_path / "a", cfg)
    d0 = {k: v.clone() for k, v in full.d.state_dict().items()}
    full.train(progress=False)
    assert any(not torch.equal(d0[k], v) for k, v in full.d.state_dict().items())  # D trained
    part = DecoderRun(tmp_path / "b", cfg)
    part.train(until=2, progress=False)
    resumed = DecoderRun(tmp_path / "b", cfg)
    resumed.load()
    resumed.train(progress=False)
    for a, b in ((full.g, resumed.g), (full.g_ema, resumed.g_ema), (full.d, resumed.d)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_adversarial_term_reaches_g_only_in_the_g_step(tmp_path):
    run = DecoderRun(tmp_path / "a", _adv_cfg())
    run.iteration = 1  # no R1 this step
    d_before = {k: v.clone() for k, v in run.d.state_dict().items()}
    seen = {}
    original = run.d_step

    def d_step(*a):
        logs = original(*a)
        seen.update({k: v.clone() for k, v in run.d.state_dict().items()})  # D after its own step
        return logs

    run.d_step = d_step
    losses = run.step()
    assert "g_adv" in losses and "d_loss" in losses
    assert any(not torch.equal(d_before[k], seen[k]) for k in seen)
    # the G step (regression + adversarial) leaves D exactly as its own step left it
    assert all(torch.equal(seen[k], v) for k, v in run.d.state_dict().items())
    assert all(p.requires_grad for p in run.d.parameters())
    # the adversarial term changes G's update: same batch, weight 0 gives other weights
    plain = DecoderRun(tmp_path / "b", _adv_cfg(adv_weight=1e-12))
    plain.iteration = 1
    plain.step()
    assert any(not torch.allclose(a, b) for a, b in zip(run.g.parameters(), plain.g.parameters()))


def test_adversarial_cli_writes_a_discriminator_and_old_runs_resume(tmp_path):
    out = tmp_path / "run"
    args = ["train-decoder", "--out", str(out), "--size", "32", "--channel-max", "16", "--n-mlp", "2",
            "--iters", "2", "--batch", "2", "--ckpt-every", "1", "--no-progress"]
    assert main([*args, "--adv-weight", "0.1", "--d-channel-max", "16"]) == 0
    from toon3d.stylegan2.checkpoints import load_discriminator

    d = load_discriminator(out / "discriminator.safetensors")
    assert d(torch.zeros(1, 3, 32, 32)).shape == (1, 1)
    # a run saved before the adversarial settings existed resumes (they count as their defaults)
    import json

    from toon3d.train.gan import changed_settings

    saved = json.loads(json.dumps({k: v for k, v in vars(DecoderConfig()).items()
                                   if k not in ("adv_weight", "d_channel_max", "d_lr", "r1", "d_reg_every")}))
    assert changed_settings(json.dumps(saved), DecoderConfig(), ()) == []
    assert changed_settings(json.dumps(saved), DecoderConfig(adv_weight=0.1), ()) == ["adv_weight"]


def test_anchored_targets_are_the_anchored_renders_and_a_setting_of_the_run(tmp_path, capsys):
    from toon3d.synth.synface import SynFaceSettings, render_synface
    from toon3d.train.decoder import synface_targets

    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    image, seg = synface_targets(z, 64, anchor_eyes=True)
    want = render_synface(params_from_latent(z), 64, settings=SynFaceSettings(anchor_eyes=True))
    assert torch.equal(image, want["image"]) and torch.equal(seg, want["seg"])
    assert not torch.equal(image, synface_targets(z, 64)[0])
    out = tmp_path / "run"
    args = ["train-decoder", "--out", str(out), "--size", "32", "--channel-max", "16", "--n-mlp", "2",
            "--batch", "2", "--ckpt-every", "1", "--no-progress"]
    assert main([*args, "--iters", "1", "--anchor-eyes"]) == 0
    assert main([*args, "--iters", "2", "--resume"]) == 2  # the run is anchored; resuming unanchored is refused
    assert "other settings (anchor_eyes)" in capsys.readouterr().err


def test_class_balanced_loss_weighs_each_class_equally():
    from toon3d.train.decoder import class_masks, class_mean

    seg = torch.zeros(1, 16, 16, dtype=torch.uint8)
    seg[0, 8, 8] = 3  # one eye pixel (dilated to 3x3 by class_masks)
    m = class_masks(seg)
    assert m.shape == (1, 8, 16, 16) and m[0, 3].sum() == 9 and m[0, 0].sum() == 255
    cfg = DecoderConfig(size=16, balance="class")
    x = torch.zeros(1, 3, 16, 16)
    assert decoder_loss(x, x, seg, cfg)["total"].item() == 0.0
    eye = x.clone()
    eye[0, :, 8, 8] = 1.0  # 1 of the eye class's 9 pixels wrong
    bg = x.clone()
    bg[0, :, 0:5, 0:5] = 1.0  # 25 of the background's 255 pixels wrong
    # class means: the eye error is 1/9 of its class, the background's 25/255, each averaged over 2 classes
    assert decoder_loss(eye, x, seg, cfg)["l1"].item() == pytest.approx((1 / 9) / 2, abs=1e-6)
    assert decoder_loss(bg, x, seg, cfg)["l1"].item() == pytest.approx((25 / 255) / 2, abs=1e-6)
    # under "pixel" balance the same background error costs ~3.6x the eye error; under "class", less
    pix = DecoderConfig(size=16)
    assert decoder_loss(bg, x, seg, pix)["l1"] > 3 * decoder_loss(eye, x, seg, pix)["l1"]
    assert decoder_loss(bg, x, seg, cfg)["l1"] < decoder_loss(eye, x, seg, cfg)["l1"]
    with pytest.raises(Exception, match="balance must be"):
        DecoderConfig(balance="area").check()


def test_balance_and_edge_weight_are_settings_of_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-decoder", "--out", str(out), "--size", "32", "--channel-max", "16", "--n-mlp", "2",
            "--batch", "2", "--ckpt-every", "1", "--no-progress"]
    assert main([*args, "--iters", "1", "--balance", "class", "--edge-weight", "3"]) == 0
    assert main([*args, "--iters", "2", "--resume", "--edge-weight", "3"]) == 2
    assert "other settings (balance)" in capsys.readouterr().err
    assert main([*args, "--iters", "2", "--resume", "--balance", "class", "--edge-weight", "3"]) == 0


def test_trained_on_anchored_views_reads_shipped_phases_and_run_exports():
    from toon3d.train.decoder import trained_on_anchored_views

    assert trained_on_anchored_views({"phases": [{"what": "decoder", "anchor_eyes": False},
                                                 {"what": "decoder", "anchor_eyes": True}]})
    assert not trained_on_anchored_views({"phases": [{"what": "decoder"}]})
    assert trained_on_anchored_views({"config": {"anchor_eyes": True}})
    assert not trained_on_anchored_views({})

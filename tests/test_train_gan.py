"""Adversarial training and fine-tuning: exact resume, structure loss, freezing, CLI, bad input."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from toon3d.cli import main
from toon3d.data.dataset import FaceDataset
from toon3d.stylegan2.generator import Generator
from toon3d.train.data_stream import ImageStream
from toon3d.train.freeze import discriminator_trainable, generator_trainable
from toon3d.train.gan import GanConfig, GanTrainer
from toon3d.train.structure import base_features, structure_loss

TINY_G = {"style_dim": 32, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 16}
TINY_D = {"channel_multiplier": 1, "channel_max": 16}


@pytest.fixture(scope="module")
def faces64(tmp_path_factory):
    """16 SynFace images at 64 px (the smallest SynFace size)."""
    out = tmp_path_factory.mktemp("data") / "syn64"
    assert main(["data", "synface", "--n", "16", "--size", "64", "--out", str(out)]) == 0
    return out


def tiny_config(**kw) -> GanConfig:
    values = dict(size=32, generator=dict(TINY_G), discriminator=dict(TINY_D), batch=4, iters=6, d_reg_every=2,
                  g_reg_every=2, mixing=0.9, ckpt_every=3, sample_every=1000, log_every=1000, n_sample=4)
    values.update(kw)
    return GanConfig(**values)


def make_trainer(cfg: GanConfig, run_dir, data, init=None) -> GanTrainer:
    stream = ImageStream(FaceDataset(data, size=cfg.size, load_gt=False, seed=cfg.seed), cfg.batch, seed=cfg.seed)
    return GanTrainer(cfg, run_dir, stream, "cpu", init=init)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("augment", [False, True])
def test_resume_after_kill_is_bit_identical(tmp_path, faces64, augment):
    # target -2 < any r_t: p rises at every update, so augmentation (and R1 through it) really runs
    cfg = tiny_config(augment=augment, augment_p=0.0, ada_length=50, ada_every=2, ada_target=-2.0)
    full = make_trainer(cfg, tmp_path / "full", faces64)
    full.train(progress=False)

    killed = make_trainer(cfg, tmp_path / "killed", faces64)
    killed.train(progress=False, stop_after=3)  # checkpoint at 3, then the process "dies"
    resumed = make_trainer(cfg, tmp_path / "killed", faces64)
    resumed.load()
    assert resumed.iteration == 3
    resumed.train(progress=False)

    for name in ("g", "d", "g_ema"):
        assert _same(getattr(full, name).state_dict(), getattr(resumed, name).state_dict()), name
    assert float(full.mean_path_length) == float(resumed.mean_path_length)
    assert full.ada_p == resumed.ada_p
    if augment:
        assert full.ada_p > 0  # real scores above target pushed p up: the adaptive rule ran


def test_training_changes_exactly_the_trainable_parameters(tmp_path, faces64):
    cfg = tiny_config(iters=2, freeze_d=1, freeze_g=1, path_regularize=0.0)
    base = Generator(32, **TINY_G)
    trainer = make_trainer(cfg, tmp_path / "run", faces64, init={"g": base.state_dict(), "g_base": base})
    g0, d0 = copy.deepcopy(trainer.g.state_dict()), copy.deepcopy(trainer.d.state_dict())
    trainer.train(progress=False)
    g1, d1 = trainer.g.state_dict(), trainer.d.state_dict()
    names_g = dict(trainer.g.named_parameters())
    for k in names_g:
        changed = not torch.equal(g0[k], g1[k])
        assert changed == generator_trainable(k, 5, 1), k
    for k, _ in trainer.d.named_parameters():
        changed = not torch.equal(d0[k], d1[k])
        assert changed == discriminator_trainable(k, 5, 1), k


@pytest.mark.parametrize("freeze_noise", [True, False])
def test_freeze_noise_keeps_exactly_the_noise_strengths(tmp_path, faces64, freeze_noise):
    cfg = tiny_config(iters=2, path_regularize=0.0, freeze_noise=freeze_noise)
    base = Generator(32, **TINY_G)
    trainer = make_trainer(cfg, tmp_path / "run", faces64, init={"g": base.state_dict(), "g_base": base})
    g0 = copy.deepcopy(trainer.g.state_dict())
    trainer.train(progress=False)
    g1 = trainer.g.state_dict()
    noise = [k for k, _ in trainer.g.named_parameters() if k.endswith("noise.weight")]
    assert noise and all(torch.equal(g0[k], g1[k]) == freeze_noise for k in noise)
    others = [k for k, _ in trainer.g.named_parameters() if k not in noise]
    assert all(not torch.equal(g0[k], g1[k]) for k in others)


def test_freeze_rules_match_by_index_not_substring():
    # 256 px: log_size 8, num_layers 13; FreezeG=1 trains convs.11, convs.10, to_rgbs.5 only.
    assert generator_trainable("convs.10.conv.weight", 8, 1)
    assert generator_trainable("convs.11.activate.bias", 8, 1)
    assert generator_trainable("to_rgbs.5.bias", 8, 1)
    assert not generator_trainable("convs.1.conv.weight", 8, 1)  # the reference's substring bug would train it
    assert not generator_trainable("style.1.weight", 8, 1)
    assert generator_trainable("style.1.weight", 8, -1)
    # FreezeD=2 at 256: convs.6, convs.5 and the final layers.
    assert discriminator_trainable("convs.6.conv1.0.weight", 8, 2)
    assert discriminator_trainable("convs.5.skip.1.weight", 8, 2)
    assert discriminator_trainable("final_linear.1.weight", 8, 2)
    assert not discriminator_trainable("convs.4.conv1.0.weight", 8, 2)
    assert not discriminator_trainable("convs.0.0.weight", 8, 2)


def _ws_noise(g: Generator, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ws = g.styles_to_latent([g.mapping(torch.randn(batch, g.style_dim, generator=gen)),
                             g.mapping(torch.randn(batch, g.style_dim, generator=gen))], inject_index=3)
    noise = [torch.randn(batch, 1, *b.shape[2:], generator=gen) for b in g.noise_buffers()]
    return ws, noise


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_structure_loss_zero_for_identical_generators(mode):
    torch.manual_seed(0)
    g_base = Generator(32, **TINY_G)
    g_trans = copy.deepcopy(g_base)
    ws, noise = _ws_noise(g_trans, 4, 1)
    _, feats = g_trans.synthesis(ws, noise=noise, return_features=True)
    loss = structure_loss(feats, base_features(g_base, ws, noise, 2), 2, mode)
    assert loss.item() == 0.0


def test_structure_loss_gradients_reach_only_the_low_blocks_of_g_trans():
    torch.manual_seed(0)
    g_base = Generator(32, **TINY_G)
    g_trans = copy.deepcopy(g_base)
    with torch.no_grad():
        for p in g_trans.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ws, noise = _ws_noise(g_trans, 4, 2)
    _, feats = g_trans.synthesis(ws, noise=noise, return_features=True)
    loss = structure_loss(feats, base_features(g_base, ws, noise, 1), 1, "paper")  # k=1: block 8x8 only
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is None for p in g_base.parameters())
    for name, p in g_trans.named_parameters():
        # 8x8 block = conv1 (4x4) feeding convs.0, convs.1; mapping feeds them through ws
        reaches = name.startswith(("input.", "conv1.", "convs.0.", "convs.1.", "style."))
        has = p.grad is not None and p.grad.abs().sum() > 0
        if name.endswith("noise.weight"):
            continue  # noise strengths start at 0; their gradient is legitimately non-zero in the low blocks
        assert has == reaches, name


def test_structure_loss_paper_vs_code_scaling():
    a = {8: torch.ones(1, 2, 8, 8), 16: torch.ones(1, 2, 16, 16)}
    b = {8: torch.zeros(1, 2, 8, 8), 16: 3 * torch.ones(1, 2, 16, 16)}
    assert structure_loss(a, b, 2, "code").item() == pytest.approx(1 + 4)
    assert structure_loss(a, b, 2, "paper").item() == pytest.approx((1 + 4) / 2)


def test_block_features_match_synthesis_taps():
    torch.manual_seed(0)
    g = Generator(32, **TINY_G)
    ws, noise = _ws_noise(g, 2, 3)
    _, feats = g.synthesis(ws, noise=noise, return_features=True)
    mine = g.block_features(ws, noise, 16)
    assert sorted(mine) == [4, 8, 16]
    for r in mine:
        torch.testing.assert_close(mine[r], feats[r], rtol=1e-5, atol=1e-6)


def test_train_and_finetune_cli(tmp_path, faces64):
    run = tmp_path / "base"
    common = ["--batch", "4", "--d-reg-every", "2", "--g-reg-every", "2", "--ckpt-every", "2", "--sample-every", "2",
              "--no-progress", "--device", "cpu"]
    assert main(["train", "--data", str(faces64), "--out", str(run), "--size", "32", "--resize", "--iters", "2",
                 "--channel-max", "16", "--n-mlp", "2", "--style-dim", "32", *common]) == 0
    for f in ("generator.safetensors", "discriminator.safetensors", "rosinality.pt", "state.pt", "config.json"):
        assert (run / f).is_file(), f
    assert list((run / "samples").glob("*.png"))
    # rosinality's checkpoint keys and the generator loader both accept the export
    ckpt = torch.load(run / "rosinality.pt", weights_only=True)
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "latent_avg"} <= set(ckpt)
    assert "style.1.weight" in ckpt["g_ema"] and "convs.0.0.weight" in ckpt["d"]

    ft = tmp_path / "cartoon"
    assert main(["finetune", "--ckpt", str(run / "rosinality.pt"), "--data", str(faces64), "--out", str(ft),
                 "--resize", "--iters", "2", "--preset", "builtin", *common]) == 0
    card = json.loads((ft / "config.json").read_text())
    assert card["config"]["structure_k"] == 3 and card["config"]["freeze_noise"] and card["preset"] == "builtin"
    assert (ft / "generator.safetensors").is_file()
    # a safetensors generator finds its discriminator beside it
    ft2 = tmp_path / "cartoon2"
    assert main(["finetune", "--ckpt", str(run / "generator.safetensors"), "--data", str(faces64), "--out", str(ft2),
                 "--resize", "--iters", "1", "--preset", "seed", "--batch", "2", "--no-progress",
                 "--device", "cpu"]) == 0


def test_bad_input_is_one_line(tmp_path, faces64, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r0"), "--iters", "1"]) == 2
    assert "neither a toon3d dataset" in capsys.readouterr().err
    # a 64 px dataset for a 32 px model
    assert main(["train", "--data", str(faces64), "--out", str(tmp_path / "r1"), "--size", "32", "--iters", "1",
                 "--channel-max", "16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is 64 px but the model is 32 px" in err and err.count("\n") == 1
    assert not (tmp_path / "r1").exists()
    # resume into different settings
    run = tmp_path / "r2"

    def train_args(out, batch, *extra):
        return ["train", "--data", str(faces64), "--out", str(out), "--size", "32", "--resize", "--iters", "1",
                "--channel-max", "16", "--n-mlp", "2", "--style-dim", "32", "--batch", batch, "--no-progress",
                "--device", "cpu", *extra]

    assert main(train_args(run, "4")) == 0
    assert main(train_args(run, "8", "--resume")) == 2
    assert "trained with other settings (batch" in capsys.readouterr().err
    # an odd batch for minibatch-stddev
    assert main(train_args(tmp_path / "r3", "6")) == 2
    assert "divisible by 4" in capsys.readouterr().err
    # a fine-tune whose discriminator has another size
    other_d = tmp_path / "d64.safetensors"
    from toon3d.stylegan2.checkpoints import save_discriminator
    from toon3d.stylegan2.discriminator import Discriminator

    save_discriminator(other_d, Discriminator(64, **TINY_D))
    assert main(["finetune", "--ckpt", str(run / "generator.safetensors"), "--d-ckpt", str(other_d),
                 "--data", str(faces64), "--out", str(tmp_path / "ft"), "--resize", "--iters", "1"]) == 2
    assert "discriminator is 64 px but the generator 32 px" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_with_gloo_stay_in_sync(tmp_path, faces64):
    """torchrun --nproc-per-node 2 on CPU (gloo): every checkpoint checks G, D, G_ema agree across ranks."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "toon3d", "train", "--data", str(faces64), "--out", str(run), "--size", "32", "--resize",
           "--iters", "4", "--batch", "4", "--channel-max", "16", "--n-mlp", "2", "--style-dim", "32",
           "--d-reg-every", "2", "--g-reg-every", "2", "--ckpt-every", "2", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["world"] == 2 and state["iteration"] == 4
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0], state["rng"][1])  # own streams per rank
    # the two ranks read disjoint halves of each epoch
    assert state["streams"][0].tolist() == state["streams"][1].tolist()

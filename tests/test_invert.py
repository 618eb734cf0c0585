"""The projector (rosinality's, on tiny generators), its losses (LPIPS-VGG on a random VGG16 file, the offline face
loss), the W encoder (training resumes exactly), and `toon3d invert` / `toon3d train-encoder` end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.dlib_helpers import needs_dlib, one_line_error
from toon3d.invert import projector as P
from toon3d.invert.encoder import EncoderRun, EncoderTrainConfig, LatentEncoder, load_encoder, save_encoder
from toon3d.invert.losses import PixelLoss
from toon3d.stylegan2.checkpoints import LoadedGenerator, save_generator
from toon3d.stylegan2.generator import Generator

STYLE_DIM = 16


def tiny_generator(seed: int = 0, size: int = 32) -> Generator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(size, style_dim=STYLE_DIM, n_mlp=2, channel_multiplier=1, channel_max=16)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    return g.eval()


def loaded_tiny(seed: int = 0, size: int = 32) -> LoadedGenerator:
    g = tiny_generator(seed, size)
    mean = g.mean_latent(256, generator=torch.Generator().manual_seed(0))
    return LoadedGenerator(g, mean, dict(g.config), f"tiny-{seed}", "mean_latent(256)", "file", {})


def fast(**overrides) -> P.ProjectorSettings:
    return P.ProjectorSettings(**{"n_mean_latent": 512, **overrides})


# ---- the schedule and the noise --------------------------------------------------------------

def test_lr_schedule_is_rosinalitys_formula():
    lrs = P.lr_schedule(1000, 0.1, 0.25, 0.05)
    # lr = 0.1 · (0.5 − 0.5·cos(π·min(1, (1 − t)/0.25))) · min(1, t/0.05), t = i/1000
    expected = {0: 0.0, 25: 0.05, 50: 0.1, 500: 0.1, 800: 0.1 * (0.5 - 0.5 * math.cos(0.8 * math.pi)),
                900: 0.1 * (0.5 - 0.5 * math.cos(0.4 * math.pi)), 999: 0.1 * (0.5 - 0.5 * math.cos(0.004 * math.pi))}
    for step, lr in expected.items():
        assert lrs[step] == pytest.approx(lr, rel=1e-12, abs=1e-15)
    assert lrs[800] == pytest.approx(0.0904508497, rel=1e-9)
    assert lrs[999] == pytest.approx(0.1 * math.sin(0.002 * math.pi) ** 2, rel=1e-9)  # = 3.94779e-6


def test_noise_regularizer_by_hand():
    ones = torch.ones(1, 1, 16, 16)
    # a constant map correlates 1 with its shifts at 16 and at 8 (then stops): 2 levels × 2 directions × 1²
    assert float(P.noise_regularize([ones])) == pytest.approx(4.0)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]).remainder(2).float().mul(2).sub(1)[None, None]
    # ±1 checkerboard: correlation −1 at 16 (adds 2), averages to 0 at 8 (adds 0)
    assert float(P.noise_regularize([checker])) == pytest.approx(2.0)
    # 4×4 maps are used once
    assert float(P.noise_regularize([torch.ones(1, 1, 4, 4)])) == pytest.approx(2.0)
    assert float(P.noise_regularize([ones, checker])) == pytest.approx(6.0)


def test_noise_renormalisation_keeps_unit_variance():
    g = tiny_generator()
    maps = [torch.randn(2, 1, 8, 8) * 3 + 1, torch.rand(2, 1, 16, 16)]
    P.noise_normalize_(maps)
    for m in maps:  # each image's map on its own
        torch.testing.assert_close(m.mean((1, 2, 3)), torch.zeros(2), rtol=0, atol=1e-6)
        torch.testing.assert_close(m.std((1, 2, 3)), torch.ones(2), rtol=0, atol=1e-6)
    target = torch.zeros(1, 3, 32, 32)
    result = P.project(g, target, PixelLoss(target), fast(steps=5))
    for m in result.noises:
        assert float(m.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(m.std()) == pytest.approx(1.0, abs=1e-5)


# ---- the projector on tiny generators ---------------------------------------------------------

@pytest.fixture(scope="module")
def known_target():
    g = tiny_generator()
    with torch.no_grad():
        w_true = g.style(torch.randn(1, STYLE_DIM, generator=torch.Generator().manual_seed(7)))
        noise = [torch.randn(1, 1, *b.shape[2:], generator=torch.Generator().manual_seed(8 + i))
                 for i, b in enumerate(g.noise_buffers())]
        target = g([w_true], input_is_latent=True, noise=noise)[0].clamp(-1, 1)
    return g, w_true, target


def test_loss_falls_and_the_known_w_is_recovered(known_target):
    g, w_true, target = known_target
    result = P.project(g, target, PixelLoss(target), fast(steps=120, noise_regularize=1e3))
    totals = [v[0] for v in result.losses["total"]]
    assert np.mean(totals[-10:]) < 0.5 * np.mean(totals[:10])
    assert result.latent.shape == (1, STYLE_DIM)
    start_error = float((result.start - w_true).norm())
    assert float((result.latent - w_true).norm()) < 0.6 * start_error
    assert float((result.image.clamp(-1, 1) - target).pow(2).mean()) == pytest.approx(totals[-1], rel=0.5)


def test_w_plus_shapes_and_a_given_start(known_target):
    g, w_true, target = known_target
    result = P.project(g, target, PixelLoss(target), fast(steps=3, w_plus=True))
    assert result.latent.shape == (1, g.n_latent, STYLE_DIM) and result.start.shape == result.latent.shape
    assert [tuple(n.shape) for n in result.noises] == [(1, 1, *b.shape[2:]) for b in g.noise_buffers()]
    # one step runs at lr 0: the latent stays at the start, whichever it is
    one = P.project(g, target, PixelLoss(target), fast(steps=1), start=w_true)
    torch.testing.assert_close(one.latent, w_true)
    zero = P.project(g, target, PixelLoss(target), fast(steps=0, w_plus=True), start=w_true)
    torch.testing.assert_close(zero.latent, w_true[:, None].expand(1, g.n_latent, STYLE_DIM))
    with pytest.raises(Exception, match="W\\+ start needs"):
        P.project(g, target, PixelLoss(target), fast(steps=1), start=zero.latent)
    assert "resize" in one_line_error(P.project, g, torch.zeros(1, 3, 16, 16), PixelLoss(target), fast(steps=1))


def test_projection_is_deterministic_and_only_the_variables_move(known_target):
    g, _, target = known_target
    before = {k: v.clone() for k, v in g.state_dict().items()}
    a = P.project(g, target, PixelLoss(target), fast(steps=6, seed=3))
    b = P.project(g, target, PixelLoss(target), fast(steps=6, seed=3))
    torch.testing.assert_close(a.latent, b.latent, rtol=0, atol=0)
    for x, y in zip(a.noises, b.noises):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    for k, v in g.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.requires_grad for p in g.parameters())  # unfrozen again afterwards
    assert a.lrs == P.lr_schedule(6, 0.1, 0.25, 0.05)
    assert a.noise_strengths[0] > a.noise_strengths[-1] >= 0


def test_batched_targets_are_projected_independently(known_target):
    g, _, target = known_target
    other = [target.flip(-1), torch.zeros_like(target)]
    runs = [P.project(g, torch.cat([target, o]), PixelLoss(torch.cat([target, o])), fast(steps=8)) for o in other]
    # the first image's trajectory ignores its neighbour (same random draws, per-image noise terms)
    torch.testing.assert_close(runs[0].latent[0], runs[1].latent[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(runs[0].noises[3][0], runs[1].noises[3][0], rtol=0, atol=1e-5)
    assert not torch.allclose(runs[0].latent[1], runs[1].latent[1])
    assert P.noise_regularize([torch.ones(2, 1, 8, 8)]).shape == (2,)


def test_latent_prior_keeps_the_latent_among_the_generators_codes(known_target):
    g, _, _ = known_target
    unreachable = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    stats = P.latent_statistics(g, 2000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = g.style(torch.randn(2000, STYLE_DIM, generator=torch.Generator().manual_seed(1)))
    assert 0.97 < float((stats.spread(own) <= stats.radius).float().mean()) < 1.0  # the hinge spares 99%
    # start well outside the generator's codes (spread 9 against a radius near 1)
    outside = stats.mean + 3 * stats.dim_std * torch.randn(1, STYLE_DIM, generator=torch.Generator()).sign()
    free = P.project(g, unreachable, PixelLoss(unreachable), fast(steps=40), statistics=stats, start=outside)
    pulled = P.project(g, unreachable, PixelLoss(unreachable), fast(steps=40, latent_prior=1.0), statistics=stats,
                       start=outside)
    assert free.losses["latent_prior"][-1][0] > 1
    assert pulled.losses["latent_prior"][-1][0] < 0.5 * free.losses["latent_prior"][-1][0]
    totals = [free.losses["loss"][i][0] - free.losses["total"][i][0] for i in (0, -1)]
    assert totals == pytest.approx([1e5 * free.losses["noise_reg"][i][0] for i in (0, -1)], rel=1e-5)
    assert "latent_prior" in one_line_error(P.ProjectorSettings(latent_prior=-1.0).check)


def test_images_above_256_are_averaged_down():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    y = P.downsample_to(x, 4)
    torch.testing.assert_close(y[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    assert P.loss_size(1024) == 256 and P.loss_size(64) == 64


# ---- losses ------------------------------------------------------------------------------------

def random_vgg_file(path: Path) -> Path:
    """A randomly initialised VGG16 saved with torchvision's key names (features + classifier)."""
    from toon3d.faces.lpips import VGG16Features

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = VGG16Features()
    state = {k: v for k, v in net.state_dict().items()}
    state.update({"classifier.0.weight": torch.zeros(8, 4), "classifier.0.bias": torch.zeros(8)})
    torch.save(state, path)
    return path


def heads_file(path: Path) -> Path:
    from toon3d import models

    shipped = models.find("lpips_vgg")
    if shipped is not None:  # the real heads, when the lpips wheel is installed
        return shipped
    g = torch.Generator().manual_seed(1)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
                for k, c in enumerate((64, 128, 256, 512, 512))}, path)
    return path


def test_lpips_vgg_from_files(tmp_path):
    from toon3d.faces.lpips import LPIPS_TAPS, load_lpips_vgg

    vgg = random_vgg_file(tmp_path / "vgg16-397923af.pth")
    heads = heads_file(tmp_path / "vgg.pth")
    lpips = load_lpips_vgg(vgg, heads)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    d = lpips(x, y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(lpips(x, x), torch.zeros(2))
    torch.testing.assert_close(lpips(y, x), d)
    # the formula, written out from the state dict: scale, conv+relu stack, taps, channel norm, heads, mean
    state = torch.load(vgg, weights_only=True)
    head = torch.load(heads, map_location="cpu", weights_only=True)

    def taps(img):
        shift, scale = torch.tensor([-.030, -.088, -.188]), torch.tensor([.458, .448, .450])
        h = (img - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
        out, conv = [], [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        for i in range(30):
            if i in conv:
                h = torch.nn.functional.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)
            elif i in (4, 9, 16, 23):
                h = torch.nn.functional.max_pool2d(h, 2)
            else:
                h = h.relu()
            if i in LPIPS_TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    manual = sum((head[f"lin{k}.model.1.weight"] * (a - b).pow(2)).sum(1).mean((1, 2))
                 for k, (a, b) in enumerate(zip(taps(x), taps(y))))
    torch.testing.assert_close(d, manual, rtol=1e-4, atol=1e-6)
    # gradients flow to the image, not the network
    x.requires_grad_(True)
    lpips(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips.parameters())


def test_lpips_errors_say_where_to_get_the_files(tmp_path, monkeypatch):
    from toon3d.faces.lpips import load_lpips_vgg

    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path / "empty"))
    message = one_line_error(load_lpips_vgg, tmp_path / "missing.pth", tmp_path / "vgg.pth")
    assert "download.pytorch.org/models/vgg16-397923af.pth" in message
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    heads = heads_file(tmp_path / "vgg.pth")
    assert "not a torchvision VGG16" in one_line_error(load_lpips_vgg, tmp_path / "partial.pth", heads)


def test_projection_with_lpips_on_a_random_vgg(tmp_path, known_target):
    from toon3d.faces.lpips import load_lpips_vgg
    from toon3d.invert.losses import build_loss

    g, _, target = known_target
    lpips = load_lpips_vgg(random_vgg_file(tmp_path / "vgg.pth"), heads_file(tmp_path / "heads.pth"))
    result = P.project(g, target, build_loss("lpips", target, lpips=lpips), fast(steps=16, noise_regularize=1e3))
    totals = [v[0] for v in result.losses["lpips"]]
    assert np.mean(totals[-4:]) < np.mean(totals[:4])


@needs_dlib
def test_face_loss_terms_and_gradients():
    from toon3d.invert.losses import FaceLossWeights, build_loss

    g = tiny_generator()
    target = torch.rand(1, 3, 32, 32) * 2 - 1
    loss = build_loss("face", target, "synface", face_weights=FaceLossWeights(1.0, 2.0, 3.0))
    same = loss(target)
    for key in ("total", "identity", "features", "pixel"):
        assert float(same[key].abs().max()) < 1e-4, key
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    terms = loss(image)
    torch.testing.assert_close(terms["total"], terms["identity"] + 2 * terms["features"] + 3 * terms["pixel"])
    terms["total"].sum().backward()
    assert image.grad.abs().sum() > 0
    result = P.project(g, target, loss, fast(steps=4))
    assert result.latent.shape == (1, STYLE_DIM)
    # the FFHQ chip comes from a new embedder sharing the network; the caller's keeps its own chip
    from toon3d.invert.losses import embedder_for_layout

    mine = loss.embedder
    before = mine.grid.clone()
    placed = embedder_for_layout(mine, "ffhq")
    assert placed.net is mine.net and torch.equal(mine.grid, before) and not torch.equal(placed.grid, before)


def test_ffhq_chip_grid_sits_where_ffhq_faces_are():
    from toon3d.faces.align import LAYOUTS
    from toon3d.invert.losses import layout_chip_grid
    from toon3d.metrics.face_descriptor import chip_grid

    torch.testing.assert_close(layout_chip_grid(LAYOUTS["synface"].anchors), chip_grid())
    ffhq = layout_chip_grid(LAYOUTS["ffhq"].anchors)
    # FFHQ faces sit lower than SynFace's: the chip's centre moves down
    assert float(ffhq[0, 75, 75, 1]) > float(chip_grid()[0, 75, 75, 1])


# ---- the encoder ---------------------------------------------------------------------------

def tiny_encoder_config(**overrides) -> EncoderTrainConfig:
    return EncoderTrainConfig(**{"batch": 4, "iters": 4, "stats_samples": 256, "eval_count": 8, "eval_every": 2,
                                 "ckpt_every": 2, "encoder": {"channels": [8, 8, 8, 8], "hidden": 16,
                                                              "head_channels": 4}, **overrides})


def test_encoder_resume_after_a_kill_is_exact(tmp_path):
    loaded = loaded_tiny()
    whole = EncoderRun(tmp_path / "whole", loaded, tiny_encoder_config())
    whole.train(progress=False)
    # "killed" after iteration 2: only what state.pt holds survives, in a new process-like object
    first = EncoderRun(tmp_path / "cut", loaded, tiny_encoder_config())
    first.dir.mkdir()
    first.train(until=2, progress=False)  # state.pt written at 2
    first.step()  # iteration 3 ran but was never saved: it dies with the process
    resumed = EncoderRun(tmp_path / "cut", loaded, tiny_encoder_config())
    resumed.load()
    assert resumed.iteration == 2
    resumed.train(progress=False)
    for k, v in whole.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[k], v, rtol=0, atol=0)
    assert resumed.history[-1]["w_error"] == whole.history[-1]["w_error"]
    other = EncoderRun(tmp_path / "cut", loaded, tiny_encoder_config(lr=0.5))
    assert "other settings (lr)" in one_line_error(other.load)
    elsewhere = EncoderRun(tmp_path / "cut", loaded_tiny(seed=1), tiny_encoder_config())
    assert "other generator weights" in one_line_error(elsewhere.load)


@pytest.mark.slow  # three processes, ~30 CPU s; test_encoder_resume_after_a_kill_is_exact covers it in-process
def test_train_encoder_killed_and_resumed_matches_an_uninterrupted_run(tmp_path, tiny_file):
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "toon3d", "train-encoder", "--ckpt", str(tiny_file), "--out", str(out),
                "--iters", "60", "--batch", "2", "--ckpt-every", "1", "--eval-every", "1000", "--threads", "1",
                "--no-progress", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(command(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "cut" / "state.pt").is_file() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "cut" / "encoder.safetensors").exists()  # it died mid-run
    subprocess.run(command(tmp_path / "cut", "--resume"), env=env, check=True, capture_output=True)
    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True)
    a = load_file(str(tmp_path / "cut" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "whole" / "encoder.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_encoder_learns_and_round_trips(tmp_path):
    loaded = loaded_tiny()
    run = EncoderRun(tmp_path / "run", loaded, tiny_encoder_config(iters=40, eval_every=40, ckpt_every=40,
                                                                   batch=16, lr=3e-3))
    before = run.evaluate()["w_error"]
    run.train(progress=False)
    assert run.history[-1]["w_error"] < before
    path = save_encoder(tmp_path / "enc.safetensors", run.encoder, {"generator_fingerprint": "x"}, half=True)
    again, meta = load_encoder(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(again(x), run.encoder(x).detach(), rtol=2e-2, atol=2e-2)
    assert meta == {"generator_fingerprint": "x"}
    assert LatentEncoder(8, 64)(torch.zeros(1, 3, 128, 128)).shape == (1, 8)  # other input sizes resized


# ---- the commands ------------------------------------------------------------------------------

@pytest.fixture
def tiny_file(tmp_path):
    loaded = loaded_tiny()
    return save_generator(tmp_path / "tiny.safetensors", loaded.generator, loaded.mean_latent, {"note": "test"})


def test_cli_invert_and_train_encoder_end_to_end(tmp_path, tiny_file, capsys):
    from toon3d.cli import main
    from toon3d.io.latents import load_latents

    aligned = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(aligned)
    out = tmp_path / "inv"
    argv = ["invert", "--image", str(aligned), "--aligned", "--ckpt", str(tiny_file), "--steps", "5",
            "--loss", "pixel", "--encoder", "none", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["aligned.png", "compare.png", "latent.npy", "latent.pt", "losses.json", "noises.pt",
                     "projected.png"]
    latent = load_latents(out / "latent.pt", dim=STYLE_DIM)
    assert latent.shape == (1, STYLE_DIM)
    record = json.loads((out / "losses.json").read_text())
    assert record["loss"] == "pixel" and record["start"] == "mean" and len(record["per_step"]["total"]) == 5
    assert record["settings"]["latent_prior"] == 10.0  # auto: the tiny toon3d generator is in the SynFace world
    assert record["figures"]["psnr_db"] > 0
    assert Image.open(out / "projected.png").size == (32, 32)
    # generate reads the latent as it is
    assert main(["generate", "--ckpt", str(tiny_file), "--latents", str(out / "latent.pt"), "--space", "w",
                 "--out", str(tmp_path / "gen")]) == 0
    # an encoder for the tiny generator, then an inversion that starts from it
    enc_dir = tmp_path / "enc"
    assert main(["train-encoder", "--ckpt", str(tiny_file), "--out", str(enc_dir), "--iters", "2", "--batch", "2",
                 "--size", "32", "--ckpt-every", "1", "--eval-every", "2", "--no-progress"]) == 0
    out2 = tmp_path / "inv2"
    assert main([*argv[:-4], "--encoder", str(enc_dir / "encoder.safetensors"), "--wplus", "--out", str(out2)]) == 0
    record = json.loads((out2 / "losses.json").read_text())
    assert record["start"].startswith("encoder:")
    assert record["latent_shape"] == [1, tiny_generator().n_latent, STYLE_DIM]
    capsys.readouterr()
    # bad input: one line, nothing written
    assert main([*argv[:-2], "--out", str(tmp_path / "bad"), "--steps", "-1"]) == 2
    assert main([*argv[:-2], "--out", str(tmp_path / "bad"), "--latent-prior", "much"]) == 2
    assert main([*argv[:-4], "--encoder", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "bad")]) == 2
    wrong = save_encoder(tmp_path / "wrong.safetensors", LatentEncoder(8, 32), {})
    assert main([*argv[:-4], "--encoder", str(wrong), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 4 and "predicts 8-d W codes" in err and "not found" in err and "--latent-prior" in err
    assert not (tmp_path / "bad").exists()
    assert main(["train-encoder", "--ckpt", str(tiny_file), "--out", str(enc_dir), "--iters", "2"]) == 2


ASTRONAUT = None
_spec = importlib.util.find_spec("skimage")
if _spec is not None:
    for _root in _spec.submodule_search_locations or []:
        if (Path(_root) / "data/astronaut.png").is_file():
            ASTRONAUT = Path(_root) / "data/astronaut.png"


@needs_dlib
@pytest.mark.skipif(ASTRONAUT is None, reason="scikit-image not installed (astronaut.png)")
def test_cli_invert_aligns_a_photo(tmp_path, tiny_file):
    from toon3d.cli import main

    out = tmp_path / "inv"
    assert main(["invert", "--image", str(ASTRONAUT), "--ckpt", str(tiny_file), "--steps", "2", "--loss", "face",
                 "--encoder", "none", "--device", "cpu", "--out", str(out)]) == 0
    align = json.loads((out / "align.json").read_text())
    assert align["layout"] == "synface" and align["size"] == 32
    record = json.loads((out / "losses.json").read_text())
    assert record["loss"] == "face" and record["figures"]["identity_distance"] > 0
    # a rosinality checkpoint: FFHQ alignment, and rosinality's projector without the latent prior
    g = tiny_generator()
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(STYLE_DIM)}, tmp_path / "ros.pt")
    out = tmp_path / "ros"
    assert main(["invert", "--image", str(ASTRONAUT), "--ckpt", str(tmp_path / "ros.pt"), "--steps", "2",
                 "--loss", "pixel", "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads((out / "align.json").read_text())["layout"] == "ffhq"
    record = json.loads((out / "losses.json").read_text())
    assert record["settings"]["latent_prior"] == 0.0 and record["start"] == "mean"

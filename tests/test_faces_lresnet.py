"""LiftedGAN's LResNet-18: checkpoint layout and safe loading, block numerics, crop, embedding, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.faces.identity import load_identity_embedder
from toon3d.faces.lresnet import (
    CHILDREN,
    IRBlock,
    LResNet18,
    LResNetEmbedder,
    LResNetSettings,
    build_lresnet,
    crop_resize,
    lresnet_state_dict,
)

torch.set_num_threads(1)

from dlib_helpers import one_line_error
from face_net_helpers import randomise as _randomise


@pytest.fixture(scope="module")
def reference() -> LResNet18:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _randomise(LResNet18(), 1)


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory):
    """A file in LiftedGAN's layout: {'model_state_dict': DataParallel keys}, plus an epoch entry."""
    path = tmp_path_factory.mktemp("lresnet") / "lresnet_casia.pth.tar"
    state = {f"module.{k}": v.clone() for k, v in reference.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 30}, path)
    return path


@pytest.fixture(scope="module")
def embedder(checkpoint) -> LResNetEmbedder:
    return load_identity_embedder("lresnet", checkpoint)


def test_state_dict_keys_follow_liftedgan():
    keys = set(LResNet18().state_dict())
    for key in ("conv1.weight", "bn1.running_var", "act_layer.weight", "layer1.0.bn0.weight", "layer1.0.prelu.weight",
                "layer1.1.conv2.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                "layer4.1.bn2.bias", "bn4.weight", "fc5.weight", "fc5.bias", "bn5.running_var"):
        assert key in keys, key
    # layer1 keeps 64 channels at stride 1: no downsample there.
    assert not any(k.startswith("layer1.0.downsample") for k in keys)
    shapes = LResNet18().state_dict()
    assert tuple(shapes["conv1.weight"].shape) == (64, 3, 4, 4)
    assert tuple(shapes["fc5.weight"].shape) == (512, 512 * 8 * 8)
    assert tuple(shapes["layer4.0.downsample.0.weight"].shape) == (512, 256, 1, 1)


def test_ir_block_is_bn_conv_bn_prelu_conv_bn_plus_shortcut():
    torch.manual_seed(3)
    block = _randomise(IRBlock(8, 16, 2), 4)
    x = torch.randn(2, 8, 10, 10)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    out = bn(x, block.bn0)
    out = F.conv2d(out, block.conv1.weight, padding=1)
    out = F.prelu(bn(out, block.bn1), block.prelu.weight)
    out = bn(F.conv2d(out, block.conv2.weight, stride=2, padding=1), block.bn2)
    short = bn(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    with torch.no_grad():
        torch.testing.assert_close(block(x), out + short, rtol=0, atol=1e-5)


def test_checkpoint_loads_safely_and_embeds_like_the_saved_network(reference, embedder):
    assert isinstance(embedder, LResNetEmbedder) and embedder.dim == 512
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        e = embedder.embed(x)
        torch.testing.assert_close(e, reference(x), rtol=0, atol=1e-6)
    assert e.shape == (3, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)
    # Distinct inputs give distinct embeddings (the batch norms and fc5 really loaded).
    assert (e[0] - e[1]).norm() > 1e-3


def test_256_px_images_are_avg_pooled_like_liftedgan(embedder, reference):
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(embedder.embed(x), reference(F.avg_pool2d(x, 2)), rtol=0, atol=1e-6)


def test_crop_resize_numerics():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7)) * 2 - 1
    up = crop_resize(x, (0.0, 0.0, 1.0), 128)
    torch.testing.assert_close(up, F.interpolate(x, size=128, mode="bilinear", align_corners=False),
                               rtol=0, atol=1e-6)
    big = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(8))
    # A centred half crop at 1 output pixel per input pixel samples pixel centres exactly.
    torch.testing.assert_close(crop_resize(big, (0.25, 0.25, 0.5), 128), big[..., 64:192, 64:192],
                               rtol=0, atol=1e-6)
    # 512 → 128 of the whole image is a 4×4 box average.
    huge = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(crop_resize(huge, (0.0, 0.0, 1.0), 128), F.avg_pool2d(huge, 4), rtol=0, atol=1e-6)


def test_gradients_reach_the_input_and_nothing_else(embedder):
    x = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(10)) * 2 - 1).requires_grad_(True)
    e = embedder.embed(x)
    low = embedder.features(x, 4)[-1]
    (e[0] - e[1].detach()).pow(2).sum().add(low.pow(2).mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in embedder.parameters())


def test_features_are_the_seed_codes_first_children(embedder, reference):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11)) * 2 - 1
    with torch.no_grad():
        feats = embedder.features(x, 4)
        crop = F.interpolate(x, size=128, mode="bilinear", align_corners=False)
        expected = reference.layer1(reference.act_layer(reference.bn1(reference.conv1(crop))))
        torch.testing.assert_close(feats[-1], expected, rtol=0, atol=1e-5)
        assert [tuple(f.shape) for f in feats] == [(2, 64, 64, 64)] * 4
        all_feats = embedder.features(x, len(CHILDREN))
        assert tuple(all_feats[-1].shape) == (2, 512, 8, 8)
        # The seed code's variant: f_low on the image as given (256 px → 64×128×128).
        seed_like = LResNetEmbedder(reference, LResNetSettings(low_level_input="image"))
        big = torch.rand(1, 3, 256, 256) * 2 - 1
        assert tuple(seed_like.features(big, 4)[-1].shape) == (1, 64, 128, 128)
    for bad in (0, len(CHILDREN) + 1):
        assert "n_blocks must be in 1..7" in one_line_error(embedder.features, x, bad)


def test_train_mode_keeps_the_network_frozen(embedder):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(12)) * 2 - 1
    with torch.no_grad():
        before = embedder.embed(x)
        embedder.train()
        after = embedder.embed(x)
        embedder.eval()
    assert not embedder.net.training
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_bare_state_dict_without_batch_counters_loads(reference):
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = build_lresnet(lresnet_state_dict(state, "bare"), "bare")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-6)


def test_wrong_checkpoints_are_one_line_errors(reference, tmp_path, monkeypatch):
    state = dict(reference.state_dict())
    # A 112 px LResNet (LiftedGAN's default image_size) has a 7×7 map before fc5.
    wrong = dict(state, **{"fc5.weight": torch.zeros(512, 512 * 7 * 7)})
    assert "fc5.weight has shape (512, 25088), expected (512, 32768)" in one_line_error(build_lresnet, wrong, "x.pth")
    missing = {k: v for k, v in state.items() if not k.startswith("bn5.")}
    assert "missing" in one_line_error(build_lresnet, missing, "x.pth")
    extra = dict(state, **{"layer1.0.se.fc.0.weight": torch.zeros(4, 64)})
    assert "unexpected" in one_line_error(build_lresnet, extra, "x.pth")
    assert "no LResNet state dict" in one_line_error(lresnet_state_dict, {"model_state_dict": {}}, "x.pth")
    assert "not a tensor" in one_line_error(lresnet_state_dict, {"model_state_dict": {"a": 1}}, "x.pth")
    # Files: not a checkpoint at all, and a missing file (says where to get it).
    junk = tmp_path / "lresnet_casia.pth.tar"
    junk.write_text("not a checkpoint")
    assert "not a readable PyTorch checkpoint" in one_line_error(load_identity_embedder, "lresnet", junk)
    message = one_line_error(load_identity_embedder, "lresnet", tmp_path / "absent.pth.tar")
    assert "github.com/seasonSH/LiftedGAN" in message and "--lresnet" in message
    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path / "empty"))
    assert "lresnet_casia.pth.tar not found" in one_line_error(load_identity_embedder, "lresnet")


def test_bad_images_are_one_line_errors(embedder):
    assert "NaN" in one_line_error(embedder.embed, torch.full((1, 3, 64, 64), float("nan")))
    assert "[B,3,S,S]" in one_line_error(embedder.embed, torch.zeros(1, 1, 64, 64))
    assert one_line_error(LResNetSettings, (0.0, 0.0, 0.0))
    assert "low_level_input" in one_line_error(LResNetSettings, low_level_input="full")

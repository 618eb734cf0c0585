"""BiSeNet face parsing: face-parsing.PyTorch's key layout, strict safe loading, module numerics, the mask rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from toon3d.faces.bisenet import (
    AttentionRefinementModule,
    BiSeNet,
    BiSeNetParser,
    BiSeNetSettings,
    FeatureFusionModule,
    bisenet_state_dict,
    build_bisenet,
    load_bisenet_parser,
)
from toon3d.faces.mask_rule import (
    CELEBAMASK_CLASSES,
    SYNFACE_TO_CELEBAMASK,
    face_mask_from_parsing,
    synface_to_celebamask,
)

torch.set_num_threads(1)

from dlib_helpers import one_line_error
from face_net_helpers import randomise as _randomise


@pytest.fixture(scope="module")
def reference() -> BiSeNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _randomise(BiSeNet(), 2)


@pytest.fixture(scope="module")
def weights(reference, tmp_path_factory):
    """A bare state dict as face-parsing.PyTorch saves it, in torch's legacy (pre-1.6, non-zip) format."""
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(reference.state_dict(), path, _use_new_zipfile_serialization=False)
    return path


def test_state_dict_has_the_published_key_layout(reference):
    keys = set(reference.state_dict())
    for key in ("cp.resnet.conv1.weight", "cp.resnet.bn1.running_mean", "cp.resnet.layer1.0.conv1.weight",
                "cp.resnet.layer2.0.downsample.0.weight", "cp.resnet.layer2.0.downsample.1.running_var",
                "cp.resnet.layer4.1.bn2.bias", "cp.arm16.conv.conv.weight", "cp.arm16.conv_atten.weight",
                "cp.arm32.bn_atten.running_var", "cp.conv_head32.conv.weight", "cp.conv_head16.bn.weight",
                "cp.conv_avg.conv.weight", "ffm.convblk.conv.weight", "ffm.convblk.bn.bias", "ffm.conv1.weight",
                "ffm.conv2.weight", "conv_out.conv.conv.weight", "conv_out.conv_out.weight",
                "conv_out16.conv.bn.weight", "conv_out32.conv_out.weight"):
        assert key in keys, key
    # The released network replaced the spatial path by the ResNet's 1/8 feature: no sp.* tensors,
    # no resnet fc, no biases on the 1×1 class convs.
    assert not any(k.startswith(("sp.", "cp.resnet.fc")) for k in keys)
    assert "conv_out.conv_out.bias" not in keys
    shapes = reference.state_dict()
    assert tuple(shapes["conv_out.conv_out.weight"].shape) == (19, 256, 1, 1)
    assert tuple(shapes["conv_out16.conv_out.weight"].shape) == (19, 64, 1, 1)
    assert tuple(shapes["ffm.conv1.weight"].shape) == (64, 256, 1, 1)
    assert tuple(shapes["cp.conv_avg.conv.weight"].shape) == (128, 512, 1, 1)


def test_legacy_file_loads_strictly_and_parses(reference, weights):
    parser = load_bisenet_parser(weights, BiSeNetSettings(parse_size=64))
    assert isinstance(parser, BiSeNetParser) and parser.net.sp is None
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        normalised = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        logits = reference(normalised)
        assert logits.shape == (2, 19, 64, 64)
        torch.testing.assert_close(parser.net(normalised), logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(parser.probabilities(x), logits.softmax(1), rtol=0, atol=1e-5)
    labels = parser.parse(x)
    assert labels.shape == (2, 64, 64) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) <= 18
    mask = parser.face_mask(x)
    assert mask.shape == (2, 1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_default_parse_runs_at_512_and_averages_back():
    torch.manual_seed(1)
    parser = BiSeNetParser(_randomise(BiSeNet(), 5))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        probs = parser.probabilities(x)
        big = F.interpolate(x, size=512, mode="bilinear", align_corners=False)
        big = ((big + 1) / 2 - parser.mean) / parser.std
        expected = F.adaptive_avg_pool2d(parser.net(big).softmax(1), 32)
    assert probs.shape == (1, 19, 32, 32)
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 32, 32), rtol=0, atol=1e-5)


def test_auxiliary_heads_and_the_seed_codes_preprocessing(reference):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        outs = reference.forward_all(x)
        assert [tuple(o.shape) for o in outs] == [(1, 19, 64, 64)] * 3
        seed = BiSeNetParser(reference, BiSeNetSettings(parse_size=128, preprocess="seed"))
        expected = F.adaptive_avg_pool2d(reference(F.interpolate(x, size=128)).softmax(1), 64)
        torch.testing.assert_close(seed.probabilities(x), expected, rtol=0, atol=1e-5)


def test_attention_refinement_and_fusion_formulas():
    torch.manual_seed(4)
    arm = _randomise(AttentionRefinementModule(8, 6), 6)
    ffm = _randomise(FeatureFusionModule(12, 8), 7)
    x = torch.randn(2, 8, 5, 5)
    a, b = torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    with torch.no_grad():
        feat = F.relu(bn(F.conv2d(x, arm.conv.conv.weight, padding=1), arm.conv.bn))
        att = torch.sigmoid(bn(F.conv2d(feat.mean((2, 3), keepdim=True), arm.conv_atten.weight), arm.bn_atten))
        torch.testing.assert_close(arm(x), feat * att, rtol=0, atol=1e-5)
        fused = F.relu(bn(F.conv2d(torch.cat([a, b], 1), ffm.convblk.conv.weight), ffm.convblk.bn))
        att = torch.sigmoid(F.conv2d(F.relu(F.conv2d(fused.mean((2, 3), keepdim=True), ffm.conv1.weight)),
                                     ffm.conv2.weight))
        torch.testing.assert_close(ffm(a, b), fused * att + fused, rtol=0, atol=1e-5)


def test_a_checkpoint_with_a_spatial_path_builds_it():
    torch.manual_seed(2)
    net = BiSeNet(spatial_path="conv")
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    built = build_bisenet(bisenet_state_dict(state, "x"), "x")
    assert built.sp is not None
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), net.eval()(x), rtol=0, atol=1e-5)


def test_wrong_weights_are_one_line_errors(reference, tmp_path, monkeypatch):
    state = dict(reference.state_dict())
    eleven = dict(state, **{"conv_out.conv_out.weight": torch.zeros(11, 256, 1, 1)})
    assert "conv_out.conv_out.weight has shape (11, 256, 1, 1)" in one_line_error(build_bisenet, eleven, "x.pth")
    assert "missing" in one_line_error(build_bisenet, {k: v for k, v in state.items() if "ffm" not in k}, "x.pth")
    assert "not a tensor" in one_line_error(bisenet_state_dict, {"state": {"a": torch.zeros(1)}}, "x.pth")
    message = one_line_error(load_bisenet_parser, tmp_path / "absent.pth")
    assert "face-parsing.PyTorch" in message and "--bisenet" in message
    monkeypatch.setenv("TOON3D_MODELS", str(tmp_path / "empty"))
    assert "79999_iter.pth not found" in one_line_error(load_bisenet_parser)
    assert "preprocess" in one_line_error(BiSeNetSettings, preprocess="raw")


# ---- the mask rule (REFERENCE §1.3) --------------------------------------------------------------


def test_mask_rules_on_every_class():
    labels = torch.arange(19).view(1, 1, 19)
    seed = face_mask_from_parsing(labels, "seed")[0, 0, 0]
    face = face_mask_from_parsing(labels, "face")[0, 0, 0]
    soft = face_mask_from_parsing(labels, "soft")[0, 0, 0]
    # The seed code: ((c >= 1 & c != 16) + (1 <= c <= 13)) / 2, then .bool().
    c = torch.arange(19)
    seed_code = ((((c >= 1) & (c != 16)).float() + ((c >= 1) & (c <= 13)).float()) / 2)
    torch.testing.assert_close(soft, seed_code)
    torch.testing.assert_close(seed, seed_code.bool().float())
    assert [CELEBAMASK_CLASSES[i] for i in range(19) if seed[i] == 0] == ["background", "cloth"]
    assert [CELEBAMASK_CLASSES[i] for i in range(19) if face[i] == 0] == ["background", "neck", "neck_l", "cloth",
                                                                        "hair", "hat"]
    assert "unknown face mask rule" in one_line_error(face_mask_from_parsing, labels, "hair")


def test_synface_classes_map_onto_the_same_parts():
    syn = torch.arange(8)
    names = [CELEBAMASK_CLASSES[int(i)] for i in synface_to_celebamask(syn)]
    assert names == ["background", "skin", "l_brow", "l_eye", "nose", "mouth", "hair", "eye_g"]
    assert len(SYNFACE_TO_CELEBAMASK) == 8
    face = face_mask_from_parsing(synface_to_celebamask(syn)[None, None], "face")[0, 0, 0]
    assert face.tolist() == [0, 1, 1, 1, 1, 1, 0, 1]

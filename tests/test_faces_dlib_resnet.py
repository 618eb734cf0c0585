"""dlib's face ResNet in PyTorch: the .dat reader, agreement with dlib itself, the differentiable embedder."""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.faces.dlib_format import TAG_OR_SKIP, DlibFormatError, parse_dlib_net, read_dlib_net
from toon3d.faces.dlib_resnet import DlibResNet, add_prev, load_dlib_resnet
from toon3d.faces.identity import DlibEmbedder, load_identity_embedder
from toon3d.metrics.face_descriptor import face_chips, find_model_file
from toon3d.synth.face_params import SynFaceParams
from toon3d.synth.synface import render_synface

torch.set_num_threads(1)

from dlib_helpers import HAS_DLIB, needs_dlib
from dlib_helpers import one_line_error as _one_line_error


@pytest.fixture(scope="module")
def model_path():
    try:
        return find_model_file()
    except Toon3dError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def model_bytes(model_path) -> bytes:
    return model_path.read_bytes()


@pytest.fixture(scope="module")
def net(model_bytes) -> DlibResNet:
    return DlibResNet(parse_dlib_net(model_bytes))


@pytest.fixture(scope="module")
def embedder(net) -> DlibEmbedder:
    return DlibEmbedder(net)


@pytest.fixture(scope="module")
def dlib_net(model_path):
    if not HAS_DLIB:
        pytest.skip("dlib not installed (pip install dlib-bin)")
    import dlib

    return dlib.face_recognition_model_v1(str(model_path))


@pytest.fixture(scope="module")
def faces() -> dict[int, torch.Tensor]:
    """Two SynFace identities per size, [2,3,S,S] in [-1,1]."""
    return {size: render_synface(SynFaceParams.sample(2, seed=size), size)["image"] for size in (128, 192, 256)}


def _dlib_descriptors(dlib_net, chips: np.ndarray) -> torch.Tensor:
    vectors = dlib_net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], 0)
    return torch.from_numpy(np.array([np.asarray(v) for v in vectors], dtype=np.float32))


def _as_input(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(chips).permute(0, 3, 1, 2).float()


# ---- the file --------------------------------------------------------------------------------------

def test_parser_reads_the_whole_file(model_bytes):
    parsed = parse_dlib_net(model_bytes)  # raises if a byte is left over
    assert parsed.loss == "loss_metric_2"
    assert parsed.loss_fields["distance_threshold"] == pytest.approx(0.6, abs=1e-6)
    assert parsed.input == "input_rgb_image_sized" and parsed.input_size == (150, 150)
    assert np.allclose(parsed.input_mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    counts = {kind: parsed.count(kind) for kind in
              ("con_4", "affine_", "relu_", "add_prev_", "avg_pool_2", "max_pool_2", "fc_2", TAG_OR_SKIP)}
    assert counts == {"con_4": 29, "affine_": 29, "relu_": 29, "add_prev_": 14, "avg_pool_2": 5,
                      "max_pool_2": 1, "fc_2": 1, TAG_OR_SKIP: 22}
    assert parsed.num_parameters() == 5_614_592
    assert parsed.layers[0].kind == "con_4" and parsed.layers[-1].kind == "fc_2"
    assert parsed.layers[-1].aliases[0] == (256, 128, 1, 1)


def _format_problem(data: bytes) -> str:
    with pytest.raises(DlibFormatError) as info:
        parse_dlib_net(data)
    return str(info.value)


def test_truncated_corrupt_or_other_files_are_rejected(model_bytes):
    for cut in (0, 1, 40, 0x150, 5000, len(model_bytes) // 2, len(model_bytes) - 1):
        assert "ends inside" in _format_problem(model_bytes[:cut])
    assert "left after the last layer" in _format_problem(model_bytes + b"\x00")
    relu = model_bytes.index(b"relu_")
    assert "unsupported dlib layer 'reLU_'" in _format_problem(
        model_bytes[:relu] + b"reLU_" + model_bytes[relu + 5:])
    assert "version" in _format_problem(b"\x01\x07" + model_bytes[2:])
    assert "control byte" in _format_problem(b"\x0f" + model_bytes[1:])
    assert _format_problem(b"<xml>not a dlib model</xml>")
    assert _format_problem(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))


def test_bad_files_are_one_line_errors_that_say_how_to_fix_them(model_bytes, model_path, tmp_path):
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(model_bytes[:100_000])
    message = _one_line_error(read_dlib_net, truncated)
    assert "truncated.dat" in message and "ends inside" in message and "face-recognition-models" in message
    other = model_path.parent / "shape_predictor_5_face_landmarks.dat"
    if other.is_file():
        assert "face-recognition-models" in _one_line_error(load_dlib_resnet, other)
    assert "face-recognition-models" in _one_line_error(load_dlib_resnet, tmp_path / "missing.dat")
    assert "face-recognition-models" in _one_line_error(read_dlib_net, tmp_path)


def test_builder_rejects_a_different_network(model_bytes):
    parsed = parse_dlib_net(model_bytes)
    assert "expected fc_2" in _one_line_error(DlibResNet, replace(parsed, layers=parsed.layers[:-1]))
    no_stem_relu = parsed.layers[:2] + parsed.layers[3:]
    assert "expected relu_" in _one_line_error(DlibResNet, replace(parsed, layers=no_stem_relu))
    assert "150×150" in _one_line_error(DlibResNet, replace(parsed, input_size=(112, 112)))


# ---- the network -----------------------------------------------------------------------------------

def test_module_holds_every_parameter_frozen(net):
    params = list(net.parameters())
    assert sum(p.numel() for p in params) == 5_614_592
    assert not any(p.requires_grad for p in params)
    assert sum(isinstance(m, torch.nn.Module) and m.__class__.__name__ == "DlibConv" for m in net.modules()) == 29
    assert net.num_blocks == 15


def test_add_prev_pads_the_smaller_tensor_at_the_top_left():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 2, 2), 10.0)
    out = add_prev(a, b)
    assert out.shape == (1, 2, 3, 3)
    assert torch.equal(out[0, 0, :2, :2], torch.full((2, 2), 11.0))
    assert out[0, 0, 2].eq(1).all() and out[0, 0, :, 2].eq(1).all() and out[0, 1].eq(1).all()


@needs_dlib
def test_port_matches_dlib_on_face_chips_and_noise(net, dlib_net, faces):
    chips = [face_chips(images) for images in faces.values()]
    noise = np.random.default_rng(0).integers(0, 256, (1, 150, 150, 3), dtype=np.uint8)
    chips = np.concatenate(chips + [noise, chips[-1][:, :, ::-1]])  # + a mirrored chip
    reference = _dlib_descriptors(dlib_net, chips)
    with torch.no_grad():
        ours = net(_as_input(chips))
    assert ours.shape == (len(chips), 128)
    assert (ours - reference).abs().max() <= 1e-5
    # The chips are all different to dlib (a face and its mirror image are the closest pair, ~0.3).
    assert torch.pdist(reference).min() > 0.1


@needs_dlib
def test_embedder_matches_dlibs_descriptor_of_the_chip(embedder, dlib_net, faces):
    # The only differences: the embedder does not round the chip to uint8 (measured ≤ 0.011 L2).
    for images in faces.values():
        reference = _dlib_descriptors(dlib_net, face_chips(images))
        with torch.no_grad():
            ours = embedder.embed(images)
        assert (ours - reference).norm(dim=1).max() < 0.02


@needs_dlib
def test_embedder_prefilters_large_images_like_face_chips(embedder, dlib_net, faces):
    big = F.interpolate(faces[256], size=512, mode="bilinear", align_corners=False)
    reference = _dlib_descriptors(dlib_net, face_chips(big))
    with torch.no_grad():
        ours = embedder.embed(big)
    assert (ours - reference).norm(dim=1).max() < 0.02


def test_gradients_reach_the_image_and_not_the_weights(embedder, faces):
    images = faces[128].clone().requires_grad_(True)
    target = torch.zeros(2, 128)
    (embedder.embed(images) - target).pow(2).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    # The chip covers the face, not the corners of the image.
    assert images.grad[..., :4, :4].abs().max() == 0
    assert all(p.grad is None for p in embedder.parameters())


def test_gradient_matches_a_finite_difference(embedder, faces):
    exact = copy.deepcopy(embedder).double()
    images = faces[128][:1].double().requires_grad_(True)
    direction = torch.randn(images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = lambda x: exact.embed(x).pow(2).sum()  # noqa: E731
    loss(images).backward()
    # ReLU and max-pool kinks make larger steps noisy (5 % off at 1e-4); in float64 1e-8 is exact enough.
    eps = 1e-8
    with torch.no_grad():
        numeric = (loss(images + eps * direction) - loss(images - eps * direction)) / (2 * eps)
    assert (images.grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-4)


def test_features_are_the_blocks_of_the_forward_pass(embedder, faces):
    images = faces[128]
    with torch.no_grad():
        low = embedder.features(images, 4)
        every = embedder.features(images, embedder.net.num_blocks)
        embedding = embedder.embed(images)
    assert [tuple(f.shape[1:]) for f in low] == [(32, 35, 35)] * 4
    assert tuple(every[-1].shape[1:]) == (256, 2, 2)
    assert torch.allclose(every[-1].mean(dim=(2, 3)) @ embedder.net.fc_weight, embedding, atol=1e-6)
    assert "1..15" in _one_line_error(embedder.features, images, 0)
    features = embedder.features(images.clone().requires_grad_(True), 2)
    assert features[-1].requires_grad


def test_deterministic_and_batch_independent(embedder, model_bytes, faces):
    images = faces[192]
    with torch.no_grad():
        first = embedder.embed(images)
        again = embedder.embed(images)
        alone = embedder.embed(images[1:])
        fresh = DlibEmbedder(DlibResNet(parse_dlib_net(model_bytes))).embed(images)
    assert torch.equal(first, again) and torch.equal(first, fresh)
    assert torch.allclose(first[1:], alone, atol=1e-6)


def test_bad_inputs_are_one_line_errors(net, embedder):
    assert "[B,3,150,150]" in _one_line_error(net, torch.zeros(1, 3, 112, 112))
    assert "[B,3,S,S]" in _one_line_error(embedder.embed, torch.zeros(3, 64, 64))
    assert "unknown identity embedder 'arcface'" in _one_line_error(load_identity_embedder, "arcface")


def test_default_loader_finds_the_packaged_file_without_importing_it(model_path, monkeypatch):
    monkeypatch.setenv("TOON3D_MODELS", os.devnull)  # an empty models folder: fall through to the package
    net = load_identity_embedder("dlib").net
    assert isinstance(net, DlibResNet)
    assert "face_recognition_models" not in sys.modules

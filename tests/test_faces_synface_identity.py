"""The built-in world's identity network: architecture, training, scores, files, and its use in the refinement."""

from __future__ import annotations

import pytest
import torch

from toon3d.edit.directions import factorize
from toon3d.edit.refine import refine_direction
from toon3d.faces.identity import load_identity_embedder
from toon3d.faces.identity_training import (IDENTITY_COLUMNS, CosFaceHead, embed_all, identity_pool,
                                            identity_tables, train_identity, verification_scores)
from toon3d.faces.synface_identity import (IdentityNetConfig, SynFaceEmbedder, SynFaceIdentityNet,
                                           identity_config_dict, load_synface_embedder)
from toon3d.faces.synface_training import TrainSettings
from toon3d.io.checkpoint import save_model
from toon3d.models import WEIGHTS_DIR
from toon3d.stylegan2.generator import Generator

from dlib_helpers import one_line_error

SMALL = IdentityNetConfig(widths=(8, 16), depth=1, reduce=4, dim=16, input_size=32)


def small_net(seed: int = 0) -> SynFaceIdentityNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SynFaceIdentityNet(SMALL).eval()


def test_embeddings_are_unit_vectors_and_features_have_their_shapes():
    emb = SynFaceEmbedder(small_net())
    x = torch.rand(3, 3, 64, 64) * 2 - 1  # other sizes are resized to the net's 32 px
    e = emb.embed(x)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)
    feats = emb.features(x, 2)
    assert [tuple(f.shape) for f in feats] == [(3, 8, 32, 32), (3, 16, 16, 16)]
    assert "conv units" in one_line_error(emb.features, x, 3)
    assert "square RGB" in one_line_error(emb.embed, torch.zeros(1, 3, 32, 16))


def test_the_embedder_is_a_frozen_instrument_with_gradients_to_the_image():
    emb = SynFaceEmbedder(small_net())
    emb.train()  # a caller's train() must not switch the batch norms to batch statistics
    assert not emb.net.training and not any(p.requires_grad for p in emb.parameters())
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    a = emb.embed(x)
    b = emb.embed(x[:1])
    torch.testing.assert_close(a[:1], b)  # eval-mode batch norm: each image on its own
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in emb.parameters())


def test_cosface_subtracts_the_margin_from_the_true_class_only():
    head = CosFaceHead(5, 4, scale=10.0, margin=0.25)
    e = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    y = torch.tensor([0, 3, 3])
    cos = e @ torch.nn.functional.normalize(head.weight, dim=1).t()
    expect = 10.0 * cos
    expect[torch.arange(3), y] -= 10.0 * 0.25
    torch.testing.assert_close(head(e, y), expect)


def test_identity_tables_keep_identity_and_redraw_the_rest():
    table, labels = identity_tables(6, 3, seed=11)
    assert table.shape[0] == 18 and torch.equal(labels, torch.arange(6).repeat(3))
    other = [c for c in range(table.shape[1]) if c not in IDENTITY_COLUMNS]
    for i in range(6):
        rows = table[labels == i]
        assert torch.equal(rows[:, IDENTITY_COLUMNS], rows[:1, IDENTITY_COLUMNS].expand(3, -1))
        assert (rows[0, other] != rows[1, other]).any()  # pose, light, expression, backdrop redrawn
    assert not torch.equal(table[0, IDENTITY_COLUMNS], table[1, IDENTITY_COLUMNS])
    with pytest.raises(ValueError, match="per_id"):
        identity_tables(4, 1, seed=0)


def test_verification_scores_on_known_embeddings():
    labels = torch.arange(4).repeat(3)
    centres = torch.eye(4) * 3
    separated = centres[labels] + 0.01 * torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    s = verification_scores(separated, labels)
    assert s["pairs_same"] == 4 * 3 and s["pairs_different"] == 66 - 12
    assert s["eer"] == 0 and s["rank1"] == 1 and s["tar_at_far_1pct"] == 1
    assert s["mean_distance_same"] < s["eer_threshold"] < 0.1 < s["mean_distance_different"]
    same_point = verification_scores(torch.zeros(12, 4), labels)
    assert same_point["eer"] == pytest.approx(0.5)


def test_training_lowers_the_loss_and_is_deterministic_for_a_seed():
    pool = identity_pool(8, 2, seed=21, progress=False)  # 64 px, the net reads 32
    assert pool["images"].shape == (16, 3, 64, 64) and pool["anchored"][:8].all() and not pool["anchored"][8:].any()
    settings = TrainSettings(steps=25, batch=8, warmup=2, lr=3e-3, seed=1, blur_max=0.5)
    a, record = train_identity(pool, settings, SMALL, scale=10.0, margin=0.1, progress=False)
    b, _ = train_identity(pool, settings, SMALL, scale=10.0, margin=0.1, progress=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert record["loss_last"] < record["loss_first"]
    assert not a.training and embed_all(a, pool["images"]).shape == (16, 16)


def test_files_round_trip_and_wrong_files_are_one_line_errors(tmp_path):
    net = small_net(3)
    path = save_model(tmp_path / "id.safetensors", net.state_dict(), identity_config_dict(net.config),
                      {"same_person_threshold": 0.7})
    loaded = load_synface_embedder(path)
    assert loaded.same_person_threshold == 0.7
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded.embed(x), SynFaceEmbedder(net).embed(x))
    assert "not a SynFace identity network" in one_line_error(load_synface_embedder,
                                                              WEIGHTS_DIR / "oracle_synface.safetensors")
    wrong = dict(net.state_dict())
    wrong["fc.weight"] = torch.zeros(16, 5)
    bad = save_model(tmp_path / "bad.safetensors", wrong, identity_config_dict(net.config))
    assert "does not match" in one_line_error(load_synface_embedder, bad)
    assert "not found" in one_line_error(load_synface_embedder, tmp_path / "missing.safetensors")


def test_shipped_network_tells_held_out_synface_people_apart():
    emb = load_identity_embedder("synface")
    assert isinstance(emb, SynFaceEmbedder) and emb.same_person_threshold is not None
    pool = identity_pool(12, 2, seed=900, progress=False)  # identities no training seed drew
    s = verification_scores(embed_all(emb, pool["images"]), pool["labels"])
    # Measured on 500 held-out identities (card): EER well under chance; a wide margin here.
    assert s["mean_distance_same"] < s["mean_distance_different"] - 0.2
    assert s["eer"] < 0.25 and s["rank1"] > 0.6


def test_refinement_with_the_synface_network_moves_only_delta_w():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = Generator(32, style_dim=16, n_mlp=1, channel_max=16).eval()
    emb = SynFaceEmbedder(small_net())
    w = g.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(3))).detach()
    n = factorize(g).direction(0)
    before = {k: v.clone() for k, v in emb.state_dict().items()}
    result = refine_direction(g, w, n, 2.0, emb.embed, lambda x: emb.features(x, 2)[-1], mode="code", steps=4)
    assert (result.delta_w - 2.0 * n).abs().max() > 1e-4
    for k, v in emb.state_dict().items():
        assert torch.equal(v, before[k]), k  # batch-norm statistics untouched
    assert all(p.grad is None for p in [*g.parameters(), *emb.parameters()])


def test_edit_identity_auto_takes_the_synface_network_on_the_builtin_base_only(tmp_path, monkeypatch):
    from toon3d import models
    from toon3d.faces.identity import choose_identity as identity_name

    assert identity_name("auto", "base") == "synface"
    assert identity_name("auto", "default") == "synface"
    assert identity_name("dlib", "base") == "dlib" and identity_name("lresnet", "base") == "lresnet"
    ckpt = tmp_path / "550000.pt"
    ckpt.write_bytes(b"")
    assert identity_name("auto", str(ckpt)) == "dlib"       # a user's generator: dlib, the offline default
    assert identity_name("auto", "base", "dlib.dat") == "dlib"  # weights given: they are dlib's
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)     # not shipped (an install without it)
    assert identity_name("auto", "base") == "dlib"


def test_avatar_edits_take_the_chosen_identity_network():
    from toon3d.pipeline import AvatarModels, AvatarSettings

    models = AvatarModels(AvatarSettings(), torch.device("cpu"))
    assert models.edit_identity == "synface"
    assert isinstance(models.edit_embedder, SynFaceEmbedder) and models._embedder is None  # 3D's dlib not loaded
    same = AvatarModels(AvatarSettings(edit_identity="dlib"), torch.device("cpu"))
    assert same.edit_embedder is same.embedder  # one network when both stages ask for the same
    # The refinement's mask is chosen as `toon3d edit --mask auto` chooses it (the bench measured that).
    assert models.edit_mask.name == "synface"
    assert AvatarModels(AvatarSettings(edit_mask="ellipse"), torch.device("cpu")).edit_mask.name == "ellipse"

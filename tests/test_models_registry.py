"""The model registry (where user-supplied weights are found) and the built-in default generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import toon3d.models as models
from toon3d.errors import Toon3dError
from toon3d.models import (
    DEFAULT_GENERATOR_CONFIG,
    REGISTRY,
    default_generator,
    find,
    require,
    resolve_generator,
)
from toon3d.stylegan2.checkpoints import ArchOverrides, save_generator


@pytest.fixture
def models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("TOON3D_MODELS", str(folder))
    return folder


def test_registry_names_the_files_users_supply() -> None:
    expected = {"ffhq256": "550000.pt", "lresnet": "lresnet_casia.pth.tar", "bisenet": "79999_iter.pth",
                "vgg16": "vgg16-397923af.pth", "lpips_vgg": "vgg.pth",
                "inception": "pt_inception-2015-12-05-6726825d.pth", "view_mvn": "view_mvn.pth",
                "light_mvn": "light_mvn.pth"}
    assert {name: REGISTRY[name].filename for name in expected} == expected
    for item in REGISTRY.values():
        assert item.flag.startswith("--") and ("http" in item.source or "github.com" in item.source)


def test_require_missing_is_one_line_with_source_and_folder(models_folder: Path) -> None:
    with pytest.raises(Toon3dError) as err:
        require("bisenet")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"bisenet weights 79999_iter.pth not found at {models_folder};")
    assert "face-parsing.PyTorch" in message and "--bisenet PATH" in message
    assert f"put it in {models_folder}/79999_iter.pth" in message
    with pytest.raises(Toon3dError, match=r"not found at .*nope\.pth; get it from"):
        require("vgg16", models_folder / "nope.pth")
    with pytest.raises(Toon3dError, match="a folder, not a file"):
        require("vgg16", models_folder)
    with pytest.raises(Toon3dError, match="unknown model 'nope'; known models: bisenet, ffhq256"):
        require("nope")


def test_require_finds_files_by_path_name_and_alias(models_folder: Path, tmp_path: Path) -> None:
    explicit = tmp_path / "my_vgg.pth"
    explicit.write_bytes(b"x")
    assert require("vgg16", explicit) == explicit
    assert find("ffhq256") is None
    (models_folder / "ffhq256.pt").write_bytes(b"x")
    assert require("ffhq256") == models_folder / "ffhq256.pt"
    (models_folder / "550000.pt").write_bytes(b"x")
    assert require("ffhq256") == models_folder / "550000.pt"


def test_default_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TOON3D_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.models_dir() == tmp_path / ".cache" / "toon3d" / "models"


def test_default_generator_is_seeded_and_leaves_global_rng_alone(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = default_generator(), default_generator()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.meta["untrained"] and "untrained" in a.source
    assert {k: a.config[k] for k in DEFAULT_GENERATOR_CONFIG} == DEFAULT_GENERATOR_CONFIG
    for key, value in a.generator.state_dict().items():
        assert torch.equal(value, b.generator.state_dict()[key]), key
    assert torch.equal(a.mean_latent, b.mean_latent)
    cartoon = default_generator("cartoon", blend=False)
    assert not torch.equal(cartoon.generator.state_dict()["style.1.weight"], a.generator.state_dict()["style.1.weight"])
    w = a.mean_latent.unsqueeze(1).repeat(1, a.generator.n_latent, 1)
    with torch.no_grad():
        image = a.generator.synthesis(w)
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all() and image.std() > 0.05
    with pytest.raises(Toon3dError, match="unknown built-in generator 'nope'"):
        default_generator("nope")


def test_shipped_weights_replace_the_untrained_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    stand_in = default_generator()
    with torch.no_grad():
        for p in stand_in.generator.parameters():
            p.mul_(0.5)
    save_generator(tmp_path / "base.safetensors", stand_in.generator, stand_in.mean_latent * 2,
                   {"trained": "test", "steps": 1})
    shipped = default_generator()
    assert shipped.entry == "file" and shipped.meta == {"trained": "test", "steps": 1}
    assert torch.equal(shipped.mean_latent, stand_in.mean_latent * 2)
    assert torch.equal(shipped.generator.state_dict()["style.1.weight"], stand_in.generator.state_dict()["style.1.weight"])
    assert resolve_generator("default").entry == "file"


def test_resolve_generator_checks_overrides_and_kinds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      models_folder: Path) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(Toon3dError, match="pass --channel-max 64"):
        resolve_generator("default", ArchOverrides(channel_max=512))
    assert resolve_generator("default", ArchOverrides(size=64)).config["size"] == 64
    with pytest.raises(Toon3dError, match="bisenet is not a generator"):
        resolve_generator("bisenet")
    with pytest.raises(Toon3dError, match="ffhq256 weights 550000.pt not found at .*rosinality"):
        resolve_generator(str(tmp_path / "550000.pt"))
    with pytest.raises(Toon3dError, match=r"--truncation-mean must be at least 1"):
        resolve_generator("default", truncation_mean_samples=0)
    custom = resolve_generator("default", truncation_mean_samples=16)
    assert custom.mean_source == "mean_latent(16, seed 0)"


def test_lpips_heads_found_inside_an_installed_package(models_folder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    site = tmp_path / "site"
    heads = site / "lpips" / "weights" / "v0.1" / "vgg.pth"
    heads.parent.mkdir(parents=True)
    (site / "lpips" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    heads.write_bytes(b"heads")
    monkeypatch.syspath_prepend(str(site))
    assert require("lpips_vgg") == heads
    assert "lpips" not in sys.modules  # located, never imported
    (models_folder / "vgg.pth").write_bytes(b"mine")
    assert require("lpips_vgg") == models_folder / "vgg.pth"


def test_untrained_stand_in_names_itself():
    """The source string names the built-in model (a loop variable once shadowed it)."""
    from toon3d.models import DEFAULT_GENERATOR, untrained_generator

    loaded = untrained_generator(DEFAULT_GENERATOR, truncation_mean_samples=8)
    assert loaded.source.startswith(f"builtin:{DEFAULT_GENERATOR} (untrained")


def test_builtin_styles_are_blended_with_base_unless_no_blend(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from toon3d.stylegan2.generator import Generator

    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    torch.manual_seed(1)
    base, style = Generator(**DEFAULT_GENERATOR_CONFIG), Generator(**DEFAULT_GENERATOR_CONFIG)
    dim = DEFAULT_GENERATOR_CONFIG["style_dim"]
    save_generator(tmp_path / "base.safetensors", base, torch.zeros(1, dim))
    save_generator(tmp_path / "cartoon.safetensors", style, torch.ones(1, dim),
                   meta={"blend": {"swap_resolution": 8}})
    blended = resolve_generator("cartoon").generator.state_dict()
    raw = resolve_generator("cartoon", blend=False).generator.state_dict()
    b, s = base.state_dict(), style.state_dict()
    # swap at 8 (stored in the file's meta): 4x4 and 8x8 layers and the mapping from base, the rest from the style
    for key in ("conv1.conv.weight", "convs.1.conv.weight", "to_rgbs.0.bias", "style.1.weight"):
        assert torch.equal(blended[key], b[key]), key
    for key in ("convs.2.conv.weight", "to_rgbs.3.bias"):
        assert torch.equal(blended[key], s[key]), key
    assert all(torch.equal(raw[k], s[k]) for k in s)
    assert resolve_generator("cartoon").mean_latent.abs().sum() == 0  # base's latent_avg (mapping from base)
    with pytest.raises(Toon3dError, match="unknown built-in generator"):
        models.default_generator("disney")

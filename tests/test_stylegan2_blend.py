"""Model interpolation: layer swap (REFERENCE §4.2, §12.9), feature injection (§4.3, §12.10), `toon3d blend`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toon3d.cli import main
from toon3d.errors import Toon3dError
from toon3d.io.checkpoint import load_model_file
from toon3d.models import resolve_generator
from toon3d.stylegan2.blend import (
    BlendSettings,
    FeatureInjectionGenerator,
    blend_generators,
    blend_loaded,
    blend_state_dicts,
    layer_position,
)
from toon3d.stylegan2.checkpoints import FEATURE_INJECTION_KIND, load_generator, save_generator
from toon3d.stylegan2.generator import Generator

TINY = {"size": 32, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 32}


def tiny(seed: int, **changes) -> Generator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(**dict(TINY, **changes))
        with torch.no_grad():  # non-zero noise strengths and biases, so every entry matters
            for p in g.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.1)
    return g.eval()


@pytest.fixture(scope="module")
def a() -> Generator:
    return tiny(1)


@pytest.fixture(scope="module")
def b() -> Generator:
    return tiny(2)


def ws(g: Generator, n: int = 2, seed: int = 0) -> torch.Tensor:
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g.mapping(z).unsqueeze(1).repeat(1, g.n_latent, 1)


def image(g: torch.nn.Module, codes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return g.synthesis(codes, noise_mode="const")


def differing(x: dict, y: dict) -> set[str]:
    return {k for k in x if not torch.equal(x[k], y[k])}


def prefixes(keys: set[str]) -> set[str]:
    """Group keys by layer: convs.3.conv.weight -> convs.3, style.1.bias -> style, noises.noise_2 -> noises."""
    out = set()
    for k in keys:
        parts = k.split(".")
        out.add(".".join(parts[:2]) if parts[0] in ("convs", "to_rgbs") else parts[0])
    return out


# ---- positions and the hard rule ------------------------------------------------------------------

def test_positions_follow_pinkneys_table() -> None:
    assert layer_position("input.input") == 0  # (4, 0) Const
    assert layer_position("to_rgb1.conv.weight") == 1  # (4, 1) ToRGB
    assert layer_position("conv1.conv.weight") is None  # 4x4 Conv: no position, always low
    assert layer_position("convs.0.conv.weight") == 2  # (8, 0) Conv0_up
    assert layer_position("convs.1.noise.weight") == 3  # (8, 1) Conv1, noise strength with its conv
    assert layer_position("to_rgbs.0.bias") == 3  # (8, 1) ToRGB
    assert layer_position("convs.2.activate.bias") == 4 and layer_position("to_rgbs.1.conv.weight") == 5
    with pytest.raises(KeyError):
        layer_position("style.1.weight")


def test_swap_at_size_reproduces_low_exactly(a: Generator, b: Generator) -> None:
    """§12.9: swapping at the generator's size with low = A gives A, bit for bit (both levels)."""
    for level in (0, 1):
        g = blend_generators(a, b, BlendSettings(swap_resolution=32, level=level))
        assert differing(g.state_dict(), a.state_dict()) == set()
        assert torch.equal(image(g, ws(a)), image(a, ws(a)))


def test_swap_at_4_is_high_except_the_4x4_block_and_mapping(a: Generator, b: Generator) -> None:
    """§12.9: swap at 4 = B except conv1, to_rgb1 (and the 4x4 const, see blend_weight) and the mapping/noise side."""
    g = blend_generators(a, b, BlendSettings(swap_resolution=4))
    from_a = {k for k in a.state_dict() if not torch.equal(g.state_dict()[k], b.state_dict()[k])}
    assert prefixes(from_a) == {"input", "conv1", "to_rgb1", "style", "noises"}
    assert all(torch.equal(g.state_dict()[k], a.state_dict()[k]) for k in from_a)
    g = blend_generators(a, b, BlendSettings(swap_resolution=4, mapping_from="high", noise_from="high"))
    assert prefixes(differing(g.state_dict(), b.state_dict())) == {"input", "conv1", "to_rgb1"}


@pytest.mark.parametrize("level, from_low", [
    (0, {"input", "conv1", "to_rgb1", "convs.0", "convs.1", "to_rgbs.0", "convs.2", "convs.3", "to_rgbs.1",
         "style", "noises"}),
    (1, {"input", "conv1", "to_rgb1", "convs.0", "convs.1", "to_rgbs.0", "convs.2", "convs.3", "to_rgbs.1",
         "convs.4", "style", "noises"}),
])
def test_swap_at_16_takes_every_layer_up_to_16_from_low(a: Generator, b: Generator, level: int,
                                                        from_low: set[str]) -> None:
    """Level 0: all of 4..16 px from low, 32 px from high; level 1: also 32 px's Conv0_up (convs.4) from low."""
    g = blend_generators(a, b, BlendSettings(swap_resolution=16, level=level)).state_dict()
    low, high = a.state_dict(), b.state_dict()
    for k in g:
        assert torch.equal(g[k], low[k] if prefixes({k}) <= from_low else high[k]), k


def test_logistic_width_lies_strictly_between_the_models(a: Generator, b: Generator) -> None:
    g = blend_generators(a, b, BlendSettings(swap_resolution=8, width=2.0)).state_dict()
    low, high = a.state_dict(), b.state_dict()
    blended = 0
    for k, v in g.items():
        if k.startswith(("style.", "noises.", "conv1.")) or k.endswith("kernel"):
            assert torch.equal(v, low[k]), k  # outside the positioned groups: the low model's
            continue
        diff = low[k] != high[k]
        lo, hi = torch.minimum(low[k], high[k]), torch.maximum(low[k], high[k])
        assert bool(((v > lo) & (v < hi))[diff].all()), k
        blended += 1
    assert blended == len([k for k in g if not k.startswith(("style.", "noises.", "conv1."))
                           and not k.endswith("kernel")])
    # the weight rises with the position: 0.5 at the swap position (8, 0), then toward the high model
    y = {k: ((g[k] - low[k]) / (high[k] - low[k])).flatten()[0].item()
         for k in ("input.input", "convs.0.conv.weight", "to_rgbs.2.bias")}
    assert y["convs.0.conv.weight"] == pytest.approx(0.5, abs=1e-4)
    assert 0 < y["input.input"] < 0.5 < y["to_rgbs.2.bias"] < 1


def test_mapping_and_noise_sides_and_truncation_mean(a: Generator, b: Generator) -> None:
    low = resolve_loaded(a, "a")
    high = resolve_loaded(b, "b")
    for side, source in (("low", low), ("high", high)):
        out = blend_loaded(low, high, BlendSettings(swap_resolution=16, mapping_from=side, noise_from=side))
        state, ref = out.generator.state_dict(), source.generator.state_dict()
        assert all(torch.equal(state[k], ref[k]) for k in state if k.startswith(("style.", "noises.")))
        assert torch.equal(out.mean_latent, source.mean_latent)


def resolve_loaded(g: Generator, name: str):
    from toon3d.stylegan2.checkpoints import LoadedGenerator

    return LoadedGenerator(g, g.mean_latent(64, torch.Generator().manual_seed(0)), g.config, name, "test", "test")


def test_mismatched_architectures_are_one_line_errors(a: Generator) -> None:
    with pytest.raises(Toon3dError, match=r"\(32 px\) with .* \(64 px\)") as err:
        blend_generators(a, tiny(3, size=64), BlendSettings())
    assert "\n" not in str(err.value)
    with pytest.raises(Toon3dError, match="same architecture"):
        blend_generators(a, tiny(3, channel_max=16), BlendSettings())
    with pytest.raises(Toon3dError, match="not a block resolution .* choose one of 4, 8, 16, 32"):
        blend_generators(a, a, BlendSettings(swap_resolution=64))
    with pytest.raises(Toon3dError, match="--width"):
        BlendSettings(width=0)
    with pytest.raises(Toon3dError, match="swap only"):
        BlendSettings(width=1.0, mode="inject")


# ---- feature injection -----------------------------------------------------------------------------

def test_injection_with_base_equal_to_style_is_that_generator_and_its_swap(a: Generator) -> None:
    """§12.10: injecting G's own 16x16 features gives G, which is also any swap of G with itself."""
    codes = ws(a, 3)
    inj = FeatureInjectionGenerator(a, a, 16)
    swapped = blend_generators(a, a, BlendSettings(swap_resolution=16))
    torch.testing.assert_close(image(inj, codes), image(a, codes), rtol=0, atol=1e-6)
    torch.testing.assert_close(image(inj, codes), image(swapped, codes), rtol=0, atol=1e-6)
    # random noise: both halves see the same maps, drawn as the plain generator draws them
    with torch.no_grad():
        x = inj.synthesis(codes, noise_mode="random", generator=torch.Generator().manual_seed(5))
        y = a.synthesis(codes, noise_mode="random", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_injection_feeds_the_base_features_into_the_style_generator(a: Generator, b: Generator) -> None:
    codes = ws(a)
    inj = FeatureInjectionGenerator(a, b, 16)
    with torch.no_grad():
        _, feats = inj.synthesis(codes, return_features=True)
        base = a.block_features(codes, a.noise_buffers(), 16)
    for r in (4, 8, 16):
        torch.testing.assert_close(feats[r], base[r], rtol=0, atol=0)
    # once the style generator's layers up to 16 px are the base's (a swap at 16), injection changes nothing
    swapped = blend_generators(a, b, BlendSettings(swap_resolution=16))
    torch.testing.assert_close(image(FeatureInjectionGenerator(a, swapped, 16), codes), image(swapped, codes),
                               rtol=0, atol=1e-6)
    assert not torch.allclose(image(inj, codes), image(b, codes))


def test_injection_behaves_like_a_generator(a: Generator, b: Generator) -> None:
    inj = FeatureInjectionGenerator(a, b, 8, mapping_from="high")
    z = torch.randn(2, a.style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img, latent = inj([z], return_latents=True, randomize_noise=False, truncation=0.7,
                          truncation_latent=inj.mean_latent(16))
        assert img.shape == (2, 3, 32, 32) and latent.shape == (2, inj.n_latent, a.style_dim)
        torch.testing.assert_close(inj.mapping(z), b.mapping(z))
    assert (inj.size, inj.style_dim, inj.num_layers) == (a.size, a.style_dim, a.num_layers)
    assert inj.noise_buffers()[0] is a.noise_buffers()[0]
    with pytest.raises(Toon3dError, match="32 px"):
        FeatureInjectionGenerator(a, tiny(3, size=64), 16)


def test_injection_file_loads_everywhere(a: Generator, b: Generator, tmp_path: Path) -> None:
    inj = FeatureInjectionGenerator(a, b, 16, noise_from="high")
    mean = inj.mean_latent(32)
    path = save_generator(tmp_path / "inj.safetensors", inj, mean, {"note": "test"})
    assert load_model_file(path).config["kind"] == FEATURE_INJECTION_KIND
    with pytest.raises(Toon3dError, match="cannot be blended again"):
        blend_loaded(load_generator(path), resolve_loaded(a, "a"), BlendSettings())
    for loaded in (load_generator(path), resolve_generator(str(path))):
        g = loaded.generator
        assert isinstance(g, FeatureInjectionGenerator) and g.injection == inj.injection
        assert loaded.config == dict(a.config, kind="feature-injection")
        assert torch.equal(loaded.mean_latent, mean) and loaded.meta == {"note": "test"}
        torch.testing.assert_close(image(g, ws(a)), image(inj, ws(a)), rtol=0, atol=0)


# ---- toon3d blend ----------------------------------------------------------------------------------

@pytest.fixture()
def saved(a: Generator, b: Generator, tmp_path: Path) -> tuple[Path, Path]:
    pa = save_generator(tmp_path / "a.safetensors", a, a.mean_latent(64, torch.Generator().manual_seed(0)))
    pb = save_generator(tmp_path / "b.safetensors", b, b.mean_latent(64, torch.Generator().manual_seed(0)))
    return pa, pb


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["swap", "inject"])
def test_cli_round_trip(saved: tuple[Path, Path], tmp_path: Path, a: Generator, b: Generator, mode: str,
                        capsys: pytest.CaptureFixture) -> None:
    pa, pb = saved
    out = tmp_path / "models" / "blended.safetensors"
    assert main(["blend", "--low", str(pa), "--high", str(pb), "--resolution", "16", "--mode", mode,
                 "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["blended.preview.png", "blended.safetensors"]
    loaded = load_generator(out)
    meta = loaded.meta
    assert meta["blend"]["mode"] == mode and meta["blend"]["swap_resolution"] == 16
    assert meta["sources"]["low"]["sha256"] == _sha(pa) and meta["sources"]["high"]["sha256"] == _sha(pb)
    assert torch.equal(loaded.mean_latent, load_generator(pa).mean_latent)  # mapping (default) from low
    expected = (blend_generators(a, b, BlendSettings(swap_resolution=16)) if mode == "swap"
                else FeatureInjectionGenerator(a, b, 16))
    torch.testing.assert_close(image(loaded.generator, ws(a)), image(expected, ws(a)), rtol=0, atol=1e-6)
    grid = Image.open(out.parent / "blended.preview.png")
    assert grid.size == (3 * 34 + 2, 4 * 34 + 2)  # columns low | high | blended, one row per seed
    gen_out = tmp_path / "gen"
    assert main(["generate", "--ckpt", str(out), "--seeds", "0-1", "--out", str(gen_out)]) == 0
    summary = json.loads((gen_out / "generate.json").read_text())
    assert summary["size"] == 32 and summary["model"]["meta"]["blend"]["mode"] == mode


def test_cli_preview_columns_are_low_high_blended(saved: tuple[Path, Path], tmp_path: Path) -> None:
    pa, pb = saved
    out = tmp_path / "same.safetensors"
    # swapping at the size reproduces --low: the blended column equals the low column
    assert main(["blend", "--low", str(pa), "--high", str(pb), "--resolution", "32", "--out", str(out)]) == 0
    grid = np.asarray(Image.open(tmp_path / "same.preview.png").convert("RGB"))
    cell = lambda row, col: grid[2 + 34 * row: 34 * (row + 1), 2 + 34 * col: 34 * (col + 1)]  # noqa: E731
    for row in range(4):
        assert np.array_equal(cell(row, 0), cell(row, 2)) and not np.array_equal(cell(row, 0), cell(row, 1))


def _blend_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(["blend", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toon3d blend: error: ")
    return err


def test_cli_bad_input_is_one_line_and_writes_nothing(saved: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    pa, pb = saved
    big = save_generator(tmp_path / "big.safetensors", tiny(3, size=64), torch.zeros(1, 64))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.safetensors"
    cases = [
        (["--low", str(tmp_path / "missing.pt"), "--high", str(pb)], "not found"),
        (["--low", str(pa), "--high", str(big)], "32 px.*64 px"),
        (["--low", str(pa), "--high", str(pb), "--resolution", "64"], "choose one of 4, 8, 16, 32"),
        (["--low", str(pa), "--high", str(pb), "--resolution", "12"], "power of 2"),
        (["--low", str(pa), "--high", str(pb), "--width", "-1"], "--width"),
        (["--low", str(pa), "--high", str(pb), "--mode", "inject", "--level", "1"], "swap only"),
    ]
    for argv, message in cases:
        assert re.search(message, _blend_error(capsys, *argv, "--out", str(out)))
    assert list(out_dir.iterdir()) == []
    assert "tensors" in _blend_error(capsys, "--low", str(pa), "--high", str(pb), "--out", str(out_dir / "x.pt"))
    assert "overwrite the input" in _blend_error(capsys, "--low", str(pa), "--high", str(pb), "--out", str(pa),
                                                 "--overwrite")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "choose a writable output path" in _blend_error(capsys, "--low", str(pa), "--high", str(pb),
                                                           "--out", str(blocker / "x.safetensors"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "not writable" in _blend_error(capsys, "--low", str(pa), "--high", str(pb),
                                              "--out", str(locked / "x.safetensors"))
    assert main(["blend", "--low", str(pa), "--high", str(pb), "--out", str(out)]) == 0
    before = out.read_bytes()
    assert "--overwrite" in _blend_error(capsys, "--low", str(pa), "--high", str(pb), "--out", str(out))
    assert out.read_bytes() == before
    assert sorted(p.name for p in out_dir.iterdir()) == ["x.preview.png", "x.safetensors"]


def test_cli_help() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["blend", "--help"])
    assert exit_info.value.code == 0

"""Rosinality StyleGAN2 checkpoints → our Generator/Discriminator, built from the published key/shape table.

The synthetic state dicts below are written from REFERENCE.md §2.2-2.3 (rosinality's key
names and shapes), not from our modules, so a layout drift in either breaks these tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.stylegan2.checkpoints import (
    MEAN_LATENT_SEED,
    ArchOverrides,
    infer_generator_config,
    load_discriminator,
    load_generator,
    save_discriminator,
    save_generator,
)

_BASE = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def widths(size: int, cm: int, cmax: int) -> dict[int, int]:
    return {r: min(b * cm if r >= 64 else b, cmax) for r, b in _BASE.items() if r <= size}


def rosinality_generator_shapes(size: int, cm: int = 2, n_mlp: int = 8, style_dim: int = 512,
                                cmax: int = 512) -> dict[str, tuple[int, ...]]:
    ch = widths(size, cm, cmax)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(1, n_mlp + 1):
        shapes[f"style.{i}.weight"] = (style_dim, style_dim)
        shapes[f"style.{i}.bias"] = (style_dim,)
    shapes["input.input"] = (1, ch[4], 4, 4)

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        shapes[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            shapes[f"{prefix}.conv.blur.kernel"] = (4, 4)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)
        shapes[f"{prefix}.noise.weight"] = (1,)
        shapes[f"{prefix}.activate.bias"] = (cout,)

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        shapes[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            shapes[f"{prefix}.upsample.kernel"] = (4, 4)
        shapes[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)

    styled("conv1", ch[4], ch[4], False)
    to_rgb("to_rgb1", ch[4], False)
    res = [r for r in ch if r > 4]
    cin = ch[4]
    for k, r in enumerate(res):
        styled(f"convs.{2 * k}", cin, ch[r], True)
        styled(f"convs.{2 * k + 1}", ch[r], ch[r], False)
        to_rgb(f"to_rgbs.{k}", ch[r], True)
        cin = ch[r]
    for i in range(2 * len(res) + 1):
        r = 2 ** ((i + 5) // 2)
        shapes[f"noises.noise_{i}"] = (1, 1, r, r)
    return shapes


def rosinality_discriminator_shapes(size: int, cm: int = 2, cmax: int = 512) -> dict[str, tuple[int, ...]]:
    ch = widths(size, cm, cmax)
    shapes = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
    cin = ch[size]
    r, i = size, 1
    while r > 4:
        cout = ch[r // 2]
        shapes.update({f"convs.{i}.conv1.0.weight": (cin, cin, 3, 3), f"convs.{i}.conv1.1.bias": (cin,),
                       f"convs.{i}.conv2.0.kernel": (4, 4), f"convs.{i}.conv2.1.weight": (cout, cin, 3, 3),
                       f"convs.{i}.conv2.2.bias": (cout,), f"convs.{i}.skip.0.kernel": (4, 4),
                       f"convs.{i}.skip.1.weight": (cout, cin, 1, 1)})
        cin, r, i = cout, r // 2, i + 1
    shapes.update({"final_conv.0.weight": (ch[4], ch[4] + 1, 3, 3), "final_conv.1.bias": (ch[4],),
                   "final_linear.0.weight": (ch[4], ch[4] * 16), "final_linear.0.bias": (ch[4],),
                   "final_linear.1.weight": (1, ch[4]), "final_linear.1.bias": (1,)})
    return shapes


def _blur(up: bool) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum() * (4 if up else 1)


def synthetic_state(shapes: dict[str, tuple[int, ...]], seed: int = 0, zeros: bool = False,
                    d: bool = False) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("kernel"):
            state[key] = _blur(up=not d)
        elif zeros:
            state[key] = torch.zeros(shape)
        else:
            state[key] = torch.randn(shape, generator=rng) * 0.5
    return state


def test_full_256_cm2_table_loads_strictly(tmp_path: Path) -> None:
    shapes = rosinality_generator_shapes(256, cm=2)
    assert len(shapes) == 135
    params = {k: s for k, s in shapes.items() if not k.startswith("noises.") and not k.endswith("kernel")}
    assert sum(torch.Size(s).numel() for s in params.values()) == 30_034_338
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": synthetic_state(shapes, zeros=True)}, path)
    loaded = load_generator(path)
    assert loaded.config["size"] == 256 and loaded.config["channel_multiplier"] == 2
    assert loaded.config["n_mlp"] == 8 and loaded.config["style_dim"] == 512 and loaded.config["channel_max"] == 512
    assert loaded.generator.n_latent == 14 and loaded.entry == "g_ema"
    state = loaded.generator.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes


def test_full_256_discriminator_table() -> None:
    shapes = rosinality_discriminator_shapes(256, cm=2)
    assert len(shapes) == 50
    params = {k: s for k, s in shapes.items() if not k.endswith("kernel")}
    assert sum(torch.Size(s).numel() for s in params.values()) == 28_864_129


@pytest.fixture
def small_shapes() -> dict[str, tuple[int, ...]]:
    return rosinality_generator_shapes(32, cm=1, n_mlp=2, style_dim=16, cmax=16)


def test_round_trip_values_and_prefers_g_ema(tmp_path: Path, small_shapes) -> None:
    ema, raw = synthetic_state(small_shapes, seed=1), synthetic_state(small_shapes, seed=2)
    latent_avg = torch.randn(16)
    path = tmp_path / "ckpt.pt"
    torch.save({"g": raw, "g_ema": ema, "d": {}, "g_optim": {"state": {}}, "latent_avg": latent_avg,
                "args": argparse.Namespace(size=32, channel_multiplier=1), "ada_aug_p": 0.2}, path)
    loaded = load_generator(path)
    assert loaded.entry == "g_ema" and loaded.mean_source == "latent_avg"
    assert torch.equal(loaded.mean_latent, latent_avg.view(1, 16))
    for key, value in loaded.generator.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert loaded.meta["args"]["size"] == 32
    image = loaded.generator.synthesis(loaded.mean_latent.unsqueeze(1).repeat(1, loaded.generator.n_latent, 1))
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_g_only_bare_state_dict_and_module_prefix(tmp_path: Path, small_shapes) -> None:
    state = synthetic_state(small_shapes, seed=3)
    for i, ckpt in enumerate([{"g": state}, state, {"g_ema": {f"module.{k}": v for k, v in state.items()}},
                              {f"module.{k}": v for k, v in state.items()}]):
        path = tmp_path / f"c{i}.pt"
        torch.save(ckpt, path)
        loaded = load_generator(path)
        assert torch.equal(loaded.generator.state_dict()["style.1.weight"], state["style.1.weight"])
    assert load_generator(tmp_path / "c0.pt").entry == "g"
    assert load_generator(tmp_path / "c1.pt").entry == "state_dict"


def test_seeded_mean_latent_without_latent_avg(tmp_path: Path, small_shapes) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"g_ema": synthetic_state(small_shapes, seed=4)}, path)
    first, second = load_generator(path), load_generator(path)
    assert first.mean_source == f"mean_latent(4096, seed {MEAN_LATENT_SEED})"
    assert torch.equal(first.mean_latent, second.mean_latent) and first.mean_latent.shape == (1, 16)
    expected = first.generator.mapping(
        torch.randn(4096, 16, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED))).mean(0, keepdim=True)
    torch.testing.assert_close(first.mean_latent, expected, rtol=1e-5, atol=1e-6)
    computed = load_generator(path, truncation_mean_samples=64)
    assert computed.mean_source == f"mean_latent(64, seed {MEAN_LATENT_SEED})"


def test_missing_buffers_are_filled_deterministically(tmp_path: Path, small_shapes) -> None:
    state = {k: v for k, v in synthetic_state(small_shapes, seed=5).items()
             if not k.startswith("noises.") and not k.endswith("kernel")}
    path = tmp_path / "nobuf.pt"
    torch.save({"g_ema": state}, path)
    a, b = load_generator(path).generator, load_generator(path).generator
    for key in a.state_dict():
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    torch.testing.assert_close(a.state_dict()["convs.0.conv.blur.kernel"], _blur(up=True))
    assert a.state_dict()["noises.noise_0"].std() > 0.3


def test_missing_parameter_is_an_error(tmp_path: Path, small_shapes) -> None:
    state = synthetic_state(small_shapes)
    del state["convs.1.noise.weight"]
    path = tmp_path / "partial.pt"
    torch.save({"g_ema": state}, path)
    with pytest.raises(Toon3dError, match=r"1 generator parameters missing \(e.g. convs.1.noise.weight\)"):
        load_generator(path)


def test_unexpected_key_and_bad_kernel(tmp_path: Path, small_shapes) -> None:
    state = synthetic_state(small_shapes)
    path = tmp_path / "extra.pt"
    torch.save({"g_ema": dict(state, **{"extra.weight": torch.zeros(1)})}, path)
    with pytest.raises(Toon3dError, match="entries this architecture does not have"):
        load_generator(path)
    state["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    torch.save({"g_ema": state}, path)
    with pytest.raises(Toon3dError, match="custom blur_kernel"):
        load_generator(path)


def test_wrong_overrides_name_the_fix(tmp_path: Path) -> None:
    shapes = rosinality_generator_shapes(64, cm=2, n_mlp=2, style_dim=16)
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": synthetic_state(shapes, zeros=True)}, path)
    with pytest.raises(Toon3dError) as err:
        load_generator(path, ArchOverrides(channel_multiplier=1))
    assert str(err.value) == ("550000.pt: generator weights for channel_multiplier=2 expected by the file, "
                              "--channel-multiplier 1 given; pass --channel-multiplier 2")
    with pytest.raises(Toon3dError) as err:
        load_generator(path, ArchOverrides(size=256))
    assert str(err.value) == ("550000.pt: generator weights for size=64 expected by the file, "
                              "--size 256 given; pass --size 64")
    with pytest.raises(Toon3dError, match="pass --channel-max 512"):
        load_generator(path, ArchOverrides(channel_max=256))
    loaded = load_generator(path, ArchOverrides(size=64, channel_multiplier=2, channel_max=512))
    assert loaded.config["size"] == 64


def test_equivalent_override_is_accepted(tmp_path: Path) -> None:
    # With a 32-channel cap every width is 32 whatever the multiplier: cm 1 and 4 build identical nets.
    shapes = rosinality_generator_shapes(64, cm=1, n_mlp=1, style_dim=8, cmax=32)
    path = tmp_path / "tiny.pt"
    torch.save(synthetic_state(shapes), path)
    assert infer_generator_config(torch.load(path, weights_only=True))["channel_max"] == 32
    loaded = load_generator(path, ArchOverrides(channel_multiplier=4))
    assert loaded.config["channel_multiplier"] == 4


def test_not_stylegan_and_wrong_entries(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(2)}, path)
    with pytest.raises(Toon3dError) as err:
        load_generator(path)
    assert str(err.value) == ("resnet.pth is not a StyleGAN2 checkpoint (no g_ema/g/style.* keys found); "
                              "pass a rosinality checkpoint such as 550000.pt")
    torch.save({"g_ema": torch.zeros(3)}, path)
    with pytest.raises(Toon3dError, match="not a state dict"):
        load_generator(path)
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}}, path)
    with pytest.raises(Toon3dError, match="generator weights are incomplete"):
        load_generator(path)
    shapes = rosinality_generator_shapes(16, cm=1, n_mlp=1, style_dim=8, cmax=8)
    state = {k: v for k, v in synthetic_state(shapes).items() if not k.startswith(("to_rgbs.1", "convs.2", "convs.3"))}
    torch.save({"g_ema": state}, path)
    with pytest.raises(Toon3dError, match=r"stop at 8 px \(only 1 ToRGB layers\)"):
        load_generator(path)


def test_nan_weights_and_bad_latent_avg(tmp_path: Path, small_shapes) -> None:
    state = synthetic_state(small_shapes)
    path = tmp_path / "c.pt"
    torch.save({"g_ema": state, "latent_avg": torch.zeros(7)}, path)
    with pytest.raises(Toon3dError, match=r"latent_avg is \[7\], expected 16 values"):
        load_generator(path)
    state["style.1.bias"] = torch.full((16,), float("nan"))
    torch.save({"g_ema": state}, path)
    with pytest.raises(Toon3dError, match="style.1.bias contains NaN"):
        load_generator(path)


def _tiny_generator():
    from toon3d.stylegan2.generator import Generator

    return Generator(16, style_dim=8, n_mlp=1, channel_max=8)


def test_discriminator_round_trip(tmp_path: Path) -> None:
    shapes = rosinality_discriminator_shapes(32, cm=1, cmax=32)
    state = synthetic_state(shapes, seed=6, d=True)
    path = tmp_path / "ckpt.pt"
    torch.save({"d": {f"module.{k}": v for k, v in state.items()}}, path)
    disc = load_discriminator(path)
    assert disc.config["size"] == 32 and disc.config["channel_max"] == 32
    for key, value in disc.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert disc(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    torch.save({"g_ema": {}}, path)
    with pytest.raises(Toon3dError, match="has no discriminator"):
        load_discriminator(path)
    torch.save({"d": state}, path)
    with pytest.raises(Toon3dError, match="discriminator weights for size=32 expected by the file"):
        load_discriminator(path, ArchOverrides(size=64))
    saved = save_discriminator(tmp_path / "d.safetensors", disc, {"step": 3})
    again = load_discriminator(saved)
    assert again.config == disc.config
    for key, value in again.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(Toon3dError, match="not a discriminator"):
        load_discriminator(save_generator(tmp_path / "g.safetensors", _tiny_generator(), torch.zeros(1, 8)))


def test_toon3d_generator_file_round_trip(tmp_path: Path, small_shapes) -> None:
    src = tmp_path / "ckpt.pt"
    torch.save({"g_ema": synthetic_state(small_shapes, seed=7), "latent_avg": torch.randn(16)}, src)
    loaded = load_generator(src)
    out = save_generator(tmp_path / "g.safetensors", loaded.generator, loaded.mean_latent, {"from": "test"})
    again = load_generator(out)
    assert again.entry == "file" and again.meta == {"from": "test"} and again.config == loaded.config
    assert torch.equal(again.mean_latent, loaded.mean_latent)
    ws = torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(0)).repeat(1, loaded.generator.n_latent, 1)
    with torch.no_grad():
        torch.testing.assert_close(again.generator.synthesis(ws), loaded.generator.synthesis(ws), rtol=0, atol=0)
    with pytest.raises(Toon3dError, match="pass --size 32"):
        load_generator(out, ArchOverrides(size=64))


def _resave(tmp_path: Path, source: Path, kind: str, section: str, config) -> Path:
    from toon3d.io.checkpoint import load_model_file, save_model

    model = load_model_file(source)
    return save_model(tmp_path / f"bad_{kind}.safetensors", model.state_dict, {"kind": kind, section: config})


@pytest.mark.parametrize("change, match", [
    ({"foo": 1}, "field 'foo', which Generator does not take"),
    ({"size": "16"}, "field 'size' is '16', not a valid int"),
    ({"size": True}, "field 'size' is True"),
    ({"lr_mlp": float("nan")}, "field 'lr_mlp'"),
    ({"blur_kernel": [1, "x"]}, "field 'blur_kernel'"),
    ({"size": None}, "field 'size'"),
])
def test_malformed_generator_file_config_is_named(tmp_path: Path, change, match) -> None:
    from toon3d.stylegan2.checkpoints import GENERATOR_KIND

    g = _tiny_generator()
    good = save_generator(tmp_path / "g.safetensors", g, torch.zeros(1, 8))
    bad = _resave(tmp_path, good, GENERATOR_KIND, "generator", {**g.config, **change})
    with pytest.raises(Toon3dError, match=match) as info:
        load_generator(bad)
    assert "\n" not in str(info.value)


def test_generator_file_config_shapes(tmp_path: Path) -> None:
    from toon3d.stylegan2.checkpoints import GENERATOR_KIND

    g = _tiny_generator()
    good = save_generator(tmp_path / "g.safetensors", g, torch.zeros(1, 8))
    with pytest.raises(Toon3dError, match="not a generator"):
        load_generator(_resave(tmp_path, good, GENERATOR_KIND, "generator", [1, 2]))
    with pytest.raises(Toon3dError, match="lacks the field 'size'"):
        load_generator(_resave(tmp_path, good, GENERATOR_KIND, "generator", {"style_dim": 8}))
    # Fields left out take the constructor's defaults: n_mlp 8 does not match the weights.
    with pytest.raises(Toon3dError, match="parameters missing"):
        load_generator(_resave(tmp_path, good, GENERATOR_KIND, "generator", {"size": 16}))
    partial = {k: v for k, v in g.config.items() if k not in ("blur_kernel", "lr_mlp")}
    again = load_generator(_resave(tmp_path, good, GENERATOR_KIND, "generator", partial))
    assert again.config == g.config


@pytest.mark.parametrize("change, match", [
    ({"foo": 1}, "field 'foo', which Discriminator does not take"),
    ({"channel_max": 8.5}, "field 'channel_max'"),
])
def test_malformed_discriminator_file_config_is_named(tmp_path: Path, change, match) -> None:
    from toon3d.stylegan2.checkpoints import DISCRIMINATOR_KIND
    from toon3d.stylegan2.discriminator import Discriminator

    disc = Discriminator(16, channel_max=8)
    good = save_discriminator(tmp_path / "d.safetensors", disc)
    bad = _resave(tmp_path, good, DISCRIMINATOR_KIND, "discriminator", {**disc.config, **change})
    with pytest.raises(Toon3dError, match=match) as info:
        load_discriminator(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ckpt", [{0: torch.zeros(1)}, {"g_ema": {0: torch.zeros(1)}}, {"d": {1: torch.zeros(1)}},
                                  {("style", 1): torch.zeros(1), "style.1.weight": torch.zeros(1)}])
def test_non_string_keys_are_not_a_checkpoint(tmp_path: Path, ckpt) -> None:
    path = tmp_path / "odd.pt"
    torch.save(ckpt, path)
    loader = load_discriminator if "d" in ckpt else load_generator
    with pytest.raises(Toon3dError, match="is not a StyleGAN2 checkpoint") as info:
        loader(path)
    assert "\n" not in str(info.value)
    if any(not isinstance(k, str) for k in ckpt):
        with pytest.raises(Toon3dError, match="is not a StyleGAN2 checkpoint"):
            load_discriminator(path)

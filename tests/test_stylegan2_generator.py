"""Generator: rosinality state-dict layout, REFERENCE §13 numerics, and behaviour of every option."""

import copy
import json

import pytest
import torch

from conformance import fill_by_formula, formula_w, formula_z
from toon3d.errors import Toon3dError
from toon3d.stylegan2.generator import Generator


def expected_generator_table() -> dict[str, tuple[int, ...]]:
    """REFERENCE §2.2: every key and shape of Generator(256, 512, 8, channel_multiplier=2)."""
    t: dict[str, tuple[int, ...]] = {}
    for i in range(1, 9):
        t[f"style.{i}.weight"] = (512, 512)
        t[f"style.{i}.bias"] = (512,)
    t["input.input"] = (1, 512, 4, 4)

    def styled(prefix, cin, cout, up):
        t[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            t[f"{prefix}.conv.blur.kernel"] = (4, 4)
        t[f"{prefix}.conv.modulation.weight"] = (cin, 512)
        t[f"{prefix}.conv.modulation.bias"] = (cin,)
        t[f"{prefix}.noise.weight"] = (1,)
        t[f"{prefix}.activate.bias"] = (cout,)

    def to_rgb(prefix, cin, up):
        t[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            t[f"{prefix}.upsample.kernel"] = (4, 4)
        t[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        t[f"{prefix}.conv.modulation.weight"] = (cin, 512)
        t[f"{prefix}.conv.modulation.bias"] = (cin,)

    styled("conv1", 512, 512, False)
    to_rgb("to_rgb1", 512, False)
    io = [(512, 512)] * 8 + [(512, 256), (256, 256), (256, 128), (128, 128)]
    for i, (cin, cout) in enumerate(io):
        styled(f"convs.{i}", cin, cout, i % 2 == 0)
    for k, cin in enumerate([512, 512, 512, 512, 256, 128]):
        to_rgb(f"to_rgbs.{k}", cin, True)
    for i in range(13):
        r = 2 ** ((i + 5) // 2)
        t[f"noises.noise_{i}"] = (1, 1, r, r)
    return t


@pytest.fixture(scope="module")
def g256():
    torch.manual_seed(0)
    return fill_by_formula(Generator(256)).eval()


@pytest.fixture(scope="module")
def small():
    """A tiny 32 px generator (channels capped at 16, style_dim 16) with formula weights."""
    return fill_by_formula(Generator(32, style_dim=16, n_mlp=2, channel_max=16)).eval()


def test_state_dict_keys_shapes_and_counts(g256):
    sd = g256.state_dict()
    table = expected_generator_table()
    assert len(sd) == 135 == len(table)
    assert {k: tuple(v.shape) for k, v in sd.items()} == table
    assert sum(p.numel() for p in g256.parameters()) == 30_034_338
    assert g256.n_latent == 14 and g256.num_layers == 13 and g256.log_size == 8 and g256.style_dim == 512


def test_state_dict_round_trip_strict(small):
    other = Generator(**small.config)
    other.load_state_dict(small.state_dict(), strict=True)
    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, _ = small([w], randomize_noise=False)
        b, _ = other([w], randomize_noise=False)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert json.loads(json.dumps(small.config)) == small.config


def test_mapping_matches_section13(g256):
    with torch.no_grad():
        s = g256.mapping(formula_z())
    assert abs(s.mean().item() - 0.004282) < 1e-6
    assert abs(s.std().item() - 0.008789) < 1e-6
    torch.testing.assert_close(s[0, :3], torch.tensor([-0.0047, 0.018072, -0.003007]), atol=1e-6, rtol=0)
    torch.testing.assert_close(g256.get_latent(formula_z()), s)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_image_from_w_matches_section13(g256, path):
    g256.set_conv_path(path)
    try:
        with torch.no_grad():
            img, latent = g256([formula_w()], input_is_latent=True, randomize_noise=False, return_latents=True)
    finally:
        g256.set_conv_path("fast")
    assert img.shape == (1, 3, 256, 256) and latent.shape == (1, 14, 512)
    # Values reach ~36, so "1e-4 relative" is taken relative to that scale (pixels to ~4e-3 absolute).
    assert abs(img.mean().item() - 3.858642) < 4e-4
    assert abs(img.std().item() - 9.868484) < 1e-3
    assert abs(img.min().item() + 16.712896) < 2e-3
    assert abs(img.max().item() - 36.325562) < 4e-3
    torch.testing.assert_close(img[0, :, 0, 0], torch.tensor([-0.91925, 1.45722, -1.37543]), atol=1e-4, rtol=0)
    torch.testing.assert_close(img[0, :, 128, 77], torch.tensor([-0.10734, -0.39681, 19.06213]),
                               atol=1e-4, rtol=1e-5)


def test_image_from_z_and_block_features_match_section13(g256):
    with torch.no_grad():
        img, _ = g256([formula_z()], randomize_noise=False)
        ws = formula_w()[:, None].repeat(1, 14, 1)
        img_w, feats = g256.synthesis(ws, return_features=True)
    assert abs(img.mean().item() - 3.309395) < 4e-4 and abs(img.std().item() - 8.858212) < 1e-3
    assert sorted(feats) == [4, 8, 16, 32, 64, 128, 256]
    assert feats[8].shape == (1, 512, 8, 8) and feats[16].shape == (1, 512, 16, 16)
    assert abs(feats[8].mean().item() - 0.925602) < 1e-4 and abs(feats[8].std().item() - 2.091162) < 2e-4
    assert abs(feats[16].mean().item() - 1.268677) < 1e-4 and abs(feats[16].std().item() - 2.501558) < 2e-4
    assert abs(img_w.mean().item() - 3.858642) < 4e-4


@pytest.mark.parametrize("batch", [1, 3])
def test_fast_path_equals_reference_formula(small, batch):
    gen = torch.Generator().manual_seed(batch)
    ws = torch.randn(batch, small.n_latent, 16, generator=gen)
    noise = [torch.randn(batch, 1, *n.shape[2:], generator=gen) for n in small.noise_buffers()]
    small.set_conv_path("reference")
    ref, ref_feats = small.synthesis(ws, noise=noise, return_features=True)
    small.set_conv_path("fast")
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out, feats = small.synthesis(ws, noise=noise, return_features=True)
        scale = ref.abs().max()
        assert ((out - ref).abs().max() / scale).item() < 1e-4
        for r in ref_feats:
            assert ((feats[r] - ref_feats[r]).abs().max() / ref_feats[r].abs().max()).item() < 1e-4


def test_truncation_zero_gives_mean_image(small):
    gen = torch.Generator().manual_seed(0)
    mean = small.mean_latent(64, generator=gen)
    z = torch.randn(2, 16, generator=gen)
    with torch.no_grad():
        img, lat = small([z], truncation=0.0, truncation_latent=mean, randomize_noise=False, return_latents=True)
        mean_img, _ = small([mean], input_is_latent=True, randomize_noise=False)
        half, lat_half = small([z], truncation=0.5, truncation_latent=mean, randomize_noise=False,
                               return_latents=True)
    torch.testing.assert_close(img, mean_img.expand(2, -1, -1, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lat_half[:, 0], mean + 0.5 * (small.mapping(z) - mean), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="truncation_latent"):
        small([z], truncation=0.5)


def test_mean_latent_is_seeded(small):
    a = small.mean_latent(32, generator=torch.Generator().manual_seed(5))
    b = small.mean_latent(32, generator=torch.Generator().manual_seed(5))
    c = small.mean_latent(32, generator=torch.Generator().manual_seed(6))
    assert a.shape == (1, 16) and torch.equal(a, b) and not torch.equal(a, c)


def test_style_mixing(small):
    gen = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 16, generator=gen), torch.randn(2, 16, generator=gen)
    with torch.no_grad():
        plain, _ = small([z1], randomize_noise=False)
        same, _ = small([z1, z1], inject_index=3, randomize_noise=False)
        mixed, lat = small([z1, z2], inject_index=3, randomize_noise=False, return_latents=True)
    torch.testing.assert_close(same, plain, atol=0, rtol=0)
    assert not torch.allclose(mixed, plain)
    w1, w2 = small.mapping(z1), small.mapping(z2)
    torch.testing.assert_close(lat[:, :3], w1[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(lat[:, 3:], w2[:, None].expand(-1, small.n_latent - 3, -1))
    # A random inject index drawn from a seeded generator is reproducible.
    _, la = small([z1, z2], return_latents=True, generator=torch.Generator().manual_seed(9))
    _, lb = small([z1, z2], return_latents=True, generator=torch.Generator().manual_seed(9))
    assert torch.equal(la, lb)


def test_w_plus_input_used_as_is(small):
    ws = torch.randn(2, small.n_latent, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, lat = small([ws], input_is_latent=True, randomize_noise=False, return_latents=True)
        b = small.synthesis(ws, noise_mode="const")
    assert torch.equal(lat, ws)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_noise_modes(small):
    ws = torch.randn(1, small.n_latent, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        c1 = small.synthesis(ws, noise_mode="const")
        c2 = small.synthesis(ws, noise_mode="const")
        r1 = small.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(7))
        r2 = small.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(7))
        r3 = small.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(8))
        none = small.synthesis(ws, noise_mode="none")
        zero_list = small.synthesis(ws, noise=[torch.zeros_like(n) for n in small.noise_buffers()])
        explicit = small.synthesis(ws, noise=small.noise_buffers())
    assert torch.equal(c1, c2) and torch.equal(r1, r2)
    assert not torch.allclose(r1, r3) and not torch.allclose(none, c1)
    torch.testing.assert_close(none, zero_list, atol=0, rtol=0)
    torch.testing.assert_close(explicit, c1, atol=0, rtol=0)
    with pytest.raises(ValueError, match="noise_mode"):
        small.synthesis(ws, noise_mode="fixed")
    with pytest.raises(ValueError, match="noise must be a list"):
        small.synthesis(ws, noise=small.noise_buffers()[:2])


def test_make_noise_shapes_and_seed(g256):
    a = g256.make_noise(torch.Generator().manual_seed(0))
    b = g256.make_noise(torch.Generator().manual_seed(0))
    assert len(a) == 13
    assert [tuple(n.shape) for n in a] == [tuple(n.shape) for n in g256.noise_buffers()]
    assert a[0].shape == (1, 1, 4, 4) and a[-1].shape == (1, 1, 256, 256)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_feature_injection(small):
    gen = torch.Generator().manual_seed(5)
    ws_a = torch.randn(1, small.n_latent, 16, generator=gen)
    ws_b = torch.randn(1, small.n_latent, 16, generator=gen)
    other = copy.deepcopy(small)
    with torch.no_grad():
        other.convs[4].conv.weight.mul_(-1.0)  # block 32 differs, blocks <= 16 are the same
        img_a, feats_a = small.synthesis(ws_a, return_features=True)
        # Injecting a generator's own block output changes nothing.
        same = small.synthesis(ws_a, inject_features={16: feats_a[16]})
        torch.testing.assert_close(same, img_a, atol=0, rtol=0)
        img_b, feats_b = small.synthesis(ws_b, return_features=True)
        injected, feats_i = small.synthesis(ws_b, inject_features={8: feats_a[8]}, return_features=True)
    assert torch.equal(feats_i[8], feats_a[8])
    assert not torch.allclose(feats_i[16], feats_b[16])
    assert not torch.allclose(injected, img_b)
    with pytest.raises(ValueError, match="inject_features"):
        small.synthesis(ws_a, inject_features={12: feats_a[8]})


def test_gradients_flow_to_w(small):
    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(6), requires_grad=True)
    img, _ = small([w], input_is_latent=True, randomize_noise=False)
    img.square().mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    params_with_grad = [n for n, p in small.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert "convs.0.conv.weight" in params_with_grad
    small.zero_grad(set_to_none=True)


def test_channel_table_and_config():
    g = Generator(64, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=64)
    assert g.channels == {4: 64, 8: 64, 16: 64, 32: 64, 64: 64}
    assert g.config == {"size": 64, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 1,
                        "blur_kernel": [1.0, 3.0, 3.0, 1.0], "lr_mlp": 0.01, "channel_max": 64}
    assert Generator(**g.config).state_dict().keys() == g.state_dict().keys()
    assert g.n_latent == 10 and g.num_layers == 9


@pytest.mark.parametrize("size", [8, 48, 2048])
def test_bad_size_is_a_user_error(size):
    with pytest.raises(Toon3dError, match="power of 2"):
        Generator(size, style_dim=8, n_mlp=1, channel_max=8)


def test_bad_ws_shape(small):
    with pytest.raises(ValueError, match="ws must be"):
        small.synthesis(torch.zeros(1, 3, 16))


@pytest.mark.parametrize("split_from", [8, 32, 64])
def test_cpu_per_sample_inference_equals_batched_path(small, monkeypatch, split_from):
    monkeypatch.setattr("toon3d.stylegan2.generator.PER_SAMPLE_FROM_RES", split_from)
    ws = torch.randn(3, small.n_latent, 16, generator=torch.Generator().manual_seed(11))
    feats16 = torch.randn(3, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        per_sample, f1 = small.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1),
                                         return_features=True, inject_features={16: feats16})
        small.per_sample_cpu_inference = False
        try:
            batched, f2 = small.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1),
                                          return_features=True, inject_features={16: feats16})
        finally:
            small.per_sample_cpu_inference = True
    # Same random noise draws in the same order, same maths up to float rounding.
    torch.testing.assert_close(per_sample, batched, atol=1e-5, rtol=1e-5)
    for r in f1:
        torch.testing.assert_close(f1[r], f2[r], atol=1e-5, rtol=1e-5)
    assert sorted(f1) == [4, 8, 16, 32] and torch.equal(f1[16], feats16)
    with torch.enable_grad():
        graph = small.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1),
                                inject_features={16: feats16})
    torch.testing.assert_close(graph.detach(), per_sample, atol=1e-5, rtol=1e-5)


def test_conv_path_selection(small):
    with pytest.raises(ValueError, match="conv path"):
        small.set_conv_path("grouped")
    assert small.set_conv_path("reference") is small
    assert all(m.conv.path == "reference" for m in small.convs)
    small.set_conv_path("fast")
    assert all(m.conv.path == "fast" for m in small.convs)

"""The generator's early exit (Generator.synthesis(until=…), toon3d.stylegan2.early_exit) and its users."""

from __future__ import annotations

import pytest
import torch

from toon3d.stylegan2.blend import FeatureInjectionGenerator
from toon3d.stylegan2.early_exit import LowResSynthesis, exit_size, shrink
from toon3d.stylegan2.generator import Generator


def _generator(seed: int = 0, size: int = 64) -> Generator:
    torch.manual_seed(seed)
    g = Generator(size, 32, 2, channel_multiplier=1, channel_max=32).eval()
    with torch.no_grad():  # non-zero noise strengths, so fixed noise maps matter
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    return g


def _ws(g: Generator, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(seed))


def test_until_full_size_is_the_full_image_and_stops_the_blocks_above():
    g = _generator()
    ws = _ws(g)
    with torch.no_grad():
        assert torch.equal(g.synthesis(ws, until=64), g.synthesis(ws))
    ran = []
    hooks = [conv.register_forward_hook(lambda m, i, o: ran.append(o.shape[-1])) for conv in g.convs]
    x = ws.clone().requires_grad_(True)
    image = g.synthesis(x, until=16)
    for h in hooks:
        h.remove()
    assert image.shape == (2, 3, 16, 16)
    assert max(ran) == 16  # no block above 16 px ran
    image.mean().backward()
    # the W+ entries read only by the blocks above 16 px get no gradient; those of the blocks below do
    assert x.grad[:, :6].abs().sum() > 0 and x.grad[:, 6:].abs().sum() == 0
    with pytest.raises(ValueError, match="until must be one of"):
        g.synthesis(ws, until=24)


def test_partial_image_is_the_skip_sum_the_full_pass_builds_on():
    """The 16 px exit, upsampled through the rest of the network's skip path, is what the full pass adds to."""
    g = _generator()
    ws = _ws(g)
    with torch.no_grad():
        skip16 = g.synthesis(ws, until=16)
        skip32 = g.synthesis(ws, until=32)
        feats = g.synthesis(ws, return_features=True)[1]
        # ToRGB of block 32 on its own features, added to the upsampled 16 px skip image
        again = g.to_rgbs[2](feats[32], ws[:, 7], skip16)
    torch.testing.assert_close(again, skip32, rtol=0, atol=1e-6)


def test_low_res_synthesis_is_exact_at_the_reference_and_tracks_nearby_codes():
    g = _generator()
    ws = _ws(g)
    low = LowResSynthesis(g, 32)
    residual = low.residual(ws)
    with torch.no_grad():
        torch.testing.assert_close(low(ws, residual), shrink(g.synthesis(ws), 32), rtol=0, atol=1e-5)
        near = ws + 0.02 * torch.randn_like(ws)
        exact = shrink(g.synthesis(near), 32)
        corrected = (low(near, residual) - exact).abs().mean()
        uncorrected = (g.synthesis(near, until=32) - exact).abs().mean()
    assert corrected < 0.1 * uncorrected  # the residual carries what the higher blocks add


def test_exit_size_rules():
    g = _generator()
    assert exit_size(g, None) is None and exit_size(g, 64) is None and exit_size(g, 128) is None
    assert exit_size(g, 32) == 32 and exit_size(g, 20) == 32
    with pytest.raises(ValueError, match="cannot stop"):
        LowResSynthesis(g, 64)


def test_feature_injection_generator_stops_early_like_its_full_pass():
    base, style = _generator(0), _generator(5)
    blended = FeatureInjectionGenerator(base, style, resolution=16).eval()
    ws = _ws(base)
    with torch.no_grad():
        full = blended.synthesis(ws)
        torch.testing.assert_close(blended.synthesis(ws, until=64), full, rtol=0, atol=0)
        low = LowResSynthesis(blended, 32)
        torch.testing.assert_close(low(ws, low.residual(ws)), shrink(full, 32), rtol=0, atol=1e-5)


def test_projector_early_exit_matches_the_full_projection_at_the_latent_and_passes_gradients():
    from toon3d.shape.latent_offset import LatentProjector

    g = _generator().requires_grad_(False)  # the steps freeze G; the projector does not own it
    latent = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))
    full = LatentProjector(g, 1, truncation=0.7, output_size=32)
    fast = LatentProjector(g, 1, truncation=0.7, output_size=32, synthesis_size=32)
    assert fast.low is not None and full.low is None
    with torch.no_grad():
        torch.testing.assert_close(fast.generate(latent), full.generate(latent), rtol=0, atol=1e-5)
    offset = (0.01 * torch.randn(2, 32)).requires_grad_(True)
    image = fast.generate(latent, offset)
    assert image.shape == (2, 3, 32, 32)
    image.mean().backward()
    assert offset.grad.abs().sum() > 0


def test_projection_size_setting():
    from toon3d.errors import Toon3dError
    from toon3d.shape.settings import preset

    assert preset("paper").synthesis_size() is None
    assert preset("cpu").synthesis_size() is None  # opt-in: every preset runs the whole generator
    assert preset("cpu", projection_size=64).synthesis_size() == 64
    assert preset("cpu", projection_size=64, image_size=128).synthesis_size() == 128  # never below the 3D size
    with pytest.raises(Toon3dError, match="projection_size must be a power of two"):
        preset("cpu", projection_size=48)


def test_refinement_at_a_lower_size_runs_on_the_early_exit():
    from toon3d.edit.refine import refine_direction

    g = _generator()
    w = torch.randn(1, 32, generator=torch.Generator().manual_seed(4))
    n = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(5)), dim=0)
    seen = []

    def identity(images):
        seen.append(images.shape[-1])
        return images.mean((2, 3))

    def low(images):
        return images[:, :, ::4, ::4]

    fast = refine_direction(g, w, n, 2.0, identity, low, None, "code", steps=3, synthesis_size=32)
    assert set(seen) == {32}
    seen.clear()
    full = refine_direction(g, w, n, 2.0, identity, low, None, "code", steps=3)
    assert set(seen) == {64}
    assert fast.delta_w.shape == full.delta_w.shape == (1, 32)
    assert torch.isfinite(fast.losses).all() and not torch.equal(fast.delta_w, full.delta_w)

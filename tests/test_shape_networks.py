"""VLDA networks and the latent encoder: shapes and GAN2Shape's size-dependent parameter counts."""

import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.shape.networks import EDDeconv, Encoder, ResEncoder, ShapeNetConfig, ShapeNets, default_nf


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# REFERENCE §6.4: counts measured by instantiating GAN2Shape's networks (rounded to 0.01M / 0.1M).
@pytest.mark.parametrize("size,d,v,e", [(64, 12.98, 6.95, 3.57), (128, 12.95, 6.98, 13.8), (256, 12.94, 6.99, 54.2)])
def test_parameter_counts_match_gan2shape(size, d, v, e):
    assert _millions(EDDeconv(3, 1, size, activation=None)) == pytest.approx(d, abs=0.006)
    assert _millions(EDDeconv(3, 3, size)) == pytest.approx(d, abs=0.006)
    assert _millions(Encoder(3, 6, size)) == pytest.approx(v, abs=0.006)
    assert _millions(ResEncoder(3, 512, size, 32)) == pytest.approx(e, abs=0.06)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_output_shapes(size):
    torch.manual_seed(0)
    nets = ShapeNets(ShapeNetConfig(size=size, nf=8, nf_vl=8, zdim=16, nf_encoder=4, latent_dim=12))
    out = nets(torch.randn(2, 3, size, size))
    assert out["depth"].shape == (2, size, size)
    assert out["albedo"].shape == (2, 3, size, size) and out["albedo"].abs().max() <= 1
    assert out["view"].shape == (2, 6) and out["light"].shape == (2, 4)
    assert out["view"].abs().max() <= 1 and out["light"].abs().max() <= 1
    assert nets.encoder(torch.randn(2, 3, size, size)).shape == (2, 12)


def test_size_rule_and_bad_size():
    assert [default_nf(s) for s in (64, 128, 256, 512)] == [64, 32, 16, 16]
    with pytest.raises(Toon3dError, match="power-of-two"):
        EDDeconv(3, 1, 48)

"""GAN losses, lazy regularisation constants, EMA (REFERENCE §2.8, §12 item 7)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from toon3d.stylegan2.discriminator import Discriminator
from toon3d.stylegan2.generator import Generator
from toon3d.stylegan2.losses import (
    EMA_DECAY, RegularisationSettings, d_logistic_loss, d_r1_loss, d_r1_penalty, ema_update,
    g_nonsaturating_loss, g_path_loss, lazy_adam_params, path_length_penalty,
)


def test_logistic_losses():
    real = torch.tensor([[2.0], [-1.0]])
    fake = torch.tensor([[0.5], [-3.0]])
    expected_d = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2 + (
        math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3.0))) / 2
    assert abs(d_logistic_loss(real, fake).item() - expected_d) < 1e-6
    assert abs(g_nonsaturating_loss(fake).item() - F.softplus(-fake).mean().item()) < 1e-7


def test_lazy_constants():
    s = RegularisationSettings()
    assert (s.r1_gamma, s.d_reg_every, s.path_weight, s.path_batch_shrink, s.g_reg_every) == (10.0, 16, 2.0, 2, 4)
    lr, betas = lazy_adam_params(0.002, 4)
    assert abs(lr - 0.0016) < 1e-12 and betas[0] == 0.0 and abs(betas[1] - 0.99199) < 1e-5
    lr, betas = lazy_adam_params(0.002, 16)
    assert abs(lr - 0.0018824) < 1e-7 and abs(betas[1] - 0.99059) < 1e-5
    assert abs(EMA_DECAY - 0.997784) < 1e-6


def test_r1_on_a_quadratic_critic():
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    pred = (x**2).sum([1, 2, 3]).unsqueeze(1)
    expected = (2 * x.detach()).pow(2).sum([1, 2, 3]).mean()
    torch.testing.assert_close(d_r1_penalty(pred, x), expected)
    pred = (x**2).sum([1, 2, 3]).unsqueeze(1)
    torch.testing.assert_close(d_r1_loss(pred, x), 10.0 / 2 * expected * 16)


def test_r1_backpropagates_into_discriminator():
    d = Discriminator(16, channel_max=8)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    d_r1_loss(d(x), x).backward()
    assert d.convs[0][0].weight.grad is not None and d.convs[0][0].weight.grad.abs().sum() > 0


def test_path_length_on_a_linear_map():
    # img = A·w per sample; with fixed noise n, grad wrt W+ is A^T n, so pl is known exactly.
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3 * 4 * 4, 5, generator=gen)
    lat = torch.randn(2, 3, 5, generator=gen, requires_grad=True)
    img = (lat.sum(1) @ a.t()).view(2, 3, 4, 4)
    pen, mean, pl = path_length_penalty(img, lat, 0.0, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(3)) / 4.0
    g = noise.view(2, -1) @ a  # [B,5], the same for each of the 3 latent rows
    expected_pl = torch.sqrt(g.pow(2).sum(1))
    torch.testing.assert_close(pl, expected_pl)
    torch.testing.assert_close(mean, 0.01 * expected_pl.mean())
    torch.testing.assert_close(pen, (expected_pl - 0.01 * expected_pl.mean()).pow(2).mean())
    assert abs(g_path_loss(pen).item() - 8 * pen.item()) < 1e-5


def test_path_length_through_generator_has_gradients():
    g = Generator(16, style_dim=8, n_mlp=1, channel_max=8)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(4))
    img, lat = g([z], return_latents=True, generator=torch.Generator().manual_seed(5))
    pen, mean, pl = path_length_penalty(img, lat, torch.tensor(0.5))
    pen.backward()
    assert pl.shape == (2,) and mean.requires_grad is False
    assert g.convs[0].conv.weight.grad.abs().sum() > 0


def test_ema_update_on_parameters_only():
    g = Generator(16, style_dim=8, n_mlp=1, channel_max=8)
    ema = copy.deepcopy(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
        g.noises.noise_0.add_(3.0)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, g, decay=0.9)
    after = ema.state_dict()
    for name, p in g.named_parameters():
        torch.testing.assert_close(after[name], 0.9 * before[name] + 0.1 * p.detach())
    assert torch.equal(after["noises.noise_0"], before["noises.noise_0"])
    with pytest.raises(KeyError):
        ema_update(Generator(16, style_dim=8, n_mlp=1, channel_max=8), Generator(32, style_dim=8, n_mlp=1,
                                                                                  channel_max=8))

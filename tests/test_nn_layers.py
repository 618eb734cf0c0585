"""Fused bias + leaky ReLU and the equalized-learning-rate layers."""

import math

import torch

from toon3d.nn.equalized import EqualConv2d, EqualLinear
from toon3d.nn.fused_act import FusedLeakyReLU, fused_leaky_relu, fused_leaky_relu_


def test_fused_leaky_relu_formula():
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5]]).view(1, 4, 1, 1)
    b = torch.tensor([0.5, 0.5, -1.0, 1.0])
    expected = torch.tensor([-1.5 * 0.2, 0.0, -1.0 * 0.2, 2.5]) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, b).flatten(), expected)
    torch.testing.assert_close(fused_leaky_relu_(x.clone(), b).flatten(), expected)
    m = FusedLeakyReLU(4)
    assert m.bias.shape == (4,) and torch.all(m.bias == 0)
    torch.testing.assert_close(fused_leaky_relu(torch.randn(3, 4), b).shape, torch.Size([3, 4]))


def test_equal_linear_runtime_scale_and_lr_mul():
    torch.manual_seed(0)
    lin = EqualLinear(8, 3, bias_init=1.0, lr_mul=0.01)
    x = torch.randn(2, 8)
    w = lin.weight * (0.01 / math.sqrt(8))
    torch.testing.assert_close(lin(x), x @ w.t() + 0.01 * lin.bias)
    assert torch.all(lin.bias == 1.0)
    # The stored weight is randn / lr_mul so the effective weight is unit-variance / fan-in.
    big = EqualLinear(256, 256, lr_mul=0.01)
    assert 80 < big.weight.std().item() < 120
    act = EqualLinear(8, 3, activation="fused_lrelu")
    torch.testing.assert_close(act(x), fused_leaky_relu(x @ (act.weight / math.sqrt(8)).t(), act.bias))


def test_equal_conv2d_scale():
    conv = EqualConv2d(4, 5, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    ref = torch.nn.functional.conv2d(x, conv.weight / math.sqrt(4 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref)
    assert EqualConv2d(4, 5, 1, bias=False).bias is None

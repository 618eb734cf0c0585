"""Discriminator: rosinality layout and parameter count, §13 outputs, minibatch-stddev grouping."""

import pytest
import torch

from conformance import fill_by_formula, formula_image
from toon3d.stylegan2.discriminator import Discriminator, minibatch_stddev


def expected_discriminator_table() -> dict[str, tuple[int, ...]]:
    """REFERENCE §2.3: every key and shape of Discriminator(256, channel_multiplier=2)."""
    t: dict[str, tuple[int, ...]] = {"convs.0.0.weight": (128, 3, 1, 1), "convs.0.1.bias": (128,)}
    chans = [128, 256, 512, 512, 512, 512, 512]
    for i in range(1, 7):
        cin, cout = chans[i - 1], chans[i]
        t[f"convs.{i}.conv1.0.weight"] = (cin, cin, 3, 3)
        t[f"convs.{i}.conv1.1.bias"] = (cin,)
        t[f"convs.{i}.conv2.0.kernel"] = (4, 4)
        t[f"convs.{i}.conv2.1.weight"] = (cout, cin, 3, 3)
        t[f"convs.{i}.conv2.2.bias"] = (cout,)
        t[f"convs.{i}.skip.0.kernel"] = (4, 4)
        t[f"convs.{i}.skip.1.weight"] = (cout, cin, 1, 1)
    t["final_conv.0.weight"] = (512, 513, 3, 3)
    t["final_conv.1.bias"] = (512,)
    t["final_linear.0.weight"] = (512, 8192)
    t["final_linear.0.bias"] = (512,)
    t["final_linear.1.weight"] = (1, 512)
    t["final_linear.1.bias"] = (1,)
    return t


@pytest.fixture(scope="module")
def d256():
    return fill_by_formula(Discriminator(256))


@pytest.fixture(scope="module")
def small():
    return fill_by_formula(Discriminator(32, channel_max=16))


def test_state_dict_keys_shapes_and_counts(d256):
    sd = d256.state_dict()
    assert len(sd) == 50
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_discriminator_table()
    assert sum(p.numel() for p in d256.parameters()) == 28_864_129
    other = Discriminator(**d256.config)
    other.load_state_dict(sd, strict=True)


def test_outputs_match_section13(d256):
    with torch.no_grad():
        out = d256(formula_image())
    assert out.shape == (2, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.92412, 0.92883]), atol=1e-4, rtol=0)


def test_minibatch_stddev_groups_outer_split():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 2, 2, generator=g)
    out = minibatch_stddev(x)
    assert out.shape == (8, 4, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    # Group size 4 over a batch of 8: sample b is grouped with b+2, b+4, b+6 (b mod 2).
    for b in range(8):
        members = x[b % 2 :: 2]
        expected = torch.sqrt(members.var(0, unbiased=False) + 1e-8).mean()
        torch.testing.assert_close(out[b, 3], expected.expand(2, 2))
    # Changing sample 1 changes the stddev feature of odd samples only.
    x2 = x.clone()
    x2[1] += 5.0
    out2 = minibatch_stddev(x2)
    assert torch.equal(out2[0::2, 3], out[0::2, 3]) and not torch.allclose(out2[1::2, 3], out[1::2, 3])


def test_batch_not_divisible_is_a_clear_error(small):
    with pytest.raises(ValueError, match="divisible"):
        small(torch.zeros(6, 3, 32, 32))
    assert small(torch.zeros(3, 3, 32, 32)).shape == (3, 1)
    with pytest.raises(ValueError, match=r"\[B,3,32,32\]"):
        small(torch.zeros(2, 3, 16, 16))


def test_features_are_resblock_outputs(small):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = small.features(x, 2)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 16), (2, 16, 8, 8)]
    out = small.convs[2](small.convs[1](small.convs[0](x)))
    torch.testing.assert_close(feats[1], out)
    with pytest.raises(ValueError, match="n_blocks"):
        small.features(x, 4)


def test_r1_double_backward_works(small):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    (grad,) = torch.autograd.grad(small(x).sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert small.convs[1].conv1[0].weight.grad is not None
    small.zero_grad(set_to_none=True)

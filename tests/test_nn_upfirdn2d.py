"""upfirdn2d and the blur/resampling modules against the definition and REFERENCE §12 item 3."""

import pytest
import torch

from toon3d.nn.blur import Blur, Downsample, Upsample
from toon3d.nn.upfirdn2d import make_blur_kernel, upfirdn2d, upfirdn2d_naive


def test_upsample_matrix_matches_reference():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    expected = torch.tensor([[0.5625, 0.9375, 1.3125, 1.125], [1.125, 1.75, 2.25, 1.875],
                             [1.875, 2.75, 3.25, 2.625], [1.6875, 2.4375, 2.8125, 2.25]])
    torch.testing.assert_close(Upsample([1, 3, 3, 1])(x)[0, 0], expected, atol=1e-6, rtol=0)


def test_downsample_matrix_matches_reference():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.tensor([[2.734375, 3.9375], [7.546875, 8.75]])
    torch.testing.assert_close(Downsample([1, 3, 3, 1])(x)[0, 0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("up,down,pad", [
    (1, 1, (1, 1)), (1, 1, (2, 2)), (2, 1, (2, 1)), (2, 1, (1, 1)), (1, 2, (2, 2)), (1, 2, (1, 1)),
    (2, 1, (3, 3)), (1, 1, (-1, 2)), (2, 1, (-1, 0)), (2, 2, (1, 2)), (3, 1, (2, 0)), (1, 1, (1, 0, 2, -1)),
])
def test_upfirdn2d_matches_definition(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g)
    # An asymmetric kernel catches a missing flip or a swapped axis.
    k = torch.randn(4, 3, generator=g)
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = upfirdn2d_naive(x, k, up=up, down=down, pad=pad)
    assert out.shape == ref.shape
    p = pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1])
    assert out.shape[3] == (6 * up + p[0] + p[1] - 3 + down) // down
    assert out.shape[2] == (7 * up + p[2] + p[3] - 4 + down) // down
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_upfirdn2d_gradients_match_definition():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = make_blur_kernel([1, 3, 3, 1], gain=4.0).double()
    assert torch.autograd.gradcheck(lambda t: upfirdn2d(t, k, up=2, pad=(2, 1)), (x,))
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d(t, k, down=2, pad=(2, 2)), (x,))


def test_blur_kernel_normalisation_and_buffers():
    k = make_blur_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4) and abs(k.sum().item() - 1.0) < 1e-6
    b = Blur([1, 3, 3, 1], pad=(1, 1), upsample_factor=2)
    assert abs(b.kernel.sum().item() - 4.0) < 1e-6
    assert "kernel" in dict(b.named_buffers())
    # A constant image stays constant away from the borders (unit DC gain).
    out = Blur([1, 3, 3, 1], pad=(2, 1))(torch.ones(1, 1, 8, 8))
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.ones(1, 1, 4, 4))


def test_upfirdn2d_rejects_bad_arguments():
    with pytest.raises(ValueError, match="B,C,H,W"):
        upfirdn2d(torch.zeros(3, 4, 4), torch.ones(2, 2))
    with pytest.raises(ValueError, match="pad"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2), pad=(1, 1, 1))

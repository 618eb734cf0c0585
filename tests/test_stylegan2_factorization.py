"""Closed-form factorization (rosinality CFF and SeFa) on the §13 formula generator (REFERENCE §2.6, §3, §13)."""

import pytest
import torch

from conformance import fill_by_formula
from toon3d.stylegan2.factorize import closed_form_factorization, modulation_keys, modulation_matrix
from toon3d.stylegan2.generator import Generator


@pytest.fixture(scope="module")
def g256():
    return fill_by_formula(Generator(256))


def test_modulation_matrix_singular_values_match_section13(g256):
    # rosinality's filter: "modulation" and "weight" in the key, not "to_rgbs" (to_rgb1 slips through).
    keys = modulation_keys(g256, "rosinality")
    assert keys[:2] == ["conv1.conv.modulation.weight", "to_rgb1.conv.modulation.weight"]
    assert keys[2:] == [f"convs.{i}.conv.modulation.weight" for i in range(12)]
    w = modulation_matrix(g256, "rosinality")
    assert w.shape == (6272, 512)
    eigvec, s = closed_form_factorization(g256)
    assert eigvec.shape == (512, 512) and s.shape == (512,)
    torch.testing.assert_close(s[:3], torch.tensor([102.0036, 101.5631, 101.181]), atol=1e-2, rtol=1e-4)
    v0 = eigvec[:, 0] * torch.sign(eigvec[0, 0])
    torch.testing.assert_close(v0[:4], torch.tensor([0.024368, 0.054411, -0.033646, -0.029738]),
                               atol=1e-4, rtol=0)
    assert torch.all(s[:-1] >= s[1:])
    # V orthonormal, and W V diagonalises WᵀW (its diagonal: the squared singular values).
    v = eigvec.double()
    torch.testing.assert_close(v.T @ v, torch.eye(512, dtype=torch.float64), atol=1e-5, rtol=0)
    wv = w @ v
    gram = wv.T @ wv
    torch.testing.assert_close(gram, torch.diag(s.double() ** 2), atol=1e-2, rtol=1e-4)


def test_sefa_variant_normalises_rows_and_sorts(g256):
    keys = modulation_keys(g256, "sefa")
    assert keys == ["conv1.conv.modulation.weight", *[f"convs.{i}.conv.modulation.weight" for i in range(12)],
                    "to_rgbs.5.conv.modulation.weight"]
    a = modulation_matrix(g256, "sefa")
    assert a.shape == (5888, 512)  # conv1 512 + convs 5248 + the 256 px ToRGB 128
    torch.testing.assert_close(a.norm(dim=1), torch.ones(a.shape[0], dtype=torch.float64))
    eigvec, s = closed_form_factorization(g256, "sefa")
    v = eigvec.double()
    torch.testing.assert_close(v.T @ v, torch.eye(512, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.all(s[:-1] >= s[1:])
    gram = (a @ v).T @ (a @ v)
    torch.testing.assert_close(gram, torch.diag(s.double() ** 2), atol=1e-3, rtol=1e-4)
    # Same directions as the SVD of the normalised matrix (up to sign).
    _, s_svd, _ = torch.linalg.svd(a, full_matrices=False)
    torch.testing.assert_close(s.double(), s_svd, atol=1e-4, rtol=1e-5)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        closed_form_factorization(Generator(16, style_dim=8, n_mlp=1, channel_max=8), "pca")

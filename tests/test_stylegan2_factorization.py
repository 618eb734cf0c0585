"""rosinality closed-form factorization on the §13 formula generator (REFERENCE §2.6, §13)."""

import torch

from conformance import fill_by_formula
from toon3d.stylegan2.generator import Generator


def test_modulation_matrix_singular_values_match_section13():
    g = fill_by_formula(Generator(256))
    # rosinality's filter: "modulation" and "weight" in the key, not "to_rgbs" (to_rgb1 slips through).
    mats = [v for k, v in g.state_dict().items() if "modulation" in k and "weight" in k and "to_rgbs" not in k]
    w = torch.cat(mats, 0)
    assert w.shape == (6272, 512)
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    torch.testing.assert_close(s[:3], torch.tensor([102.0036, 101.5631, 101.181]), atol=1e-2, rtol=1e-4)
    v0 = vh[0] * torch.sign(vh[0, 0])
    torch.testing.assert_close(v0[:4], torch.tensor([0.024368, 0.054411, -0.033646, -0.029738]),
                               atol=1e-4, rtol=0)

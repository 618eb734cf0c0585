"""The head mask the exports are cut to: cleaning, the canonical warp, masked meshes and GLBs, the CLI."""

import json

import numpy as np

import torch

from toon3d.cli import main
from toon3d.io.gltf_morph import avatar_glb_bytes, read_avatar_glb
from toon3d.io.mesh import load_mesh, mesh_from_depth, quad_fan_faces
from toon3d.shape.camera import intrinsics
from toon3d.shape.head_mask import canonical_mask, clean_mask, head_mask
from toon3d.shape.renderer import Renderer, RenderSettings
from tests.shape_fakes import one_line_error


def test_clean_mask_keeps_the_largest_region_fills_holes_and_grows():
    m = torch.zeros(16, 16, dtype=torch.bool)
    m[3:11, 3:11] = True
    m[6, 6] = False                     # a hole (an eye the parser called background)
    m[14, 14] = True                    # a speck elsewhere
    out = clean_mask(m, grow=1)
    assert out[6, 6] and not out[14, 14]
    assert out[2, 5] and out[11, 5] and not out[1, 5]   # one pixel grown on each side, no more
    assert clean_mask(m, grow=0).sum() == 64
    assert "no head" in one_line_error(clean_mask, torch.zeros(8, 8, dtype=torch.bool))


def test_head_mask_thresholds_the_parser_and_checks_its_input():
    image = torch.zeros(1, 3, 8, 8)

    def parser(x):
        soft = torch.zeros(1, 1, 8, 8)
        soft[..., 2:6, 2:6] = 0.8
        soft[..., 0, 0] = 0.4           # below one half: not head
        return soft

    out = head_mask(image, parser, grow=0)
    assert out.sum() == 16 and not out[0, 0]
    assert "one image" in one_line_error(head_mask, torch.zeros(2, 3, 8, 8), parser)


def test_canonical_mask_is_the_input_mask_at_the_frontal_view_and_moves_with_the_yaw():
    size = 32
    renderer = Renderer(RenderSettings(size))
    depth = torch.ones(size, size)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[8:24, 10:22] = True
    assert torch.equal(canonical_mask(mask, depth, torch.zeros(6), renderer), mask)
    v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    bump = 1.0 - 0.08 * (1 - u ** 2 - v ** 2).clamp_min(0)
    turned = canonical_mask(mask, bump, torch.tensor([0.0, 0.5, 0, 0, 0, 0]), renderer)
    assert turned.sum() > 0 and not torch.equal(turned, mask)
    assert "depth" in one_line_error(canonical_mask, mask[:8], depth, torch.zeros(6), renderer)


def test_masked_mesh_keeps_exactly_the_quads_inside_and_every_vertex():
    h, w = 6, 7
    depth = torch.ones(h, w)
    texture = torch.zeros(3, h, w)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[1:4, 2:6] = True               # 2 x 3 quads wholly inside
    K = intrinsics(w)
    full, cut = mesh_from_depth(depth, texture, K), mesh_from_depth(depth, texture, K, mask)
    assert torch.equal(full.vertices, cut.vertices)
    assert cut.faces.shape == (4 * 2 * 3, 3)
    corners = cut.faces[cut.faces < h * w]  # the kept faces' grid (not quad-centre) vertices
    rows, cols = corners // w, corners % w
    assert mask[rows, cols].all()
    assert set(map(tuple, cut.faces.tolist())) <= set(map(tuple, quad_fan_faces(h, w).tolist()))
    assert "2x2" in one_line_error(mesh_from_depth, depth, texture, K, torch.zeros(h, w, dtype=torch.bool))
    assert "mask" in one_line_error(mesh_from_depth, depth, texture, K, mask[:3])


def test_masked_avatar_glb_shares_the_cut_triangles_and_keeps_the_morph_offsets(tmp_path):
    h, w = 10, 12
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    depth = 1.0 - 0.05 * (1 - u ** 2 - v ** 2).clamp_min(0)
    texture = torch.zeros(3, h, w)
    smile = depth - 0.01 * (v > 0.3).float()
    mask = (u ** 2 + v ** 2) < 0.6
    K = intrinsics(w)
    data = avatar_glb_bytes((depth, texture), {"smile": (smile, texture)}, K, mask=mask)
    glb = read_avatar_glb(data)
    expected = mesh_from_depth(depth, texture, K, mask)
    assert np.array_equal(glb.faces, expected.faces.numpy())
    offsets = mesh_from_depth(smile, texture, K).vertices - mesh_from_depth(depth, texture, K).vertices
    torch.testing.assert_close(torch.from_numpy(np.array(glb.targets["smile"]["POSITION"], dtype=np.float64)),
                               offsets, atol=1e-5, rtol=0)


def test_reconstruct_cuts_the_mesh_to_the_head_unless_asked_not_to(tmp_path):
    def run(out, *extra):
        return main(["reconstruct", "--seed", "1", "--ckpt", "toon", "--preset", "tiny", "--frames", "2",
                     "--format", "gif", "--no-progress", "--out", str(out), *extra])

    assert run(tmp_path / "head") == 0 and run(tmp_path / "card", "--no-head-mask") == 0
    record = json.loads((tmp_path / "head" / "reconstruct.json").read_text())["reconstruction"]["head_mask"]
    assert record["source"] == "synface" and 0 < record["pixels"] < 64 * 64  # the shipped 64 px start
    head = load_mesh(tmp_path / "head" / "mesh.obj")
    card = load_mesh(tmp_path / "card" / "mesh.obj")
    assert len(card.faces) == 4 * 63 * 63 and 0 < len(head.faces) < len(card.faces)
    assert json.loads((tmp_path / "card" / "reconstruct.json").read_text())["reconstruction"]["head_mask"] is None

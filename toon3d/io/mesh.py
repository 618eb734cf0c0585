"""Textured meshes from a canonical depth map: OBJ + MTL + PNG (GAN2Shape layout) and GLB.

Layout (as GAN2Shape's mesh export, issue #43 of that repository):
- vertices: the canonical depth back-projected by K⁻¹, then y → −y, z → 1 − z, × 100 (so the
  face looks down +z towards the viewer, y up, units ≈ centimetres), followed by one extra
  vertex per pixel quad at the 2x2 average of its corners: H·W + (H−1)(W−1) vertices;
- faces: 4 triangles per quad fanned around its centre vertex, counter-clockwise seen from
  the viewer: 4(H−1)(W−1) faces;
- UVs: the normalised pixel grid, u = column/(W−1), v = 1 − row/(H−1) (image row 0 on top);
- normals: outward, in the same frame; centre normals are the renormalised 2x2 average;
- the .mtl's `map_Kd` is the canonical (shaded) image PNG; OBJ faces are `f v/vt/vn`, 1-based.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file
from toon3d.io.depth_maps import normals_to_gl
from toon3d.io.images import to_uint8
from toon3d.shape.camera import check_depth, depth_to_3d, normals_from_depth


@dataclass
class TexturedMesh:
    """vertices [V,3], uvs [V,2] in [0,1], normals [V,3] unit, faces [F,3] 0-based, texture [3,H,W] in [-1,1]."""

    vertices: torch.Tensor
    uvs: torch.Tensor
    normals: torch.Tensor
    faces: torch.Tensor
    texture: torch.Tensor


def _with_centres(grid: torch.Tensor) -> torch.Tensor:
    """[H,W,C] per-pixel values → [H·W + (H−1)(W−1), C]: pixels then 2x2 quad averages."""
    h, w, c = grid.shape
    centre = F.avg_pool2d(grid.permute(2, 0, 1).unsqueeze(0), 2, stride=1)[0].permute(1, 2, 0)
    return torch.cat([grid.reshape(h * w, c), centre.reshape((h - 1) * (w - 1), c)], dim=0)


def quad_fan_faces(h: int, w: int) -> torch.Tensor:
    """Faces [4(h−1)(w−1),3]: per quad [tl,bl,c], [bl,br,c], [br,tr,c], [tr,tl,c] (c = quad-centre vertex)."""
    idx = torch.arange(h * w).reshape(h, w)
    centre = torch.arange((h - 1) * (w - 1)).reshape(h - 1, w - 1) + h * w
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    fans = [torch.stack([a, b, centre], dim=-1).reshape(-1, 3) for a, b in ((tl, bl), (bl, br), (br, tr), (tr, tl))]
    return torch.cat(fans, dim=0)


def masked_faces(faces: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The quad-fan faces of an [H,W] grid whose quads lie wholly inside `mask` [H,W] bool."""
    h, w = mask.shape
    m = mask.detach().cpu().bool()
    quad = (m[:-1, :-1] & m[:-1, 1:] & m[1:, :-1] & m[1:, 1:]).reshape(-1)
    keep = quad.repeat(4)  # quad_fan_faces lists the quads' four fans one after another
    if not keep.any():
        raise Toon3dError("the mesh mask holds no 2x2 block of pixels; pass a mask that covers the face")
    return faces[keep]


def mesh_from_depth(canon_depth: torch.Tensor, texture: torch.Tensor, K: torch.Tensor,
                    mask: torch.Tensor | None = None) -> TexturedMesh:
    """Canonical depth [H,W] and canonical image [3,H,W] in [-1,1] → TexturedMesh in the GAN2Shape layout.

    mask [H,W] bool (optional) keeps the faces of the quads wholly inside it (every vertex stays,
    so meshes of one size keep one vertex numbering).
    """
    check_depth(canon_depth.unsqueeze(0) if canon_depth.dim() == 2 else canon_depth, "canonical depth")
    if canon_depth.dim() != 2:
        raise Toon3dError(f"canonical depth for a mesh must be [H,W], got {tuple(canon_depth.shape)}")
    h, w = canon_depth.shape
    if texture.dim() != 3 or texture.shape[0] != 3 or texture.shape[1:] != (h, w):
        raise Toon3dError(f"texture must be [3,{h},{w}] to match the depth, got {tuple(texture.shape)}")
    if not torch.isfinite(texture).all():
        raise Toon3dError("texture contains NaN or inf; check the albedo and light")
    depth = canon_depth.detach().double().cpu().unsqueeze(0)
    K = K.detach().double().cpu()
    points = depth_to_3d(depth, K)[0]
    points = torch.stack([points[..., 0], -points[..., 1], 1.0 - points[..., 2]], dim=-1) * 100.0
    normals = normals_to_gl(normals_from_depth(depth, K)[0])
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    uvs = torch.stack([u / (w - 1), 1.0 - v / (h - 1)], dim=-1)
    normals = _with_centres(normals)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    faces = quad_fan_faces(h, w)
    if mask is not None:
        if tuple(mask.shape) != (h, w):
            raise Toon3dError(f"the mesh mask is {tuple(mask.shape)} but the depth is {h}x{w}")
        faces = masked_faces(faces, mask)
    return TexturedMesh(vertices=_with_centres(points), uvs=_with_centres(uvs), normals=normals,
                        faces=faces, texture=texture.detach().float().cpu())


def _texture_image(mesh: TexturedMesh) -> Image.Image:
    return Image.fromarray(to_uint8(mesh.texture))


def write_obj(mesh: TexturedMesh, obj_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Write `name.obj`, `name.mtl` and `name.png` (the texture) side by side, as a set.

    Each file is written atomically and the .obj last; when any of them fails, the .png/.mtl
    this call already wrote are removed, so no half set is left.
    """
    obj_path = Path(obj_path)
    if obj_path.suffix.lower() != ".obj":
        raise Toon3dError(f"{obj_path}: a mesh path must end in .obj")
    mtl_path, png_path = obj_path.with_suffix(".mtl"), obj_path.with_suffix(".png")
    name = obj_path.stem
    written: list[Path] = []
    try:
        with atomic_file(png_path) as tmp:
            _texture_image(mesh).save(tmp, format="PNG")
        written.append(png_path)
        with atomic_file(mtl_path) as tmp:
            tmp.write_text(f"newmtl {name}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
                           f"d 1.0\nillum 1\nmap_Kd {png_path.name}\n")
        written.append(mtl_path)
        lines = [f"mtllib {mtl_path.name}", f"usemtl {name}"]
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices.tolist()]
        lines += [f"vt {s:.6f} {t:.6f}" for s, t in mesh.uvs.tolist()]
        lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.normals.tolist()]
        lines += ["f " + " ".join(f"{i}/{i}/{i}" for i in face) for face in (mesh.faces + 1).tolist()]
        with atomic_file(obj_path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return obj_path, mtl_path, png_path


def write_glb(mesh: TexturedMesh, path: str | os.PathLike) -> Path:
    """Write the mesh with its embedded texture as binary glTF (.glb) via trimesh, atomically."""
    import trimesh

    path = Path(path)
    visual = trimesh.visual.TextureVisuals(uv=mesh.uvs.numpy(), image=_texture_image(mesh))
    tm = trimesh.Trimesh(vertices=mesh.vertices.numpy(), faces=mesh.faces.numpy(),
                         vertex_normals=mesh.normals.numpy(), visual=visual, process=False)
    data = tm.export(file_type="glb")
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def load_mesh(path: str | os.PathLike):
    """Reload an exported .obj or .glb with trimesh (no vertex merging) as one trimesh.Trimesh."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise Toon3dError(f"mesh {path} not found; check the path")
    loaded = trimesh.load(path, process=False, maintain_order=True)
    if isinstance(loaded, trimesh.Scene):
        geoms = list(loaded.geometry.values())
        if len(geoms) != 1:
            raise Toon3dError(f"{path} holds {len(geoms)} meshes; expected one")
        loaded = geoms[0]
    return loaded


def texture_of(mesh_obj) -> np.ndarray | None:
    """The texture image of a reloaded trimesh mesh as uint8 [H,W,C], or None."""
    material = getattr(mesh_obj.visual, "material", None)
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return np.asarray(Image.open(buf))

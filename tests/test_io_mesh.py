"""Exports: OBJ/MTL/PNG and GLB meshes (GAN2Shape layout), depth/normal PNGs, GIF/MP4 turntables."""

import numpy as np
import pytest
import torch
from PIL import Image

from toon3d.errors import Toon3dError
from toon3d.io.depth_maps import (depth_preview, load_depth, save_depth16_png, save_depth_png,
                                  save_normal_png)
from toon3d.io.mesh import load_mesh, mesh_from_depth, quad_fan_faces, texture_of, write_glb, write_obj
from toon3d.io.video import frames_to_uint8, write_gif, write_mp4, write_video
from toon3d.shape.camera import intrinsics, normals_from_depth


def bump(h, w):
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return 1.0 - 0.03 * torch.exp(-(u ** 2 + v ** 2) / 0.3)


def test_mesh_layout_counts_and_transform():
    h, w = 5, 7
    depth = bump(h, w)
    texture = torch.rand(3, h, w) * 2 - 1
    K = intrinsics(w)  # non-square depth: K from the width, as the caller chooses
    mesh = mesh_from_depth(depth, texture, K)
    assert mesh.vertices.shape == (h * w + (h - 1) * (w - 1), 3)
    assert mesh.faces.shape == (4 * (h - 1) * (w - 1), 3)
    # Vertex (row 0, col 0): P = d·K⁻¹[0,0,1], then y → −y, z → 1−z, ×100.
    d = depth[0, 0].double()
    x = (0 - K[0, 2].double()) / K[0, 0].double() * d
    y = (0 - K[1, 2].double()) / K[1, 1].double() * d
    torch.testing.assert_close(mesh.vertices[0], torch.stack([x, -y, 1 - d]) * 100)
    # The first centre vertex is the average of the first quad's corners.
    corners = mesh.vertices[[0, 1, w, w + 1]].mean(0)
    torch.testing.assert_close(mesh.vertices[h * w], corners)
    # UVs: row 0 on top (v = 1), last column at u = 1.
    torch.testing.assert_close(mesh.uvs[0], torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(mesh.uvs[w - 1], torch.tensor([1.0, 1.0], dtype=torch.float64))
    # Faces are counter-clockwise seen from the viewer (+z): positive signed area in x-y.
    tri = mesh.vertices[mesh.faces]
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - \
           (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1])
    assert (area > 0).all()
    # Normals point towards the viewer (+z) and are unit length.
    assert (mesh.normals[:, 2] > 0).all()
    torch.testing.assert_close(mesh.normals.norm(dim=1), torch.ones(len(mesh.normals), dtype=torch.float64))


def test_quad_fan_faces_use_the_centre_vertex():
    faces = quad_fan_faces(2, 2)
    assert faces.tolist() == [[0, 2, 4], [2, 3, 4], [3, 1, 4], [1, 0, 4]]


@pytest.mark.parametrize("ext", ["obj", "glb"])
def test_mesh_round_trips_through_trimesh_with_texture(tmp_path, ext):
    h, w = 6, 6
    depth = bump(h, w)
    texture = torch.rand(3, h, w) * 2 - 1
    mesh = mesh_from_depth(depth, texture, intrinsics(w))
    path = tmp_path / f"face.{ext}"
    if ext == "obj":
        obj, mtl, png = write_obj(mesh, path)
        assert "map_Kd face.png" in mtl.read_text()
        lines = obj.read_text().splitlines()
        assert lines[0] == "mtllib face.mtl"
        assert sum(line.startswith("v ") for line in lines) == h * w + (h - 1) * (w - 1)
        assert sum(line.startswith("f ") for line in lines) == 4 * (h - 1) * (w - 1)
        first_face = next(line for line in lines if line.startswith("f "))
        assert first_face == "f 1/1/1 7/7/7 37/37/37"  # 1-based v/vt/vn, tl, bl, centre
    else:
        write_glb(mesh, path)
    loaded = load_mesh(path)
    assert loaded.vertices.shape == (h * w + (h - 1) * (w - 1), 3)
    assert loaded.faces.shape == (4 * (h - 1) * (w - 1), 3)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices.numpy(), atol=1e-5)
    image = texture_of(loaded)
    assert image is not None and image.shape[:2] == (h, w)
    expected = ((texture.permute(1, 2, 0) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(image[..., :3], expected)


def test_mesh_bad_inputs(tmp_path):
    K = intrinsics(4)
    with pytest.raises(Toon3dError, match="NaN"):
        mesh_from_depth(torch.full((4, 4), float("nan")), torch.zeros(3, 4, 4), K)
    with pytest.raises(Toon3dError, match="texture"):
        mesh_from_depth(torch.ones(4, 4), torch.zeros(3, 5, 4), K)
    mesh = mesh_from_depth(torch.ones(4, 4), torch.zeros(3, 4, 4), K)
    with pytest.raises(Toon3dError, match=".obj"):
        write_obj(mesh, tmp_path / "mesh.txt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Toon3dError):
        write_obj(mesh, blocker / "sub" / "mesh.obj")
    assert not list(tmp_path.glob("**/*.obj"))


def test_depth_png_round_trips_and_previews(tmp_path):
    depth = bump(8, 8)
    save_depth16_png(depth, tmp_path / "d16.png")
    with Image.open(tmp_path / "d16.png") as im:
        assert im.mode.startswith("I")
    torch.testing.assert_close(load_depth(tmp_path / "d16.png"), depth, atol=1e-5, rtol=0)
    preview = depth_preview(depth)
    assert preview.dtype == np.uint8 and preview.max() == 255 and preview.min() == 0
    assert preview[4, 4] > preview[0, 0]  # near is bright
    save_depth_png(depth, tmp_path / "d8.png")
    loaded8 = load_depth(tmp_path / "d8.png")  # synface convention: bright = near, [0.9, 1.1]
    assert loaded8.min() >= 0.9 - 1e-6 and loaded8.max() <= 1.1 + 1e-6
    np.save(tmp_path / "d.npy", depth.numpy())
    torch.testing.assert_close(load_depth(tmp_path / "d.npy"), depth)


def test_normal_png_colours(tmp_path):
    K = intrinsics(8)
    normal = normals_from_depth(torch.ones(1, 8, 8), K)[0]
    save_normal_png(normal, tmp_path / "n.png")
    rgb = np.asarray(Image.open(tmp_path / "n.png"))
    assert rgb[3, 3].tolist() == [128, 128, 255]


@pytest.mark.parametrize("content, name, match", [
    (None, "missing.npy", "not found"),
    (b"garbage", "bad.png", "not a readable image"),
    (b"garbage", "bad.npy", "not a readable .npy"),
])
def test_load_depth_errors(tmp_path, content, name, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(Toon3dError, match=match):
        load_depth(tmp_path / name)


def test_load_depth_rejects_nan_and_wrong_shape(tmp_path):
    bad = np.ones((8, 8), dtype=np.float32)
    bad[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(Toon3dError, match="NaN"):
        load_depth(tmp_path / "nan.npy")
    np.save(tmp_path / "cube.npy", np.ones((3, 8, 8), dtype=np.float32))
    with pytest.raises(Toon3dError, match=r"\[H,W\]"):
        load_depth(tmp_path / "cube.npy")


def test_gif_and_mp4(tmp_path):
    import imageio.v3 as iio
    import imageio_ffmpeg

    frames = frames_to_uint8(torch.rand(4, 3, 17, 20) * 2 - 1)
    write_gif(frames, tmp_path / "t.gif", fps=10)
    gif = iio.imread(tmp_path / "t.gif")
    assert gif.shape[:3] == (4, 17, 20)
    write_mp4(frames, tmp_path / "t.mp4", fps=10)
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "t.mp4"))
    meta = next(reader)
    assert meta["size"] == (20, 18) and sum(1 for _ in reader) == 4
    with pytest.raises(Toon3dError, match="unknown video format"):
        write_video(frames, tmp_path / "t.avi", fps=10)
    with pytest.raises(Toon3dError, match="no frames"):
        frames_to_uint8([])


def test_write_obj_failure_leaves_no_half_set(tmp_path):
    mesh = mesh_from_depth(torch.ones(4, 4), torch.zeros(3, 4, 4), intrinsics(4))
    (tmp_path / "mesh.obj").mkdir()  # the .obj cannot replace a folder: its write fails last
    with pytest.raises(OSError):
        write_obj(mesh, tmp_path / "mesh.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.obj"]
    assert (tmp_path / "mesh.obj").is_dir()
    (tmp_path / "mesh.obj").rmdir()
    assert write_obj(mesh, tmp_path / "mesh.obj")[0].is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.mtl", "mesh.obj", "mesh.png"]

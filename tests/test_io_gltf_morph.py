"""The avatar GLB: neutral mesh + named morph targets (+ animation), read back exactly and validated."""

import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from toon3d.errors import Toon3dError
from toon3d.io.gltf_morph import (MESH_SCALE, MorphAnimation, avatar_glb_bytes, frames_to_animation,
                                  parse_glb, read_avatar_glb, srgb_to_linear, write_avatar_glb)
from toon3d.io.gltf_validator import validate_gltf, validator_available
from toon3d.io.mesh import load_mesh, mesh_from_depth, write_obj
from toon3d.shape.camera import intrinsics

H, W = 20, 24


def faces(h=H, w=W):
    """Neutral sphere cap; 'mouth_open' dents the lower middle and paints it white; 'smile' moves geometry only."""
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    depth = 1.0 - 0.06 * torch.sqrt((1.2 - u ** 2 - v ** 2).clamp_min(0))
    texture = torch.stack([0.5 + 0.2 * u, 0.1 * v, -0.2 + 0 * u])
    mouth = ((u.abs() < 0.3) & ((v - 0.5).abs() < 0.15))
    open_depth = depth + 0.02 * mouth.float()
    open_texture = texture.clone()
    open_texture[:, mouth] = 0.9
    smile_depth = depth - 0.01 * torch.exp(-(u ** 2 + (v - 0.4) ** 2) / 0.1)
    return (depth, texture), {"mouth_open": (open_depth, open_texture), "smile": (smile_depth, texture)}, mouth


K = intrinsics(W)
ANIM = MorphAnimation(times=[0.0, 0.5, 1.25], weights=[[0.0, 0.0], [1.0, 0.25], [0.0, 1.0]])


def write(tmp_path, **kw):
    neutral, edits, _ = faces()
    return write_avatar_glb(neutral, edits, K, tmp_path / "avatar.glb", **kw)


def test_targets_are_exactly_the_edits_vertex_offsets(tmp_path):
    neutral, edits, _ = faces()
    glb = read_avatar_glb(write(tmp_path))
    base = mesh_from_depth(*neutral, K)
    assert glb.positions.dtype == np.float32
    np.testing.assert_array_equal(glb.positions, base.vertices.float().numpy())
    np.testing.assert_array_equal(glb.normals, base.normals.float().numpy())
    np.testing.assert_array_equal(glb.faces, base.faces.numpy())
    for name, face in edits.items():
        edit = mesh_from_depth(*face, K)
        # the float64 offset rounded once to float32, bit for bit
        np.testing.assert_array_equal(glb.targets[name]["POSITION"], (edit.vertices - base.vertices).float().numpy())
        np.testing.assert_array_equal(glb.targets[name]["NORMAL"], (edit.normals - base.normals).float().numpy())
        # neutral + offset at weight 1 is the edit's mesh, to float32 precision
        np.testing.assert_allclose(glb.positions + glb.targets[name]["POSITION"], edit.vertices.numpy(),
                                   rtol=0, atol=1e-5)
    assert np.abs(glb.targets["smile"]["POSITION"]).max() > 0.1  # the edit moved the surface (mesh units)


def test_vertex_count_matches_the_obj_and_node_scale(tmp_path):
    neutral, _, _ = faces()
    glb = read_avatar_glb(write(tmp_path))
    assert glb.positions.shape == (H * W + (H - 1) * (W - 1), 3)
    assert glb.faces.shape == (4 * (H - 1) * (W - 1), 3)
    obj, _, _ = write_obj(mesh_from_depth(*neutral, K), tmp_path / "neutral.obj")
    obj_vertices = np.array([line.split()[1:] for line in obj.read_text().splitlines() if line.startswith("v ")],
                            dtype=np.float64)
    np.testing.assert_allclose(glb.positions, obj_vertices, atol=1e-5)
    assert glb.node_scale == [MESH_SCALE] * 3


def test_target_names_weights_and_animation_round_trip(tmp_path):
    glb = read_avatar_glb(write(tmp_path, animation=ANIM))
    assert glb.target_names == ["mouth_open", "smile"]
    assert glb.gltf["meshes"][0]["extras"]["targetNames"] == ["mouth_open", "smile"]
    assert glb.default_weights == [0.0, 0.0]
    (anim,) = glb.animations
    np.testing.assert_array_equal(anim.times, np.float32([0.0, 0.5, 1.25]))
    np.testing.assert_array_equal(anim.weights, np.float32(ANIM.weights))
    assert anim.name == "expressions" and anim.interpolation == "LINEAR"
    channel = glb.gltf["animations"][0]["channels"][0]
    assert channel["target"] == {"node": 0, "path": "weights"}


def test_animation_of_some_targets_leaves_the_others_at_zero(tmp_path):
    anim = frames_to_animation(np.array([[0.2], [0.9], [0.4], [0.0]]), fps=4.0, names=["smile"])
    glb = read_avatar_glb(write(tmp_path, animation=anim))
    (read,) = glb.animations
    np.testing.assert_allclose(read.times, [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(read.weights[:, 0], np.zeros(4, np.float32))  # mouth_open: not driven
    np.testing.assert_array_equal(read.weights[:, 1], np.float32([0.2, 0.9, 0.4, 0.0]))
    assert read.name == "drive"


def test_colour_deltas_are_zero_where_the_texture_is_unchanged(tmp_path):
    neutral, _, mouth = faces()
    glb = read_avatar_glb(write(tmp_path))
    # base colour: the sRGB texture linearised, e.g. texture 0 → sRGB 0.5 → linear 0.2140
    expected = srgb_to_linear((neutral[1].permute(1, 2, 0).double().numpy() + 1) / 2).reshape(-1, 3)
    np.testing.assert_allclose(glb.colors[:H * W], expected, atol=1e-6)
    assert abs(srgb_to_linear(np.array(0.5)) - 0.21404114) < 1e-6
    delta = glb.targets["mouth_open"]["COLOR_0"]
    pixel_changed = mouth.reshape(-1).numpy()
    m = mouth.numpy()
    centre_changed = (m[:-1, :-1] | m[:-1, 1:] | m[1:, :-1] | m[1:, 1:]).reshape(-1)
    changed = np.concatenate([pixel_changed, centre_changed])
    assert (delta[~changed] == 0).all()
    assert (np.abs(delta[:H * W][pixel_changed]).sum(1) > 0.1).all()
    # white teeth: neutral colour + delta = linear(0.95) at the changed pixels
    np.testing.assert_allclose((glb.colors + delta)[:H * W][pixel_changed], srgb_to_linear(np.array(0.95)), atol=1e-6)
    assert (glb.targets["smile"]["COLOR_0"] == 0).all()


def test_no_colour_morph_when_no_edit_changes_colour(tmp_path):
    neutral, edits, _ = faces()
    path = write_avatar_glb(neutral, {"smile": edits["smile"]}, K, tmp_path / "smile.glb")
    glb = read_avatar_glb(path)
    assert set(glb.targets["smile"]) == {"POSITION", "NORMAL"}


def test_glb_layout_is_aligned_with_exact_bounds(tmp_path):
    data = write(tmp_path, animation=ANIM).read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0 and len(data) % 4 == 0
    gltf, binary = parse_glb(data)
    for view in gltf["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        if view.get("target") == 34962:
            assert view["byteStride"] in (8, 12)
    glb = read_avatar_glb(data)
    pos = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert pos["min"] == glb.positions.min(0).tolist() and pos["max"] == glb.positions.max(0).tolist()
    for name, target in zip(glb.target_names, gltf["meshes"][0]["primitives"][0]["targets"]):
        acc = gltf["accessors"][target["POSITION"]]
        assert acc["max"] == glb.targets[name]["POSITION"].max(0).tolist()


def test_glb_reads_in_pygltflib_and_trimesh(tmp_path):
    import pygltflib

    path = write(tmp_path, animation=ANIM)
    glb = read_avatar_glb(path)
    doc = pygltflib.GLTF2().load(str(path))
    blob = doc.binary_blob()
    prim = doc.meshes[0].primitives[0]
    assert doc.meshes[0].extras["targetNames"] == ["mouth_open", "smile"]
    acc = doc.accessors[prim.targets[1]["POSITION"]]
    view = doc.bufferViews[acc.bufferView]
    raw = np.frombuffer(blob, np.float32, count=acc.count * 3, offset=view.byteOffset).reshape(-1, 3)
    np.testing.assert_array_equal(raw, glb.targets["smile"]["POSITION"])
    loaded = load_mesh(path)
    np.testing.assert_allclose(loaded.vertices, glb.positions, atol=1e-6)
    assert len(loaded.faces) == 4 * (H - 1) * (W - 1)


def test_large_meshes_use_32_bit_indices(tmp_path):
    s = 182  # 182² + 181² = 65885 vertices: past the 16-bit index range
    depth = torch.full((s, s), 1.0)
    texture = torch.zeros(3, s, s)
    glb = read_avatar_glb(avatar_glb_bytes((depth, texture), {"up": (depth - 0.01, texture)}, intrinsics(s)))
    acc = glb.gltf["accessors"][glb.gltf["meshes"][0]["primitives"][0]["indices"]]
    assert acc["componentType"] == 5125
    np.testing.assert_array_equal(glb.faces, mesh_from_depth(depth, texture, intrinsics(s)).faces.numpy())


@pytest.mark.skipif(validator_available() is not None, reason=str(validator_available()))
def test_khronos_validator_reports_no_errors(tmp_path):
    report = validate_gltf(write(tmp_path, animation=ANIM, metadata={"seed": 0, "expressions": ["mouth_open"]}))
    assert report.errors == [], report.summary()
    assert report.warnings == [], report.summary()
    info = report.raw["info"]
    assert info["hasMorphTargets"] and info["animationCount"] == 1
    assert info["totalVertexCount"] == H * W + (H - 1) * (W - 1)


@pytest.mark.skipif(validator_available() is not None, reason=str(validator_available()))
def test_khronos_validator_catches_a_wrong_bound(tmp_path):
    data = write(tmp_path).read_bytes()
    gltf, binary = parse_glb(data)
    acc = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    acc["max"][0] += 1.0
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    bad = struct.pack("<III", 0x46546C67, 2, 28 + len(text) + len(binary)) + struct.pack("<II", len(text), 0x4E4F534A)
    bad += text + struct.pack("<II", len(binary), 0x004E4942) + binary
    path = tmp_path / "bad.glb"
    path.write_bytes(bad)
    report = validate_gltf(path)
    assert any(i.code == "ACCESSOR_MAX_MISMATCH" for i in report.errors), report.summary()


def bad_cases():
    (d, t), edits, _ = faces()
    nan = d.clone()
    nan[3, 3] = float("nan")
    small = (d[:10, :12], t[:, :10, :12])
    return {
        "size": ((d, t), {"small": small}, {}, "10x12 but the neutral face is 20x24"),
        "nan_depth": ((d, t), {"smile": (nan, t)}, {}, "edit 'smile': canonical depth contains NaN"),
        "nan_neutral": ((nan, t), {}, {}, "neutral face: canonical depth contains NaN"),
        "duplicate": ((d, t), [("smile", edits["smile"]), ("smile", edits["mouth_open"])], {}, "given twice"),
        "empty_name": ((d, t), {"": edits["smile"]}, {}, "is empty"),
        "padded_name": ((d, t), {"smile ": edits["smile"]}, {}, "trailing spaces"),
        "texture": ((d, t[:2]), {}, {}, "texture must be [3,20,24]"),
        "anim_shape": ((d, t), edits, {"animation": MorphAnimation([0, 1], [[0, 1, 2], [1, 0, 2]])}, "[T,N] = [2,2]"),
        "anim_times": ((d, t), edits, {"animation": MorphAnimation([0, 0], [[0, 1], [1, 0]])}, "strictly increasing"),
        "anim_nan": ((d, t), edits, {"animation": MorphAnimation([0, 1], [[0, float("nan")], [1, 0]])}, "NaN"),
        "anim_name": ((d, t), edits, {"animation": MorphAnimation([0], [[1]], names=["frown"])}, "'frown'"),
        "anim_without_targets": ((d, t), {}, {"animation": MorphAnimation([0], [[1]])}, "needs morph targets"),
        "metadata": ((d, t), edits, {"metadata": {"x": float("nan")}}, "not JSON-serialisable"),
    }


@pytest.mark.parametrize("case", sorted(bad_cases()))
def test_bad_input_is_a_one_line_error(tmp_path, case):
    neutral, edits, kw, message = bad_cases()[case]
    with pytest.raises(Toon3dError) as err:
        write_avatar_glb(neutral, edits, K, tmp_path / "a.glb", **kw)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "a.glb").exists()
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_wrong_suffix_and_missing_file(tmp_path):
    neutral, edits, _ = faces()
    with pytest.raises(Toon3dError, match="must end in .glb"):
        write_avatar_glb(neutral, edits, K, tmp_path / "a.gltf")
    with pytest.raises(Toon3dError, match="not found"):
        read_avatar_glb(tmp_path / "missing.glb")
    with pytest.raises(Toon3dError, match="not a binary glTF"):
        parse_glb(b"\0" * 40)


BLENDER_SCRIPT = r'''
import json, sys
import numpy
numpy.bool = bool  # Debian's Blender 3.4 glTF importer still uses np.bool (removed in numpy 1.24)
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=sys.argv[-1])
(ob,) = [o for o in bpy.context.scene.objects if o.type == "MESH"]
keys = ob.data.shape_keys
basis = keys.key_blocks[0]
out = {"vertices": len(ob.data.vertices), "keys": [k.name for k in keys.key_blocks],
       "offsets": {k.name: [[a.co[i] - b.co[i] for i in range(3)] for a, b in zip(k.data, basis.data)]
                   for k in keys.key_blocks[1:]},
       "fcurves": [(f.data_path, len(f.keyframe_points)) for f in keys.animation_data.action.fcurves],
       "vertex_colour_node": any(n.bl_idname == "ShaderNodeVertexColor" for n in ob.active_material.node_tree.nodes)}
print("RESULT " + json.dumps(out))
'''


@pytest.mark.skipif(shutil.which("blender") is None, reason="Blender not installed (optional check: "
                    "apt-get install blender python3-numpy)")
def test_blender_imports_the_targets_as_shape_keys(tmp_path):
    neutral, edits, _ = faces()
    path = write(tmp_path, animation=ANIM)
    script = tmp_path / "check.py"
    script.write_text(BLENDER_SCRIPT)
    done = subprocess.run(["blender", "-b", "--factory-startup", "--python", str(script), "--", str(path)],
                          capture_output=True, text=True, timeout=120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(line[len("RESULT "):])
    assert result["vertices"] == H * W + (H - 1) * (W - 1)
    assert result["keys"] == ["Basis", "mouth_open", "smile"]
    assert result["fcurves"] == [['key_blocks["mouth_open"].value', 3], ['key_blocks["smile"].value', 3]]
    assert result["vertex_colour_node"]
    base = mesh_from_depth(*neutral, K)
    for name, face in edits.items():
        offset = (mesh_from_depth(*face, K).vertices - base.vertices).numpy()
        # Blender is z-up: glTF (x, y, z) → Blender (x, −z, y), in the file's mesh units
        expected = np.stack([offset[:, 0], -offset[:, 2], offset[:, 1]], axis=1)
        np.testing.assert_allclose(np.array(result["offsets"][name]), expected, atol=1e-5)

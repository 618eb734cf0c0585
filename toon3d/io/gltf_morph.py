"""The animatable avatar: one binary glTF 2.0 (.glb) whose mesh carries every expression edit as a morph target.

Every face (the neutral one and each edit) is a canonical depth map [H,W] with a texture
[3,H,W] in [-1,1] of one size, meshed exactly as `toon3d.io.mesh.mesh_from_depth` meshes it:
H·W pixel vertices plus (H−1)(W−1) quad centres, 4(H−1)(W−1) triangles. All faces share that
topology, so an edit is nothing but per-vertex offsets from the neutral mesh:

- POSITION delta = edit vertices − neutral vertices (the float64 offset rounded once to float32);
- NORMAL delta = edit normals − neutral normals (three.js renormalises after blending);
- COLOR_0 delta = edit colour − neutral colour (linear RGB), exactly 0 where the texture is equal.

Colour is carried as vertex colours (COLOR_0, linear RGB as glTF requires), not as a texture:
every pixel is a vertex, so vertex colours are as sharp as the texture, and a colour change
(teeth when the mouth opens) becomes a plain additive colour morph, which glTF allows in
targets and three.js blends. A texture could only be morphed as a multiplier
(COLOR_0 × baseColorTexture), which cannot add colour where the neutral texture is dark.
Blender imports the position morphs as shape keys; it has no colour shape keys, so there
the colours stay neutral.

The mesh keeps the OBJ's units (Unsup3d depth × 100, y up, the face looking down +z); its node
scales by 0.01, so in glTF's metres the face sits ~1 m from the original camera, ~17 cm wide.
Target names are in `mesh.extras.targetNames` (read by three.js and Blender), default weights
are 0, and an optional `MorphAnimation` keyframes the weights (`animations[i]`, path
"weights"). The material is matte PBR (metallic 0, roughness 1, double-sided), so pass the
albedo as texture when a viewer should relight the face.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_file
from toon3d.io.mesh import TexturedMesh, mesh_from_depth

# (canonical depth [H,W] (~0.9-1.1), texture [3,H,W] in [-1,1])
Face = tuple[torch.Tensor, torch.Tensor]

GLB_MAGIC = 0x46546C67          # b"glTF"
CHUNK_JSON = 0x4E4F534A         # b"JSON"
CHUNK_BIN = 0x004E4942          # b"BIN\0"
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_COMPONENTS = {FLOAT: np.dtype("<f4"), UNSIGNED_SHORT: np.dtype("<u2"), UNSIGNED_INT: np.dtype("<u4")}
MESH_SCALE = 0.01               # node scale: mesh units (×100, as the OBJ) → metres
INTERPOLATIONS = ("LINEAR", "STEP")
TARGET_ATTRIBUTES = ("POSITION", "NORMAL", "COLOR_0")


@dataclass
class MorphAnimation:
    """Keyframed morph weights: times [T] in seconds (≥ 0, strictly increasing), weights [T,N] (any finite value).

    Column j of `weights` drives target `names[j]`; `names=None` means every target in the
    order of the edits. Targets no column drives stay at weight 0.
    """

    times: Sequence[float] | np.ndarray | torch.Tensor
    weights: Sequence[Sequence[float]] | np.ndarray | torch.Tensor
    names: Sequence[str] | None = None
    name: str = "expressions"
    interpolation: str = "LINEAR"


@dataclass
class AvatarGlb:
    """What an avatar GLB holds, as float32/int arrays in the file's own (mesh) units.

    positions/normals/colors [V,3] (colours linear RGB in [0,1]), uvs [V,2], faces [F,3];
    targets[name][attribute] [V,3] deltas for attribute in POSITION, NORMAL, COLOR_0;
    animations with times [T] and weights [T,N] over all targets (names = target_names).
    """

    positions: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    uvs: np.ndarray
    faces: np.ndarray
    target_names: list[str]
    targets: dict[str, dict[str, np.ndarray]]
    default_weights: list[float]
    animations: list[MorphAnimation] = field(default_factory=list)
    node_scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    gltf: dict = field(default_factory=dict)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0,1] → linear RGB in [0,1] (the IEC 61966-2-1 curve), any shape."""
    srgb = np.clip(srgb, 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _with_centres(grid: np.ndarray) -> np.ndarray:
    """[H,W,C] per-pixel values → [H·W + (H−1)(W−1), C]: pixels, then each 2x2 quad's mean (mesh.py's order)."""
    h, w, c = grid.shape
    centre = (grid[:-1, :-1] + grid[:-1, 1:] + grid[1:, :-1] + grid[1:, 1:]) / 4.0
    return np.concatenate([grid.reshape(h * w, c), centre.reshape((h - 1) * (w - 1), c)], axis=0)


def vertex_colors(texture: torch.Tensor) -> np.ndarray:
    """Texture [3,H,W] in [-1,1] (sRGB, clamped) → linear vertex colours [H·W+(H−1)(W−1),3] float64 in [0,1]."""
    srgb = (texture.detach().double().cpu().clamp(-1.0, 1.0).permute(1, 2, 0).numpy() + 1.0) / 2.0
    return _with_centres(srgb_to_linear(srgb))


def _check_name(name: object, seen: set[str]) -> str:
    if not isinstance(name, str) or not name.strip():
        raise Toon3dError(f"expression name {name!r} is empty or not text; give every edit a name such as 'smile'")
    if name != name.strip():
        raise Toon3dError(f"expression name {name!r} has leading or trailing spaces; remove them")
    if name in seen:
        raise Toon3dError(f"expression name '{name}' is given twice; every morph target needs its own name")
    seen.add(name)
    return name


def _face_mesh(face: object, K: torch.Tensor, label: str, size: tuple[int, int] | None,
               mask: torch.Tensor | None = None) -> TexturedMesh:
    if not isinstance(face, (tuple, list)) or len(face) != 2:
        raise Toon3dError(f"{label} must be a (depth [H,W], texture [3,H,W]) pair, got {type(face).__name__}")
    depth, texture = face
    if not isinstance(depth, torch.Tensor) or not isinstance(texture, torch.Tensor):
        raise Toon3dError(f"{label}: depth and texture must be torch tensors")
    if depth.dim() != 2 or min(depth.shape) < 2:
        raise Toon3dError(f"{label}: depth must be [H,W] with H, W ≥ 2, got {tuple(depth.shape)}")
    if size is not None and tuple(depth.shape) != size:
        raise Toon3dError(f"{label} is {depth.shape[0]}x{depth.shape[1]} but the neutral face is "
                          f"{size[0]}x{size[1]}; render every edit at the neutral face's size")
    try:
        return mesh_from_depth(depth, texture, K, mask)
    except Toon3dError as err:
        raise Toon3dError(f"{label}: {err}") from None


def _as_array(values: object, label: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise Toon3dError(f"{label} must be numbers, got {type(values).__name__}") from None


def _check_animation(anim: MorphAnimation, target_names: list[str]) -> tuple[str, str, np.ndarray, np.ndarray]:
    """→ (name, interpolation, times [T] float32, weights [T,N_all] float32 over all targets)."""
    if not target_names:
        raise Toon3dError("an animation needs morph targets to drive; pass at least one expression edit")
    times = _as_array(anim.times, "animation times")
    weights = _as_array(anim.weights, "animation weights")
    if times.ndim != 1 or times.size < 1:
        raise Toon3dError(f"animation times must be a [T] list with T ≥ 1, got shape {times.shape}")
    if not np.isfinite(times).all() or times[0] < 0 or (np.diff(times) <= 0).any():
        raise Toon3dError("animation times must be finite, ≥ 0 and strictly increasing (seconds per frame)")
    if not np.array_equal(np.diff(times.astype(np.float32)) > 0, np.ones(times.size - 1, dtype=bool)):
        raise Toon3dError("animation times are too close together for float32; space frames further apart")
    names = list(target_names) if anim.names is None else list(anim.names)
    seen: set[str] = set()
    for n in names:
        _check_name(n, seen)
        if n not in target_names:
            raise Toon3dError(f"animation drives '{n}', which is not an expression edit; "
                              f"use one of {', '.join(target_names)}")
    if weights.shape != (times.size, len(names)):
        raise Toon3dError(f"animation weights must be [T,N] = [{times.size},{len(names)}] (frames × driven targets), "
                          f"got shape {weights.shape}")
    if not np.isfinite(weights).all():
        raise Toon3dError("animation weights contain NaN or inf; give a finite weight per frame and target")
    interpolation = str(anim.interpolation).upper()
    if interpolation not in INTERPOLATIONS:
        raise Toon3dError(f"animation interpolation '{anim.interpolation}' is unknown; use LINEAR or STEP")
    if not isinstance(anim.name, str) or not anim.name.strip():
        raise Toon3dError("animation name must be non-empty text")
    full = np.zeros((times.size, len(target_names)), dtype=np.float32)
    for j, n in enumerate(names):
        full[:, target_names.index(n)] = weights[:, j]
    return anim.name, interpolation, times.astype(np.float32), full


class _BinaryBuffer:
    """Accumulates 4-byte aligned bufferViews and their accessors for one GLB binary chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.length = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, target: int | None = None, min_max: bool = False) -> int:
        """Append array [N] or [N,C] (float32/uint16/uint32) as its own bufferView; return the accessor index."""
        component = {np.dtype("float32"): FLOAT, np.dtype("uint16"): UNSIGNED_SHORT,
                     np.dtype("uint32"): UNSIGNED_INT}[array.dtype]
        columns = 1 if array.ndim == 1 else array.shape[1]
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        view: dict = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        if target == ARRAY_BUFFER:
            view["byteStride"] = columns * array.dtype.itemsize  # tightly packed, one attribute per view
        self.parts.append(data)
        self.length += len(data)
        pad = (-self.length) % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        self.views.append(view)
        accessor: dict = {"bufferView": len(self.views) - 1, "componentType": component,
                          "count": int(array.shape[0]), "type": _TYPES[columns]}
        if min_max:
            flat = array.reshape(array.shape[0], columns)
            # float32 → Python float is exact, so the JSON bounds equal the stored values bit for bit
            accessor["min"] = [float(v) for v in flat.min(axis=0)]
            accessor["max"] = [float(v) for v in flat.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def data(self) -> bytes:
        return b"".join(self.parts)


def _pack_glb(gltf: dict, binary: bytes) -> bytes:
    """glTF JSON + binary chunk → .glb bytes (12-byte header, JSON padded with spaces, BIN with zeros)."""
    text = json.dumps(gltf, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    binary += b"\0" * ((-len(binary)) % 4)
    total = 12 + 8 + len(text) + (8 + len(binary) if binary else 0)
    out = [struct.pack("<III", GLB_MAGIC, 2, total), struct.pack("<II", len(text), CHUNK_JSON), text]
    if binary:
        out += [struct.pack("<II", len(binary), CHUNK_BIN), binary]
    return b"".join(out)


def _edit_items(edits: Mapping[str, Face] | Sequence[tuple[str, Face]] | None) -> list[tuple[str, Face]]:
    if edits is None:
        return []
    if isinstance(edits, Mapping):
        return list(edits.items())
    if isinstance(edits, (str, bytes)) or not isinstance(edits, Sequence):
        raise Toon3dError("edits must map expression names to (depth, texture) pairs")
    items = list(edits)
    if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
        raise Toon3dError("edits must map expression names to (depth, texture) pairs")
    return [(name, face) for name, face in items]


def avatar_glb_bytes(neutral: Face, edits: Mapping[str, Face] | Sequence[tuple[str, Face]], K: torch.Tensor,
                     animation: MorphAnimation | Sequence[MorphAnimation] | None = None,
                     metadata: Mapping | None = None, name: str = "toon3d_avatar",
                     mask: torch.Tensor | None = None) -> bytes:
    """The avatar GLB as bytes: neutral (depth [H,W], texture [3,H,W] in [-1,1]) + one named morph target per edit.

    `edits` maps each expression name to its (depth, texture) of the neutral's size, in target
    order; `K` [3,3] is the camera of the canonical depth maps; `animation` optionally keys the
    weights; `metadata` (JSON-serialisable) is stored in `asset.extras`; `mask` [H,W] bool
    (optional, the head) keeps the triangles inside it, for the neutral and every target alike.
    """
    if not isinstance(K, torch.Tensor) or K.shape != (3, 3) or not torch.isfinite(K).all():
        raise Toon3dError("K must be a finite [3,3] camera matrix (toon3d.shape.camera.intrinsics)")
    base = _face_mesh(neutral, K, "neutral face", None, mask)
    size = tuple(neutral[0].shape)
    items = _edit_items(edits)
    seen: set[str] = set()
    names = [_check_name(n, seen) for n, _ in items]
    meshes = [_face_mesh(face, K, f"edit '{n}'", size) for n, (_, face) in zip(names, items)]
    anims = [] if animation is None else [animation] if isinstance(animation, MorphAnimation) else list(animation)
    checked = [_check_animation(a, names) for a in anims]
    if len({a[0] for a in checked}) != len(checked):
        raise Toon3dError("two animations share a name; name each animation differently")

    base_colors = vertex_colors(base.texture)
    edit_colors = [vertex_colors(m.texture) for m in meshes]
    with_color = any(not np.array_equal(c, base_colors) for c in edit_colors)

    buf = _BinaryBuffer()
    n_vertices = base.vertices.shape[0]
    index_type = np.uint16 if n_vertices < 65535 else np.uint32  # 65535 is the primitive-restart value
    indices = buf.add(base.faces.numpy().astype(index_type).reshape(-1), ELEMENT_ARRAY_BUFFER)
    attributes = {
        "POSITION": buf.add(base.vertices.numpy().astype(np.float32), ARRAY_BUFFER, min_max=True),
        "NORMAL": buf.add(base.normals.numpy().astype(np.float32), ARRAY_BUFFER),
        "TEXCOORD_0": buf.add(base.uvs.numpy().astype(np.float32), ARRAY_BUFFER),
        "COLOR_0": buf.add(base_colors.astype(np.float32), ARRAY_BUFFER),
    }
    targets = []
    for mesh, colors in zip(meshes, edit_colors):
        # Every target carries every morphed attribute: three.js substitutes the *base* attribute
        # for a missing one, which would add the neutral values a second time.
        target = {"POSITION": buf.add((mesh.vertices - base.vertices).numpy().astype(np.float32), ARRAY_BUFFER,
                                      min_max=True),
                  "NORMAL": buf.add((mesh.normals - base.normals).numpy().astype(np.float32), ARRAY_BUFFER)}
        if with_color:
            target["COLOR_0"] = buf.add((colors - base_colors).astype(np.float32), ARRAY_BUFFER)
        targets.append(target)

    primitive: dict = {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}
    mesh_def: dict = {"name": name, "primitives": [primitive]}
    if targets:
        primitive["targets"] = targets
        mesh_def["weights"] = [0.0] * len(targets)
        mesh_def["extras"] = {"targetNames": names}
    animations = []
    for anim_name, interpolation, times, weights in checked:
        sampler = {"input": buf.add(times, min_max=True), "output": buf.add(weights.reshape(-1)),
                   "interpolation": interpolation}
        animations.append({"name": anim_name, "samplers": [sampler],
                           "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]})
    asset: dict = {"version": "2.0", "generator": "toon3d (toon3d.io.gltf_morph)"}
    if metadata:
        try:
            json.dumps(dict(metadata), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise Toon3dError(f"avatar metadata is not JSON-serialisable ({err}); "
                              "pass plain numbers and text") from None
        asset["extras"] = dict(metadata)
    gltf: dict = {
        "asset": asset, "scene": 0, "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0, "scale": [MESH_SCALE] * 3}],
        "meshes": [mesh_def],
        "materials": [{"name": f"{name}_vertex_colour", "doubleSided": True,
                       "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                                                "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "buffers": [{"byteLength": buf.length}], "bufferViews": buf.views, "accessors": buf.accessors,
    }
    if animations:
        gltf["animations"] = animations
    return _pack_glb(gltf, buf.data())


def write_avatar_glb(neutral: Face, edits: Mapping[str, Face] | Sequence[tuple[str, Face]], K: torch.Tensor,
                     path: str | os.PathLike, animation: MorphAnimation | Sequence[MorphAnimation] | None = None,
                     metadata: Mapping | None = None, mask: torch.Tensor | None = None) -> Path:
    """Write `avatar_glb_bytes(...)` to `path` (.glb) atomically; return the path."""
    path = Path(path)
    if path.suffix.lower() != ".glb":
        raise Toon3dError(f"{path}: an avatar file must end in .glb")
    data = avatar_glb_bytes(neutral, edits, K, animation, metadata, mask=mask)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def parse_glb(data: bytes) -> tuple[dict, bytes]:
    """GLB bytes → (glTF JSON dict, binary chunk bytes); a one-line error when it is not a GLB 2.0."""
    if len(data) < 20:
        raise Toon3dError("file is too short to be a .glb; write it again")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2:
        raise Toon3dError("not a binary glTF 2.0 file (.glb); check the path")
    if total != len(data):
        raise Toon3dError(f".glb header says {total} bytes but the file has {len(data)}; the file is truncated")
    gltf, binary, offset = None, b"", 12
    while offset < total:
        length, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8:offset + 8 + length]
        if kind == CHUNK_JSON:
            gltf = json.loads(chunk.decode("utf-8"))
        elif kind == CHUNK_BIN:
            binary = chunk
        offset += 8 + length
    if gltf is None:
        raise Toon3dError(".glb has no JSON chunk; the file is damaged")
    return gltf, binary


def read_accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor `index` of a parsed GLB as an array [count] or [count,C] (dense accessors only)."""
    acc = gltf["accessors"][index]
    if "sparse" in acc or "bufferView" not in acc:
        raise Toon3dError(f"accessor {index} is sparse or empty; only dense accessors are read here")
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = _COMPONENTS[acc["componentType"]]
    columns = {v: k for k, v in _TYPES.items()}[acc["type"]]
    stride = view.get("byteStride", columns * dtype.itemsize)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    count = acc["count"]
    raw = np.frombuffer(binary, dtype=np.uint8, count=(count - 1) * stride + columns * dtype.itemsize, offset=start)
    rows = np.lib.stride_tricks.as_strided(raw, shape=(count, columns * dtype.itemsize), strides=(stride, 1))
    out = np.ascontiguousarray(rows).view(dtype).reshape(count, columns)
    return out[:, 0] if columns == 1 else out


def read_avatar_glb(source: str | os.PathLike | bytes) -> AvatarGlb:
    """Read an avatar GLB (a path or bytes) written by `write_avatar_glb` back into arrays."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise Toon3dError(f"avatar file {path} not found; check the path")
        data = path.read_bytes()
    gltf, binary = parse_glb(data)
    node = gltf["nodes"][gltf["scenes"][gltf.get("scene", 0)]["nodes"][0]]
    mesh = gltf["meshes"][node["mesh"]]
    prim = mesh["primitives"][0]
    attr = prim["attributes"]
    get = lambda i: read_accessor(gltf, binary, i)  # noqa: E731
    names = list(mesh.get("extras", {}).get("targetNames", []))
    targets_raw = prim.get("targets", [])
    if len(names) != len(targets_raw):
        names = [f"target_{i}" for i in range(len(targets_raw))]
    targets = {n: {k: get(v) for k, v in t.items()} for n, t in zip(names, targets_raw)}
    animations = []
    for anim in gltf.get("animations", []):
        for channel in anim["channels"]:
            if channel["target"].get("path") != "weights":
                continue
            sampler = anim["samplers"][channel["sampler"]]
            times = get(sampler["input"])
            weights = get(sampler["output"]).reshape(len(times), -1)
            animations.append(MorphAnimation(times=times, weights=weights, names=names,
                                             name=anim.get("name", ""),
                                             interpolation=sampler.get("interpolation", "LINEAR")))
    faces = get(prim["indices"]).astype(np.int64).reshape(-1, 3)
    n_vertices = len(get(attr["POSITION"]))
    colors = get(attr["COLOR_0"])[:, :3] if "COLOR_0" in attr else np.ones((n_vertices, 3), np.float32)
    return AvatarGlb(positions=get(attr["POSITION"]), normals=get(attr["NORMAL"]), colors=colors,
                     uvs=get(attr["TEXCOORD_0"]) if "TEXCOORD_0" in attr else np.zeros((n_vertices, 2), np.float32),
                     faces=faces, target_names=names, targets=targets,
                     default_weights=[float(w) for w in mesh.get("weights", [0.0] * len(names))],
                     animations=animations, node_scale=list(node.get("scale", [1.0, 1.0, 1.0])), gltf=gltf)


def frames_to_animation(weights: np.ndarray | torch.Tensor, fps: float, names: Sequence[str] | None = None,
                        name: str = "drive") -> MorphAnimation:
    """Per-frame weights [T,N] at `fps` frames per second → MorphAnimation with times k/fps (a video drive)."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise Toon3dError(f"fps must be a positive number, got {fps!r}")
    w = _as_array(weights, "animation weights")
    if w.ndim != 2:
        raise Toon3dError(f"per-frame weights must be [T,N], got shape {w.shape}")
    return MorphAnimation(times=np.arange(w.shape[0], dtype=np.float64) / fps, weights=w, names=names, name=name)

"""SynFace parameters: one tensor per named parameter, sampled per face from its own seed.

Each face draws a fixed-length vector of uniforms from `torch.Generator().manual_seed(seed)`
and maps draw k to parameter k, so a face depends only on its seed: not on the batch it is
in, the image size or the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import torch

from toon3d.errors import Toon3dError

# name -> (group, low, high). Order is the draw order and must only ever be appended to:
# reordering would change every face of every seed.
PARAM_SPECS: dict[str, tuple[str, float, float]] = {
    # identity: shape
    "head_width": ("identity", 0.90, 1.08),
    "head_height": ("identity", 0.92, 1.08),
    "jaw_width": ("identity", 0.76, 0.98),
    "jaw_shape": ("identity", 1.9, 3.6),          # superellipse exponent: pointed -> square
    "chin_length": ("identity", 0.95, 1.05),
    "chin_protrusion": ("identity", 0.0, 1.0),
    "cheekbones": ("identity", 0.0, 1.0),
    "face_depth": ("identity", 0.85, 1.15),
    "nose_length": ("identity", 0.85, 1.15),
    "nose_width": ("identity", 0.8, 1.35),
    "nose_height": ("identity", 0.6, 1.4),
    "eye_spacing": ("identity", 0.93, 1.07),
    "eye_size": ("identity", 0.82, 1.18),
    "eye_slant": ("identity", -1.0, 1.0),
    "brow_ridge": ("identity", 0.0, 1.0),
    "lip_thickness": ("identity", 0.6, 1.4),
    "mouth_width": ("identity", 0.85, 1.15),
    "ear_size": ("identity", 0.8, 1.2),
    # identity: appearance
    "skin_tone": ("identity", 0.0, 1.0),          # light -> dark
    "skin_warmth": ("identity", 0.0, 1.0),
    "skin_phase": ("identity", 0.0, 1.0),         # phase of the skin's low-frequency variation
    "blush": ("identity", 0.0, 1.0),
    "lip_color": ("identity", 0.0, 1.0),          # pale pink -> red -> brown
    "iris_color": ("identity", 0.0, 1.0),         # dark brown -> hazel -> green -> blue -> grey
    "brow_thickness": ("identity", 0.6, 1.5),
    "brow_arch": ("identity", 0.0, 1.0),
    "brow_tilt": ("identity", -1.0, 1.0),
    "brow_darkness": ("identity", 0.0, 1.0),
    "hair_color": ("identity", 0.0, 1.0),         # black -> brown -> auburn -> blond -> grey
    "hair_coverage": ("identity", 0.0, 1.0),      # 0 receding/bald, 1 low hairline
    "hair_length": ("identity", 0.0, 1.0),
    "hair_volume": ("identity", 0.0, 1.0),
    "hair_part": ("identity", -1.0, 1.0),
    "hair_bangs": ("identity", 0.0, 1.0),
    "hair_phase": ("identity", 0.0, 1.0),
    "glasses": ("identity", 0.0, 1.0),            # 0 or 1
    "glasses_color": ("identity", 0.0, 1.0),
    "glasses_shape": ("identity", 0.0, 1.0),      # round -> rectangular
    # expression: each acts only inside its own region
    "smile": ("expression", 0.0, 1.0),
    "mouth_open": ("expression", 0.0, 1.0),
    "eyes_closed": ("expression", 0.0, 1.0),
    "brows_raised": ("expression", 0.0, 1.0),
    # pose (degrees)
    "yaw_deg": ("pose", -40.0, 40.0),
    "pitch_deg": ("pose", -20.0, 20.0),
    "roll_deg": ("pose", -8.0, 8.0),
    # light (Unsup3d convention: shading = ambient + diffuse * max(0, n . normalise(dx, dy, 1)))
    "light_ambient": ("light", 0.35, 0.65),
    "light_diffuse": ("light", 0.35, 0.75),
    "light_dx": ("light", -0.9, 0.9),
    "light_dy": ("light", -0.6, 0.6),
    # background
    "bg_hue": ("background", 0.0, 1.0),
    "bg_saturation": ("background", 0.0, 0.6),
    "bg_value": ("background", 0.25, 0.95),
    "bg_hue2": ("background", 0.0, 1.0),
    "bg_value2": ("background", 0.2, 0.95),
    "bg_angle": ("background", 0.0, 1.0),
    "bg_phase": ("background", 0.0, 1.0),
}

PARAM_NAMES: tuple[str, ...] = tuple(PARAM_SPECS)
EXPRESSION_NAMES: tuple[str, ...] = tuple(n for n, s in PARAM_SPECS.items() if s[0] == "expression")
NUM_DRAWS = 96  # uniforms drawn per face; spare draws leave room to append parameters

# Probability that an expression is exactly neutral (0), so the data set holds many neutral
# faces and each expression varies on its own.
_NEUTRAL_PROB = {"smile": 0.45, "mouth_open": 0.55, "eyes_closed": 0.8, "brows_raised": 0.6}
_GLASSES_PROB = 0.25
_MAX_SEED = 2**32 - 1  # torch's CPU generator keeps only the low 32 bits of a seed
_SEED_STRIDE = 2654435761  # odd, so faces of one data set get distinct seeds mod 2^32


def _sample_one(seed: int) -> torch.Tensor:
    """Parameter values of one face: [P] float64, in PARAM_NAMES order."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(NUM_DRAWS, generator=g, dtype=torch.float64)
    gate = torch.rand(len(_NEUTRAL_PROB) + 1, generator=g, dtype=torch.float64)
    values = torch.empty(len(PARAM_NAMES), dtype=torch.float64)
    for k, (name, (_, lo, hi)) in enumerate(PARAM_SPECS.items()):
        values[k] = lo + (hi - lo) * u[k]
    for j, (name, p) in enumerate(_NEUTRAL_PROB.items()):
        if gate[j] < p:
            values[PARAM_NAMES.index(name)] = 0.0
    values[PARAM_NAMES.index("glasses")] = float(gate[-1] < _GLASSES_PROB)
    return values


def face_seeds(n: int, seed: int, start: int = 0) -> list[int]:
    """Per-face seeds (< 2^32) of faces start..start+n-1 of data set `seed`.

    Distinct within a data set; data sets with nearby seeds stay disjoint for >10^9 faces
    because their seed streams are offset by a large odd stride.
    """
    if seed < 0 or seed >= 2**31:
        raise Toon3dError(f"seed {seed} is out of range; pass a seed in [0, 2^31)")
    return [(seed * _SEED_STRIDE + start + i) % 2**32 for i in range(n)]


@dataclass
class SynFaceParams:
    """Every SynFace parameter as a [B] float32 tensor (see PARAM_SPECS for groups and ranges)."""

    head_width: torch.Tensor
    head_height: torch.Tensor
    jaw_width: torch.Tensor
    jaw_shape: torch.Tensor
    chin_length: torch.Tensor
    chin_protrusion: torch.Tensor
    cheekbones: torch.Tensor
    face_depth: torch.Tensor
    nose_length: torch.Tensor
    nose_width: torch.Tensor
    nose_height: torch.Tensor
    eye_spacing: torch.Tensor
    eye_size: torch.Tensor
    eye_slant: torch.Tensor
    brow_ridge: torch.Tensor
    lip_thickness: torch.Tensor
    mouth_width: torch.Tensor
    ear_size: torch.Tensor
    skin_tone: torch.Tensor
    skin_warmth: torch.Tensor
    skin_phase: torch.Tensor
    blush: torch.Tensor
    lip_color: torch.Tensor
    iris_color: torch.Tensor
    brow_thickness: torch.Tensor
    brow_arch: torch.Tensor
    brow_tilt: torch.Tensor
    brow_darkness: torch.Tensor
    hair_color: torch.Tensor
    hair_coverage: torch.Tensor
    hair_length: torch.Tensor
    hair_volume: torch.Tensor
    hair_part: torch.Tensor
    hair_bangs: torch.Tensor
    hair_phase: torch.Tensor
    glasses: torch.Tensor
    glasses_color: torch.Tensor
    glasses_shape: torch.Tensor
    smile: torch.Tensor
    mouth_open: torch.Tensor
    eyes_closed: torch.Tensor
    brows_raised: torch.Tensor
    yaw_deg: torch.Tensor
    pitch_deg: torch.Tensor
    roll_deg: torch.Tensor
    light_ambient: torch.Tensor
    light_diffuse: torch.Tensor
    light_dx: torch.Tensor
    light_dy: torch.Tensor
    bg_hue: torch.Tensor
    bg_saturation: torch.Tensor
    bg_value: torch.Tensor
    bg_hue2: torch.Tensor
    bg_value2: torch.Tensor
    bg_angle: torch.Tensor
    bg_phase: torch.Tensor

    @classmethod
    def from_seeds(cls, seeds: Iterable[int]) -> "SynFaceParams":
        """One face per seed; face i depends only on seeds[i]."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise Toon3dError("no seeds given; pass at least one face seed")
        if any(s < 0 or s > _MAX_SEED for s in seeds):
            raise Toon3dError(f"face seeds must be in [0, 2^32); got {min(seeds)}..{max(seeds)}")
        table = torch.stack([_sample_one(s) for s in seeds]).float()
        return cls.from_tensor(table)

    @classmethod
    def sample(cls, n: int, seed: int = 0, start: int = 0) -> "SynFaceParams":
        """Faces start..start+n-1 of the data set with this seed."""
        if n <= 0:
            raise Toon3dError(f"n must be positive, got {n}; pass --n 1 or more")
        return cls.from_seeds(face_seeds(n, seed, start))

    @classmethod
    def from_tensor(cls, table: torch.Tensor) -> "SynFaceParams":
        """[B,P] table in PARAM_NAMES order → params."""
        if table.dim() != 2 or table.shape[1] != len(PARAM_NAMES):
            raise ValueError(f"expected [B,{len(PARAM_NAMES)}], got {tuple(table.shape)}")
        return cls(**{name: table[:, k] for k, name in enumerate(PARAM_NAMES)})

    def to_tensor(self) -> torch.Tensor:
        """[B,P] table in PARAM_NAMES order."""
        return torch.stack([getattr(self, n) for n in PARAM_NAMES], dim=1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SynFaceParams":
        """A copy on `device` with floating `dtype`."""
        return SynFaceParams(**{n: getattr(self, n).to(device=device, dtype=dtype) for n in PARAM_NAMES})

    def replace(self, **values: float | torch.Tensor) -> "SynFaceParams":
        """A copy with some parameters set (a float is broadcast to the batch)."""
        out = {}
        for name, v in values.items():
            if name not in PARAM_SPECS:
                raise KeyError(f"unknown SynFace parameter {name!r}")
            ref = getattr(self, name)
            out[name] = torch.as_tensor(v, dtype=ref.dtype, device=ref.device).expand_as(ref).clone()
        return dataclasses.replace(self, **out)

    def __len__(self) -> int:
        return int(self.head_width.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor) -> "SynFaceParams":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return SynFaceParams(**{n: getattr(self, n)[index] for n in PARAM_NAMES})

    def row(self, i: int) -> dict[str, float]:
        """Face i as {name: value} (JSON-ready floats)."""
        return {n: round(float(getattr(self, n)[i]), 6) for n in PARAM_NAMES}

"""Naming SeFa directions by what they change: `smile`, `mouth_open`, ... → (direction index, sign).

SeFa gives indices. For each of the top directions we edit many G_base images both ways
(w ± strength·n, W codes truncated first, as SeFa edits) and measure, with dlib's 68 landmarks
(`toon3d.edit.landmarks`), what moves. No labels are needed, so this works on any generator
whose images dlib sees as faces.

Statistics, over the latents whose neutral image dlib's detector confirms as a face (over all
latents, flagged, when too few are):

  - ``std[m]``: the spread of measure m over the neutral images;
  - ``effect[k,s,m]``: mean of m(w + s·strength·n_k) − m(w), per sign s ∈ {+, −};
  - ``z[k,s,m] = effect / std``: the change in units of the natural spread;
  - ``slope[k,m] = (z[k,+,m] − z[k,−,m]) / 2``: the table's number;
  - ``agreement[k,m]``: fraction of latents where m(+) − m(−) has the mean's sign.

A name resolves to the (k, s) maximising σ·z[k,s,m] for its measure m and wanted sign σ
(`NAMES`): e.g. `eyes_closed` wants eye_open down. Each name is resolved on its own, so two
names may share a direction (a pose direction often moves everything).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from toon3d.edit.directions import Factorization, apply_direction
from toon3d.edit.landmarks import MEASURES, FaceLandmarks, face_measures
from toon3d.errors import Toon3dError

# name → (measure, wanted sign, what the + sign of the name does)
NAMES: dict[str, tuple[str, int, str]] = {
    "smile": ("mouth_width", +1, "mouth corners apart"),
    "mouth_open": ("mouth_open", +1, "lips apart"),
    "eyes_closed": ("eye_open", -1, "eyelids together"),
    "brows_up": ("brow_height", +1, "brows raised above the eyes"),
    "yaw": ("yaw", +1, "nose toward the image's right"),
    "pitch": ("pitch", +1, "head tilted down, chin foreshortened"),
}
DEFAULT_TOP = 10
DEFAULT_SAMPLES = 64
DEFAULT_STRENGTH = 3.0
DEFAULT_TRUNCATION = 0.7
# Names are given only when dlib's detector confirms at least this many neutral images as faces.
MIN_FACES = 4
MIN_FACE_FRACTION = 0.25


def parse_direction(spec: str) -> int | str:
    """'smile' → 'smile'; '3' → 3. Unknown names and negative numbers are one-line errors."""
    text = str(spec).strip()
    if text.isdigit():
        return int(text)
    if text in NAMES:
        return text
    if text.lstrip("-").isdigit():
        raise Toon3dError(f"--direction {spec}: indices start at 0 (the strongest); for the other sign pass a "
                          "negative --strength")
    raise Toon3dError(f"unknown direction {spec!r}; pass an index (0 = strongest) or one of {', '.join(NAMES)}")


def factor_checksum(factor: Factorization, top: int) -> str:
    """sha256 of the first `top` directions (float32 bytes): ties a name table to its factor."""
    data = factor.eigvec[:, :top].detach().cpu().float().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


@dataclass
class DirectionTable:
    """What each of the top directions changes, and the names resolved from it."""

    indices: list[int]
    strength: float
    truncation: float
    samples: int
    seed: int
    confirmed: int
    named: bool
    reason: str
    std: np.ndarray          # [M]
    effect: np.ndarray       # [K,2,M] (sign + then −)
    z: np.ndarray            # [K,2,M]
    agreement: np.ndarray    # [K,M]
    names: dict[str, dict | None] = field(default_factory=dict)
    checksum: str = ""
    singular: list[float] | None = None

    @property
    def slope(self) -> np.ndarray:
        """[K,M]: (z(+) − z(−)) / 2."""
        return (self.z[:, 0] - self.z[:, 1]) / 2

    def resolve(self, name: str) -> tuple[int, int]:
        """(index, sign) of a named direction; a one-line error when this table could not name it."""
        if name not in NAMES:
            raise Toon3dError(f"unknown direction {name!r}; pass an index or one of {', '.join(NAMES)}")
        if not self.named:
            raise Toon3dError(f"directions could not be named: {self.reason}; pass a numeric --direction "
                              "(0 = strongest)")
        found = self.names.get(name)
        if found is None:
            raise Toon3dError(f"no measured direction moves {NAMES[name][0]} the way {name!r} needs; pass a "
                              "numeric --direction")
        return int(found["index"]), int(found["sign"])

    def to_json(self) -> dict:
        measures = list(MEASURES)
        return {
            "measures": measures, "strength": self.strength, "truncation": self.truncation,
            "samples": self.samples, "seed": self.seed, "faces_confirmed": self.confirmed,
            "named": self.named, "reason": self.reason, "checksum": self.checksum,
            "std": dict(zip(measures, map(float, self.std))),
            "names": self.names,
            "directions": [
                {"index": k, "singular_value": None if self.singular is None else self.singular[i],
                 "slope_z": dict(zip(measures, map(float, self.slope[i]))),
                 "plus": {"effect": dict(zip(measures, map(float, self.effect[i, 0]))),
                          "z": dict(zip(measures, map(float, self.z[i, 0])))},
                 "minus": {"effect": dict(zip(measures, map(float, self.effect[i, 1]))),
                           "z": dict(zip(measures, map(float, self.z[i, 1])))},
                 "agreement": dict(zip(measures, map(float, self.agreement[i])))}
                for i, k in enumerate(self.indices)],
        }

    @classmethod
    def from_json(cls, data: dict) -> DirectionTable:
        """Rebuild a table from `to_json`'s dict (KeyError/TypeError/ValueError on a damaged one)."""
        measures = data["measures"]
        rows = data["directions"]
        effect = np.array([[[r[s]["effect"][m] for m in measures] for s in ("plus", "minus")] for r in rows])
        z = np.array([[[r[s]["z"][m] for m in measures] for s in ("plus", "minus")] for r in rows])
        return cls(indices=[int(r["index"]) for r in rows], strength=float(data["strength"]),
                   truncation=float(data["truncation"]), samples=int(data["samples"]), seed=int(data["seed"]),
                   confirmed=int(data["faces_confirmed"]), named=bool(data["named"]), reason=str(data["reason"]),
                   std=np.array([data["std"][m] for m in measures]), effect=effect.reshape(len(rows), 2, -1),
                   z=z.reshape(len(rows), 2, -1),
                   agreement=np.array([[r["agreement"][m] for m in measures] for r in rows]).reshape(len(rows), -1),
                   names=dict(data["names"]), checksum=str(data["checksum"]),
                   singular=[r["singular_value"] for r in rows] if rows and rows[0]["singular_value"] is not None
                   else None)

    def to_markdown(self, title: str = "Directions") -> str:
        lines = [f"# {title}", ""]
        used = "the confirmed faces" if self.named else "all images"
        lines.append(f"Edits w ± {self.strength:g}·n on {self.samples} latents (seed {self.seed}, truncation "
                     f"{self.truncation:g}); dlib's detector confirmed a face in {self.confirmed} of "
                     f"{self.samples} neutral images; statistics over {used}.")
        lines.append("")
        if not self.named:
            lines += [f"**Not named: {self.reason}.** The numbers below describe what dlib's landmark model "
                      "returns on these images and mean little.", ""]
        lines += ["Each cell: the change from w − s·n to w + s·n, halved, in units of the measure's spread over "
                  "the neutral images (z); in brackets the fraction of latents that move that way.", ""]
        header = "| direction | σ | " + " | ".join(MEASURES) + " |"
        lines += [header, "|" + "---|" * (2 + len(MEASURES))]
        for i, k in enumerate(self.indices):
            sv = "" if self.singular is None else f"{self.singular[i]:.3g}"
            cells = [f"{self.slope[i, j]:+.2f} ({self.agreement[i, j]:.0%})" for j in range(len(MEASURES))]
            lines.append(f"| {k} | {sv} | " + " | ".join(cells) + " |")
        lines += ["", "| name | measure | direction | sign | z from neutral |", "|---|---|---|---|---|"]
        for name, (measure, want, what) in NAMES.items():
            found = self.names.get(name) if self.named else None
            if found is None:
                lines.append(f"| {name} ({what}) | {measure} {'up' if want > 0 else 'down'} | – | – | – |")
            else:
                lines.append(f"| {name} ({what}) | {measure} {'up' if want > 0 else 'down'} | {found['index']} | "
                             f"{'+' if found['sign'] > 0 else '−'} | {found['score']:+.2f} |")
        lines.append("")
        return "\n".join(lines)


@torch.no_grad()
def _images(generator: nn.Module, ws: torch.Tensor, noise_mode: str) -> torch.Tensor:
    return generator.synthesis(ws, noise_mode=noise_mode).float().cpu()


def sample_w(generator: nn.Module, mean_latent: torch.Tensor, samples: int, seed: int,
             truncation: float) -> torch.Tensor:
    """`samples` W codes [N,D]: z ~ N(0,1) from torch.Generator(seed), mapped, truncated toward mean_latent."""
    dev = mean_latent.device
    z = torch.randn(samples, generator.style_dim, generator=torch.Generator().manual_seed(int(seed))).to(dev)
    with torch.no_grad():
        w = generator.mapping(z)
    return mean_latent + truncation * (w - mean_latent)


def measure_directions(generator: nn.Module, mean_latent: torch.Tensor, factor: Factorization,
                       top: int = DEFAULT_TOP, samples: int = DEFAULT_SAMPLES, strength: float = DEFAULT_STRENGTH,
                       truncation: float = DEFAULT_TRUNCATION, seed: int = 0, batch: int = 16,
                       landmarks: FaceLandmarks | None = None, noise_mode: str = "const",
                       progress: bool | None = None) -> DirectionTable:
    """Measure the top directions of `factor` on `generator` (G_base) and resolve `NAMES`."""
    from tqdm import tqdm

    if not 1 <= top <= factor.dim:
        raise Toon3dError(f"--top must be in 1..{factor.dim}, got {top}")
    if samples < 2:
        raise Toon3dError(f"--samples must be at least 2, got {samples}")
    if not (math.isfinite(strength) and strength > 0):
        raise Toon3dError(f"--strength must be a positive number, got {strength}")
    landmarks = landmarks or FaceLandmarks()
    w = sample_w(generator, mean_latent, samples, seed, truncation)
    n_latent, indices = generator.n_latent, list(range(top))
    neutral = np.empty((samples, len(MEASURES)))
    edited = np.empty((top, 2, samples, len(MEASURES)))
    confirmed = np.zeros(samples, dtype=bool)
    chunks = list(range(0, samples, batch))
    disable = None if progress is None else not progress
    with tqdm(total=len(chunks) * (1 + top), desc="directions", unit="pass", disable=disable) as bar:
        for start in chunks:
            wc = w[start:start + batch]
            images = _images(generator, apply_direction(wc, torch.zeros_like(wc[0]), n_latent), noise_mode)
            neutral[start:start + len(wc)] = face_measures(landmarks.landmarks(images))
            confirmed[start:start + len(wc)] = landmarks.confirmed(images)
            bar.update(1)
            for k in indices:
                n = factor.eigvec[:, k].to(wc)
                ws = torch.cat([apply_direction(wc, strength * n, n_latent, factor.layers),
                                apply_direction(wc, -strength * n, n_latent, factor.layers)])
                m = face_measures(landmarks.landmarks(_images(generator, ws, noise_mode)))
                edited[k, 0, start:start + len(wc)] = m[:len(wc)]
                edited[k, 1, start:start + len(wc)] = m[len(wc):]
                bar.update(1)
    count = int(confirmed.sum())
    need = max(MIN_FACES, math.ceil(MIN_FACE_FRACTION * samples))
    named = count >= need
    reason = "" if named else (f"dlib's face detector confirmed a face in only {count} of {samples} neutral images "
                               f"(at least {need} needed): this generator's images do not look like faces to dlib")
    use = confirmed if named else np.ones(samples, dtype=bool)
    std = neutral[use].std(0)
    scale = np.where(std > 1e-9, std, np.inf)  # a measure that never varies gets z = 0
    change = edited[:, :, use] - neutral[None, None, use]
    effect = change.mean(2)
    z = effect / scale
    diff = edited[:, 0, use] - edited[:, 1, use]
    sign = np.sign(diff.mean(1, keepdims=True))
    agreement = (np.sign(diff) == sign).mean(1)
    names: dict[str, dict | None] = {}
    for name, (measure, want, _) in NAMES.items():
        j = MEASURES.index(measure)
        scores = want * z[:, :, j]  # [K,2]
        k, s = np.unravel_index(int(np.argmax(scores)), scores.shape)
        best = float(scores[k, s])
        names[name] = ({"index": indices[k], "sign": 1 if s == 0 else -1, "score": best, "measure": measure}
                       if named and best > 0 else None)
    singular = None if factor.singular is None else [float(v) for v in factor.singular[:top]]
    return DirectionTable(indices, float(strength), float(truncation), samples, int(seed), count, named, reason,
                          std, effect, z, agreement, names, factor_checksum(factor, top), singular)

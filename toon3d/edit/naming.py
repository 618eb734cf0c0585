"""Naming SeFa directions by what they change: `smile`, `mouth_open`, ... → (direction index, sign).

SeFa gives indices. For each of the top directions we edit many G_base images both ways
(w ± strength·n, W codes truncated first, as SeFa edits) and measure, with dlib's 68 landmarks
(`toon3d.edit.landmarks`), what moves. No labels are needed, so this works on any generator
whose images dlib sees as faces.

Statistics, over the latents whose neutral image dlib's detector confirms as a face (over all
latents, flagged, when too few are):

  - ``std[m]``: the spread of measure m over the neutral images;
  - ``mean[m]``: its mean there, the generator's average face (a single photo's expression is
    measured from it, `toon3d.edit.expression_transfer`);
  - ``effect[k,s,m]``: mean of m(w + s·strength·n_k) − m(w), per sign s ∈ {+, −};
  - ``z[k,s,m] = effect / std``: the change in units of the natural spread;
  - ``slope[k,m] = (z[k,+,m] − z[k,−,m]) / 2``: the table's number;
  - ``agreement[k,m]``: fraction of latents where m(+) − m(−) has the mean's sign.

A name resolves to the (k, s) maximising σ·z[k,s,m] for its measure m and wanted sign σ
(`NAMES`): e.g. `eyes_closed` wants eye_open down. Each name is resolved on its own, so two
names may share a direction (a pose direction often moves everything).

On the built-in world an attribute oracle (`toon3d.faces.attribute_oracle`, pass `oracle=`)
reads SynFace's own parameters off the same images, and the table gains oracle columns
(`ORACLE_MEASURES`: smile, mouth_open, eyes_closed, brows_raised, yaw_deg, pitch_deg):

  - ``oracle_effect[k,s,p]``: mean of p(w + s·strength·n_k) − p(w), in the parameter's units;
  - ``oracle_slope[k,p] = (oracle_effect[k,+,p] − oracle_effect[k,−,p]) / (2·strength)``: the
    change per unit of direction, the table's number.

With an oracle, names resolve by it (`ORACLE_TARGETS`: the (k, s) maximising σ·oracle_effect
for the name's parameter; yaw wants yaw_deg down, since SynFace's positive yaw turns the nose
toward the image's left), whether or not dlib confirmed the faces; the landmark names stay in
the table beside them. Only parameters the oracle reads well decide first: with an oracle that
carries its held-out R² (`oracle.r2`), a name whose parameter scored below `ORACLE_MIN_R2` goes
to the landmarks, and only when they cannot name it (dlib confirmed too few faces, or nothing
moved) to the oracle's weak reading, marked as such (`resolved(name)` says which instrument
decided; the Markdown table shows it). The oracle only measures: it never enters an optimisation.
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
# name → (SynFace parameter the oracle reads, wanted sign): the same meaning as NAMES.
ORACLE_TARGETS: dict[str, tuple[str, int]] = {
    "smile": ("smile", +1),
    "mouth_open": ("mouth_open", +1),
    "eyes_closed": ("eyes_closed", +1),
    "brows_up": ("brows_raised", +1),
    "yaw": ("yaw_deg", -1),
    "pitch": ("pitch_deg", +1),
}
ORACLE_MEASURES = tuple(param for param, _ in ORACLE_TARGETS.values())
# An oracle parameter names directions only when the oracle's held-out R² for it reaches this
# (`toon3d.faces.attribute_oracle.READABLE_R2`, kept equal by a test).
ORACLE_MIN_R2 = 0.5
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
    oracle_effect: np.ndarray | None = None   # [K,2,len(ORACLE_MEASURES)] (sign + then −), parameter units
    oracle_names: dict[str, dict | None] | None = None
    mean: np.ndarray | None = None            # [M] (None in tables written before it was stored)

    @property
    def slope(self) -> np.ndarray:
        """[K,M]: (z(+) − z(−)) / 2."""
        return (self.z[:, 0] - self.z[:, 1]) / 2

    @property
    def oracle_slope(self) -> np.ndarray | None:
        """[K,len(ORACLE_MEASURES)]: oracle parameter change per unit of direction, (effect(+) − effect(−)) / 2·strength."""
        if self.oracle_effect is None:
            return None
        return (self.oracle_effect[:, 0] - self.oracle_effect[:, 1]) / (2 * self.strength)

    def resolve(self, name: str) -> tuple[int, int]:
        """(index, sign) of a named direction; a one-line error when unnamed (see `resolved`)."""
        index, sign, _ = self.resolved(name)
        return index, sign

    def resolved(self, name: str) -> tuple[int, int, str]:
        """(index, sign, which instrument decided): the trusted oracle, else the landmarks, else the weak oracle."""
        if name not in NAMES:
            raise Toon3dError(f"unknown direction {name!r}; pass an index or one of {', '.join(NAMES)}")
        oracle = (self.oracle_names or {}).get(name, "absent")
        if oracle != "absent" and (oracle is None or oracle.get("trusted", True)):
            if oracle is None:
                raise Toon3dError(f"no measured direction moves the oracle's {ORACLE_TARGETS[name][0]} the way "
                                  f"{name!r} needs; pass a numeric --direction")
            return int(oracle["index"]), int(oracle["sign"]), "oracle"
        landmark = self.names.get(name) if self.named else None
        if landmark is not None:
            return int(landmark["index"]), int(landmark["sign"]), "landmarks"
        if oracle not in ("absent", None):
            return (int(oracle["index"]), int(oracle["sign"]),
                    f"oracle, weak (held-out R² {oracle.get('r2', float('nan')):.2f} < {ORACLE_MIN_R2:g}; "
                    "the landmarks could not name it)")
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
        oracle = None
        if self.oracle_effect is not None:
            oracle = {"measures": list(ORACLE_MEASURES), "names": self.oracle_names,
                      "directions": [{"index": k,
                                      "slope_per_unit": dict(zip(ORACLE_MEASURES, map(float, self.oracle_slope[i]))),
                                      "plus": dict(zip(ORACLE_MEASURES, map(float, self.oracle_effect[i, 0]))),
                                      "minus": dict(zip(ORACLE_MEASURES, map(float, self.oracle_effect[i, 1])))}
                                     for i, k in enumerate(self.indices)]}
        return {"oracle": oracle,
            "measures": measures, "strength": self.strength, "truncation": self.truncation,
            "samples": self.samples, "seed": self.seed, "faces_confirmed": self.confirmed,
            "named": self.named, "reason": self.reason, "checksum": self.checksum,
            "std": dict(zip(measures, map(float, self.std))),
            "mean": None if self.mean is None else dict(zip(measures, map(float, self.mean))),
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
        oracle = data.get("oracle")
        oracle_effect = oracle_names = None
        if oracle is not None:
            oracle_effect = np.array([[[r[s][m] for m in ORACLE_MEASURES] for s in ("plus", "minus")]
                                      for r in oracle["directions"]]).reshape(len(rows), 2, len(ORACLE_MEASURES))
            oracle_names = dict(oracle["names"])
        return cls(indices=[int(r["index"]) for r in rows], strength=float(data["strength"]),
                   truncation=float(data["truncation"]), samples=int(data["samples"]), seed=int(data["seed"]),
                   confirmed=int(data["faces_confirmed"]), named=bool(data["named"]), reason=str(data["reason"]),
                   std=np.array([data["std"][m] for m in measures]), effect=effect.reshape(len(rows), 2, -1),
                   z=z.reshape(len(rows), 2, -1),
                   agreement=np.array([[r["agreement"][m] for m in measures] for r in rows]).reshape(len(rows), -1),
                   names=dict(data["names"]), checksum=str(data["checksum"]),
                   singular=[r["singular_value"] for r in rows] if rows and rows[0]["singular_value"] is not None
                   else None, oracle_effect=oracle_effect, oracle_names=oracle_names,
                   mean=np.array([data["mean"][m] for m in measures]) if data.get("mean") else None)

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
        if self.oracle_effect is not None:
            lines += ["", "Attribute oracle (SynFace's parameters read off the same images): change per unit of "
                      "direction, (p(w + s·n) − p(w − s·n)) / 2s, in parameter units (expressions 0..1, angles in "
                      "degrees).", "",
                      "| direction | " + " | ".join(ORACLE_MEASURES) + " |", "|" + "---|" * (1 + len(ORACLE_MEASURES))]
            for i, k in enumerate(self.indices):
                lines.append(f"| {k} | " + " | ".join(f"{v:+.3g}" for v in self.oracle_slope[i]) + " |")
        decided = []
        for name in NAMES:
            try:
                decided.append(f"{name}: {self.resolved(name)[2]}")
            except Toon3dError:
                decided.append(f"{name}: unnamed")
        lines += ["", "Names resolved by (trusted oracle, else landmarks, else weak oracle): " + "; ".join(decided)
                  + ".", "",
                  "| name | landmark measure | direction | sign | z from neutral |", "|---|---|---|---|---|"]
        for name, (measure, want, what) in NAMES.items():
            found = self.names.get(name) if self.named else None
            if found is None:
                lines.append(f"| {name} ({what}) | {measure} {'up' if want > 0 else 'down'} | – | – | – |")
            else:
                lines.append(f"| {name} ({what}) | {measure} {'up' if want > 0 else 'down'} | {found['index']} | "
                             f"{'+' if found['sign'] > 0 else '−'} | {found['score']:+.2f} |")
        if self.oracle_names is not None:
            lines += ["", "| name | oracle parameter (held-out R²) | direction | sign | change from neutral |",
                      "|---|---|---|---|---|"]
            for name, (param, want) in ORACLE_TARGETS.items():
                found = self.oracle_names.get(name)
                r2 = "" if found is None or found.get("r2") is None else f" ({found['r2']:.2f})"
                head = f"| {name} | {param} {'up' if want > 0 else 'down'}{r2} |"
                lines.append(f"{head} – | – | – |" if found is None else
                             f"{head} {found['index']} | {'+' if found['sign'] > 0 else '−'} | "
                             f"{found['change']:+.3g}{'' if found.get('trusted', True) else ' (weak)'} |")
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
                       progress: bool | None = None, oracle=None) -> DirectionTable:
    """Measure the top directions of `factor` on `generator` (G_base) and resolve `NAMES`.

    `oracle`: an attribute oracle (`predict(images [B,3,S,S]) → [B,P]`, `index(param)`) for the
    built-in world; it adds the oracle columns and then decides the names.
    """
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
    columns = None if oracle is None else [oracle.index(p) for p in ORACLE_MEASURES]
    o_neutral = np.empty((samples, len(ORACLE_MEASURES)))
    o_edited = np.empty((top, 2, samples, len(ORACLE_MEASURES)))
    confirmed = np.zeros(samples, dtype=bool)
    chunks = list(range(0, samples, batch))
    disable = None if progress is None else not progress
    with tqdm(total=len(chunks) * (1 + top), desc="directions", unit="pass", disable=disable) as bar:
        for start in chunks:
            wc = w[start:start + batch]
            images = _images(generator, apply_direction(wc, torch.zeros_like(wc[0]), n_latent), noise_mode)
            neutral[start:start + len(wc)] = face_measures(landmarks.landmarks(images))
            if oracle is not None:
                o_neutral[start:start + len(wc)] = _oracle_values(oracle, images, columns)
            confirmed[start:start + len(wc)] = landmarks.confirmed(images)
            bar.update(1)
            for k in indices:
                n = factor.eigvec[:, k].to(wc)
                ws = torch.cat([apply_direction(wc, strength * n, n_latent, factor.layers),
                                apply_direction(wc, -strength * n, n_latent, factor.layers)])
                pictures = _images(generator, ws, noise_mode)
                m = face_measures(landmarks.landmarks(pictures))
                edited[k, 0, start:start + len(wc)] = m[:len(wc)]
                edited[k, 1, start:start + len(wc)] = m[len(wc):]
                if oracle is not None:
                    o = _oracle_values(oracle, pictures, columns)
                    o_edited[k, 0, start:start + len(wc)] = o[:len(wc)]
                    o_edited[k, 1, start:start + len(wc)] = o[len(wc):]
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
    oracle_effect = oracle_names = None
    if oracle is not None:
        oracle_effect = (o_edited - o_neutral[None, None]).mean(2)  # over all latents: no detector needed
        oracle_names = resolve_by_oracle(oracle_effect, indices, getattr(oracle, "r2", None))
    return DirectionTable(indices, float(strength), float(truncation), samples, int(seed), count, named, reason,
                          std, effect, z, agreement, names, factor_checksum(factor, top), singular,
                          oracle_effect, oracle_names, neutral[use].mean(0))


def _oracle_values(oracle, images: torch.Tensor, columns: list[int]) -> np.ndarray:
    return oracle.predict(images)[:, columns].double().cpu().numpy()


def resolve_by_oracle(oracle_effect: np.ndarray, indices: list[int],
                      r2: dict[str, float] | None = None) -> dict[str, dict | None]:
    """Names from oracle effects [K,2,len(ORACLE_MEASURES)]: the (k, s) moving each name's parameter most its way.

    Each entry records the parameter's held-out R² (from `r2`, when known) and whether it is
    trusted (R² ≥ ORACLE_MIN_R2, or unknown); `DirectionTable.resolved` prefers the landmarks
    over an untrusted entry.
    """
    names: dict[str, dict | None] = {}
    for name, (param, want) in ORACLE_TARGETS.items():
        scores = want * oracle_effect[:, :, ORACLE_MEASURES.index(param)]
        k, s = np.unravel_index(int(np.argmax(scores)), scores.shape)
        best = float(scores[k, s])
        score = None if r2 is None or param not in r2 else float(r2[param])
        names[name] = ({"index": indices[k], "sign": 1 if s == 0 else -1, "change": want * best, "param": param,
                        "r2": score, "trusted": score is None or score >= ORACLE_MIN_R2}
                       if best > 0 else None)
    return names

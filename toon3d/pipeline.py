"""`make_avatar`: the whole data path, stage by stage, from a face to an animatable 3D cartoon avatar.

    latent w (seed | latent file | photo → align → invert)
      → G_base(w) human face, G_style(w) cartoon
      → each expression: SeFa direction (named or indexed), refined on G_base (Stage 2) → w + Δw
      → the cartoon of every code → 3D (Stage 3): the neutral cartoon first, every edit started
        from the neutral's trained networks, so all share one canonical pixel grid and differ
        by the expression, not by an independent re-fit
      → per result: depth, albedo, normal map, meshes, turntable, relit images
      → avatar.glb (neutral mesh + one morph target per edit), viewer.html, sheet.png, avatar.json

Resumable: each stage writes its own folder inside a work folder beside `out` (atomically, with
the seconds it took); a killed run continues from the last finished stage with `resume=True`,
and a run with other settings is refused. The final folder appears only when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from toon3d.errors import Toon3dError

DEFAULT_EXPRESSIONS: tuple[tuple[str, float], ...] = (("smile", 3.0), ("mouth_open", 3.0))
WORK_SUFFIX = ".toon3d-work"
RUN_RECORD = "run.json"
STAGE_RECORD = "stage.json"


# How an edit's 3D treats GAN2Shape's step 2 (its pseudo samples' projection through the GAN):
# "train" runs it again, from the neutral's encoder; "neutral" keeps the neutral's trained encoder
# and skips it, which saves every generator backward pass of the edits' reconstructions. The CPU
# presets reuse it: started from a shipped reconstructor's pretrained encoder, an edit's shape is
# then as round as with step 2 (docs/avatar_files.md), in 2/3 of the time at 64 px and about 1/6 at
# 256 px. The paper's presets reconstruct every edit with the whole schedule.
EDIT_ENCODERS = ("train", "neutral")
EDIT_ENCODER_DEFAULT = {"cpu": "neutral", "tiny": "neutral", "paper": "train", "released": "train"}


@dataclass(frozen=True)
class AvatarSettings:
    """Everything that decides an avatar's outputs (the same settings and inputs give the same files)."""

    ckpt: str = "base"                    # G_base: base | ffhq256 | FILE
    style: str = "cartoon"                # cartoon | toon | FILE | none
    blend: bool = True                    # built-in styles blended with base (the paper's use)
    expressions: tuple[tuple[str, float], ...] = DEFAULT_EXPRESSIONS  # (name or SeFa index, strength)
    truncation: float = 0.7               # ψ for --seed latents
    refine: str = "code"                  # code | paper | off (Stage 2)
    refine_steps: int = 10
    refine_lr: float = 0.1
    identity: str = "dlib"                # identity network of L_id in 3D and of photo inversion
    edit_identity: str = "auto"           # of the Stage 2 refinement: auto = synface on the built-in base, else dlib
    edit_mask: str = "auto"               # face mask of its f_low: auto|bisenet|synface|ellipse|none (as toon3d edit)
    factor: str | None = None             # factor.pt from `toon3d directions` (default: factorise now)
    preset: str = "cpu"                   # Stage 3 preset: cpu | paper | tiny | released
    instant: bool = False                 # feed-forward 3D only (the pretrained reconstructor)
    reconstructor: str | None = None      # pretrained reconstructor weights (default: the style's built-in)
    frames: int = 36
    fps: float = 18.0
    formats: tuple[str, ...] = ("gif", "mp4")
    seed3d: int = 0                       # seed of the 3D stage's pseudo samples
    expression_from: str | None = None    # a photo whose expression becomes the edits (toon3d/pipeline_drive.py)
    drive: str | None = None              # a face video driving the morph targets (GLB animation, drive.mp4)
    neutral: str | None = None            # the driving face's neutral photo (default: the video's first face)
    drive_frames: int = 300               # at most this many video frames (read at ≤ 30 fps)
    head_mask: bool = True                # cut meshes and turntables to the cartoon's head (shape/head_mask.py)
    edit_size: int | None = None          # refinement losses on G_base stopped at this size (None: full; early_exit)
    # edits' 3D: "train" step 2 again (from the neutral's E) | "neutral" (reuse its E, skip step 2);
    # None: the preset's (EDIT_ENCODER_DEFAULT)
    edit_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.edit_encoder is None:
            object.__setattr__(self, "edit_encoder", EDIT_ENCODER_DEFAULT.get(self.preset, "train"))

    def record(self) -> dict:
        """JSON-able settings (compared on --resume)."""
        data = asdict(self)
        data["expressions"] = [[name, strength] for name, strength in self.expressions]
        data["formats"] = list(self.formats)
        return data


@dataclass(frozen=True)
class AvatarSource:
    """Where the face comes from: exactly one of seed, latent (file, row) or photo."""

    seed: int | None = None
    latent: str | None = None
    latent_index: int = 0
    photo: str | None = None
    face: int | None = None               # which face of a photo (default: the largest)

    def record(self) -> dict:
        return asdict(self)




def parse_expression(spec: str) -> tuple[str, float]:
    """'smile=+3' → ('smile', 3.0); '4=-2' → ('4', -2.0) (a SeFa index); a bare name gets strength 3."""
    from toon3d.edit.naming import NAMES

    text = spec.strip()
    name, _, value = text.partition("=")
    name = name.strip()
    if not name:
        raise Toon3dError(f"--expression {spec!r} has no name; write NAME=STRENGTH, e.g. smile=+3")
    if not (name in NAMES or name.isdigit()):
        raise Toon3dError(f"--expression {spec!r}: unknown expression {name!r}; use one of {', '.join(NAMES)} "
                          "or a SeFa direction index (0 = strongest)")
    try:
        strength = float(value) if value.strip() else 3.0
    except ValueError:
        raise Toon3dError(f"--expression {spec!r}: strength {value!r} is not a number; write e.g. {name}=+3") from None
    if not math.isfinite(strength) or strength == 0:
        raise Toon3dError(f"--expression {spec!r}: the strength must be a finite, non-zero number")
    return name, strength


def expression_key(name: str, strength: float) -> str:
    """Folder / morph-target name of an edit: 'smile', or 'smile_m2' for a second smile of strength −2."""
    return name if name[0].isalpha() else f"direction{name}"


def check_settings(settings: AvatarSettings) -> None:
    """One-line errors for settings that cannot work, before any model loads."""
    from toon3d.edit.refine import MODES

    if settings.refine != "off" and settings.refine not in MODES:
        raise Toon3dError(f"--refine {settings.refine!r}: use one of {', '.join(MODES)} or off")
    if not math.isfinite(settings.truncation):
        raise Toon3dError(f"--truncation must be a finite number, got {settings.truncation}")
    if settings.frames < 1 or not settings.fps > 0:
        raise Toon3dError("--frames and --fps must be positive")
    if settings.edit_encoder not in EDIT_ENCODERS:
        raise Toon3dError(f"--edit-encoder {settings.edit_encoder!r}: use one of {', '.join(EDIT_ENCODERS)}")
    size = settings.edit_size
    if size is not None and (not isinstance(size, int) or size < 16 or size & (size - 1)):
        raise Toon3dError(f"--edit-size {size!r}: give a power of two ≥ 16 (e.g. 128) or 'full'")
    keys = [expression_key(n, s) for n, s in settings.expressions]
    if len(set(keys)) != len(keys):
        raise Toon3dError("each --expression must name a different expression; combine strengths into one")
    if "neutral" in keys:
        raise Toon3dError("'neutral' is reserved for the unedited face; rename the expression")
    from toon3d.io.video import VIDEO_FORMATS
    unknown = sorted(set(settings.formats) - set(VIDEO_FORMATS))
    if unknown:
        raise Toon3dError(f"--format: unknown {', '.join(unknown)}; use gif, mp4 or both")


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, bytes): identifies blends as well as files."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The work folder: one sub-folder per finished stage.


class WorkFolder:
    """Stage folders of one avatar run beside its final folder: `.NAME.toon3d-work/<stage>/`."""

    def __init__(self, out: Path, record: dict, resume: bool, overwrite: bool) -> None:
        self.out = out
        self.path = out.parent / f".{out.name}{WORK_SUFFIX}"
        self.record = record
        run_file = self.path / RUN_RECORD
        if self.path.exists():
            if not resume:
                raise Toon3dError(f"an earlier run into {out} stopped before it finished ({self.path} holds its "
                                  "stages); pass --resume to continue it, or remove that folder to start over")
            try:
                before = json.loads(run_file.read_text())
            except (OSError, ValueError):
                raise Toon3dError(f"{self.path} has no readable {RUN_RECORD}; remove the folder to start over") from None
            changed = _changed(before, record)
            if changed:
                raise Toon3dError(f"--resume: the run in {self.path} used other settings ({changed}); rerun with its "
                                  "settings or remove the folder to start over")
        else:
            from toon3d.io.atomic import _check_parent

            _check_parent(self.path)
            self.path.mkdir()
            run_file.write_text(json.dumps(record, indent=2) + "\n")

    def done(self, stage: str) -> bool:
        return (self.path / stage / STAGE_RECORD).is_file()

    def folder(self, stage: str) -> Path:
        return self.path / stage

    def seconds(self, stage: str) -> float:
        try:
            return float(json.loads((self.path / stage / STAGE_RECORD).read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            return 0.0

    def run(self, stage: str, work: Callable[[Path], dict | None]) -> tuple[Path, bool]:
        """Run `work(folder)` unless the stage is done; its folder appears complete or not at all."""
        final = self.folder(stage)
        if self.done(stage):
            return final, False
        tmp = self.path / f".{stage}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            extra = work(tmp) or {}
            (tmp / STAGE_RECORD).write_text(json.dumps({"stage": stage, "seconds": round(time.perf_counter() - start, 3),
                                                        **extra}, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final, True

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _changed(before: dict, now: dict, prefix: str = "") -> str:
    """The first setting that differs between two run records, as 'key: old → new' ('' when equal)."""
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _changed(a, b, f"{prefix}{key}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{key}: {a!r} → {b!r}"
    return ""


# ---------------------------------------------------------------------------------------------
# Models, loaded once per run and only when a stage needs them.


class AvatarModels:
    """The generators, identity net, directions and reconstructor of one run (lazy)."""

    def __init__(self, settings: AvatarSettings, device: torch.device) -> None:
        self.settings = settings
        self.device = device
        self._human = self._style = self._embedder = self._edit_embedder = self._edit_mask = None
        self._directions = None
        self._expression_reader = None
        self.use_shipped_table = True  # tools/ship_directions.py turns it off to measure afresh

    @property
    def human(self):
        """G_base as a LoadedGenerator on the run's device."""
        if self._human is None:
            from toon3d.models import resolve_generator

            self._human = resolve_generator(self.settings.ckpt)
            self._human.generator.to(self.device).eval()
        return self._human

    @property
    def style(self):
        """The cartoon generator (blended with base for built-in styles), checked against G_base."""
        if self._style is None:
            from toon3d.models import resolve_generator

            if self.settings.style == "none":
                raise Toon3dError("--style none gives no cartoon to reconstruct; choose cartoon, toon or a file")
            loaded = resolve_generator(self.settings.style, blend=self.settings.blend)
            h, c = self.human.generator, loaded.generator
            if (h.style_dim, h.n_latent, h.size) != (c.style_dim, c.n_latent, c.size):
                raise Toon3dError(f"--style {self.settings.style} ({c.size} px, W {c.style_dim}-d) does not match "
                                  f"--ckpt {self.settings.ckpt} ({h.size} px, W {h.style_dim}-d); pass a style "
                                  "fine-tuned from that base generator")
            loaded.generator.to(self.device).eval()
            self._style = loaded
        return self._style

    @property
    def embedder(self):
        """The identity network of the refinement and of L_id."""
        if self._embedder is None:
            from toon3d.faces.identity import load_identity_embedder

            self._embedder = load_identity_embedder(self.settings.identity).to(self.device).eval()
        return self._embedder

    @property
    def edit_identity(self) -> str:
        """The registry name of the refinement's identity network (`edit_identity` with auto resolved)."""
        from toon3d.faces.identity import choose_identity

        return choose_identity(self.settings.edit_identity, self.settings.ckpt)

    @property
    def edit_embedder(self):
        """The identity network of the Stage 2 refinement (L_id and f_low)."""
        if self._edit_embedder is None:
            from toon3d.faces.identity import load_identity_embedder

            name = self.edit_identity
            self._edit_embedder = (self.embedder if name == self.settings.identity
                                   else load_identity_embedder(name).to(self.device).eval())
        return self._edit_embedder

    @property
    def edit_mask(self):
        """The refinement's low-level-loss face mask (`toon3d.edit.masks.MaskSource`), chosen as `toon3d edit` does."""
        if self._edit_mask is None:
            from toon3d.edit.masks import choose_mask
            from toon3d.edit.name_by import is_builtin_base

            builtin = is_builtin_base(self.settings.ckpt)
            self._edit_mask = choose_mask(self.settings.edit_mask, builtin_generator=builtin, device=self.device)
        return self._edit_mask

    @property
    def expression_reader(self):
        """dlib's detector and landmarks, reading faces cut to G_base's layout (--expression-from, --drive)."""
        if self._expression_reader is None:
            from toon3d.pipeline_drive import expression_reader

            self._expression_reader = expression_reader(self)
        return self._expression_reader

    def directions(self, progress: bool):
        """(Factorization, DirectionTable | None): the factor file's or a fresh factorisation of G_base."""
        if self._directions is None:
            from toon3d.edit.directions import DEFAULT_VARIANT, factorize, load_factor
            from toon3d.edit.naming import DirectionTable, factor_checksum, measure_directions

            g = self.human.generator
            table = None
            if self.settings.factor:
                factor = load_factor(self.settings.factor, g.style_dim, g.n_latent)
                names = Path(self.settings.factor).with_name("directions.json")
                if names.is_file():
                    candidate = DirectionTable.from_json(json.loads(names.read_text()))
                    if candidate.checksum == factor_checksum(factor, len(candidate.indices)):
                        table = candidate
            else:
                factor = factorize(g, DEFAULT_VARIANT, None, ckpt=self.human.source)
            wants_table = self.settings.expression_from is not None or self.settings.drive is not None
            wants_table = wants_table or any(not n.isdigit() for n, _ in self.settings.expressions)
            if table is None and wants_table and not self.settings.factor and self.use_shipped_table:
                table = self.shipped_table(factor)
            if table is None and wants_table:
                table = measure_directions(g, self.human.mean_latent.to(self.device), factor, progress=progress,
                                           oracle=self.oracle())
            self._directions = (factor, table)
        return self._directions

    def shipped_table(self, factor):
        """The built-in base's shipped DirectionTable when it belongs to exactly these weights, else None."""
        from toon3d.edit.name_by import is_builtin_base
        from toon3d.edit.naming import DirectionTable, factor_checksum
        from toon3d.models import builtin_directions_path

        if not is_builtin_base(self.settings.ckpt):
            return None
        path = builtin_directions_path("base")
        if not path.is_file():
            return None
        table = DirectionTable.from_json(json.loads(path.read_text()))
        return table if table.checksum == factor_checksum(factor, len(table.indices)) else None

    def oracle(self):
        """The SynFace attribute oracle that names directions of the built-in base (None for other generators).

        dlib's landmarks cannot read the built-in 64 px faces; the oracle reads SynFace's own
        expression and pose parameters off them (it only measures, never optimises).
        """
        from toon3d.edit.name_by import naming_oracle

        return naming_oracle("auto", self.settings.ckpt, self.device)[0]


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _synth(generator: torch.nn.Module, w: torch.Tensor) -> torch.Tensor:
    """W codes [B,D] → images [B,3,S,S] in [-1,1] with the generator's constant noise."""
    with torch.no_grad():
        return generator.synthesis(w[:, None].expand(-1, generator.n_latent, -1), noise_mode="const").clamp(-1, 1)


# ---------------------------------------------------------------------------------------------
# Stages. Each takes the run's context and writes into its own (temporary) folder.


def stage_faces(folder: Path, source: AvatarSource, models: AvatarModels, progress: bool) -> dict:
    """w, the human face and the cartoon: latent.safetensors, human.png, cartoon.png (+ photo.png)."""
    from toon3d.io.images import save_png

    g = models.human.generator
    record: dict = {}
    if source.photo is not None:
        from toon3d.pipeline_photo import latent_from_photo

        w, aligned, record = latent_from_photo(source, models, folder, progress)
        save_png(aligned[0], folder / "photo.png")
    elif source.latent is not None:
        from toon3d.io.latents import load_latents

        codes = load_latents(source.latent, dim=None, flag="toon3d avatar --latent")
        if not 0 <= source.latent_index < codes.shape[0]:
            raise Toon3dError(f"--latent-index {source.latent_index} is out of range: {source.latent} holds "
                              f"{codes.shape[0]} latent(s)")
        w = codes[source.latent_index:source.latent_index + 1].to(models.device)
        if w.shape[1] != g.style_dim:
            raise Toon3dError(f"{source.latent}: a latent of width {w.shape[1]} given, {g.style_dim} expected by "
                              f"{models.human.source}; pass W codes of that generator")
        if not torch.isfinite(w).all():
            raise Toon3dError(f"{source.latent} holds NaN or infinite values; pass a valid latent")
        record["truncation"] = "none (a W code file is used as it is)"
    else:
        from toon3d.seeds import z_from_seed

        z, _ = z_from_seed(source.seed, g.style_dim)
        mean = models.human.mean_latent.to(models.device)
        with torch.no_grad():
            w = mean + models.settings.truncation * (g.mapping(z.to(models.device)) - mean)
        record["truncation"] = models.settings.truncation
    human = _synth(g, w)
    cartoon = _synth(models.style.generator, w)
    _save_tensors(folder / "latent.safetensors", {"w": w})
    save_png(human[0], folder / "human.png")
    save_png(cartoon[0], folder / "cartoon.png")
    return record


def stage_edits(folder: Path, faces: Path, models: AvatarModels, progress: bool) -> dict:
    """Every expression: direction (+ refinement on G_base) → its W code, human and cartoon image."""
    from toon3d.edit.directions import apply_direction
    from toon3d.edit.refine import refine_direction
    from toon3d.io.images import save_png

    settings = models.settings
    g = models.human.generator
    w = _load_tensors(faces / "latent.safetensors")["w"].to(models.device)
    factor, table = models.directions(progress)
    codes: dict[str, torch.Tensor] = {}
    records = {}
    for name, strength in settings.expressions:
        key = expression_key(name, strength)
        if name.isdigit():
            index, sign, how = int(name), 1, "index"
            factor.direction(index)
        else:
            index, sign = table.resolve(name)
            how = "named by measurement"
        n = (sign * factor.direction(index)).to(models.device)
        record = {"direction": index, "sign": sign, "resolved_by": how, "strength": strength,
                  "refine": settings.refine}
        if settings.refine == "off":
            delta = strength * n[None]
        else:
            embedder = models.edit_embedder

            def low(images):
                return embedder.features(images, 4)[-1]

            result = refine_direction(g, w, n, strength, embedder.embed, low, models.edit_mask.fn, settings.refine,
                                      settings.refine_steps, settings.refine_lr, layers=factor.layers,
                                      synthesis_size=settings.edit_size)
            delta = result.delta_w
            record["losses"] = result.losses.reshape(-1).tolist()
        if factor.layers is not None:
            raise Toon3dError("avatar edits need plain W directions; use a factor.pt factorised on all layers")
        code = apply_direction(w, delta, g.n_latent)[:, 0]
        if not torch.isfinite(code).all():
            raise Toon3dError(f"the {key} edit produced NaN/inf latents; use --refine off or a smaller strength")
        record["delta_norm"] = float(delta.norm())
        codes[key] = code
        records[key] = record
        save_png(_synth(g, code)[0], folder / f"human_{key}.png")
        save_png(_synth(models.style.generator, code)[0], folder / f"cartoon_{key}.png")
    _save_tensors(folder / "edits.safetensors", codes)
    return {"edits": records}


def stage_shape(folder: Path, image: torch.Tensor, w: torch.Tensor, models: AvatarModels, checkpoints: Path,
                init: Path | None, progress: bool, label: str) -> dict:
    """One cartoon image [1,3,S,S] → its 3D result (result.safetensors) and trained networks (nets.safetensors).

    `init` is the neutral's nets.safetensors for an edit (None for the neutral: the pretrained
    reconstructor, or the ellipsoid prior without one); `checkpoints` keeps the reconstruction's
    own per-step state across a kill.
    """
    from toon3d.pipeline_shape import reconstruct_for_avatar

    result, nets_state, record = reconstruct_for_avatar(image, w, models, checkpoints, init, progress, label)
    _save_tensors(folder / "result.safetensors", result)
    _save_tensors(folder / "nets.safetensors", nets_state)
    return record


def _sheet(work: WorkFolder, keys: list[str], products: dict, photo: bool) -> "object":
    """The summary sheet (paper Figs. 5-6): one row per expression."""
    from toon3d.io.images import load_image
    from toon3d.io.sheet import labelled_sheet

    faces = work.folder("faces")
    edits = work.folder("edits")
    rows = []
    for key in ["neutral"] + keys:
        human = load_image(faces / "human.png" if key == "neutral" else edits / f"human_{key}.png")
        cartoon = load_image(faces / "cartoon.png" if key == "neutral" else edits / f"cartoon_{key}.png")
        p = products[key]
        row = ([load_image(faces / "photo.png")] if photo and key == "neutral" else
               [torch.ones_like(human)] if photo else [])
        row += [human, cartoon, *p.rotations, p.relit[0], p.relit[2], p.relit[4],
                p.normal.permute(2, 0, 1) * torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1), p.shape_render]
        rows.append((key, row))
    columns = (["photo"] if photo else []) + ["human", "cartoon", "yaw -60", "-30", "0", "+30", "+60",
                                              "light left", "front", "right", "normals", "shape"]
    return labelled_sheet(rows, columns)


def stage_package(out: Path, work: WorkFolder, source: AvatarSource, models: AvatarModels, keys: list[str],
                  overwrite: bool, progress: bool, timings: dict) -> dict:
    """Assemble the final folder atomically: images, per-result 3D files, avatar.glb, viewer.html, sheet, avatar.json."""
    from toon3d.io.atomic import atomic_dir
    from toon3d.io.gltf_morph import write_avatar_glb
    from toon3d.io.images import save_png
    from toon3d.io.viewer import write_viewer_html
    from toon3d.shape.export import render_products, write_products
    from toon3d.shape.renderer import Renderer, RenderSettings

    settings = models.settings
    results = {key: _load_tensors(work.folder(f"shape_{key}") / "result.safetensors") for key in ["neutral"] + keys}
    size = results["neutral"]["depth"].shape[-1]
    renderer = Renderer(RenderSettings(size), device=models.device)
    # One head mask, the neutral's, for every result: the edits share its canonical frame and the
    # GLB's morph targets share its triangles.
    mask, mask_record = None, None
    if settings.head_mask:
        from toon3d.io.images import load_image
        from toon3d.pipeline_shape import builtin_world, export_head_mask

        cartoon = load_image(work.folder("faces") / "cartoon.png")[None]
        builtin = builtin_world(settings.style) is not None or builtin_world(settings.ckpt) is not None
        mask, mask_record = export_head_mask(cartoon, builtin, results["neutral"], renderer, models.device)
    products = {}
    for key, r in results.items():
        products[key] = render_products(renderer, r["depth"], r["albedo"], r["light"], mask, settings.frames,
                                        progress=progress)
    inputs = [source.latent, source.photo, settings.factor, settings.expression_from, settings.drive,
              settings.neutral]
    with atomic_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        faces, edits = work.folder("faces"), work.folder("edits")
        for name in ("human.png", "cartoon.png", "photo.png", "latent.safetensors"):
            if (faces / name).is_file():
                shutil.copy2(faces / name, tmp / name)
        shutil.copy2(edits / "edits.safetensors", tmp / "edits.safetensors")
        files = {}
        for key in ["neutral"] + keys:
            folder = tmp / "3d" / key
            folder.mkdir(parents=True)
            if key != "neutral":
                ef = tmp / "edits" / key
                ef.mkdir(parents=True)
                shutil.copy2(edits / f"human_{key}.png", ef / "human.png")
                shutil.copy2(edits / f"cartoon_{key}.png", ef / "cartoon.png")
            files[key] = write_products(folder, products[key], renderer.K, settings.formats, settings.fps,
                                        view=results[key].get("view"))
        # Albedo, not the shaded image: the viewer lights the matte mesh itself (its light control).
        neutral = (results["neutral"]["depth"], results["neutral"]["albedo"])
        morphs = {key: (results[key]["depth"], results[key]["albedo"]) for key in keys}
        from toon3d.pipeline_drive import package_transfer

        animations, transfer_record, transfer_outputs = package_transfer(work, tmp, keys, models.device)
        glb = write_avatar_glb(neutral, morphs, renderer.K.cpu(), tmp / "avatar.glb", animation=animations or None,
                               metadata={"toon3d": "avatar", "expressions": keys}, mask=mask)
        write_viewer_html(glb, tmp / "viewer.html", title="toon3d avatar")
        for fmt in settings.formats:
            shutil.copy2(tmp / "3d" / "neutral" / f"turntable.{fmt}", tmp / f"turntable.{fmt}")
        save_png(_sheet(work, keys, products, source.photo is not None), tmp / "sheet.png")
        record = {
            "command": "toon3d avatar", "toon3d_version": _version(),
            "source": source.record(), "settings": settings.record(), "device": str(models.device),
            "expressions": keys, "head_mask": mask_record,
            "models": _models_record(models),
            "stages": {name: json.loads((work.folder(name) / STAGE_RECORD).read_text())
                       for name in ["faces", "edits"] + [f"shape_{k}" for k in ["neutral"] + keys]
                       + [s for s in ("expression", "drive", "drive_video") if work.done(s)]},
            "timings_seconds": timings,
            "outputs": {"sheet": "sheet.png", "glb": "avatar.glb", "viewer": "viewer.html",
                        "turntable": [f"turntable.{f}" for f in settings.formats],
                        "3d": {k: [f"3d/{k}/{n}" for n in v] for k, v in files.items()},
                        "images": ["human.png", "cartoon.png"] + [f"edits/{k}/{d}.png" for k in keys
                                                                  for d in ("human", "cartoon")]},
        }
        record.update(transfer_record)
        record["outputs"].update(transfer_outputs)
        (tmp / "avatar.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _version() -> str:
    import toon3d

    return toon3d.__version__


def _models_record(models: AvatarModels) -> dict:
    record = {"human": {"spec": models.settings.ckpt, "source": models.human.source,
                        "sha256": weights_digest(models.human.generator)},
              "style": {"spec": models.settings.style, "blend": models.settings.blend,
                        "source": models.style.source, "sha256": weights_digest(models.style.generator)}}
    if models._embedder is not None:
        record["identity"] = {"name": models.settings.identity}
    if models._edit_embedder is not None:
        record["edit_identity"] = {"name": models.edit_identity}
    if models._edit_mask is not None:
        record["edit_mask"] = {"name": models._edit_mask.name, "note": models._edit_mask.note}
    extra = getattr(models, "shape_record", None)
    if extra:
        record["reconstructor"] = extra
    return record


def make_avatar(source: AvatarSource, settings: AvatarSettings, out: str | os.PathLike, *,
                device: torch.device | None = None, resume: bool = False, overwrite: bool = False,
                progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Run every stage for one face into `out` (see the module docstring); returns the avatar.json record."""
    from toon3d.io.atomic import check_output_dir

    log = log or (lambda text: print(text, file=sys.stderr))
    check_settings(settings)
    from toon3d.pipeline_drive import check_drive_settings

    check_drive_settings(settings)
    sources = [x for x in (source.seed, source.latent, source.photo) if x is not None]
    if len(sources) != 1:
        raise Toon3dError("give exactly one of --seed, --latent or --photo")
    out = Path(out)
    check_output_dir(out, overwrite, [source.latent, source.photo, settings.factor, settings.expression_from,
                                      settings.drive, settings.neutral])
    device = device or torch.device("cpu")
    models = AvatarModels(settings, device)
    work = WorkFolder(out, {"source": source.record(), "settings": settings.record()}, resume, overwrite)
    keys = [expression_key(n, s) for n, s in settings.expressions]
    timings: dict[str, float] = {}

    def run(stage: str, fn: Callable[[Path], dict | None]) -> Path:
        folder, ran = work.run(stage, fn)
        timings[stage] = work.seconds(stage)
        log(f"toon3d avatar: {stage}: {'done' if ran else 'already done (resumed)'} in {timings[stage]:.1f} s")
        return folder

    faces = run("faces", lambda f: stage_faces(f, source, models, progress))
    if settings.expression_from is not None:
        from toon3d.pipeline_drive import settings_with_photo_expression, stage_expression_from

        expression = run("expression", lambda f: stage_expression_from(f, settings, models, progress))
        models.settings = settings = settings_with_photo_expression(settings, expression)
        keys = [expression_key(n, s) for n, s in settings.expressions]
    edits = run("edits", lambda f: stage_edits(f, faces, models, progress))
    if settings.drive is not None:
        from toon3d.pipeline_drive import stage_drive, stage_drive_video

        run("drive", lambda f: stage_drive(f, work, settings, models, keys, progress))
    from toon3d.io.images import load_image

    codes = _load_tensors(edits / "edits.safetensors")
    w = _load_tensors(faces / "latent.safetensors")["w"]
    neutral_image = load_image(faces / "cartoon.png")[None]
    neutral = run("shape_neutral", lambda f: stage_shape(f, neutral_image, w, models, work.path / "ckpt_neutral",
                                                          None, progress, "neutral"))
    for key in keys:
        image = load_image(edits / f"cartoon_{key}.png")[None]
        run(f"shape_{key}", lambda f, image=image, key=key: stage_shape(
            f, image, codes[key], models, work.path / f"ckpt_{key}", neutral / "nets.safetensors", progress, key))
    if settings.drive is not None:
        run("drive_video", lambda f: stage_drive_video(f, work, settings, models, keys, progress))
    start = time.perf_counter()
    record = stage_package(out, work, source, models, keys, overwrite, progress, timings)
    timings["package"] = round(time.perf_counter() - start, 3)
    work.remove()
    return record

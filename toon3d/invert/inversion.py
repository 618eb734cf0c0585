"""One call from an aligned face to a latent: choose the loss and the start, then run the projector.

`invert(loaded, target)` is what `toon3d invert` and the avatar pipeline use:

  - loss ``auto``: LPIPS-VGG when the user's VGG16 (registry `vgg16`) and the LPIPS heads
    (`lpips_vgg`) are found, else the offline ``face`` loss (`toon3d.invert.losses`);
  - start ``auto``: a shipped encoder trained for exactly these generator weights
    (`toon3d/weights/encoder_*.safetensors`, matched by `generator_fingerprint`), else the mean W;
    a file path uses that encoder (a warning when it was trained for other weights), ``none``
    the mean W as rosinality does;
  - latent prior ``auto`` (`AUTO_LATENT_PRIOR`): off for FFHQ generators (rosinality's projector
    as is), 10 for the built-in SynFace world.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toon3d.errors import Toon3dError
from toon3d.invert.losses import LOSS_NAMES, FaceLossWeights, build_loss
from toon3d.invert.projector import ProjectionResult, ProjectorSettings, downsample_to, loss_size, project

DEFAULT_STEPS = 200  # the CPU default; rosinality's is 1000 (ProjectorSettings.steps)
# latent_prior "auto" by layout: FFHQ generators get rosinality's projector unchanged; the built-in SynFace
# world cannot draw real photos, and without the prior their projections drift into colour blobs
# (docs/photos.md: at 10, held-out samples still reach 68 dB, photos stay faces).
AUTO_LATENT_PRIOR = {"ffhq": 0.0, "synface": 10.0}


@dataclass
class InversionResult:
    """The latent of an aligned face and how it was found."""

    latent: torch.Tensor            # W [B,D] or W+ [B,L,D], CPU float32
    noises: list[torch.Tensor]      # the optimised noise maps [B,1,r,r], CPU
    image: torch.Tensor             # [B,3,S,S] the generator's output for latent + noises, CPU, not clamped
    start_latent: torch.Tensor      # the start (mean W or the encoder's prediction), CPU
    start: str                      # "mean" or "encoder:<path>"
    loss: str                       # lpips | face | pixel
    projection: ProjectionResult
    notes: list[str] = field(default_factory=list)


def shipped_encoders() -> list[Path]:
    """The encoders shipped in toon3d/weights (encoder_*.safetensors)."""
    from toon3d.models import WEIGHTS_DIR

    return sorted(WEIGHTS_DIR.glob("encoder_*.safetensors"))


def resolve_encoder(spec: str | os.PathLike | None, loaded):
    """(encoder or None, "encoder:<path>" or "mean", notes) for --encoder auto | none | PATH."""
    from toon3d.invert.encoder import check_encoder_for, generator_fingerprint, load_encoder

    if spec is None or str(spec) == "none":
        return None, "mean", []
    if str(spec) == "auto":
        fingerprint = generator_fingerprint(loaded)
        for path in shipped_encoders():
            encoder, meta = load_encoder(path)
            if meta.get("generator_fingerprint") == fingerprint and encoder.style_dim == loaded.config["style_dim"]:
                return encoder, f"encoder:{path}", []
        return None, "mean", ["no shipped encoder matches this generator's weights: started from the mean W "
                              "(train one with toon3d train-encoder --ckpt ... and pass --encoder FILE)"]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise Toon3dError(f"encoder {path} not found; pass a file from toon3d train-encoder, auto or none")
    encoder, meta = load_encoder(path)
    return encoder, f"encoder:{path}", check_encoder_for(encoder, meta, loaded, str(path))


def resolve_loss_name(name: str, vgg16: str | os.PathLike | None = None,
                      lpips_heads: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """(lpips | face | pixel, notes) for --loss auto | lpips | face | pixel."""
    from toon3d.faces.lpips import lpips_available

    if name == "auto":
        if lpips_available(vgg16, lpips_heads):
            return "lpips", []
        return "face", ["LPIPS-VGG needs the user's VGG16 (vgg16-397923af.pth, see docs/photos.md); used the "
                        "offline face loss (dlib identity + early features + pixel L1)"]
    if name not in LOSS_NAMES:
        raise Toon3dError(f"unknown --loss {name!r}; choose auto, {', '.join(LOSS_NAMES)}")
    return name, []


def invert(loaded, target: torch.Tensor, steps: int = DEFAULT_STEPS, w_plus: bool = False, loss: str = "auto",
           encoder: str | os.PathLike | None = "auto", layout: str | None = None,
           device: torch.device | str = "cpu", vgg16: str | os.PathLike | None = None,
           lpips_heads: str | os.PathLike | None = None, settings: ProjectorSettings | None = None,
           latent_prior: float | str = "auto", face_weights: FaceLossWeights | None = None, embedder=None,
           progress: bool = True) -> InversionResult:
    """Project aligned faces target [B,3,S,S] in [-1,1] (S = the generator's size, or the loss size) into the
    `LoadedGenerator` → InversionResult (W [B,D], or W+ [B,L,D] with w_plus).

    layout: where the faces sit (ffhq | synface; default: the generator's), for the face loss's chip.
    settings: the projector's (rosinality defaults, with `steps`, `w_plus` and `latent_prior` from the arguments).
    latent_prior: the projector's latent_prior, or "auto": AUTO_LATENT_PRIOR of the generator's layout.
    """
    from tqdm import tqdm

    from toon3d.faces.align import layout_for_generator

    device = torch.device(device)
    generator = loaded.generator.to(device).eval()
    from dataclasses import replace

    world = layout_for_generator(loaded)
    layout = layout or world
    prior = AUTO_LATENT_PRIOR.get(world, 0.0) if latent_prior == "auto" else float(latent_prior)
    settings = replace(settings or ProjectorSettings(), steps=int(steps), w_plus=bool(w_plus), latent_prior=prior)
    settings.check()
    size = loss_size(generator.size)
    if target.dim() == 3:
        target = target[None]
    if target.dim() != 4 or target.shape[1] != 3 or target.shape[2] != target.shape[3]:
        raise Toon3dError(f"the aligned face must be [B,3,S,S] in [-1,1], got {tuple(target.shape)}")
    if target.shape[-1] not in (size, generator.size):
        raise Toon3dError(f"the aligned face is {target.shape[-1]} px; this generator needs {generator.size} px "
                          f"(align the photo with --size {generator.size})")
    target = downsample_to(target.float().to(device), size)
    loss_name, notes = resolve_loss_name(loss, vgg16, lpips_heads)
    lpips = None
    if loss_name == "lpips":
        from toon3d.faces.lpips import load_lpips_vgg

        lpips = load_lpips_vgg(vgg16, lpips_heads).to(device)
    objective = build_loss(loss_name, target, layout, lpips=lpips, embedder=embedder,
                           face_weights=face_weights).to(device)
    enc, start_name, enc_notes = resolve_encoder(encoder, loaded)
    notes += enc_notes
    start = None
    if enc is not None:
        with torch.no_grad():
            start = enc.to(device).eval()(target)
    bar = tqdm(total=settings.steps, desc="invert", disable=not progress or settings.steps == 0, dynamic_ncols=True)

    def report(step: int, values: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{values['total']:.4f}", mse=f"{values['mse']:.4f}")

    try:
        result = project(generator, target, objective, settings, start=start, progress=report)
    finally:
        bar.close()
    return InversionResult(result.latent.float().cpu(), [n.cpu() for n in result.noises], result.image.float().cpu(),
                           result.start.float().cpu(), start_name, loss_name, result, notes)

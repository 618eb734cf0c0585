"""The avatar pipeline's 3D stage: which reconstructor, discriminator and losses one cartoon image gets.

The neutral cartoon starts from the pretrained reconstructor of the style's world (the seed
code's per-image start from `3D_pretrained_disney.pth`); every expression edit starts from the
neutral's trained networks, so the edits' canonical depth maps share the neutral's frame and
differ by what the expression changed. `--instant` stops at the pretrained networks' prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError


@dataclass(frozen=True)
class ShapeOptions:
    """How one image is reconstructed: the preset (+ ablations), instant or not, which pretrained start."""

    preset: str = "cpu"
    instant: bool = False
    reconstructor: str | None = None      # FILE, or None for the style's built-in one
    seed: int = 0
    no_sym: bool = False
    no_id: bool = False
    perceptual: str | None = None         # None: the preset's
    # Skip GAN2Shape's step 2: the start's (`init`'s) trained latent encoder projects the pseudo
    # samples. For the avatar's edits, whose start is the neutral's networks (`--edit-encoder neutral`).
    reuse_encoder: bool = False


def builtin_world(spec: str) -> str | None:
    """The built-in world whose pretrained reconstructor fits generator `spec` (None for user files)."""
    from toon3d.shape.instant import SHAPE_WORLDS

    return spec if spec in SHAPE_WORLDS and not Path(spec).is_file() else None


def load_pretrained(spec: str, options: ShapeOptions, device):
    """(ShapeNets, GeometrySettings, meta, source) of the reconstructor a reconstruction starts from, or None."""
    from toon3d.shape.instant import builtin_shape_path, load_shape_model

    path = options.reconstructor
    if path is None:
        world = builtin_world(spec)
        if world is None or not builtin_shape_path(world).is_file():
            return None
        path = str(builtin_shape_path(world))
    elif not Path(path).expanduser().is_file():
        raise Toon3dError(f"--reconstructor {path} not found; pass a shape_*.safetensors from toon3d train-shape")
    nets, geometry, meta = load_shape_model(Path(path).expanduser(), device=device)
    return nets, geometry, meta, str(path)


def load_style_discriminator(spec: str):
    """(discriminator, source) of generator `spec` for L_dis features, or (None, None) (then the perceptual substitute)."""
    from toon3d.models import builtin_discriminator_path
    from toon3d.stylegan2.checkpoints import load_discriminator

    world = builtin_world(spec)
    if world is not None:
        path = builtin_discriminator_path(world)
        return (load_discriminator(path), str(path)) if path.is_file() else (None, None)
    path = Path(spec).expanduser()
    if path.suffix == ".pt":
        try:
            return load_discriminator(path), str(path)
        except Toon3dError:
            return None, None
    return None, None


def pretrained_encoder_fits(pretrained, generator: torch.nn.Module) -> bool:
    """Whether a loaded reconstructor (`load_pretrained`'s tuple) holds a trained latent encoder for `generator`'s W."""
    return bool(pretrained[2].get("encoder_loaded")) and \
        pretrained[0].config.latent_dim == int(getattr(generator, "style_dim", -1))


def shape_settings(options: ShapeOptions, pretrained, has_discriminator: bool):
    """The preset with the pretrained reconstructor's widths and size, the L_dis source and the ablations."""
    from toon3d.shape.settings import preset, without

    overrides = {"dis_features": "discriminator" if has_discriminator else "perceptual"}
    if options.perceptual is not None:
        overrides["perceptual"] = options.perceptual
    if pretrained is not None:
        cfg = pretrained[0].config
        overrides.update(nf=cfg.nf, nf_vl=cfg.nf_vl, zdim=cfg.zdim, image_size=cfg.size)
        if pretrained[2].get("encoder_loaded"):
            overrides["nf_encoder"] = cfg.nf_encoder
    settings = preset(options.preset, **overrides)
    return without(settings, sym=options.no_sym, identity=options.no_id).check()


def reconstruct_generated(image: torch.Tensor, w: torch.Tensor, generator: torch.nn.Module, spec: str,
                          options: ShapeOptions, device: torch.device, embedder_factory,
                          checkpoints: Path | None, init: Path | None, progress: bool) -> tuple[dict, dict, dict]:
    """A generator's image [1,3,S,S] in [-1,1] and its W code [1,D] → (result tensors, nets state, record).

    result: depth [S,S], albedo [3,S,S], light [4], view [6], texture [3,S,S] (shaded canonical
    image). `spec` names the generator (base | cartoon | toon | FILE) to find its pretrained
    reconstructor and discriminator; `init` (an earlier result's nets.safetensors) overrides the
    pretrained start; `embedder_factory()` gives the identity network when L_id is on.
    """
    from safetensors.torch import load_file

    from toon3d.shape.losses import load_perceptual
    from toon3d.shape.renderer import Renderer

    pretrained = load_pretrained(spec, options, device)
    if options.instant:
        if pretrained is None:
            raise Toon3dError(f"--instant needs a pretrained reconstructor: none is shipped for {spec}; pass "
                              "--reconstructor FILE (toon3d train-shape) or drop --instant")
        from toon3d.shape.instant import instant_reconstruct

        nets, geometry, meta, source = pretrained
        x = _resize(image, geometry.size).to(device)
        dec = instant_reconstruct(nets, x, geometry)
        renderer = Renderer(geometry.renderer_settings(), device=device)
        texture, _ = renderer.shade(dec.albedo, dec.depth, dec.light)
        result = {"depth": dec.depth[0], "albedo": dec.albedo[0], "light": dec.light[0], "view": dec.view[0],
                  "texture": texture[0]}
        return result, dict(nets.state_dict()), {"mode": "instant", "reconstructor": source}
    discriminator, d_source = load_style_discriminator(spec)
    settings = shape_settings(options, pretrained, discriminator is not None)
    if options.reuse_encoder:
        if init is None:
            raise Toon3dError("reusing a latent encoder needs earlier networks (init) that hold a trained one")
        from dataclasses import replace

        settings = replace(settings, stage0_steps=(settings.stage0_steps[0], 0, settings.stage0_steps[2]),
                           later_steps=(settings.later_steps[0], 0, settings.later_steps[2]))
    if init is not None:
        nets_init = load_file(str(init))
        start = f"earlier networks {init}"
    elif pretrained is not None:
        # its latent encoder too when it has a trained one for this generator's W width
        keep_encoder = pretrained_encoder_fits(pretrained, generator)
        nets_init = {k: v for k, v in pretrained[0].state_dict().items()
                     if keep_encoder or not k.startswith("encoder.")}
        start = f"pretrained reconstructor {pretrained[3]}" + (" (with its latent encoder)" if keep_encoder else "")
    else:
        nets_init = None
        start = "ellipsoid prior (no pretrained reconstructor for this generator)"
    perceptual = load_perceptual(settings.perceptual) if settings.perceptual != "none" else None
    embedder = embedder_factory() if settings.identity else None
    from toon3d.shape.schedule import reconstruct_image

    result = reconstruct_image(_resize(image, settings.image_size), w, generator, settings, nets_init=nets_init,
                               discriminator=discriminator, identity_embedder=embedder, perceptual=perceptual,
                               device=device, seed=options.seed, checkpoint_dir=checkpoints, progress=progress)
    out = {"depth": result.depth[0], "albedo": result.albedo[0], "light": result.light[0], "view": result.view[0],
           "texture": result.texture[0]}
    record = {"mode": "gan2shape", "preset": options.preset, "start": start,
              "step2": "skipped: the start's latent encoder projects" if options.reuse_encoder else "trained",
              "discriminator_features": result.dis_features, "discriminator": d_source,
              "perceptual": settings.perceptual, "identity_loss": settings.identity,
              "symmetry": any(settings.flip1) or any(settings.flip3), "iterations": len(result.history),
              "image_size": settings.image_size, "seconds": round(result.seconds, 2),
              "final_losses": result.history[-1] if result.history else None,
              "pretrained": None if pretrained is None else pretrained[3], "settings": settings.as_dict()}
    return out, result.nets_state, record


def reconstruct_for_avatar(image: torch.Tensor, w: torch.Tensor, models, checkpoints: Path, init: Path | None,
                           progress: bool, label: str) -> tuple[dict, dict, dict]:
    """The avatar's 3D stage for one cartoon image: `reconstruct_generated` with the run's style and settings."""
    s = models.settings
    options = ShapeOptions(preset=s.preset, instant=s.instant, reconstructor=s.reconstructor, seed=s.seed3d,
                           reuse_encoder=init is not None and s.edit_encoder == "neutral")
    result, state, record = reconstruct_generated(image, w, models.style.generator, s.style, options, models.device,
                                                  lambda: models.embedder, checkpoints, init, progress)
    record["label"] = label
    models.shape_record = {k: v for k, v in record.items() if k in ("mode", "preset", "pretrained", "reconstructor",
                                                                    "discriminator", "perceptual")}
    return result, state, record


def export_head_mask(image: torch.Tensor, builtin: bool, result: dict, renderer, device) -> tuple[torch.Tensor, dict]:
    """The canonical head mask [S,S] bool the exports of `result` are cut to, and a record of its parser.

    image [1,3,s,s] in [-1,1]: the reconstructed image; builtin: it comes from a built-in world.
    The parser is `toon3d.edit.masks.choose_mask('auto')`: the SynFace parser for the built-in
    worlds, BiSeNet when installed for other generators, else the layout's face ellipse (said in
    the record's note).
    """
    from toon3d.edit.masks import choose_mask
    from toon3d.shape.head_mask import canonical_mask, head_mask

    source = choose_mask("auto", builtin_generator=builtin, device=device)
    if source.fn is None:
        raise Toon3dError("no face parser for the head mask; pass --no-head-mask")
    size = result["depth"].shape[-1]
    mask = canonical_mask(head_mask(_resize(image, size).to(device), source.fn), result["depth"], result["view"],
                          renderer)
    return mask, {**source.describe(), "pixels": int(mask.sum())}


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """[1,3,s,s] → [1,3,size,size] (bilinear, antialiased when shrinking); unchanged when the size matches."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > size).clamp(-1, 1)

"""The avatar pipeline's 3D stage: which reconstructor, discriminator and losses one cartoon image gets.

The neutral cartoon starts from the pretrained reconstructor of the style's world (the seed
code's per-image start from `3D_pretrained_disney.pth`); every expression edit starts from the
neutral's trained networks, so the edits' canonical depth maps share the neutral's frame and
differ by what the expression changed. `--instant` stops at the pretrained networks' prediction.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError


def _style_world(models) -> str | None:
    """The built-in world whose pretrained reconstructor fits the style (None for user files)."""
    from toon3d.shape.instant import SHAPE_WORLDS

    style = models.settings.style
    return style if style in SHAPE_WORLDS and not Path(style).exists() else None


def _pretrained(models):
    """(ShapeNets, GeometrySettings, meta, source) of the reconstructor the neutral starts from, or None."""
    from toon3d.shape.instant import builtin_shape_path, load_shape_model

    spec = models.settings.reconstructor
    if spec is None:
        world = _style_world(models)
        if world is None or not builtin_shape_path(world).is_file():
            return None
        spec = str(builtin_shape_path(world))
    elif not Path(spec).expanduser().is_file():
        raise Toon3dError(f"--reconstructor {spec} not found; pass a shape_*.safetensors from toon3d train-shape")
    nets, geometry, meta = load_shape_model(spec, device=models.device)
    return nets, geometry, meta, spec


def _discriminator(models):
    """The style's discriminator for L_dis features, or None (then the documented perceptual substitute)."""
    from toon3d.models import builtin_discriminator_path
    from toon3d.stylegan2.checkpoints import load_discriminator

    style = models.settings.style
    world = _style_world(models)
    if world is not None:
        path = builtin_discriminator_path(world)
        return (load_discriminator(path), str(path)) if path.is_file() else (None, None)
    path = Path(style).expanduser()
    if path.suffix == ".pt":
        try:
            return load_discriminator(path), str(path)
        except Toon3dError:
            return None, None
    return None, None


def _settings(models, pretrained, has_discriminator: bool):
    from toon3d.shape.settings import preset

    overrides = {"dis_features": "discriminator" if has_discriminator else "perceptual"}
    if pretrained is not None:
        cfg = pretrained[0].config
        overrides.update(nf=cfg.nf, nf_vl=cfg.nf_vl, zdim=cfg.zdim, image_size=cfg.size)
    return preset(models.settings.preset, **overrides)


def reconstruct_for_avatar(image: torch.Tensor, w: torch.Tensor, models, checkpoints: Path, init: Path | None,
                           progress: bool, label: str) -> tuple[dict, dict, dict]:
    """Cartoon image [1,3,S,S] in [-1,1] and its W code [1,D] → (result tensors, nets state, record for avatar.json)."""
    from safetensors.torch import load_file

    from toon3d.shape.losses import load_perceptual
    from toon3d.shape.renderer import Renderer

    generator = models.style.generator
    pretrained = _pretrained(models)
    if models.settings.instant:
        if pretrained is None:
            raise Toon3dError("--instant needs a pretrained reconstructor: none is shipped for this style; pass "
                              "--reconstructor FILE (toon3d train-shape) or drop --instant")
        from toon3d.shape.instant import instant_reconstruct

        nets, geometry, meta, source = pretrained
        x = _resize(image, geometry.size).to(models.device)
        dec = instant_reconstruct(nets, x, geometry)
        renderer = Renderer(geometry.renderer_settings(), device=models.device)
        texture, _ = renderer.shade(dec.albedo, dec.depth, dec.light)
        result = {"depth": dec.depth[0], "albedo": dec.albedo[0], "light": dec.light[0], "view": dec.view[0],
                  "texture": texture[0]}
        state = {k: v for k, v in nets.state_dict().items()}
        record = {"mode": "instant", "reconstructor": source}
        models.shape_record = {"mode": "instant", "source": source}
        return result, state, record
    discriminator, d_source = _discriminator(models)
    settings = _settings(models, pretrained, discriminator is not None)
    if init is not None:
        nets_init = load_file(str(init))
        start = f"the neutral's trained networks ({init.parent.name})"
    elif pretrained is not None:
        nets_init = {k: v for k, v in pretrained[0].state_dict().items() if not k.startswith("encoder.")}
        start = f"pretrained reconstructor {pretrained[3]}"
    else:
        nets_init = None
        start = "ellipsoid prior (no pretrained reconstructor for this style)"
    perceptual = load_perceptual(settings.perceptual) if settings.perceptual != "none" else None
    embedder = models.embedder if settings.identity else None
    x = _resize(image, settings.image_size)
    result = _run(x, w, generator, settings, nets_init, discriminator, embedder, perceptual, models, checkpoints,
                  progress)
    out = {"depth": result.depth[0], "albedo": result.albedo[0], "light": result.light[0], "view": result.view[0],
           "texture": result.texture[0]}
    record = {"mode": "gan2shape", "preset": models.settings.preset, "start": start, "label": label,
              "discriminator_features": result.dis_features, "discriminator": d_source,
              "perceptual": settings.perceptual, "identity_loss": settings.identity,
              "iterations": len(result.history), "image_size": settings.image_size,
              "final_losses": result.history[-1] if result.history else None}
    models.shape_record = {"mode": "gan2shape", "preset": models.settings.preset,
                           "pretrained": None if pretrained is None else pretrained[3],
                           "discriminator": d_source, "settings": settings.as_dict()}
    return out, result.nets_state, record


def _run(x, w, generator, settings, nets_init, discriminator, embedder, perceptual, models, checkpoints, progress):
    from toon3d.shape.schedule import reconstruct_image

    return reconstruct_image(x, w, generator, settings, nets_init=nets_init, discriminator=discriminator,
                             identity_embedder=embedder, perceptual=perceptual, device=models.device,
                             seed=models.settings.seed3d, checkpoint_dir=checkpoints, progress=progress)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """[1,3,s,s] → [1,3,size,size] (bilinear, antialiased when shrinking); unchanged when the size matches."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > size).clamp(-1, 1)

"""Pretrained ("instant") reconstructors: their file format and the feed-forward prediction.

A shape model file is one toon3d safetensors model (`toon3d.io.checkpoint.save_model`) holding
the depth, albedo, view and light networks under `ShapeNets`' parameter names (`depth.*`,
`albedo.*`, `view.*`, `light.*`); its config records the network sizes (`nets`) and the
geometry (`geometry`, a `GeometrySettings`). The latent encoder E is not part of it: joint
pretraining never trains E, so a per-image reconstruction starts E fresh (GAN2Shape's
pretrained checkpoints carry no trained E either when used with `reset_weight`).

Built-in reconstructors live at `toon3d/weights/shape_<world>.safetensors` with a card
`shape_<world>.md` (`tools/ship_shape.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from toon3d.errors import Toon3dError
from toon3d.shape.networks import ShapeNetConfig, ShapeNets
from toon3d.shape.photo_geometry import Decomposition, GeometrySettings, decompose

SHAPE_PARTS = ("depth", "albedo", "view", "light")
SHAPE_FORMAT = "toon3d-shape/1"
SHAPE_WORLDS = ("base", "cartoon", "toon")


def builtin_shape_path(world: str) -> Path:
    """Where the shipped reconstructor of built-in world `world` goes: toon3d/weights/shape_<world>.safetensors."""
    from toon3d.models import WEIGHTS_DIR

    if world not in SHAPE_WORLDS:
        raise Toon3dError(f"unknown built-in world {world!r}; choose one of {', '.join(SHAPE_WORLDS)}")
    return WEIGHTS_DIR / f"shape_{world}.safetensors"


def shape_state(nets: ShapeNets, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The parameters a shape model file holds: D, A, V, L under ShapeNets' names (optionally cast)."""
    state = {}
    for key, value in nets.state_dict().items():
        if key.split(".", 1)[0] in SHAPE_PARTS:
            state[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return state


def save_shape_model(path: str | os.PathLike, nets: ShapeNets, geometry: GeometrySettings, meta: dict | None = None,
                     dtype: torch.dtype | None = None) -> Path:
    """Write D, A, V, L with their sizes and geometry as one safetensors file (atomic)."""
    from toon3d.io.checkpoint import save_model

    config = {"format": SHAPE_FORMAT, "nets": nets.config.as_dict(), "geometry": geometry.as_dict()}
    return save_model(path, shape_state(nets, dtype), config, meta or {})


def load_shape_model(path: str | os.PathLike, encoder: dict | None = None,
                     device: torch.device | str = "cpu") -> tuple[ShapeNets, GeometrySettings, dict]:
    """(ShapeNets with D, A, V, L loaded in float32 and a fresh latent encoder, its GeometrySettings, meta).

    `encoder` overrides the latent encoder's sizes ({'nf_encoder', 'latent_dim'}: the GAN's w width).
    """
    from toon3d.io.checkpoint import load_model_file

    model = load_model_file(path)
    if model.config.get("format") != SHAPE_FORMAT:
        raise Toon3dError(f"{path} is a toon3d model but not a 3D reconstructor (format "
                          f"{model.config.get('format')!r}); pass a shape_*.safetensors file")
    try:
        net_cfg = dict(model.config["nets"], **(encoder or {}))
        nets = ShapeNets(ShapeNetConfig(**net_cfg))
        geom = model.config["geometry"]
        for key in ("view_mean", "light_mean"):
            if geom.get(key) is not None:
                geom[key] = tuple(geom[key])
        geometry = GeometrySettings(**geom)
    except (KeyError, TypeError) as err:
        raise Toon3dError(f"{path} has a damaged 3D model config ({err}); ship the model again") from None
    wanted = shape_state(nets)
    missing = sorted(set(wanted) - set(model.state_dict))
    extra = sorted(set(model.state_dict) - set(wanted))
    if missing or extra:
        raise Toon3dError(f"{path} does not match its own config (missing {missing[:2]}, unexpected {extra[:2]}); "
                          "ship the model again")
    for key, value in wanted.items():
        if model.state_dict[key].shape != value.shape:
            raise Toon3dError(f"{path}: {key} is {tuple(model.state_dict[key].shape)}, the config needs "
                              f"{tuple(value.shape)}; ship the model again")
    # D, A, V, L each load strictly; the latent encoder is not part of a shape model file (the GAN
    # cycles train it per image), so it keeps its fresh weights.
    for part in SHAPE_PARTS:
        prefix = part + "."
        getattr(nets, part).load_state_dict({k[len(prefix):]: v.float() for k, v in model.state_dict.items()
                                             if k.startswith(prefix)})
    return nets.to(device).eval(), geometry, model.meta


def resolve_shape_model(spec: str, encoder: dict | None = None,
                        device: torch.device | str = "cpu") -> tuple[ShapeNets, GeometrySettings, dict]:
    """A built-in world name (base, cartoon, toon) or a file path → `load_shape_model`."""
    if spec in SHAPE_WORLDS and not Path(spec).exists():
        path = builtin_shape_path(spec)
        if not path.is_file():
            raise Toon3dError(f"the built-in {spec} reconstructor is not shipped yet ({path} missing); train one with "
                              f"'toon3d train-shape' and pass its model.safetensors")
        return load_shape_model(path, encoder, device)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise Toon3dError(f"3D model {spec} not found; pass base, cartoon, toon or a shape_*.safetensors file")
    return load_shape_model(path, encoder, device)


@torch.no_grad()
def instant_reconstruct(nets: ShapeNets, image: torch.Tensor, settings: GeometrySettings,
                        batch: int = 64) -> Decomposition:
    """Feed-forward factors of images [B,3,S,S] in [-1,1]: one pass of D, A, V, L (no per-image training)."""
    was_training = nets.training
    nets.eval()
    try:
        parts = [decompose(nets, image[i:i + batch], settings) for i in range(0, image.shape[0], batch)]
    finally:
        nets.train(was_training)
    return Decomposition(*(torch.cat([getattr(p, f) for p in parts]) for f in
                           ("depth", "raw_depth", "albedo", "view", "light")))

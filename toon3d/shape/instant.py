"""Pretrained ("instant") reconstructors: their file format and the feed-forward prediction.

A shape model file is one toon3d safetensors model (`toon3d.io.checkpoint.save_model`) holding
the depth, albedo, view and light networks under `ShapeNets`' parameter names (`depth.*`,
`albedo.*`, `view.*`, `light.*`); its config records the network sizes (`nets`) and the
geometry (`geometry`, a `GeometrySettings`). It may also hold a latent encoder E (`encoder.*`,
sizes in the config's `encoder`, the generator it projects into in its meta) from
`toon3d train-shape-encoder`: GAN2Shape's pretrained checkpoints carry every network of its
joint pretraining, E included. A file without E gives a fresh one (and
`load_shape_model(...)[2]["encoder_loaded"]` is False).

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
                     dtype: torch.dtype | None = None, with_encoder: bool = False) -> Path:
    """Write D, A, V, L (and with `with_encoder` the latent encoder E) with their sizes and geometry (atomic)."""
    from toon3d.io.checkpoint import save_model

    config = {"format": SHAPE_FORMAT, "nets": nets.config.as_dict(), "geometry": geometry.as_dict()}
    state = shape_state(nets, dtype)
    if with_encoder:
        config["encoder"] = {"nf_encoder": nets.config.nf_encoder, "latent_dim": nets.config.latent_dim}
        for key, value in nets.encoder.state_dict().items():
            state["encoder." + key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return save_model(path, state, config, meta or {})


def load_shape_model(path: str | os.PathLike, encoder: dict | None = None,
                     device: torch.device | str = "cpu") -> tuple[ShapeNets, GeometrySettings, dict]:
    """(ShapeNets with D, A, V, L in float32, its GeometrySettings, meta + {'encoder_loaded': bool}).

    The latent encoder is the file's when it holds one, else fresh. `encoder` overrides its sizes
    ({'nf_encoder', 'latent_dim'}: the GAN's w width); sizes other than the file's give a fresh E.
    """
    from toon3d.io.checkpoint import load_model_file

    model = load_model_file(path)
    if model.config.get("format") != SHAPE_FORMAT:
        raise Toon3dError(f"{path} is a toon3d model but not a 3D reconstructor (format "
                          f"{model.config.get('format')!r}); pass a shape_*.safetensors file")
    stored_encoder = model.config.get("encoder")
    try:
        net_cfg = {**model.config["nets"], **(stored_encoder or {}), **(encoder or {})}
        nets = ShapeNets(ShapeNetConfig(**net_cfg))
        geom = model.config["geometry"]
        for key in ("view_mean", "light_mean"):
            if geom.get(key) is not None:
                geom[key] = tuple(geom[key])
        geometry = GeometrySettings(**geom)
    except (KeyError, TypeError) as err:
        raise Toon3dError(f"{path} has a damaged 3D model config ({err}); ship the model again") from None
    wanted = shape_state(nets)
    encoder_keys = {"encoder." + k for k in nets.encoder.state_dict()} if stored_encoder else set()
    load_encoder = bool(stored_encoder) and all(nets.config.as_dict()[k] == v for k, v in stored_encoder.items())
    missing = sorted(set(wanted) - set(model.state_dict))
    extra = sorted(set(model.state_dict) - set(wanted) - encoder_keys)
    if missing or extra:
        raise Toon3dError(f"{path} does not match its own config (missing {missing[:2]}, unexpected {extra[:2]}); "
                          "ship the model again")
    for key, value in wanted.items():
        if model.state_dict[key].shape != value.shape:
            raise Toon3dError(f"{path}: {key} is {tuple(model.state_dict[key].shape)}, the config needs "
                              f"{tuple(value.shape)}; ship the model again")
    # D, A, V, L each load strictly; the latent encoder too when the file holds one of these sizes.
    for part in SHAPE_PARTS + (("encoder",) if load_encoder else ()):
        prefix = part + "."
        try:
            getattr(nets, part).load_state_dict({k[len(prefix):]: v.float() for k, v in model.state_dict.items()
                                                 if k.startswith(prefix)})
        except RuntimeError as err:
            raise Toon3dError(f"{path}: its {part} network does not match its config ({str(err).splitlines()[0]}); "
                              "ship the model again") from None
    return nets.to(device).eval(), geometry, {**model.meta, "encoder_loaded": load_encoder}


def resolve_shape_model(spec: str, encoder: dict | None = None,
                        device: torch.device | str = "cpu") -> tuple[ShapeNets, GeometrySettings, dict]:
    """A built-in world name (base, cartoon, toon) or a file path → `load_shape_model`."""
    if spec in SHAPE_WORLDS and not Path(spec).is_file():
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

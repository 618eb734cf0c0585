"""Face parsing labels → the face mask of the low-level feature loss (REFERENCE §1.3, §9, §12 item 12).

Parsers speak CelebAMask-HQ's 19 classes (BiSeNet's `79999_iter.pth`):

    0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses, 7/8 ears, 9 earring, 10 nose,
    11 mouth, 12/13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat

The seed code computes `((c ≥ 1 & c ≠ 16) + (1 ≤ c ≤ 13)) / 2` (GAN2Shape's soft mask: 1 on the
face, 0.5 on neck/necklace/hair/hat, 0 elsewhere) and then takes `.bool()` of it, so its
effective mask is every class except background and cloth. Rules (`MASK_RULES`):

  - ``seed``: that effective mask, {0, 1}: everything but 0 and 16 (hair, neck, hat included);
  - ``face``: the face only, classes 1-13 (REFERENCE §12 item 12's face-only variant);
  - ``soft``: GAN2Shape's values {0, 0.5, 1} before the seed code's `.bool()`.

SynFace's ground truth (`toon3d.synth.face_albedo`) has 8 classes; `SYNFACE_TO_CELEBAMASK` maps
them onto the class of CelebAMask-HQ that covers the same part, so one rule serves both:
background → 0, skin → 1 (its ears are painted as skin, SynFace has no neck or cloth), brows →
2, eyes → 4, nose → 10, lips/mouth → 11, hair → 17, glasses → 6. Under ``seed`` a SynFace mask is
the whole head with its hair; under ``face`` it is the head without hair.
"""

from __future__ import annotations

import torch

from toon3d.errors import Toon3dError

CELEBAMASK_CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
                      "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
CLOTH, FACE_LAST = 16, 13
MASK_RULES = ("seed", "face", "soft")
DEFAULT_RULE = "seed"

# SynFace class k (0 bg, 1 skin, 2 brows, 3 eyes, 4 nose, 5 lips/mouth, 6 hair, 7 glasses) → CelebAMask-HQ id.
SYNFACE_TO_CELEBAMASK = (0, 1, 2, 4, 10, 11, 17, 6)


def check_rule(rule: str) -> str:
    """`rule` if it is one of MASK_RULES, else a one-line Toon3dError."""
    if rule not in MASK_RULES:
        raise Toon3dError(f"unknown face mask rule {rule!r}; choose one of {', '.join(MASK_RULES)}")
    return rule


def face_mask_from_parsing(labels: torch.Tensor, rule: str = DEFAULT_RULE) -> torch.Tensor:
    """CelebAMask-HQ labels [B,H,W] (integers 0..18) → face mask [B,1,H,W] float in [0,1] by `rule`."""
    check_rule(rule)
    c = labels.long()
    whole = (c >= 1) & (c != CLOTH)
    face = (c >= 1) & (c <= FACE_LAST)
    if rule == "seed":
        mask = whole.float()
    elif rule == "face":
        mask = face.float()
    else:
        mask = (whole.float() + face.float()) / 2
    return mask[:, None]


def synface_to_celebamask(labels: torch.Tensor) -> torch.Tensor:
    """SynFace labels [...] (0..7) → the CelebAMask-HQ ids [...] (int64) of the same parts."""
    table = torch.tensor(SYNFACE_TO_CELEBAMASK, device=labels.device)
    return table[labels.long()]

"""Face masks for the low-level feature loss L_low (paper Eq. 8: low-level features of the face region).

The paper masks the face with BiSeNet (CelebAMask-HQ classes; the seed code keeps every class
but background and cloth, REFERENCE §1.3). Until a parser is available here, `face_ellipse_mask`
stands in for it: one fixed ellipse over the face of toon3d's layout (`toon3d.synth.layout`),
from the forehead to the chin and cheek to cheek, the same for every image. It is the
parser's face-only mask for a frontal, average face; unlike the seed code's mask it leaves
out hair and neck, and it does not follow a turned head.

A mask function maps images [B,3,S,S] in [-1,1] to a mask [B or 1,1,S,S] in [0,1]; masked
images are `images * mask` (outside the face: 0, the seed code's `torch.where(mask, img, 0)`).
"""

from __future__ import annotations

import torch

from toon3d.synth import layout

# Semi-axes and centre, fractions of the image: cheek to cheek with a 2%-of-image margin;
# from 0.6 eye-to-chin distances above the eye line (the forehead below the hairline) to the chin.
ELLIPSE_HALF_WIDTH = layout.FACE_HALF_WIDTH + 0.02
ELLIPSE_TOP = layout.EYE_Y - 0.6 * (layout.CHIN_Y - layout.EYE_Y)
ELLIPSE_BOTTOM = layout.CHIN_Y
ELLIPSE_CENTER = (layout.FACE_CENTER_X, (ELLIPSE_TOP + ELLIPSE_BOTTOM) / 2)
ELLIPSE_HALF_HEIGHT = (ELLIPSE_BOTTOM - ELLIPSE_TOP) / 2


def ellipse_mask(size: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed face ellipse of an S×S toon3d image: [1,1,S,S] with 1 inside (pixel centres), 0 outside."""
    c = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(c, c, indexing="ij")
    inside = ((x - ELLIPSE_CENTER[0]) / ELLIPSE_HALF_WIDTH) ** 2 + ((y - ELLIPSE_CENTER[1]) / ELLIPSE_HALF_HEIGHT) ** 2
    return (inside <= 1).to(dtype)[None, None]


def face_ellipse_mask(images: torch.Tensor) -> torch.Tensor:
    """Mask function: images [B,3,S,S] → the fixed face ellipse [1,1,S,S] (see `ellipse_mask`)."""
    return ellipse_mask(images.shape[-1], images.device, images.dtype)

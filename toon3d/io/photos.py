"""Users' photos: any image file Pillow reads → upright 8-bit RGB pixels, with one-line errors.

What a phone or scanner hands us varies: EXIF orientation tags (the pixels are stored
sideways and the tag says how to turn them), grey-scale, 16-bit, palette or transparent
images, CMYK JPEGs, truncated downloads. `read_photo` turns all of them into one form,
`[H,W,3] uint8 RGB` as a person would see the picture, and records every conversion it made
so a caller can report it. A file that is not an image, or is cut short, is a `Toon3dError`.

Conversions:
  - EXIF orientation (tag 274) applied with `PIL.ImageOps.exif_transpose`;
  - 16-bit and 32-bit integer grey (modes I;16*, I) scaled by 255/65535 when any value
    exceeds 255 (else taken as 8-bit values stored wide); float grey (F) scaled by 255 when
    its maximum is at most 1, else clipped to [0,255];
  - transparency (RGBA, LA, PA, palette with a transparent colour) composited over white;
  - everything else (1-bit, L, P, CMYK, YCbCr, LAB, HSV) through Pillow's `convert("RGB")`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from toon3d.errors import Toon3dError

# Pillow refuses images above 2x its MAX_IMAGE_PIXELS (decompression-bomb guard); we say so in one line.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
MIN_SIDE = 16
_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass
class Photo:
    """An upright RGB photo and how it was obtained from the file."""

    pixels: np.ndarray            # [H,W,3] uint8 RGB, upright
    source: str                   # file path, or "array"
    stored_mode: str              # Pillow mode of the stored image (e.g. "RGB", "I;16", "RGBA")
    stored_size: tuple[int, int]  # (width, height) as stored, before the EXIF rotation
    exif_orientation: int         # EXIF tag 274 (1 = upright; 0 = none)
    conversions: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright pixels."""
        return self.pixels.shape[1], self.pixels.shape[0]


def _wide_grey_to_uint8(im: Image.Image, notes: list[str]) -> np.ndarray:
    array = np.asarray(im)
    if im.mode == "F":
        peak = float(np.nanmax(array)) if array.size else 0.0
        array = np.nan_to_num(array.astype(np.float64))
        if peak <= 1.0:
            notes.append("float grey-scale in [0,1] scaled to 8 bits")
            array = array * 255.0
        else:
            notes.append("float grey-scale clipped to [0,255]")
    else:
        array = array.astype(np.float64)
        if array.size and array.max() > 255:
            notes.append(f"{im.mode} 16-bit grey-scale scaled to 8 bits")
            array = array * (255.0 / 65535.0)
    grey = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    notes.append("grey-scale converted to RGB")
    return np.repeat(grey[..., None], 3, axis=2)


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    mode = im.mode
    if mode in _WIDE_GREY or mode == "F":
        return _wide_grey_to_uint8(im, notes)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA:
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            notes.append("transparent pixels composited over white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).copy()
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB" if mode not in ("L", "1") else "grey-scale converted to RGB")
    return np.asarray(im.convert("RGB")).copy()


def read_photo(path: str | os.PathLike) -> Photo:
    """Read an image file as an upright [H,W,3] uint8 RGB `Photo`; unreadable files are a one-line Toon3dError."""
    path = Path(path)
    if not path.exists():
        raise Toon3dError(f"photo {path} not found; check the path")
    if not path.is_file():
        raise Toon3dError(f"{path} is not a file; pass a photo (JPEG, PNG, ...)")
    if path.stat().st_size == 0:
        raise Toon3dError(f"{path} is empty (0 bytes); pass a photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                stored_mode, stored_size = im.mode, im.size
                if stored_size[0] * stored_size[1] > MAX_PIXELS:
                    raise Toon3dError(f"{path} is {stored_size[0]}x{stored_size[1]} "
                                      f"({stored_size[0] * stored_size[1] / 1e6:.0f} MP), more than the "
                                      f"{MAX_PIXELS / 1e6:.0f} MP toon3d reads; downscale it first")
                im.load()
                orientation = int(im.getexif().get(274, 0) or 0)
                upright = ImageOps.exif_transpose(im)
                notes: list[str] = []
                if orientation not in (0, 1):
                    notes.append(f"EXIF orientation {orientation} applied")
                pixels = _to_rgb(upright, notes)
    except Toon3dError:
        raise
    except Image.DecompressionBombError:
        raise Toon3dError(f"{path} is larger than the {MAX_PIXELS / 1e6:.0f} MP toon3d reads; "
                          "downscale it first") from None
    except UnidentifiedImageError:
        raise Toon3dError(f"{path} is not an image Pillow can read; pass a JPEG or PNG photo") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Toon3dError(f"{path} is a damaged or truncated image ({reason}); pass a complete JPEG or PNG "
                          "photo") from None
    return _checked(Photo(pixels, str(path), stored_mode, stored_size, orientation, notes))


def photo_from_array(array: np.ndarray, source: str = "array") -> Photo:
    """An [H,W] or [H,W,3|4] array (uint8, uint16, or float in [0,1]) as a `Photo` (no EXIF)."""
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise Toon3dError(f"a photo array must be [H,W] or [H,W,3|4], got shape {list(array.shape)}")
    notes: list[str] = []
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.size and array.max() > 255):
        notes.append("16-bit values scaled to 8 bits")
        array = np.clip(np.rint(array.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    elif array.dtype.kind == "f":
        array = np.clip(np.rint(np.nan_to_num(array.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    else:
        array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    image = Image.fromarray(np.ascontiguousarray(array))  # mode from the shape: L, RGB or RGBA
    pixels = _to_rgb(image, notes)
    return _checked(Photo(pixels, source, image.mode, (array.shape[1], array.shape[0]), 0, notes))


def _checked(photo: Photo) -> Photo:
    h, w = photo.pixels.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise Toon3dError(f"{photo.source} is only {w}x{h} pixels; a face photo needs at least {MIN_SIDE} px a side")
    return photo

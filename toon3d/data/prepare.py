"""Turn a user's image folder (Disney, MetFaces, Ukiyo-e...) into a toon3d training set.

Each image is resized and centre-cropped as rosinality's `prepare_data.py` does (shorter side
→ `size` with LANCZOS, then a centred `size`×`size` crop), then written in the toon3d folder
format and, optionally, in rosinality's LMDB layout under `DIR/lmdb/` (JPEG quality 100).
Unreadable files are skipped and listed in `DIR/skipped.txt`; they never stop the run.
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from toon3d.errors import Toon3dError

LMDB_SUBDIR = "lmdb"
SKIPPED_FILE = "skipped.txt"


@dataclass(frozen=True)
class PrepareSettings:
    """How `prepare_folder` builds a training set: square `size`, and whether to write the LMDB copy."""

    size: int = 256
    lmdb: bool = True


@dataclass
class PrepareReport:
    """What `prepare_folder` did: images written, and (relative path, reason) of every skipped file."""

    out: Path
    count: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


def resized_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) after scaling the shorter side to `size`; the longer side truncated to an int (as in prepare_data.py)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """PIL box (left, top, right, bottom) of the centred size×size crop; offsets round half to even."""
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side → `size` (LANCZOS), then the centred size×size crop; RGB in, RGB out."""
    w, h = image.size
    new_w, new_h = resized_shape(w, h, size)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.LANCZOS)
    return image.crop(center_crop_box(new_w, new_h, size))


def list_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under `folder`, recursively, sorted by relative path.

    Hidden files and folders (`.DS_Store`, `.toon3d-output` markers, `.git`) are not data.
    """
    files = [p for p in folder.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def open_rgb(path: Path) -> Image.Image:
    """Decode an image file fully as RGB; raises ValueError with a short reason when it cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError("not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def prepare_folder(source: str | os.PathLike, out: str | os.PathLike, settings: PrepareSettings,
                   overwrite: bool = False, created_by: str = "", progress: bool = True) -> PrepareReport:
    """Write every readable image of `source` to `out` (folder format, plus `out/lmdb/` when asked)."""
    from tqdm import tqdm

    from toon3d.data.folder import FolderWriter
    from toon3d.data.lmdb_store import LmdbWriter

    source = Path(source)
    if not source.is_dir():
        what = "is not a folder" if source.exists() else "not found"
        raise Toon3dError(f"image folder {source} {what}; pass a folder of images")
    if not 8 <= settings.size <= 4096:
        raise Toon3dError(f"--size must be between 8 and 4096 pixels, got {settings.size}")
    out = Path(out)
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise Toon3dError(f"--out {out} is inside the image folder {source}; choose a folder outside it")
    files = list_files(source)
    if not files:
        raise Toon3dError(f"image folder {source} holds no files; pass a folder of PNG/JPEG images")

    skipped: list[tuple[str, str]] = []
    extra = {"source": str(source.resolve()), "resize": "shorter side LANCZOS + centre crop",
             "lmdb": LMDB_SUBDIR if settings.lmdb else None}
    with FolderWriter(out, "images", settings.size, seed=None, overwrite=overwrite,
                      created_by=created_by, extra_meta=extra) as writer:
        lmdb_ctx = LmdbWriter(writer.root / LMDB_SUBDIR, settings.size) if settings.lmdb else nullcontext()
        with lmdb_ctx as lmdb_writer:
            for path in tqdm(files, desc="prepare", unit="img", disable=not progress):
                rel = path.relative_to(source).as_posix()
                try:
                    image = open_rgb(path)
                except ValueError as err:
                    skipped.append((rel, str(err)))
                    continue
                original = image.size
                image = resize_center_crop(image, settings.size)
                index = writer.add(image, label={"source": rel, "original_size": list(original)})
                if lmdb_writer is not None:
                    lmdb_writer.put(index, image)
        if writer.count == 0:
            raise Toon3dError(f"none of the {len(files)} files in {source} is a readable image "
                              f"(first: {skipped[0][0]}: {skipped[0][1]}); pass a folder of PNG/JPEG images")
        writer.extra_meta["skipped"] = len(skipped)
        (writer.root / SKIPPED_FILE).write_text("".join(f"{rel}\t{why}\n" for rel, why in skipped))
    return PrepareReport(out=out, count=writer.count, skipped=skipped)

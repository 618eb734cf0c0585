"""`FaceDataset`: the one loader for SynFace, cartoon and prepared image sets, folder or LMDB.

It reads the toon3d folder format (docs/dataset-format.md) of any kind, and rosinality's LMDB
layout (a `DIR/lmdb/` written by `toon3d data prepare`, or a folder made by rosinality's own
`prepare_data.py`). Items are `{"image": [3,S,S] float32 in [-1,1], "index": int, ...gt}`,
where each ground-truth array becomes a tensor: `[H,W]` stays `[S,S]`, `[H,W,C]` becomes `[C,S,S]`.

Horizontal flips are drawn from (seed, epoch, index) alone, so a run is reproducible whatever
the number of DataLoader workers; `set_epoch` draws a new pattern each epoch.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from toon3d.errors import Toon3dError
from toon3d.data import folder as folder_format
from toon3d.data.lmdb_store import LmdbReader, is_lmdb_folder

NORMAL_PREFIX = "normal"


def image_to_tensor(image: Image.Image, mirror: bool = False) -> torch.Tensor:
    """An RGB PIL image → [3,H,W] float32 in [-1,1], mirrored left-right when `mirror`."""
    # numpy, not torch: per-item torch ops on small images pay thread-pool overhead in the
    # loader's main process, which made them ~10x slower than the decode itself.
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mirror:
        array = array[:, ::-1]
    chw = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)
    chw *= 1.0 / 127.5
    chw -= 1.0
    return torch.from_numpy(chw)


def flip_gt(gt: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mirror every gt array ([S,S] or [C,S,S]) left-right; negate channel 0 (x) of `normal*` keys."""
    flipped = {}
    for key, value in gt.items():
        value = np.ascontiguousarray(value[..., ::-1])
        if key.startswith(NORMAL_PREFIX) and value.ndim == 3:
            # Mirroring the image mirrors the surface: a normal's x component changes sign.
            value[0] = -value[0]
        flipped[key] = value
    return flipped


def _is_label_map(key: str, value: np.ndarray) -> bool:
    # Segmentations and masks hold class ids: averaging neighbours would invent classes.
    return not np.issubdtype(value.dtype, np.floating) and ("seg" in key or "mask" in key)


def resize_gt(key: str, value: np.ndarray, size: int) -> np.ndarray:
    """Resize one gt array ([S,S] or [C,S,S]) to size×size: seg/mask by nearest, values by area/bilinear."""
    if value.shape[-1] == size and value.shape[-2] == size:
        return value
    x = torch.from_numpy(value)
    x = (x[None, None] if x.dim() == 2 else x[None]).float()
    if _is_label_map(key, value):
        out = F.interpolate(x, size=(size, size), mode="nearest")
    else:
        shrinking = size < x.shape[-1]
        out = F.interpolate(x, size=(size, size), mode="area" if shrinking else "bilinear",
                            align_corners=None if shrinking else False)
        if key.startswith(NORMAL_PREFIX) and out.shape[1] == 3:
            out = F.normalize(out, dim=1)
    out = out[0, 0] if value.ndim == 2 else out[0]
    if not np.issubdtype(value.dtype, np.floating):
        info = np.iinfo(value.dtype)
        out = out.round().clamp(info.min, info.max)
    return out.numpy().astype(value.dtype)


# What np.load raises on a damaged .npz: truncated or corrupt zip (BadZipFile, EOFError),
# a broken deflate stream (zlib.error), a bad .npy header (ValueError), unreadable file (OSError).
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _load_gt(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except _NPZ_ERRORS as err:
        raise Toon3dError(f"{path} is not a readable .npz ({err}); rebuild the dataset") from None
    gt = {}
    for key, array in arrays.items():
        if array.ndim == 3:
            array = np.ascontiguousarray(array.transpose(2, 0, 1))
        elif array.ndim != 2:
            raise Toon3dError(f"{path}: array {key!r} has shape {array.shape}, expected [H,W] or [H,W,C]; "
                              "rebuild the dataset")
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        gt[key] = np.ascontiguousarray(array)
    return gt


def resolve_source(path: str | os.PathLike, prefer_lmdb: bool = False) -> tuple[str, Path]:
    """Which store to read under `path`: ("folder", root) or ("lmdb", lmdb_dir); clear error otherwise."""
    root = Path(path)
    if not root.exists():
        raise Toon3dError(f"dataset {root} not found; build one with 'toon3d data cartoons|synface|toon|prepare'")
    if not root.is_dir():
        raise Toon3dError(f"dataset {root} is not a folder; pass the folder written by 'toon3d data ...'")
    has_folder = folder_format.is_folder_dataset(root)
    lmdb_dir = root if is_lmdb_folder(root) else root / "lmdb"
    has_lmdb = is_lmdb_folder(lmdb_dir)
    if has_lmdb and (prefer_lmdb or not has_folder):
        return "lmdb", lmdb_dir
    if has_folder:
        return "folder", root
    raise Toon3dError(f"{root} is neither a toon3d dataset (meta.json) nor an LMDB folder (data.mdb); "
                      "build it with 'toon3d data prepare'")


class FaceDataset(Dataset):
    """Images (and SynFace / toon ground truth) of a toon3d folder dataset or a rosinality LMDB folder.

    `size=None` keeps the stored size; another size resizes (LANCZOS for images), for an LMDB
    too (one holding several sizes is read at `size` if stored, else the nearest larger one). `flip=True`
    mirrors each item with probability 1/2, decided by (seed, epoch, index); evaluation passes
    `flip=False`. `prefer_lmdb` reads `DIR/lmdb` when a prepared folder has both copies.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None, flip: bool = True, seed: int = 0,
                 load_gt: bool = True, prefer_lmdb: bool = False) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise Toon3dError(f"size must be a positive number of pixels, got {size!r}")
        self.source, self.root = resolve_source(path, prefer_lmdb=prefer_lmdb)
        self.flip = flip
        self.seed = int(seed)
        self.epoch = 0
        self.load_gt = load_gt
        self._lmdb: LmdbReader | None = None
        if self.source == "folder":
            self.meta = folder_format.read_meta(self.root)
            self.stored_size = int(self.meta["size"])
            self.length = int(self.meta["count"])
            self.kind = str(self.meta["kind"])
            if self.length > 0 and not folder_format.image_path(self.root, 0).is_file():
                raise Toon3dError(f"{self.root} lacks images/000000.png although meta.json says "
                                  f"{self.length} images; rebuild the dataset")
        else:
            # Read the stored size and let __getitem__ resize, as for folders; `size` only picks
            # among several stored sizes (an exact match, else the nearest larger one).
            self._lmdb = LmdbReader(self.root, size=size, nearest=True)
            self.meta = {"kind": "images", "size": self._lmdb.size, "count": len(self._lmdb)}
            self.stored_size = self._lmdb.size
            self.length = len(self._lmdb)
            self.kind = "images"
        self.size = int(size) if size is not None else self.stored_size

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh flip pattern for `epoch` (call before iterating a DataLoader each epoch)."""
        self.epoch = int(epoch)

    def flipped(self, index: int) -> bool:
        """Whether item `index` is mirrored in the current epoch."""
        if not self.flip:
            return False
        return bool(np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)

    def _read_image(self, index: int) -> Image.Image:
        if self._lmdb is not None:
            return self._lmdb.get_image(index)
        path = folder_format.image_path(self.root, index)
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise Toon3dError(f"{path} is missing; the dataset is incomplete, rebuild it") from None
        except (UnidentifiedImageError, OSError) as err:
            raise Toon3dError(f"{path} is not a readable image ({err}); rebuild the dataset") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} images")
        image = self._read_image(index)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.LANCZOS)
        mirror = self.flipped(index)
        item: dict[str, Any] = {"image": image_to_tensor(image, mirror=mirror), "index": index}
        gt: dict[str, np.ndarray] = {}
        if self.load_gt and self._lmdb is None:
            path = folder_format.gt_path(self.root, index)
            if path.is_file():
                gt = {k: resize_gt(k, v, self.size) for k, v in _load_gt(path).items()}
        if mirror:
            gt = flip_gt(gt)
        item.update({key: torch.from_numpy(value) for key, value in gt.items()})
        return item

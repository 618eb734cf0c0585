"""Reading and writing the toon3d folder dataset format (docs/dataset-format.md).

`FolderWriter` builds a dataset in a hidden sibling folder and renames it into place when
the `with` block ends without error, so a folder holding `meta.json` is always complete.
The read helpers (`read_meta`, `read_labels`, `image_path`, `gt_path`) are shared by the
loader and by tools that inspect a dataset.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import numpy as np
from PIL import Image

from toon3d.errors import Toon3dError
from toon3d.io.atomic import atomic_dir

FORMAT_NAME = "toon3d-folder"
FORMAT_VERSION = 1
KINDS = ("synface", "toon", "cartoons", "images")  # "toon": SynFace drawn as cartoons, same gt
INDEX_DIGITS = 6
CONTACT_SHEET_COUNT = 64
CONTACT_SHEET_TILE = 128  # tiles larger than this are shrunk, so a 1024px dataset's sheet stays small


def image_path(root: str | os.PathLike, index: int) -> Path:
    """Path of image `index` inside dataset folder `root` (`images/000042.png`)."""
    return Path(root) / "images" / f"{index:0{INDEX_DIGITS}d}.png"


def gt_path(root: str | os.PathLike, index: int) -> Path:
    """Path of the ground-truth arrays of image `index` (`gt/000042.npz`)."""
    return Path(root) / "gt" / f"{index:0{INDEX_DIGITS}d}.npz"


def is_folder_dataset(root: str | os.PathLike) -> bool:
    """True when `root` holds a toon3d `meta.json`."""
    return (Path(root) / "meta.json").is_file()


def write_meta(root: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write `meta.json` into `root` after checking the required fields."""
    missing = [k for k in ("kind", "size", "count") if k not in meta]
    if missing:
        raise ValueError(f"meta.json needs the fields {missing}")
    if meta["kind"] not in KINDS:
        raise ValueError(f"unknown dataset kind {meta['kind']!r}; expected one of {KINDS}")
    full = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **meta}
    path = Path(root) / "meta.json"
    path.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    return path


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate `meta.json` of a toon3d folder dataset; bad input raises `Toon3dError`."""
    root = Path(root)
    path = root / "meta.json"
    if not root.exists():
        raise Toon3dError(f"dataset folder {root} not found; check the path or build it with 'toon3d data ...'")
    if not path.is_file():
        raise Toon3dError(f"{root} has no meta.json, so it is not a toon3d dataset; "
                          "prepare it with 'toon3d data prepare'")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise Toon3dError(f"{path} is not valid JSON ({err}); rebuild the dataset") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise Toon3dError(f"{path} is not a toon3d-folder meta.json; rebuild the dataset")
    if meta.get("version") != FORMAT_VERSION:
        raise Toon3dError(f"{path} has format version {meta.get('version')}, this toon3d reads "
                          f"version {FORMAT_VERSION}; rebuild the dataset")
    for key in ("kind", "size", "count"):
        if key not in meta:
            raise Toon3dError(f"{path} lacks the field {key!r}; rebuild the dataset")
    return meta


def read_labels(root: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of `labels.jsonl` in index order (empty when the file is absent)."""
    path = Path(root) / "labels.jsonl"
    if not path.is_file():
        return []
    records = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                raise Toon3dError(f"{path} line {line_no} is not valid JSON; rebuild the dataset") from None
    return sorted(records, key=lambda r: r.get("index", 0))


def _as_uint8_rgb(image: Any) -> np.ndarray:
    """PIL image, [H,W,3] uint8 array or [3,H,W] float tensor in [-1,1] → [H,W,3] uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if hasattr(image, "detach"):  # a torch tensor; imported lazily so this module stays light
        from toon3d.io.images import to_uint8

        array = to_uint8(image)
        return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an [H,W,3] uint8 image, got {array.dtype} {array.shape}")
    return array


def write_image(root: str | os.PathLike, index: int, image: Any) -> Path:
    """Save one image of a dataset under construction as `images/{index:06d}.png` (RGB, 8-bit)."""
    path = image_path(root, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_as_uint8_rgb(image)).save(path, format="PNG")
    return path


def write_gt(root: str | os.PathLike, index: int, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save the ground-truth arrays of image `index` as `gt/{index:06d}.npz` (uncompressed)."""
    path = gt_path(root, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def write_contact_sheet(root: str | os.PathLike, count: int, limit: int = CONTACT_SHEET_COUNT,
                        padding: int = 2) -> Path | None:
    """Tile the first `limit` images of `root` into `contact_sheet.png` (white gaps); None if empty."""
    n = min(count, limit)
    if n == 0:
        return None

    def tile(i: int) -> Image.Image:
        with Image.open(image_path(root, i)) as im:
            im = im.convert("RGB")
        if max(im.size) > CONTACT_SHEET_TILE:
            scale = CONTACT_SHEET_TILE / max(im.size)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        return im

    first = tile(0)
    w, h = first.size
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    sheet = Image.new("RGB", (cols * (w + padding) + padding, rows * (h + padding) + padding), "white")
    for i in range(n):
        r, c = divmod(i, cols)
        im = first if i == 0 else tile(i)
        sheet.paste(im, (padding + c * (w + padding), padding + r * (h + padding)))
    path = Path(root) / "contact_sheet.png"
    sheet.save(path, format="PNG")
    return path


class FolderWriter:
    """Build a folder dataset atomically: `with FolderWriter(out, "cartoons", 128) as w: w.add(img)`.

    `add` appends the next index; `put` writes a given index (for workers that finish out of
    order). On a clean exit the writer checks that indices 0..count-1 are all present, writes
    `labels.jsonl` (when any label was given), `meta.json` and `contact_sheet.png`, then renames
    the hidden folder onto `out`. On an exception nothing is left behind.
    """

    def __init__(self, out: str | os.PathLike, kind: str, size: int, *, seed: int | None = None,
                 overwrite: bool = False, created_by: str = "", extra_meta: Mapping[str, Any] | None = None,
                 contact_sheet: bool = True) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")
        self.out = Path(out)
        self.kind = kind
        self.size = int(size)
        self.seed = seed
        self.overwrite = overwrite
        self.created_by = created_by
        self.extra_meta: dict[str, Any] = dict(extra_meta or {})
        self.contact_sheet = contact_sheet
        self._labels: dict[int, dict[str, Any]] = {}
        self._written: set[int] = set()
        self._next_index = 0
        self._lock = threading.Lock()  # put() may be called from writer threads (SynFace does)
        self._ctx: Any = None
        self.root: Path | None = None  # the hidden folder being filled; valid inside `with`

    def __enter__(self) -> "FolderWriter":
        self._ctx = atomic_dir(self.out, overwrite=self.overwrite)
        self.root = self._ctx.__enter__()
        (self.root / "images").mkdir()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            self._ctx.__exit__(*sys.exc_info())
            raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))

    @property
    def count(self) -> int:
        """Number of images written so far."""
        return len(self._written)

    def add(self, image: Any, gt: Mapping[str, np.ndarray] | None = None,
            label: Mapping[str, Any] | None = None) -> int:
        """Write the next image (PIL, [H,W,3] uint8 or [3,H,W] in [-1,1]) with optional gt/label; returns its index."""
        index = self._next_index
        self.put(index, image, gt=gt, label=label)
        return index

    def put(self, index: int, image: Any, gt: Mapping[str, np.ndarray] | None = None,
            label: Mapping[str, Any] | None = None) -> None:
        """Write image `index` (and its gt arrays / label record)."""
        if self.root is None:
            raise RuntimeError("FolderWriter.put used outside its 'with' block")
        array = _as_uint8_rgb(image)
        if array.shape[:2] != (self.size, self.size):
            raise ValueError(f"image {index} is {array.shape[1]}x{array.shape[0]}, dataset size is {self.size}")
        write_image(self.root, index, array)
        if gt:
            write_gt(self.root, index, gt)
        if label is not None:
            self._labels[index] = {"index": index, **{k: v for k, v in label.items() if k != "index"}}
        self._record(index)

    def _record(self, index: int) -> None:
        with self._lock:
            self._written.add(index)
            self._next_index = max(self._next_index, index + 1)

    def mark_written(self, index: int, label: Mapping[str, Any] | None = None) -> None:
        """Record image `index` as written by someone else (e.g. a worker process) into `self.root`."""
        if not image_path(self.root, index).is_file():
            raise RuntimeError(f"image {index} was not written into {self.root}")
        if label is not None:
            self._labels[index] = {"index": index, **{k: v for k, v in label.items() if k != "index"}}
        self._record(index)

    def _finish(self) -> None:
        count = len(self._written)
        if self._written != set(range(count)):
            missing = sorted(set(range(max(self._written) + 1)) - self._written)[:5]
            raise RuntimeError(f"dataset indices are not contiguous; missing {missing}")
        if self._labels:
            with (self.root / "labels.jsonl").open("w") as f:
                for index in sorted(self._labels):
                    f.write(json.dumps(self._labels[index], sort_keys=False) + "\n")
        meta = {"kind": self.kind, "size": self.size, "count": count, "seed": self.seed,
                "created_by": self.created_by, **self.extra_meta}
        write_meta(self.root, meta)
        if self.contact_sheet:
            write_contact_sheet(self.root, count)


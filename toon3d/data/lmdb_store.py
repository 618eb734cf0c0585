"""rosinality/stylegan2-pytorch's LMDB image layout, written and read without its code.

Key `f"{size}-{index:05d}"` (UTF-8) holds the JPEG bytes (quality 100) of image `index` at
`size`×`size`; key `"length"` holds the image count as decimal text. One database may hold
several sizes. A folder in this layout can be read by rosinality's `MultiResolutionDataset`
and by `toon3d.data.dataset.FaceDataset`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image, UnidentifiedImageError

from toon3d.errors import Toon3dError

LENGTH_KEY = b"length"
JPEG_QUALITY = 100
_INITIAL_MAP_SIZE = 1 << 30  # grown on demand; lmdb files are sparse, so this costs no disk

# py-lmdb refuses to open one environment twice in a process, so read-only environments are
# shared per folder. A forked DataLoader worker inherits and reuses its parent's handle, which
# is safe here because readers are read-only and lock-free (rosinality's loader relies on the
# same); a spawned worker starts with an empty table and opens its own.
# The data.mdb inode is part of the key so a folder replaced by a new build is opened afresh.
_READ_ENVS: dict[tuple[str, int], Any] = {}


def lmdb_key(size: int, index: int) -> bytes:
    """The key of image `index` at `size` px: b"256-00042" (five digits, more when needed)."""
    return f"{size}-{index:05d}".encode("utf-8")


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB PIL image → JPEG bytes at `quality` (rosinality stores quality 100)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def is_lmdb_folder(path: str | os.PathLike) -> bool:
    """True when `path` is a folder holding an LMDB environment (`data.mdb`)."""
    return (Path(path) / "data.mdb").is_file()


class LmdbWriter:
    """Write images into a new rosinality-layout LMDB folder: `with LmdbWriter(dir, 256) as w: w.put(i, img)`.

    The `"length"` key is written when the block ends without error.
    """

    def __init__(self, path: str | os.PathLike, size: int) -> None:
        self.path = Path(path)
        self.size = int(size)
        self.count = 0
        self._env: Any = None

    def __enter__(self) -> "LmdbWriter":
        import lmdb

        self.path.mkdir(parents=True, exist_ok=True)
        # sync=False: no fsync per image; one env.sync() at the end (the folder is renamed into
        # place only after that, so a crash never leaves a half-written database behind).
        self._env = lmdb.open(str(self.path), map_size=_INITIAL_MAP_SIZE, readahead=False, meminit=False,
                              sync=False)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._put_raw(LENGTH_KEY, str(self.count).encode("utf-8"))
                self._env.sync(True)
        finally:
            self._env.close()
            self._env = None

    def _put_raw(self, key: bytes, value: bytes) -> None:
        import lmdb

        while True:
            try:
                with self._env.begin(write=True) as txn:
                    txn.put(key, value)
                return
            except lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def put(self, index: int, image: Image.Image | bytes) -> None:
        """Store image `index` (a size×size PIL image, or JPEG bytes already encoded)."""
        if isinstance(image, Image.Image):
            if image.size != (self.size, self.size):
                raise ValueError(f"image {index} is {image.size}, the LMDB holds {self.size}x{self.size}")
            image = encode_jpeg(image)
        self._put_raw(lmdb_key(self.size, index), image)
        self.count = max(self.count, index + 1)


def choose_stored_size(sizes: set[int] | list[int], wanted: int) -> int:
    """Which stored size to read for output size `wanted`: the only one, an exact match, the
    smallest larger one (downscaling keeps detail), else the largest."""
    sizes = sorted(sizes)
    if len(sizes) == 1:
        return sizes[0]
    if wanted in sizes:
        return wanted
    larger = [s for s in sizes if s > wanted]
    return larger[0] if larger else sizes[-1]


class LmdbReader:
    """Read a rosinality-layout LMDB folder; opens lazily so it survives DataLoader worker forks.

    `size=None` picks the only size stored; a database holding several sizes needs `size`.
    With `nearest=True`, `size` is only a preference (for readers that resize afterwards): the
    only stored size, else `size` itself when stored, else the smallest stored size above it,
    else the largest. `sizes` lists every stored size.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None, nearest: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise Toon3dError(f"LMDB folder {self.path} not found; check the path")
        if not is_lmdb_folder(self.path):
            raise Toon3dError(f"{self.path} has no data.mdb, so it is not an LMDB dataset; "
                              "prepare it with 'toon3d data prepare'")
        env = self._open()
        with env.begin() as txn:
            raw = txn.get(LENGTH_KEY)
            if raw is None:
                raise Toon3dError(f"{self.path} has no 'length' key, so it is not a rosinality-layout LMDB; "
                                  "prepare it with 'toon3d data prepare'")
            self.length = int(raw.decode("utf-8"))
            sizes = self._stored_sizes(txn)
        self.sizes = sorted(sizes)
        if nearest and size is not None and sizes:
            size = choose_stored_size(sizes, size)
        if size is None:
            if len(sizes) != 1:
                raise Toon3dError(f"{self.path} holds images at sizes {sorted(sizes)}; pass size= to choose one")
            size = next(iter(sizes))
        elif size not in sizes:
            raise Toon3dError(f"{self.path} holds no {size}px images (sizes: {sorted(sizes)}); "
                              f"pass one of those sizes")
        self.size = int(size)

    @staticmethod
    def _stored_sizes(txn: Any) -> set[int]:
        # Keys sort bytewise, so each size's keys are contiguous: hop from one prefix to the next.
        sizes: set[int] = set()
        cursor = txn.cursor()
        found = cursor.first()
        while found:
            key = bytes(cursor.key())
            prefix, dash, _ = key.partition(b"-")
            if dash and prefix.isdigit():
                sizes.add(int(prefix))
                found = cursor.set_range(prefix + b".")  # '.' sorts right after '-'
            else:
                found = cursor.next()
        return sizes

    def _open(self) -> Any:
        import lmdb

        folder = self.path.resolve()
        key = (str(folder), (folder / "data.mdb").stat().st_ino)
        env = _READ_ENVS.get(key)
        if env is None:
            try:
                env = lmdb.open(key[0], readonly=True, lock=False, readahead=False, meminit=False,
                                max_readers=64)
            except lmdb.Error as err:
                raise Toon3dError(f"cannot open LMDB folder {self.path} ({err}); check the files") from None
            _READ_ENVS[key] = env
        return env

    def __len__(self) -> int:
        return self.length

    def get_bytes(self, index: int) -> bytes:
        """The stored JPEG bytes of image `index`."""
        with self._open().begin() as txn:
            value = txn.get(lmdb_key(self.size, index))
        if value is None:
            raise Toon3dError(f"{self.path} lacks key {lmdb_key(self.size, index).decode()}; the LMDB is "
                              "incomplete, prepare it again")
        return bytes(value)

    def get_image(self, index: int) -> Image.Image:
        """Image `index` decoded as an RGB PIL image."""
        try:
            with Image.open(io.BytesIO(self.get_bytes(index))) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise Toon3dError(f"image {index} in {self.path} is not a readable JPEG ({err}); "
                              "prepare the LMDB again") from None

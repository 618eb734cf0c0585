"""Atomic writes: a file or folder appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from toon3d.errors import Toon3dError

# Written into every folder `atomic_dir` creates; `overwrite=True` only replaces folders that have it.
OUTPUT_MARKER = ".toon3d-output"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Toon3dError(f"cannot create folder {parent}: {err.strerror}; choose a writable output path") from None
    if not os.access(parent, os.W_OK):
        raise Toon3dError(f"folder {parent} is not writable; choose a writable output path")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    final = Path(path)
    _check_parent(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        # writers that recreate the file (safetensors does) would leave mkstemp's 0600 behind
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output folder that is, contains, or lies inside any of `inputs` (None entries are skipped)."""
    final = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if source == final or final in source.parents:
            raise Toon3dError(f"--out {out} contains the input {item}; choose another --out")
        if source in final.parents:
            raise Toon3dError(f"--out {out} is inside the input {item}; choose another --out")


def _replaceable(folder: Path) -> bool:
    """True for an empty folder or one `atomic_dir` wrote (it holds the marker file)."""
    return (folder / OUTPUT_MARKER).is_file() or not any(folder.iterdir())


def check_output_dir(path: str | os.PathLike, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """The checks `atomic_dir` makes before writing; call it early to fail before long work."""
    final = Path(path)
    check_inputs(final, inputs)
    if final.exists() and not final.is_dir():
        raise Toon3dError(f"{final} exists and is not a folder; choose another --out")
    if final.is_dir() and any(final.iterdir()):
        if not overwrite:
            raise Toon3dError(f"{final} exists and is not empty; choose another --out or pass --overwrite")
        if not _replaceable(final):
            raise Toon3dError(f"{final} exists and was not written by toon3d; remove it yourself or choose another --out")
    _check_parent(final)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it is removed.

    An existing non-empty `path` is an error unless `overwrite` is set, and even then only a folder
    toon3d wrote (marked with `OUTPUT_MARKER`) is replaced. `inputs` are the paths the command
    reads: `path` may not be, contain or lie inside any of them.
    """
    final = Path(path)
    check_output_dir(final, overwrite, inputs)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700 folders
    try:
        (tmp / OUTPUT_MARKER).write_text("written by toon3d; --overwrite may replace this folder\n")
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

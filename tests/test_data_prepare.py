"""`toon3d data prepare`: rosinality's resize/centre-crop maths, the LMDB layout, skipped files."""

from __future__ import annotations

import io
import json

import lmdb
import numpy as np
import pytest
from PIL import Image

from toon3d.cli import main
from toon3d.data import prepare
from toon3d.data.lmdb_store import LmdbReader, lmdb_key
from toon3d.errors import Toon3dError


def _smooth(width: int, height: int, phase: float = 0.0) -> Image.Image:
    """A smooth colour ramp, so JPEG quality 100 is nearly lossless on it."""
    ys, xs = np.mgrid[0:height, 0:width]
    r = 40 + 170 * xs / max(width - 1, 1)
    g = 40 + 170 * ys / max(height - 1, 1)
    b = 128 + 60 * np.sin(xs / 7.0 + phase)
    return Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8))


@pytest.fixture
def photo_folder(tmp_path):
    src = tmp_path / "faces"
    (src / "b_sub").mkdir(parents=True)
    _smooth(60, 40).save(src / "c.png")
    _smooth(30, 50, 1.0).save(src / "a.jpg", quality=95)
    _smooth(32, 32, 2.0).convert("L").save(src / "b_sub" / "d.png")  # greyscale → RGB
    (src / "notes.txt").write_text("not an image")
    (src / "empty.jpg").write_bytes(b"")
    good = io.BytesIO()
    _smooth(40, 40).save(good, format="PNG")
    (src / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    return src


# --- the maths, by hand -------------------------------------------------------------------

@pytest.mark.parametrize("w, h, size, expected", [
    (300, 200, 64, (96, 64)),      # 64·300/200 = 96
    (101, 50, 20, (40, 20)),       # 20·101/50 = 40.4 → truncated to 40
    (50, 101, 20, (20, 40)),
    (64, 64, 64, (64, 64)),
])
def test_resized_shape_scales_the_shorter_side(w, h, size, expected):
    assert prepare.resized_shape(w, h, size) == expected


@pytest.mark.parametrize("w, h, size, expected", [
    (96, 64, 64, (16, 0, 80, 64)),
    (23, 10, 10, (6, 0, 16, 10)),   # (23-10)/2 = 6.5 rounds half to even → 6
    (10, 25, 10, (0, 8, 10, 18)),   # 7.5 → 8
])
def test_center_crop_box_rounds_half_to_even_like_prepare_data(w, h, size, expected):
    assert prepare.center_crop_box(w, h, size) == expected


def test_resize_center_crop_on_a_ramp_matches_the_hand_computed_values():
    # A 40x20 image whose red channel is 6·x. Shorter side 20 → 10 halves everything: resized
    # column j averages x = 2j, 2j+1, i.e. red ≈ 6·(2j + 0.5). The 20x10 result is cropped at
    # left = 5, so output column c is resized column c + 5: red ≈ 12c + 63.
    xs = np.tile(np.arange(40) * 6, (20, 1))
    image = Image.fromarray(np.stack([xs, np.zeros_like(xs), np.zeros_like(xs)], -1).astype(np.uint8))
    out = np.asarray(prepare.resize_center_crop(image, 10)).astype(float)
    assert out.shape == (10, 10, 3)
    expected = 12 * np.arange(10) + 63
    # LANCZOS is exact on a linear ramp away from the borders (its kernel is symmetric and
    # sums to one); allow 1 level for rounding.
    assert np.abs(out[5, :, 0] - expected).max() <= 1.0
    assert np.all(out[..., 1:] == 0)


# --- the whole command ----------------------------------------------------------------------

def test_prepare_writes_folder_and_lmdb_and_lists_skipped_files(photo_folder, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(photo_folder), "--size", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 3 file(s)" in printed and "notes.txt" in printed and "truncated.png" in printed

    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "images" and meta["count"] == 3 and meta["size"] == 32 and meta["skipped"] == 3
    # Sorted by relative path, deterministic.
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [r["source"] for r in labels] == ["a.jpg", "b_sub/d.png", "c.png"]
    assert labels[2]["original_size"] == [60, 40]
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in skipped] == ["empty.jpg", "notes.txt", "truncated.png"]

    # rosinality's layout: exactly the image keys and "length".
    env = lmdb.open(str(out / "lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [bytes(k) for k, _ in txn.cursor()]
        assert sorted(keys) == [b"32-00000", b"32-00001", b"32-00002", b"length"]
        assert txn.get(b"length") == b"3"
        blobs = [bytes(txn.get(lmdb_key(32, i))) for i in range(3)]
    env.close()
    for i, blob in enumerate(blobs):
        assert blob[:2] == b"\xff\xd8"  # JPEG start-of-image
        jpeg = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).astype(int)
        png = np.asarray(Image.open(out / "images" / f"{i:06d}.png")).astype(int)
        assert jpeg.shape == png.shape == (32, 32, 3)
        # Quality-100 JPEG (with 4:2:0 chroma) on smooth images: small, bounded error.
        assert np.abs(jpeg - png).mean() < 1.5 and np.abs(jpeg - png).max() <= 12

    # The folder copy holds exactly the resize + centre crop of the source.
    expected = prepare.resize_center_crop(Image.open(photo_folder / "c.png").convert("RGB"), 32)
    assert np.array_equal(np.asarray(Image.open(out / "images" / "000002.png")), np.asarray(expected))


def test_prepare_is_deterministic_and_no_lmdb_skips_the_database(photo_folder, tmp_path):
    settings = prepare.PrepareSettings(size=16, lmdb=False)
    a = prepare.prepare_folder(photo_folder, tmp_path / "a", settings, progress=False)
    b = prepare.prepare_folder(photo_folder, tmp_path / "b", settings, progress=False)
    assert a.count == b.count == 3 and len(a.skipped) == 3
    assert not (tmp_path / "a" / "lmdb").exists()
    for i in range(3):
        name = f"images/{i:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_lmdb_reader_sees_the_prepared_database(photo_folder, tmp_path):
    prepare.prepare_folder(photo_folder, tmp_path / "p", prepare.PrepareSettings(size=16), progress=False)
    reader = LmdbReader(tmp_path / "p" / "lmdb")
    assert len(reader) == 3 and reader.size == 16 and reader.get_image(1).size == (16, 16)
    with pytest.raises(Toon3dError, match="no 64px images"):
        LmdbReader(tmp_path / "p" / "lmdb", size=64)


def test_bad_inputs_are_one_line_errors(tmp_path, photo_folder, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    cases = [
        ([str(tmp_path / "missing")], "not found"),
        ([str(empty)], "holds no files"),
        ([str(junk)], "none of the 1 files"),
        ([str(photo_folder / "c.png")], "is not a folder"),
    ]
    for args, match in cases:
        assert main(["data", "prepare", *args, "--size", "16", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: the progress bar
        assert err.startswith("toon3d data: error:") and match in err
        assert not (tmp_path / "o").exists()
    with pytest.raises(Toon3dError, match="inside the image folder"):
        prepare.prepare_folder(photo_folder, photo_folder / "out", prepare.PrepareSettings(size=16), progress=False)
    with pytest.raises(Toon3dError, match="--size"):
        prepare.prepare_folder(photo_folder, tmp_path / "o", prepare.PrepareSettings(size=2), progress=False)


def test_lmdb_writer_grows_a_full_map(tmp_path, monkeypatch):
    from toon3d.data import lmdb_store

    monkeypatch.setattr(lmdb_store, "_INITIAL_MAP_SIZE", 64 * 1024)
    rng = np.random.default_rng(0)
    with lmdb_store.LmdbWriter(tmp_path / "db", 64) as writer:
        for i in range(20):  # noise JPEGs at quality 100: ~10 KB each, far beyond 64 KB in all
            writer.put(i, Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    reader = LmdbReader(tmp_path / "db")
    assert len(reader) == 20 and reader.get_image(19).size == (64, 64)


def test_out_may_not_hold_or_sit_inside_the_source(tmp_path, capsys):
    outer = tmp_path / "outer"
    src = outer / "src"
    src.mkdir(parents=True)
    _smooth(20, 20).save(src / "a.png")
    (outer / ".toon3d-output").write_text("")  # even a folder toon3d wrote is kept when it holds the input
    for out, match in [(outer, "contains the input"), (src, "contains the input"), (src / "o", "is inside the input")]:
        assert main(["data", "prepare", str(src), "--size", "16", "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and "choose another --out" in err and "\n" not in err
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_list_files_skips_hidden_files_and_folders(tmp_path):
    from toon3d.data.prepare import list_files

    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    for rel in ["b/2.png", "a.png", ".toon3d-output", ".git/x.png", "b/.DS_Store"]:
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_files(tmp_path)] == ["a.png", "b/2.png"]

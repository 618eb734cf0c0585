"""FaceDataset: folder and LMDB sources, ranges and shapes, flips of images and ground truth."""

from __future__ import annotations

import io
import json

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from toon3d.data import folder
from toon3d.data.dataset import FaceDataset
from toon3d.data.prepare import PrepareSettings, prepare_folder
from toon3d.errors import Toon3dError

SIZE = 16


def _synface_like(root, count: int = 6):
    """A tiny SynFace-style dataset whose images and gt are asymmetric, so flips are visible."""
    rng = np.random.default_rng(0)
    with folder.FolderWriter(root, "synface", SIZE, seed=0, extra_meta={"far": 1.2}) as w:
        for i in range(count):
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            normal = rng.normal(size=(SIZE, SIZE, 3)).astype(np.float32)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            gt = {"depth": rng.uniform(0.9, 1.1, (SIZE, SIZE)).astype(np.float32),
                  "normal": normal,
                  "seg": rng.integers(0, 8, (SIZE, SIZE), dtype=np.uint8)}
            w.add(image, gt=gt, label={"yaw_deg": float(i)})
    return root


def _smooth_folder(root, count: int = 4):
    root.mkdir()
    ys, xs = np.mgrid[0:40, 0:48]
    for i in range(count):
        r = 30 + 4 * xs + 10 * i
        g = 30 + 4 * ys
        b = np.full_like(xs, 90 + 20 * i)
        Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def test_items_have_the_documented_ranges_and_shapes(tmp_path):
    ds = FaceDataset(_synface_like(tmp_path / "s"), flip=False)
    assert len(ds) == 6 and ds.kind == "synface" and ds.source == "folder"
    item = ds[2]
    image = item["image"]
    assert item["index"] == 2
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    png = np.array(Image.open(folder.image_path(tmp_path / "s", 2)))
    assert torch.allclose(image, torch.from_numpy(png).permute(2, 0, 1).float() / 127.5 - 1, atol=1e-6)
    assert item["depth"].shape == (SIZE, SIZE) and item["depth"].dtype == torch.float32
    assert item["normal"].shape == (3, SIZE, SIZE)
    assert item["seg"].shape == (SIZE, SIZE) and item["seg"].dtype == torch.uint8


def test_flip_mirrors_image_and_every_gt_and_negates_normal_x(tmp_path):
    root = _synface_like(tmp_path / "s")
    plain = FaceDataset(root, flip=False)
    flipping = FaceDataset(root, flip=True, seed=1)
    decisions = [flipping.flipped(i) for i in range(len(flipping))]
    assert any(decisions) and not all(decisions)  # seed 1 gives both over 6 items
    for i, flipped in enumerate(decisions):
        a, b = plain[i], flipping[i]
        if not flipped:
            assert all(torch.equal(a[k], b[k]) for k in ("image", "depth", "normal", "seg"))
            continue
        assert torch.equal(b["image"], a["image"].flip(-1))
        assert torch.equal(b["depth"], a["depth"].flip(-1))
        assert torch.equal(b["seg"], a["seg"].flip(-1))
        assert torch.equal(b["normal"][0], -a["normal"][0].flip(-1))
        assert torch.equal(b["normal"][1:], a["normal"][1:].flip(-1))


def test_flip_pattern_depends_on_seed_and_epoch_only(tmp_path):
    root = _synface_like(tmp_path / "s", count=1)
    ds_a = FaceDataset(root, flip=True, seed=5)
    assert [ds_a.flipped(i) for i in range(50)] != [FaceDataset(root, seed=6).flipped(i) for i in range(50)]
    pattern = [ds_a.flipped(i) for i in range(200)]
    assert pattern == [ds_a.flipped(i) for i in range(200)]
    assert 70 < sum(pattern) < 130  # about half
    ds_a.set_epoch(1)
    assert pattern != [ds_a.flipped(i) for i in range(200)]
    ds_a.flip = False
    assert not any(ds_a.flipped(i) for i in range(20))


def test_lmdb_and_folder_give_the_same_images(tmp_path):
    prepare_folder(_smooth_folder(tmp_path / "src"), tmp_path / "p", PrepareSettings(size=SIZE), progress=False)
    from_folder = FaceDataset(tmp_path / "p", flip=False)
    from_lmdb = FaceDataset(tmp_path / "p", flip=False, prefer_lmdb=True)
    lmdb_only = FaceDataset(tmp_path / "p" / "lmdb", flip=False)
    assert (from_folder.source, from_lmdb.source, lmdb_only.source) == ("folder", "lmdb", "lmdb")
    assert len(from_folder) == len(from_lmdb) == len(lmdb_only) == 4
    for i in range(4):
        a, b = from_folder[i]["image"], from_lmdb[i]["image"]
        assert torch.equal(b, lmdb_only[i]["image"])
        # JPEG quality 100: within a few levels of the PNG copy (2/255 ≈ 0.016 in [-1,1] units).
        assert (a - b).abs().mean() < 0.016 and (a - b).abs().max() < 0.1


def test_reads_an_lmdb_made_by_rosinality_prepare_data(tmp_path):
    # What rosinality's prepare_data.py writes: one key per size and index, plus "length".
    path = tmp_path / "rosinality"
    env = lmdb.open(str(path), map_size=1 << 24, readahead=False)
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    with env.begin(write=True) as txn:
        for res in (8, 32):
            for i, colour in enumerate(colours):
                buffer = io.BytesIO()
                Image.new("RGB", (res, res), colour).save(buffer, format="JPEG", quality=100)
                txn.put(f"{res}-{str(i).zfill(5)}".encode("utf-8"), buffer.getvalue())
        txn.put("length".encode("utf-8"), str(len(colours)).encode("utf-8"))
    env.close()
    with pytest.raises(Toon3dError, match=r"sizes \[8, 32\]; pass size="):
        FaceDataset(path)
    ds = FaceDataset(path, size=32, flip=False)
    assert len(ds) == 3 and ds[1]["image"].shape == (3, 32, 32)
    centre = (ds[1]["image"][:, 16, 16] + 1) * 127.5
    assert torch.allclose(centre, torch.tensor([10.0, 200.0, 10.0]), atol=3)


def test_size_resizes_an_lmdb_like_a_folder(tmp_path):
    prepare_folder(_smooth_folder(tmp_path / "src"), tmp_path / "p", PrepareSettings(size=SIZE), progress=False)
    for size in (8, 24):  # the LMDB holds only 16 px images
        from_lmdb = FaceDataset(tmp_path / "p" / "lmdb", size=size, flip=False)
        from_folder = FaceDataset(tmp_path / "p", size=size, flip=False)
        assert from_lmdb.source == "lmdb" and from_lmdb.stored_size == SIZE and from_lmdb.size == size
        for i in range(len(from_lmdb)):
            a, b = from_folder[i]["image"], from_lmdb[i]["image"]
            assert b.shape == (3, size, size)
            assert (a - b).abs().mean() < 0.016  # the same LANCZOS resize of the PNG / JPEG copies


def test_size_picks_among_several_lmdb_sizes(tmp_path):
    path = tmp_path / "multi"
    env = lmdb.open(str(path), map_size=1 << 24, readahead=False)
    with env.begin(write=True) as txn:
        for res, colour in ((8, (200, 10, 10)), (32, (10, 200, 10)), (64, (10, 10, 200))):
            buffer = io.BytesIO()
            Image.new("RGB", (res, res), colour).save(buffer, format="JPEG", quality=100)
            txn.put(f"{res}-00000".encode("utf-8"), buffer.getvalue())
        txn.put(b"length", b"1")
    env.close()
    # exact match, nearest larger stored size, largest stored size
    for size, stored, colour in ((32, 32, (10, 200, 10)), (16, 32, (10, 200, 10)), (4, 8, (200, 10, 10)),
                                 (128, 64, (10, 10, 200))):
        ds = FaceDataset(path, size=size, flip=False)
        assert ds.stored_size == stored and ds[0]["image"].shape == (3, size, size)
        centre = (ds[0]["image"][:, size // 2, size // 2] + 1) * 127.5
        assert torch.allclose(centre, torch.tensor(colour, dtype=torch.float32), atol=3)


def test_works_with_dataloader_workers(tmp_path):
    prepare_folder(_smooth_folder(tmp_path / "src"), tmp_path / "p", PrepareSettings(size=SIZE), progress=False)
    for kwargs in ({}, {"prefer_lmdb": True}):
        ds = FaceDataset(tmp_path / "p", flip=True, seed=3, **kwargs)
        expected = torch.stack([ds[i]["image"] for i in range(len(ds))])
        loader = DataLoader(ds, batch_size=2, num_workers=2)
        batches = list(loader)
        assert torch.equal(torch.cat([b["image"] for b in batches]), expected)
        assert torch.cat([b["index"] for b in batches]).tolist() == [0, 1, 2, 3]


def test_size_resizes_images_and_gt(tmp_path):
    ds = FaceDataset(_synface_like(tmp_path / "s", count=2), size=8, flip=False)
    item = ds[0]
    assert item["image"].shape == (3, 8, 8) and item["depth"].shape == (8, 8)
    assert item["seg"].shape == (8, 8) and item["seg"].dtype == torch.uint8
    assert torch.allclose(item["normal"].norm(dim=0), torch.ones(8, 8), atol=1e-5)
    # Area resampling halves 16 → 8 by 2x2 means; the label map keeps existing class ids.
    full = FaceDataset(tmp_path / "s", flip=False)[0]
    expected_depth = full["depth"].reshape(8, 2, 8, 2).mean(dim=(1, 3))
    assert torch.allclose(item["depth"], expected_depth, atol=1e-6)
    assert set(item["seg"].unique().tolist()) <= set(full["seg"].unique().tolist())


def test_a_truncated_or_corrupt_gt_npz_is_a_one_line_error(tmp_path):
    root = _synface_like(tmp_path / "s", count=3)
    raw = folder.gt_path(root, 0).read_bytes()
    folder.gt_path(root, 0).write_bytes(raw[:len(raw) // 2])  # half an .npz: zipfile.BadZipFile
    corrupt = bytearray(folder.gt_path(root, 1).read_bytes())
    corrupt[len(corrupt) // 3] ^= 0xFF  # a flipped byte inside the first array
    folder.gt_path(root, 1).write_bytes(bytes(corrupt))
    ds = FaceDataset(root, flip=False)
    for index in (0, 1):
        with pytest.raises(Toon3dError, match=r"not a readable \.npz.*rebuild the dataset") as err:
            ds[index]
        assert "\n" not in str(err.value) and f"{index:06d}.npz" in str(err.value)
    assert ds[2]["depth"].shape == (SIZE, SIZE)


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(Toon3dError, match="not found"):
        FaceDataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(Toon3dError, match="neither a toon3d dataset"):
        FaceDataset(tmp_path / "plain")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(Toon3dError, match="not a folder"):
        FaceDataset(tmp_path / "file.png")
    root = _synface_like(tmp_path / "s", count=2)
    folder.image_path(root, 1).unlink()
    ds = FaceDataset(root, flip=False)
    with pytest.raises(Toon3dError, match="missing"):
        ds[1]
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(Toon3dError) as err:
        FaceDataset(root)
    assert "\n" not in str(err.value)
    with pytest.raises(Toon3dError, match="size must be a positive"):
        FaceDataset(root, size=0)
    with pytest.raises(IndexError):
        FaceDataset(_synface_like(tmp_path / "t", count=2))[2]

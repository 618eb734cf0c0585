"""Toon: SynFace faces drawn as cartoons, sharing SynFace's geometry ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from toon3d.cli import main
from toon3d.data.dataset import FaceDataset
from toon3d.errors import Toon3dError
from toon3d.synth.face_albedo import SEG_EYES, SEG_SKIN
from toon3d.synth.face_params import SynFaceParams, face_seeds
from toon3d.synth.synface import render_synface
from toon3d.synth.toon_style import ToonStyle, render_toon

torch.set_num_threads(1)
SIZE = 64


@pytest.fixture(scope="module")
def pair():
    """Faces 0-5 of seed 0 at 64 px, as toons and as SynFace."""
    params = SynFaceParams.sample(6, seed=0)
    return params, render_toon(params, SIZE), render_synface(params, SIZE)


def _luminance_u8(image: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] → [B,H,W] integer luminance of the 8-bit image."""
    u8 = ((image.clamp(-1, 1) + 1) * 127.5 + 0.5).floor()
    return (0.299 * u8[:, 0] + 0.587 * u8[:, 1] + 0.114 * u8[:, 2]).round()


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of a [B,H,W] bool mask whose 3x3 neighbourhood is inside it."""
    return -F.max_pool2d(-mask.float().unsqueeze(1), 3, 1, 1)[:, 0] > 0.5


def test_toon_is_deterministic_and_batch_independent(pair):
    params, toon, _ = pair
    again = render_toon(params, SIZE)
    alone = render_toon(params[2:3], SIZE)
    for key in ("image", "albedo", "seg", "canon_seg", "depth", "normal"):
        assert torch.equal(toon[key], again[key]), key
        assert torch.equal(toon[key][2:3], alone[key]), key


def test_toon_shares_synface_geometry_and_enlarges_eyes(pair):
    _, toon, syn = pair
    assert toon.keys() == syn.keys() and toon["camera"] == syn["camera"]
    for key in ("canon_depth", "canon_mask", "depth", "normal", "mask", "R", "t", "light", "background"):
        assert torch.equal(toon[key], syn[key]), key
    # Only the eyes' labels change (albedo/seg features on the same height field), and they grow.
    for seg_t, seg_s in ((toon["seg"], syn["seg"]), (toon["canon_seg"], syn["canon_seg"])):
        changed = seg_t != seg_s
        assert changed.any()
        assert torch.all((seg_t[changed] == SEG_EYES) | (seg_s[changed] == SEG_EYES))
        area_t, area_s = (seg_t == SEG_EYES).sum((1, 2)), (seg_s == SEG_EYES).sum((1, 2))
        has_eyes = area_s > 0
        assert has_eyes.sum() >= 4 and torch.all(area_t[has_eyes] > 1.5 * area_s[has_eyes])
    assert not torch.equal(toon["image"], syn["image"]) and not torch.equal(toon["albedo"], syn["albedo"])


def test_toon_shading_is_banded(pair):
    _, toon, syn = pair
    n_bands = len(ToonStyle().band_levels)
    # Canonical frame: where the toon albedo is the face's flat skin colour, the shaded image
    # takes one value per band; SynFace's smooth shading and mottled skin take dozens.
    for i in range(len(toon["image"])):
        albedo = toon["albedo"][i]
        flat = (albedo == albedo[:, SIZE // 2:SIZE // 2 + 1, SIZE // 2:SIZE // 2 + 1]).all(0)
        flat &= toon["canon_seg"][i] == SEG_SKIN
        assert flat.sum() > 200
        assert _luminance_u8(toon["canon_image"][i:i + 1])[0][flat].unique().numel() <= n_bands
        assert _luminance_u8(syn["canon_image"][i:i + 1])[0][flat].unique().numel() > 20
    # The posed image: inside the skin, the few most common grey levels (the bands of the skin
    # colour) cover most pixels; SynFace's skin is spread over many levels.
    def top_share(image, seg, i):
        values = _luminance_u8(image[i:i + 1])[0][_interior(seg == SEG_SKIN)[i]]
        counts = values.unique(return_counts=True)[1].sort(descending=True).values
        return float(counts[:n_bands].sum() / counts.sum())

    for i in range(len(toon["image"])):
        share_t, share_s = top_share(toon["image"], toon["seg"], i), top_share(syn["image"], syn["seg"], i)
        assert share_t > 0.45 and share_t > 2 * share_s, (i, share_t, share_s)


def test_toon_outlines_the_silhouette(pair):
    _, toon, syn = pair
    mask = toon["mask"].bool()
    padded = F.pad(mask, (1, 1, 1, 1), value=True)   # the image border is not a silhouette
    rim = mask & ~(padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
    line = torch.tensor(ToonStyle().outline_rgb) * 2 - 1
    rim_rgb = toon["image"].permute(0, 2, 3, 1)[rim]
    assert rim.sum() > 300 and torch.allclose(rim_rgb, line.expand_as(rim_rgb), atol=1e-6)
    assert _luminance_u8(syn["image"])[rim].float().mean() > 2 * _luminance_u8(toon["image"])[rim].float().mean()
    # Lines are thicker at larger sizes: 1 px at 64, 2 px at 128.
    assert ToonStyle().outline_px(64) == 1 and ToonStyle().outline_px(128) == 2


def test_toon_style_rejects_bad_settings():
    with pytest.raises(Toon3dError, match="band levels"):
        ToonStyle(band_edges=(0.3,), band_levels=(0.5, 0.7, 1.0))
    with pytest.raises(Toon3dError, match="eye_scale"):
        ToonStyle(eye_scale=2.5)


def test_toon_cli_writes_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "toon"
    assert main(["data", "toon", "--n", "3", "--size", "64", "--out", str(out), "--seed", "2", "--batch", "2"]) == 0
    assert "wrote 3 toon images" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "toon" and meta["count"] == 3 and meta["far"] == 1.2
    assert meta["pixel_offset"] == 0.0 and meta["fov_deg"] == 10.0 and meta["rot_center_depth"] == 1.0
    assert meta["toon_style"]["eye_scale"] == ToonStyle().eye_scale
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in labels] == face_seeds(3, 2)

    params = SynFaceParams.from_seeds([labels[1]["seed"]])
    toon, syn = render_toon(params, 64), render_synface(params, 64)
    gt = np.load(out / "gt" / "000001.npz")
    assert np.array_equal(gt["depth"], syn["depth"][0].numpy())          # SynFace's geometry
    assert np.array_equal(gt["canon_depth"], syn["canon_depth"][0].numpy())
    assert np.array_equal(gt["seg"], toon["seg"][0].numpy())             # the toon's labels
    image = np.asarray(Image.open(out / "images" / "000001.png")).astype(int)
    ref = ((toon["image"][0].permute(1, 2, 0) + 1) * 127.5 + 0.5).numpy().astype(np.uint8).astype(int)
    assert np.abs(image - ref).max() <= 1

    ds = FaceDataset(out, flip=False)
    assert ds.kind == "toon"
    item = ds[1]
    assert tuple(item["image"].shape) == (3, 64, 64)
    for key in ("canon_depth", "depth", "normal", "seg", "mask", "albedo"):
        assert key in item, key
    assert torch.equal(item["depth"], syn["depth"][0])


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "n must be a positive integer"),
    (["--size", "32"], "outside 64-256"),
    (["--batch", "x"], "--batch must be an integer"),
])
def test_toon_cli_bad_numbers(tmp_path, capsys, args, message):
    out = tmp_path / "toon"
    rc = main(["data", "toon", "--n", "2", "--size", "64", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err and err.startswith("toon3d data: error:")
    assert not out.exists()

"""Every shipped discriminator gets a model card, and the shipped ones have theirs."""

from __future__ import annotations

from pathlib import Path

import torch

from toon3d.models import WEIGHTS_DIR
from toon3d.stylegan2.checkpoints import save_discriminator
from toon3d.stylegan2.discriminator import Discriminator
from toon3d.train.ship import write_discriminator_card


def test_discriminator_card_has_training_figures_and_file(tmp_path):
    torch.manual_seed(0)
    path = save_discriminator(tmp_path / "style_d.safetensors", Discriminator(32, channel_max=16), {"name": "style_d"})
    phases = [{"what": "fine-tune", "command": "toon3d finetune --ckpt base ...", "iterations": 5, "minutes": 1.5,
               "data": "data/style32"}]
    card = write_discriminator_card(path, "style", phases, {"real-vs-fake accuracy": "0.9"}).read_text()
    for needed in ("# Built-in model `style_d`", "toon3d finetune --ckpt base ...", "5 iterations",
                   "data: data/style32", "seed: 0", "real-vs-fake accuracy: 0.9", "`style_d.safetensors`",
                   '"channel_max": 16'):
        assert needed in card, needed


def test_every_shipped_weight_file_has_a_card():
    missing = [p.name for p in Path(WEIGHTS_DIR).glob("*.safetensors") if not p.with_suffix(".md").is_file()]
    assert missing == []

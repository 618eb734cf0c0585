"""The avatar pipeline's photo start: align the photo to the generator's layout, then invert it into W.

The paper's real-photo path (IV-E): FFHQ alignment for an FFHQ generator (the SynFace layout for
the built-in ones, `toon3d.faces.align.layout_for_generator`), then rosinality's projector in W,
started from the shipped encoder's prediction when one matches the generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Projector steps for an avatar: the encoder start makes a short projection enough on CPU
# (benchmarks/bench_invert.py measures quality against steps).
AVATAR_INVERT_STEPS = 100


def latent_from_photo(source, models, folder: Path, progress: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(w [1,D] on the run's device, aligned photo [1,3,S,S] in [-1,1], record) for `source.photo`."""
    from toon3d.faces.align import align_photo, layout_for_generator
    from toon3d.invert.inversion import invert

    loaded = models.human
    layout = layout_for_generator(loaded)
    aligned = align_photo(source.photo, layout=layout, size=loaded.generator.size, face=source.face)
    target = aligned.tensor()
    result = invert(loaded, target, steps=AVATAR_INVERT_STEPS, encoder="auto", device=models.device,
                    embedder=models.embedder, progress=progress)
    w = result.latent.to(models.device)
    if w.dim() == 3:
        w = w[:, 0]
    (folder / "alignment.json").write_text(json.dumps(aligned.to_json(), indent=2) + "\n")
    record = {"photo": str(source.photo), "face": aligned.face_index, "faces_found": len(aligned.faces),
              "layout": layout, "alignment_notes": list(aligned.notes),
              "inversion": {"steps": AVATAR_INVERT_STEPS, "start": result.start, "loss": result.loss,
                            "notes": result.notes}}
    return w, target.float(), record

"""Can the generator show a face turned, when GAN2Shape's projection asks it to? (Stage 3's premise)

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_projection_views.py --n 8 [--ckpt base] [--out FILE.json]

GAN2Shape learns shape from pseudo samples: the current 3D guess rendered at another view, then
projected through the GAN, I_p = G(w + ψ·Δw). The projection is informative only if the GAN can
draw the same face at that view. This measures that on the built-in world, where the true turned
face exists: for test faces 0..n−1 of Table II (anchored SynFace renders of params_from_latent(z),
whose latent w the generator was trained on), each face's true yaw is changed by δ ∈ --deltas
(clipped to SynFace's ±40°) and the face re-rendered: a *perfect* pseudo sample T. Then

- `encoder`: I_p with Δw from the shipped reconstructor's latent encoder E (what step 3 sees);
- `optimised`: Δw fitted to T directly (Adam, --steps steps, L1 + 0.01‖Δw‖², as Eq. 16 without
  L_dis): what the generator can show at best through a W offset;
- `G(w)`: no offset (the input's own view).

Each image's *apparent yaw* is the yaw whose re-render of the same face (same light, expression,
backdrop) is nearest in L1, on a 2.5° grid over ±40°. Printed: mean |apparent − asked| yaw, the
slope of apparent against asked change (1 = turns as asked, 0 = does not turn), and the L1 to T.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="base", help="the generator (a built-in SynFace decoder: base)")
    p.add_argument("--reconstructor", default="base", help="shape model whose latent encoder E projects")
    p.add_argument("--n", type=int, default=8, help="test faces (default 8)")
    p.add_argument("--deltas", default="-30,-15,15,30", help="yaw changes in degrees")
    p.add_argument("--steps", type=int, default=100, help="Adam steps of the optimised projection")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file for the figures")
    return p.parse_args(argv)


def rendered(params, yaw: torch.Tensor, size: int) -> torch.Tensor:
    """Anchored SynFace renders of `params` with yaw_deg replaced: [B,3,S,S] in [-1,1]."""
    from toon3d.synth.face_params import PARAM_NAMES, SynFaceParams
    from toon3d.synth.synface import SynFaceSettings, render_synface

    table = params.to_tensor().clone()
    table[:, PARAM_NAMES.index("yaw_deg")] = yaw
    return render_synface(SynFaceParams.from_tensor(table), size, settings=SynFaceSettings(anchor_eyes=True))["image"]


def apparent_yaw(images: torch.Tensor, refs: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """images [B,3,S,S] of one face → the grid yaw [B] whose render of that face (refs [G,3,S,S]) is nearest in L1."""
    d = (images[:, None] - refs[None]).abs().mean((2, 3, 4))
    return grid[d.argmin(1)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from toon3d.metrics.shape_worlds import case_seed
    from toon3d.models import resolve_generator
    from toon3d.seeds import z_from_seed
    from toon3d.shape.instant import resolve_shape_model
    from toon3d.shape.latent_offset import LatentProjector
    from toon3d.shape.settings import preset
    from toon3d.synth.face_params import PARAM_NAMES, SynFaceParams
    from toon3d.synth.latent_params import params_from_latent

    loaded = resolve_generator(args.ckpt)
    g = loaded.generator.eval()
    for p in g.parameters():
        p.requires_grad_(False)
    settings = preset("cpu")
    nets, _, meta = resolve_shape_model(args.reconstructor, encoder={"latent_dim": g.style_dim,
                                                                     "nf_encoder": settings.nf_encoder})
    if not meta.get("encoder_loaded"):
        print(f"note: {args.reconstructor} holds no latent encoder of this size; E is fresh", file=sys.stderr)
    projector = LatentProjector(g, settings.tail_layers(len(g.style) - 1), settings.truncation,
                                settings.relative_enc, g.size)
    size = g.size
    grid = torch.arange(-40.0, 40.01, 2.5)
    deltas = [float(v) for v in args.deltas.split(",") if v]
    rows = {"encoder": [], "optimised": [], "G(w)": [], "target": []}
    start = time.perf_counter()
    for i in range(args.n):
        z = z_from_seed(case_seed(i), g.style_dim)[0]
        params = params_from_latent(z)
        yaw0 = float(params.to_tensor()[0, PARAM_NAMES.index("yaw_deg")])
        w = g.mapping(z)
        asked = torch.tensor([min(40.0, max(-40.0, yaw0 + d)) for d in deltas])
        targets = rendered(SynFaceParams.from_tensor(params.to_tensor().expand(len(deltas), -1)), asked, size)
        refs = rendered(SynFaceParams.from_tensor(params.to_tensor().expand(len(grid), -1)), grid, size)
        with torch.no_grad():
            enc = projector.generate(w, projector.offset(nets.encoder, targets))
            own = projector.generate(w)
        delta = torch.zeros(len(deltas), g.style_dim, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=0.05)
        for _ in range(args.steps):
            image = projector.generate(w, delta)
            loss = (image - targets).abs().mean() + 0.01 * delta.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            fitted = projector.generate(w, delta)
        for name, images in (("encoder", enc), ("optimised", fitted), ("G(w)", own.expand(len(deltas), -1, -1, -1)),
                             ("target", targets)):
            seen = apparent_yaw(images, refs, grid)
            # A change is read from the image's own start: G(w)'s apparent yaw, or the true yaw for T.
            seen0 = apparent_yaw(own, refs, grid)[0] if name != "target" else torch.tensor(yaw0)
            for k, d in enumerate(deltas):
                rows[name].append({"face": i, "yaw0": yaw0, "asked": float(asked[k]), "seen": float(seen[k]),
                                   "asked_change": float(asked[k]) - yaw0, "seen_change": float(seen[k] - seen0),
                                   "l1_to_target": float((images[k] - targets[k]).abs().mean())})
    figures = {}
    for name, r in rows.items():
        a = np.array([x["asked_change"] for x in r])
        s = np.array([x["seen_change"] for x in r])
        figures[name] = {"yaw_error_deg": float(np.mean([abs(x["seen"] - x["asked"]) for x in r])),
                         "slope_seen_vs_asked": float((a * s).sum() / (a * a).sum()),
                         "l1_to_target": float(np.mean([x["l1_to_target"] for x in r]))}
    print(f"{args.n} faces × yaw changes {deltas} ({time.perf_counter() - start:.0f} s); generator {loaded.source}")
    print("| projection | mean abs(apparent − asked yaw) | slope of apparent vs asked change "
          "| L1 to the true turned face |")
    print("|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['yaw_error_deg']:.1f}° | {f['slope_seen_vs_asked']:.2f} | {f['l1_to_target']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "generator": loaded.source,
                                              "figures": figures, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

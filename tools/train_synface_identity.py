"""Train, score and ship the built-in world's identity network (`toon3d.faces.synface_identity`).

    OMP_NUM_THREADS=1 python tools/train_synface_identity.py --out /work/runs/synface_identity \
        [--n-ids 4000] [--per-id 8] [--steps 3000] [--ship]

Renders (or reuses, from --out) a pool of SynFace identities at 64 px (`identity_pool`: each
identity under other expressions, poses, lights, backdrops; anchored and plain views), trains the
network with CosFace at 1 thread, and scores it on held-out identities (data-set seed
--heldout-seed: verification EER, TAR at 1% FAR, rank-1) and on built-in base generator samples
(does G(z) embed nearest to the SynFace render of its own latent's parameters, among 256). Writes
identity.safetensors + identity_figures.json into --out; --ship writes the fp16 weights and the
card toon3d/weights/identity_synface.{safetensors,md}. --eval-only scores the file in --out again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from toon3d.faces.identity_training import embed_all, identity_pool, train_identity, verification_scores
from toon3d.faces.synface_identity import (WEIGHTS_NAME, IdentityNetConfig, SynFaceEmbedder,
                                           identity_config_dict, load_synface_embedder)
from toon3d.faces.synface_training import TrainSettings
from toon3d.io.checkpoint import load_training_state, save_model, save_training_state

COMMAND = "python tools/train_synface_identity.py " + " ".join(sys.argv[1:])
BASE_SEED = 7


def cached_pool(out: Path, n_ids: int, per_id: int, seed: int) -> dict:
    path = out / f"idpool_{seed}_{n_ids}x{per_id}.pt"
    if path.is_file():
        return load_training_state(path)
    start = time.process_time()
    data = identity_pool(n_ids, per_id, seed)
    data["render_cpu_seconds"] = round(time.process_time() - start, 1)
    save_training_state(path, data)
    return data


@torch.no_grad()
def base_figures(embedder: SynFaceEmbedder, n: int = 256) -> dict:
    """Built-in base samples G(z) against the anchored SynFace renders of params_from_latent(z)."""
    from toon3d.edit.directions import apply_direction
    from toon3d.models import default_generator
    from toon3d.synth.latent_params import params_from_latent
    from toon3d.synth.synface import SynFaceSettings, render_synface

    loaded = default_generator("base")
    g = loaded.generator.eval()
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(BASE_SEED))
    w = g.mapping(z)
    images = g.synthesis(apply_direction(w, torch.zeros(g.style_dim), g.n_latent), noise_mode="const").clamp(-1, 1)
    renders = render_synface(params_from_latent(z), g.size, settings=SynFaceSettings(anchor_eyes=True))["image"]
    eg, er = embed_all(embedder, images), embed_all(embedder, renders)
    d = torch.cdist(eg.double(), er.double())
    own = d.diagonal()
    others = d[~torch.eye(n, dtype=torch.bool)]
    rank1 = float((d.argmin(1) == torch.arange(n)).double().mean())
    return {"source": loaded.source, "n": n, "rank1_render_of_own_latent": rank1,
            "mean_distance_own_render": float(own.mean()), "mean_distance_other_renders": float(others.mean()),
            "own_render_within_threshold": (float((own <= embedder.same_person_threshold).double().mean())
                                            if embedder.same_person_threshold is not None else None)}


def figures(embedder: SynFaceEmbedder, heldout: dict) -> dict:
    return {"heldout_synface": verification_scores(embed_all(embedder, heldout["images"]), heldout["labels"]),
            "base_generator": base_figures(embedder)}


def summary(f: dict) -> dict:
    h, b = f["heldout_synface"], f["base_generator"]
    return {"held-out identities: EER / its L2 threshold": f"{h['eer']:.4f} / {h['eer_threshold']:.4f}",
            "held-out: TAR at 1% FAR / rank-1": f"{h['tar_at_far_1pct']:.4f} / {h['rank1']:.4f}",
            "held-out: mean L2 same / different identity":
                f"{h['mean_distance_same']:.4f} / {h['mean_distance_different']:.4f}",
            "base samples: rank-1 of own latent's render among 256 / own render within threshold":
                f"{b['rank1_render_of_own_latent']:.4f} / {b['own_render_within_threshold']}",
            "base samples: mean L2 to own render / other renders":
                f"{b['mean_distance_own_render']:.4f} / {b['mean_distance_other_renders']:.4f}"}


NOTES = ("The built-in world's identity network (`toon3d.faces.synface_identity`): the analogue of the paper's "
         "LResNet-18 (trained on CASIA-WebFace people) for SynFace people. A small CNN trained with CosFace to tell "
         "SynFace identities apart under other expressions, poses, lights and backdrops (anchored and plain views); "
         "it never sees an identity parameter. `toon3d edit --identity synface` uses it for L_id and f_low (conv unit "
         "4). The attribute oracle, trained on other renders to regress parameters, stays the measuring instrument, "
         "but both nets learned from the same world: the oracle is a less independent judge of edits refined with "
         "this network than of edits refined with dlib. Training minutes are process CPU time at 1 thread.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-ids", type=int, default=4000)
    ap.add_argument("--per-id", type=int, default=8)
    ap.add_argument("--heldout-ids", type=int, default=500)
    ap.add_argument("--heldout-per-id", type=int, default=4)
    ap.add_argument("--data-seed", type=int, default=3000)
    ap.add_argument("--heldout-seed", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--margin", type=float, default=0.3)
    ap.add_argument("--scale", type=float, default=30.0)
    ap.add_argument("--widths", default="16,32,64,96")
    ap.add_argument("--cpu-budget", type=float, default=3600.0, help="CPU seconds (early stop)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    from toon3d.models import WEIGHTS_DIR

    run_file = args.out / "identity.safetensors"
    heldout = cached_pool(args.out, args.heldout_ids, args.heldout_per_id, args.heldout_seed)
    data = (f"{args.n_ids} SynFace identities × {args.per_id} renders at 64 px (data-set seed {args.data_seed}; "
            f"nuisance seeds +100..+{100 + args.per_id - 1}; even renders anchored, odd plain); held-out: "
            f"{args.heldout_ids} × {args.heldout_per_id} of seed {args.heldout_seed}")
    if args.eval_only:
        from toon3d.io.checkpoint import load_model_file

        stored = load_model_file(run_file).meta
        record, provenance = stored["training"], {"command": stored.get("command", "unrecorded"),
                                                  "data": stored.get("data", data)}
    else:
        train = cached_pool(args.out, args.n_ids, args.per_id, args.data_seed)
        config = IdentityNetConfig(widths=tuple(int(v) for v in args.widths.split(",")))
        settings = TrainSettings(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                                 cpu_budget_s=args.cpu_budget)
        net, record = train_identity(train, settings, config, args.scale, args.margin)
        record["render_cpu_seconds"] = train.get("render_cpu_seconds")
        provenance = {"command": COMMAND, "data": data}
        threshold = verification_scores(embed_all(net, heldout["images"]), heldout["labels"])["eer_threshold"]
        save_model(run_file, net.state_dict(), identity_config_dict(net.config),
                   {"training": record, "same_person_threshold": threshold, **provenance})
    embedder = load_synface_embedder(run_file)
    found = figures(embedder, heldout)
    (args.out / "identity_figures.json").write_text(json.dumps({"training": record, "figures": found}, indent=1) + "\n")
    print(json.dumps(summary(found), indent=1))
    print("training", json.dumps(record))
    if args.ship:
        from toon3d.io.checkpoint import load_model_file
        from toon3d.train.ship import machine_description, write_card

        stored = load_model_file(run_file)
        half = {k: v.half() if v.is_floating_point() else v for k, v in embedder.net.state_dict().items()}
        weights = save_model(WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors", half, stored.config, stored.meta)
        phase = {"what": "SynFace identity network: CosFace (s, m in the record) over identity labels",
                 "command": provenance["command"], "iterations": record["steps_done"],
                 "minutes": round(record["cpu_seconds"] / 60, 1), "data": provenance["data"]}
        write_card(WEIGHTS_DIR / f"{WEIGHTS_NAME}.md", WEIGHTS_NAME, stored.config,
                   {"phases": [phase], "machine": machine_description() + ", 1 thread", "figures": summary(found)},
                   [weights], NOTES)
        print("shipped", weights)


if __name__ == "__main__":
    main()

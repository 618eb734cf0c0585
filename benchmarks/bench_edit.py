"""Stage 2 figures: SeFa vs the identity-preserving refinement, measured with the attribute oracle and dlib.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_edit.py --n 64 --out /work/runs/bench_edit.json

On the built-in world (`--ckpt base`): the directions of G_base are factorised (SeFa, all
layers) and named as `toon3d edit` names them (`toon3d.edit.name_by`, `--name-by auto`: the
attribute oracle, dlib's landmarks for parameters it reads badly), on `--name-samples` latents of
seed `--name-seed`. Then, on `--n` other latents (seed `--seed`, ψ 0.7) and for each named
expression, the edit w → w + Δw is made

  - by SeFa, Δw = α·n (α = `--strength`);
  - by the refinement (`toon3d.edit.refine`, each of `--modes`, the defaults of `toon3d edit`:
    10 steps, lr 0.1, dlib's face ResNet for L_id and f_low, the `--mask` face mask); for `code`
    the refinement is the symmetric one and w + Δw its + side; for `paper` the + edit alone;

and scored between the images of w and w + Δw:

  - Δ target: the change of the named expression parameter, read by the attribute oracle, in
    its units (0..1);
  - id params: mean |Δ| of the oracle's identity outputs, each in units of its range; `all`
    over every identity output, `readable` over those whose held-out R² ≥ 0.5 (the others are
    close to constant predictions);
  - dlib: L2 between dlib descriptors (the PyTorch port, `toon3d.faces.identity`) of the two
    images. The refinement minimises this very distance (L_id), so it is not an independent
    judge; the oracle's identity parameters are.

Matched comparison: SeFa is also run at α·`--sweep` multiples; its identity scores are
interpolated (linearly in Δ target) at each refined edit's Δ target, so the two are compared
at an equal expression change (blank when that change is outside SeFa's swept range).

Timings (wall seconds, `--threads` threads): one refined edit as `toon3d edit` runs it (one
latent, both signs) on the defaults, and on a random-weight 256 px, channel-multiplier-2,
512-d generator (the shape of rosinality's 550000.pt; `--timing-256` edits, 0 skips it; mask
as `--mask auto` chooses for a non-built-in generator without BiSeNet weights: the ellipse).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_NAMES = ("smile", "mouth_open", "eyes_closed", "brows_up")
DEFAULT_SWEEP = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
LOW_BLOCKS = 4  # f_low = dlib's stem + first three residual units, as `toon3d edit` takes it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="base", help="G_base: base (default) | PATH")
    p.add_argument("--n", type=int, default=64, help="latents each edit is scored on (default 64)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the scored latents (default 1000)")
    p.add_argument("--names", default=",".join(DEFAULT_NAMES), help="expressions to edit, comma-separated")
    p.add_argument("--modes", default="code,paper", help="refinement modes, comma-separated (code, paper)")
    p.add_argument("--strength", type=float, default=3.0, help="alpha of the SeFa start (default 3)")
    p.add_argument("--sweep", default=",".join(f"{s:g}" for s in DEFAULT_SWEEP),
                   help="multiples of alpha SeFa is also run at, for the matched comparison")
    p.add_argument("--truncation", type=float, default=0.7, help="psi of the scored latents (default 0.7)")
    p.add_argument("--steps", type=int, default=10, help="refinement steps (default 10)")
    p.add_argument("--lr", type=float, default=0.1, help="refinement learning rate (default 0.1)")
    p.add_argument("--identity", default="dlib",
                   help="identity networks the refinement uses for L_id and f_low, comma-separated: dlib (default), "
                        "synface (the built-in world's), lresnet; the dlib distance column is always dlib's")
    p.add_argument("--mask", default="auto", help="face mask of L_low: auto|bisenet|synface|ellipse|none")
    p.add_argument("--name-by", default="auto", help="auto|landmarks|oracle (toon3d.edit.name_by)")
    p.add_argument("--top", type=int, default=10, help="directions measured for the names (default 10)")
    p.add_argument("--name-samples", type=int, default=64, help="latents the names are measured on (default 64)")
    p.add_argument("--name-seed", type=int, default=0, help="seed of the naming latents (default 0)")
    p.add_argument("--chunk", type=int, default=16, help="latents per refinement batch (default 16)")
    p.add_argument("--timing-repeats", type=int, default=3, help="timed refined edits on the defaults (default 3)")
    p.add_argument("--timing-256", type=int, default=2, help="timed edits on the 256 px generator (0 skips)")
    p.add_argument("--sizes-256", default="full,128",
                   help="synthesis sizes the 256 px edits are timed at (full, or N: toon3d edit --synthesis-size N)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--only-timing", action="store_true", help="skip the figures; time edits along direction 0")
    p.add_argument("--out", default=None, help="JSON file for everything measured")
    return p.parse_args(argv)


# ---- scoring -----------------------------------------------------------------------------------


@torch.no_grad()
def render(g, w: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
    """W codes [B,D] (+ offsets [B,D]) → images [B,3,S,S] in [-1,1] with the generator's fixed noise."""
    from toon3d.edit.directions import apply_direction

    offset = torch.zeros_like(w) if delta is None else delta
    return g.synthesis(apply_direction(w, offset, g.n_latent), noise_mode="const").clamp(-1, 1)


class Scorer:
    """Scores edits: oracle readings and dlib descriptors of neutral vs edited images."""

    def __init__(self, oracle, embedder, target: str, want: int = 1) -> None:
        from toon3d.faces.attribute_oracle import READABLE_R2
        from toon3d.synth.face_params import PARAM_SPECS

        self.oracle, self.embedder, self.target, self.want = oracle, embedder, target, want
        self.column = oracle.index(target)
        ident = [i for i, p in enumerate(oracle.params) if PARAM_SPECS[p][0] == "identity"]
        self.identity_all = ident
        self.identity_readable = [i for i in ident if oracle.r2 is None
                                  or oracle.r2.get(oracle.params[i], 0.0) >= READABLE_R2]
        # Δ target is signed so that > 0 is the way the name wants (yaw wants yaw_deg down).
        self.span = want * float(oracle.high[self.column] - oracle.low[self.column])

    @torch.no_grad()
    def reference(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(oracle unit readings [B,P], dlib descriptors [B,128]) of the neutral images."""
        return self.oracle.predict_unit(images).cpu(), self.embedder.embed(images).cpu()

    @torch.no_grad()
    def score(self, ref: tuple[torch.Tensor, torch.Tensor], images: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-latent scores [B] of edited images against the neutral references."""
        unit, desc = self.oracle.predict_unit(images).cpu(), self.embedder.embed(images).cpu()
        d = unit - ref[0]
        return {"target": (d[:, self.column] * self.span).double().numpy(),
                "id_all": d[:, self.identity_all].abs().mean(1).double().numpy(),
                "id_readable": (d[:, self.identity_readable].abs().mean(1).double().numpy()
                                if self.identity_readable else np.full(len(d), np.nan)),
                "dlib": (desc - ref[1]).norm(dim=1).double().numpy()}


def summary(scores: dict[str, np.ndarray], delta_norm: np.ndarray) -> dict:
    """Means (and sds) over latents of per-latent scores."""
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    out.update({f"{k}_sd": float(np.std(v)) for k, v in scores.items()})
    out["delta_norm"] = float(np.mean(delta_norm))
    out["target_positive"] = float(np.mean(scores["target"] > 0))
    return out


def matched_sefa(sweep: list[dict], target: float) -> dict | None:
    """SeFa's identity scores interpolated at Δ target = `target` along the α sweep (None outside its range).

    `sweep`: SeFa summaries with an "alpha" key, in increasing α. Interpolation is linear in Δ
    target between the two sweep points that bracket it (the first such pair, walking up in α).
    """
    for lo, hi in zip(sweep, sweep[1:]):
        a, b = lo["target"], hi["target"]
        if min(a, b) <= target <= max(a, b) and a != b:
            t = (target - a) / (b - a)
            return {k: lo[k] + t * (hi[k] - lo[k]) for k in ("alpha", "id_all", "id_readable", "dlib", "target")}
    return None


# ---- the table ---------------------------------------------------------------------------------


def _f(value, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, fmt)


def markdown_table(rows: list[dict]) -> str:
    """The figures as a Markdown table: one row per (expression, method)."""
    lines = ["| expression (oracle R²) | direction | method | α or \\|Δw\\| | Δ target (> 0) | id params all | "
             "id params readable | dlib distance | SeFa at equal Δ target: α / readable / dlib |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.get("sefa_matched")
        matched = "–" if m is None else f"{m['alpha']:.2f} / {m['id_readable']:.4f} / {m['dlib']:.4f}"
        if r["method"] == "sefa":
            matched = ""
        lines.append(
            f"| {r['name']} ({r['param']}, {_f(r.get('r2'), '.2f')}) | {r['direction']} | {r['method']} | "
            f"{r['delta_norm']:.2f} | {r['target']:+.3f} ± {r['target_sd']:.3f} ({r['target_positive']:.0%}) | "
            f"{r['id_all']:.4f} | {_f(r['id_readable'], '.4f')} | {r['dlib']:.4f} ± {r['dlib_sd']:.4f} | "
            f"{matched} |")
    return "\n".join(lines)


def timing_table(timings: list[dict]) -> str:
    """Timings as a Markdown table."""
    lines = ["| generator | mode | refined edit, wall s (median) | CPU s (median) | runs | threads |",
             "|---|---|---|---|---|---|"]
    for t in timings:
        cpu = _f(t.get("median_cpu_s"), ".2f")
        lines.append(f"| {t['generator']} | {t['mode']} | {t['median_s']:.2f} | {cpu} | {len(t['seconds'])} | "
                     f"{t['threads']} |")
    return "\n".join(lines)


# ---- running -----------------------------------------------------------------------------------


def refine(g, w, n, alpha: float, embedder, mask_fn, mode: str, steps: int, lr: float):
    """Refined Δw [B,D] of w [B,D] along n, as `toon3d edit` does it (+ side for paper, symmetric for code)."""
    from toon3d.edit.refine import refine_direction

    def low(images):
        return embedder.features(images, LOW_BLOCKS)[-1]

    return refine_direction(g, w, n, alpha, embedder.embed, low, mask_fn, mode, steps, lr).delta_w


def time_edit(g, w, n, alpha: float, embedder, mask_fn, mode: str, steps: int, lr: float,
              synthesis_size: int | None = None) -> tuple[float, float]:
    """(wall, process CPU) seconds of one `toon3d edit` refinement of one latent w [1,D] (both signs)."""
    from toon3d.edit.refine import refine_direction

    def low(images):
        return embedder.features(images, LOW_BLOCKS)[-1]

    start, cpu = time.perf_counter(), time.process_time()
    if mode == "paper":
        refine_direction(g, w.expand(2, -1), n, torch.tensor([alpha, -alpha]), embedder.embed, low, mask_fn,
                         "paper", steps, lr, synthesis_size=synthesis_size)
    else:
        refine_direction(g, w, n, alpha, embedder.embed, low, mask_fn, "code", steps, lr,
                         synthesis_size=synthesis_size)
    return time.perf_counter() - start, time.process_time() - cpu


def _timing(generator: str, mode: str, runs: list[tuple[float, float]], threads: int, mask: str) -> dict:
    wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
    return {"generator": generator, "mode": mode, "seconds": wall, "cpu_seconds": cpu,
            "median_s": statistics.median(wall), "median_cpu_s": statistics.median(cpu), "threads": threads,
            "mask": mask}


def random_256_generator(seed: int = 0):
    """A random-weight 256 px, channel-multiplier-2, 512-d, 8-layer-mapping generator (550000.pt's shape)."""
    from toon3d.stylegan2.generator import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(256, 512, 8, channel_multiplier=2)
    with torch.no_grad():
        for key, p in g.named_parameters():
            if key.endswith("noise.weight"):
                p.fill_(0.1)
    return g.eval()


def run(args: argparse.Namespace) -> dict:
    """Measure everything; → the JSON record (also printed as Markdown)."""
    from tqdm import tqdm

    from toon3d.edit.directions import DEFAULT_VARIANT, factorize
    from toon3d.edit.masks import choose_mask, face_ellipse_mask
    from toon3d.edit.name_by import is_builtin_base, naming_oracle
    from toon3d.edit.naming import ORACLE_TARGETS, measure_directions, sample_w
    from toon3d.errors import Toon3dError
    from toon3d.faces.attribute_oracle import load_attribute_oracle
    from toon3d.faces.identity import load_identity_embedder
    from toon3d.models import resolve_generator

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    names = [s for s in args.names.split(",") if s]
    modes = [s for s in args.modes.split(",") if s]
    sweep = sorted(float(s) for s in args.sweep.split(",") if s)
    if 1.0 not in sweep:
        sweep = sorted([*sweep, 1.0])
    loaded = resolve_generator(args.ckpt)
    g = loaded.generator.eval()
    mean = loaded.mean_latent.to(device)
    notes = []
    if loaded.meta.get("untrained"):
        notes.append(f"{loaded.source} is the untrained stand-in: figures mean nothing")
    factor = factorize(g, DEFAULT_VARIANT, None, ckpt=loaded.source)
    name_oracle, note = naming_oracle(args.name_by, args.ckpt, device)
    notes.append(note)
    t0 = time.perf_counter()
    table = None if args.only_timing else measure_directions(
        g, mean, factor, top=min(args.top, factor.dim), samples=args.name_samples, seed=args.name_seed,
        oracle=name_oracle, progress=False)
    naming_s = time.perf_counter() - t0
    oracle = name_oracle if name_oracle is not None else load_attribute_oracle().to(device).eval()
    embedder = load_identity_embedder("dlib").to(device).eval()
    identities = [s for s in args.identity.split(",") if s]
    refiners = {name: embedder if name == "dlib" else load_identity_embedder(name).to(device).eval()
                for name in identities}
    mask = choose_mask(args.mask, builtin_generator=is_builtin_base(args.ckpt), device=device)
    notes.append(mask.note)
    w_all = sample_w(g, mean, args.n, args.seed, args.truncation)
    neutral = torch.cat([render(g, w_all[i:i + args.chunk], None) for i in range(0, args.n, args.chunk)])

    rows, per_latent = [], {}
    jobs = []
    for name in names if table is not None else []:
        try:
            index, sign, how = table.resolved(name)
        except Toon3dError as err:
            notes.append(f"{name}: not resolved ({err}); skipped")
            continue
        jobs.append((name, index, sign, how))
    variants = [(mode, ident) for mode in modes for ident in identities]
    bar = tqdm(total=len(jobs) * (len(sweep) + len(variants)), desc="bench_edit", unit="edit", disable=None)
    for name, index, sign, how in jobs:
        param, want = ORACLE_TARGETS[name]
        scorer = Scorer(oracle, embedder, param, want)
        ref = scorer.reference(neutral)
        n = (sign * factor.direction(index)).to(device)
        base = {"name": name, "param": param, "r2": None if oracle.r2 is None else oracle.r2.get(param),
                "direction": f"{index}{'+' if sign > 0 else '-'}", "resolved_by": how}
        sefa_sweep = []
        for mult in sweep:
            alpha = args.strength * mult
            images = torch.cat([render(g, w_all[i:i + args.chunk], alpha * n.expand(len(w_all[i:i + args.chunk]), -1))
                                for i in range(0, args.n, args.chunk)])
            s = scorer.score(ref, images)
            sefa_sweep.append({"alpha": alpha, **summary(s, np.full(args.n, abs(alpha)))})
            if mult == 1.0:
                rows.append({**base, "method": "sefa", **sefa_sweep[-1]})
                per_latent[f"{name}/sefa"] = {k: v.tolist() for k, v in s.items()}
            bar.update(1)
        for mode, ident in variants:
            start = time.perf_counter()
            deltas = torch.cat([refine(g, w_all[i:i + args.chunk], n, args.strength, refiners[ident], mask.fn, mode,
                                       args.steps, args.lr) for i in range(0, args.n, args.chunk)])
            seconds = time.perf_counter() - start
            images = torch.cat([render(g, w_all[i:i + args.chunk], deltas[i:i + args.chunk])
                                for i in range(0, args.n, args.chunk)])
            s = scorer.score(ref, images)
            norms = deltas.norm(dim=1).double().numpy()
            summ = summary(s, norms)
            label = f"refined {mode}" + ("" if ident == "dlib" else f" ({ident})")
            rows.append({**base, "method": label, "identity": ident, **summ, "seconds": seconds,
                         "sefa_matched": matched_sefa(sefa_sweep, summ["target"])})
            per_latent[f"{name}/{label.replace(' ', '_')}"] = {**{k: v.tolist() for k, v in s.items()},
                                                    "delta_norm": norms.tolist()}
            bar.update(1)
        rows[-1 - len(variants)]["sweep"] = sefa_sweep
    bar.close()

    timings = []
    if args.timing_repeats > 0:
        n0 = (jobs[0][2] * factor.direction(jobs[0][1]) if jobs else factor.direction(0)).to(device)
        for mode, ident in variants:
            runs = [time_edit(g, w_all[:1], n0, args.strength, refiners[ident], mask.fn, mode, args.steps, args.lr)
                    for _ in range(args.timing_repeats)]
            label = mode + ("" if ident == "dlib" else f" ({ident})")
            timings.append(_timing(f"{loaded.source} ({g.size} px)", label, runs, args.threads, mask.name))
    if args.timing_256 > 0:
        big = random_256_generator()
        with torch.no_grad():
            big_mean = big.mean_latent(256, generator=torch.Generator().manual_seed(0))
            w_big = big_mean + 0.7 * (big.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(1)))
                                      - big_mean)
        n_big = factorize(big).direction(0)
        for size in [s.strip() for s in args.sizes_256.split(",") if s.strip()]:
            stop = None if size == "full" else int(size)
            for mode in modes:
                runs = [time_edit(big, w_big, n_big, args.strength, embedder, face_ellipse_mask, mode, args.steps,
                                  args.lr, stop) for _ in range(args.timing_256)]
                label = "random 256 px, channel multiplier 2, W 512" + ("" if stop is None else f", losses at {stop} px")
                timings.append(_timing(label, mode, runs, args.threads, "ellipse"))
    return {"benchmark": "bench_edit", "settings": vars(args), "generator": loaded.source,
            "oracle_r2": oracle.r2, "notes": notes, "naming_seconds": naming_s,
            "names": {name: {"index": i, "sign": s, "resolved_by": how} for name, i, s, how in jobs},
            "rows": rows, "per_latent": per_latent, "timings": timings,
            "table": markdown_table(rows), "timing_table": timing_table(timings)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = run(args)
    print("\n".join(f"note: {n}" for n in record["notes"]))
    print()
    print(record["table"])
    print()
    print(record["timing_table"])
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

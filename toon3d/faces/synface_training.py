"""Training and scoring of the built-in world's face networks: the SynFace parser and the attribute oracle.

Data: a pool of SynFace faces rendered once (`render_pool`; 64 px, seeds from
`SynFaceParams.sample(n, seed)`), holding each image (uint8), its parser labels (SynFace's
ground-truth segmentation with the skin split into face, ears and neck by the head layer each
pixel lies on, `parsing_labels`) and the parameters SynFace drew. Held-out pools use another
data-set seed, so no face repeats.

Augmentation (both networks): half of each batch is blurred with a Gaussian of σ ∈ [0.3, 1.2] px
and every image gets pixel noise of σ ∈ [0, 0.03], because the built-in generator draws softer
faces than the renderer (docs/faces.md). The parser also sees horizontal flips and a mild
brightness/contrast jitter; the oracle does not (a flip changes yaw, roll, hair parting and
eye slant; colour jitter changes skin tone and hair colour, which it predicts).

Training is deterministic for a seed (batches and augmentation from `torch.Generator`s) and
runs a fixed number of steps; `cpu_budget_s` only stops a run early on a slower machine, and
the record says when it did.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from toon3d.faces.attribute_oracle import AttributeOracleNet, OracleConfig, param_ranges
from toon3d.faces.synface_parser import EARS, NECK, PARSER_CLASSES, ParserConfig, SynFaceParserNet
from toon3d.synth.face_albedo import SEG_SKIN
from toon3d.synth.face_params import PARAM_NAMES, PARAM_SPECS, SynFaceParams
from toon3d.synth.synface import SynFaceSettings, canonical_geometry, render_synface, view_face
from toon3d.synth.toon_style import LAYER_EARS, LAYER_NECK, canonical_layers, render_toon

STYLES = ("synface", "toon")


def parsing_labels(seg: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """SynFace seg [B,S,S] (0..7) + head layers [B,S,S] → parser labels [B,S,S] uint8 (0..9, `PARSER_CLASSES`)."""
    out = seg.clone().to(torch.uint8)
    skin = seg == SEG_SKIN
    out[skin & (layers == LAYER_EARS)] = EARS
    out[skin & (layers == LAYER_NECK)] = NECK
    return out


def view_layers(params: SynFaceParams, size: int, settings: SynFaceSettings | None = None) -> torch.Tensor:
    """Head layer of each view pixel [B,S,S] uint8 (0 off the head; face, ears, neck, hair), SynFace's geometry."""
    s = settings or SynFaceSettings()
    g = canonical_geometry(params, size)
    view = view_face(g["canon_depth"], g["canon_mask"], params, size, None, s)
    return view.sample_labels(canonical_layers(g["parts"]))


@torch.no_grad()
def render_labelled(params: SynFaceParams, size: int = 64, style: str = "synface") -> dict:
    """Render faces with parser labels: {"image" [B,3,S,S] in [-1,1], "labels" [B,S,S] uint8, "seg" (SynFace's 8)}.

    style "toon" draws the same faces as toons (toon seg: enlarged eyes; same head geometry).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    out = render_synface(params, size) if style == "synface" else render_toon(params, size)
    layers = view_layers(params, size)
    return {"image": out["image"], "labels": parsing_labels(out["seg"], layers), "seg": out["seg"]}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B,3,S,S] in [-1,1] → uint8 [B,3,S,S]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,S,S] → float [B,3,S,S] in [-1,1]."""
    return images.float() / 127.5 - 1


def render_pool(n: int, seed: int, size: int = 64, style: str = "synface", chunk: int = 256,
                progress: bool = True) -> dict:
    """Faces 0..n−1 of data set `seed`: {"images" uint8 [N,3,S,S], "labels" uint8 [N,S,S], "params" [N,56]}."""
    from tqdm import tqdm

    images, labels, tables = [], [], []
    for start in tqdm(range(0, n, chunk), desc=f"render {style}", unit="chunk", disable=not progress):
        params = SynFaceParams.sample(min(chunk, n - start), seed=seed, start=start)
        out = render_labelled(params, size, style)
        images.append(to_uint8(out["image"]))
        labels.append(out["labels"])
        tables.append(params.to_tensor())
    return {"images": torch.cat(images), "labels": torch.cat(labels), "params": torch.cat(tables),
            "seed": seed, "size": size, "style": style}


# ---- augmentation -------------------------------------------------------------------------------


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,H,W] (replicate padding), σ in pixels."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def augment(images: torch.Tensor, g: torch.Generator, colour: bool, blur_max: float = 1.2) -> torch.Tensor:
    """Blur half the batch (σ ∈ [0.3, blur_max] px), add pixel noise, and (colour=True) jitter
    brightness/contrast: [B,3,S,S] in [-1,1]."""
    b = images.shape[0]
    sigma = 0.3 + (blur_max - 0.3) * float(torch.rand((), generator=g))
    blurred = torch.rand(b, generator=g) < 0.5
    out = images.clone()
    if blurred.any():
        out[blurred] = gaussian_blur(images[blurred], sigma)
    if colour:
        gain = 1 + 0.15 * (2 * torch.rand(b, 1, 1, 1, generator=g) - 1)
        shift = 0.1 * (2 * torch.rand(b, 1, 1, 1, generator=g) - 1)
        out = out * gain + shift
    noise = 0.03 * torch.rand(b, 1, 1, 1, generator=g)
    return (out + noise * torch.randn(out.shape, generator=g)).clamp(-1, 1)


# ---- training -----------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    """One training run of a small face network."""

    steps: int = 600
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    cpu_budget_s: float = 600.0   # stop early past this much process CPU time (recorded)
    warmup: int = 20
    blur_max: float = 1.2         # largest blur σ of the augmentation, pixels


def _lr(step: int, s: TrainSettings) -> float:
    # Linear warm-up, then cosine decay to 0 over the planned steps.
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    t = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights ∝ 1/√frequency (mean 1 over pixels), so 1-2 px classes (eyes, brows) count."""
    freq = torch.bincount(labels.flatten().long(), minlength=n_classes).double().clamp(min=1)
    freq = freq / freq.sum()
    w = freq.rsqrt()
    return (w / (w * freq).sum()).float()


def _seeded(cls, config, seed: int):
    # Module constructors draw from the global RNG; fork_rng leaves the caller's state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def _loop(net: torch.nn.Module, s: TrainSettings, n_items: int, step_loss, progress: bool, desc: str) -> dict:
    from tqdm import tqdm

    g = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    net.train()
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    losses, stopped = [], None
    for step in tqdm(range(s.steps), desc=desc, unit="step", disable=not progress):
        if time.process_time() - start_cpu > s.cpu_budget_s:
            stopped = step
            break
        for group in opt.param_groups:
            group["lr"] = _lr(step, s)
        idx = torch.randint(n_items, (s.batch,), generator=g)
        loss = step_loss(idx, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    done = len(losses)
    return {"settings": asdict(s), "steps_done": done, "stopped_early_at": stopped,
            "cpu_seconds": round(time.process_time() - start_cpu, 1),
            "wall_seconds": round(time.perf_counter() - start_wall, 1),
            "loss_first": float(np.mean(losses[:20])) if losses else None,
            "loss_last": float(np.mean(losses[-20:])) if losses else None}


def train_parser(pool: dict, s: TrainSettings, config: ParserConfig | None = None,
                 progress: bool = True) -> tuple[SynFaceParserNet, dict]:
    """Train the SynFace parser on a pool from `render_pool` → (net in eval mode, record)."""
    net = _seeded(SynFaceParserNet, config, s.seed)
    weights = class_weights(pool["labels"], net.config.n_classes)

    def step_loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = from_uint8(pool["images"][idx])
        y = pool["labels"][idx].long()
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        return F.cross_entropy(net(augment(x, g, colour=True, blur_max=s.blur_max)), y, weight=weights)

    record = _loop(net, s, len(pool["images"]), step_loss, progress, "parser")
    record["class_weights"] = dict(zip(PARSER_CLASSES, map(float, weights)))
    return net, record


# Loss weight of each parameter group: expressions and pose are what the oracle is for (naming
# directions, scoring edits); many identity parameters are barely visible at 64 px.
ORACLE_GROUP_WEIGHTS = {"identity": 1.0, "expression": 8.0, "pose": 2.0}


def train_oracle(pool: dict, s: TrainSettings, config: OracleConfig | None = None, progress: bool = True,
                 group_weights: dict[str, float] | None = None,
                 parser: SynFaceParserNet | None = None) -> tuple[AttributeOracleNet, dict]:
    """Train the attribute oracle on a pool from `render_pool` → (net in eval mode, record).

    `parser`: the trained SynFace parser network whose weights the oracle's frozen parser takes
    (required when the config has one).
    """
    net = _seeded(AttributeOracleNet, config, s.seed)
    if net.parser is not None:
        if parser is None:
            raise ValueError("this oracle config reads a SynFace parser: pass the trained parser network")
        net.parser.load_state_dict(parser.state_dict())
    targets = unit_targets(pool["params"], net.config.params)
    groups = dict(ORACLE_GROUP_WEIGHTS if group_weights is None else group_weights)
    weights = torch.tensor([float(groups[PARAM_SPECS[p][0]]) for p in net.config.params])
    weights = weights / weights.mean()

    def step_loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = augment(from_uint8(pool["images"][idx]), g, colour=False, blur_max=s.blur_max)
        return ((net(x) - targets[idx]).pow(2) * weights).mean()

    record = _loop(net, s, len(pool["images"]), step_loss, progress, "oracle")
    record["group_weights"] = groups
    return net, record


def unit_targets(table: torch.Tensor, params: tuple[str, ...]) -> torch.Tensor:
    """SynFace parameter table [N,56] (PARAM_NAMES order) → the named columns rescaled to their ranges [N,P]."""
    cols = [PARAM_NAMES.index(p) for p in params]
    lo, hi = param_ranges(params)
    return (table[:, cols].float() - lo) / (hi - lo)


# ---- scores -------------------------------------------------------------------------------------


def confusion(pred: torch.Tensor, truth: torch.Tensor, n: int) -> torch.Tensor:
    """Confusion matrix [n,n] (rows truth, columns prediction) of integer label maps."""
    return torch.bincount(truth.flatten().long() * n + pred.flatten().long(), minlength=n * n).view(n, n)


def segmentation_scores(pred: torch.Tensor, truth: torch.Tensor, names: tuple[str, ...]) -> dict:
    """Pixel accuracy, per-class IoU and mIoU (over classes present in truth or prediction)."""
    n = len(names)
    cm = confusion(pred, truth, n).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
    return {"pixel_accuracy": float(inter.sum() / cm.sum()), "miou": float(iou[present].mean()),
            "iou": {name: (None if math.isnan(v) else round(float(v), 4)) for name, v in zip(names, iou)}}


def mask_iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """IoU of two binary masks (any shape)."""
    p, t = pred.bool(), truth.bool()
    union = (p | t).sum()
    return float((p & t).sum() / union) if union else 1.0


def r2_scores(pred: torch.Tensor, truth: torch.Tensor, params: tuple[str, ...]) -> dict:
    """Coefficient of determination per parameter and the mean per group (identity, expression, pose)."""
    resid = (pred - truth).pow(2).sum(0)
    total = (truth - truth.mean(0)).pow(2).sum(0).clamp(min=1e-12)
    r2 = 1 - resid / total
    per = {p: round(float(v), 4) for p, v in zip(params, r2)}
    groups = {}
    for group in ("identity", "expression", "pose"):
        vals = [per[p] for p in params if PARAM_SPECS[p][0] == group]
        if vals:
            groups[group] = round(float(np.mean(vals)), 4)
    return {"r2": per, "r2_group": groups}

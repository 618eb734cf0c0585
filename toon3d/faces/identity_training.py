"""Training and scoring the built-in world's identity network (`toon3d.faces.synface_identity`).

Data: `identity_pool` renders `per_id` images of each of `n_ids` SynFace identities. An image keeps
its identity's 38 identity parameters and takes everything else (expression, pose, light,
backdrop) from an independent draw, alternating the anchored views the built-in base learned and
plain views. Loss: CosFace, s·(cos θ_y − m) in the softmax of the true class, over unit embeddings
and unit class weights. Scores: same/different-identity verification on held-out identities
(equal-error rate, its L2 threshold, true-accept rate at 1% false accepts) and rank-1
identification (is each image's nearest neighbour another image of its identity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toon3d.faces.synface_identity import IdentityNetConfig, SynFaceIdentityNet
from toon3d.faces.synface_training import TrainSettings, _loop, _seeded, augment, from_uint8, to_uint8
from toon3d.synth.face_params import PARAM_NAMES, PARAM_SPECS, SynFaceParams

IDENTITY_COLUMNS = [i for i, n in enumerate(PARAM_NAMES) if PARAM_SPECS[n][0] == "identity"]
# Data-set seeds of the nuisance draws: identity seed + NUISANCE_OFFSET + k for render k (k < 100),
# so pools with seeds ≥ 200 apart never share a draw.
NUISANCE_OFFSET = 100


def identity_tables(n_ids: int, per_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SynFace parameter tables [n_ids·per_id, P] (identity columns of face i, the rest drawn anew) and labels [N]."""
    if per_id < 2 or per_id >= NUISANCE_OFFSET:
        raise ValueError(f"per_id must be in [2, {NUISANCE_OFFSET}), got {per_id}")
    ident = SynFaceParams.sample(n_ids, seed=seed).to_tensor()
    tables = []
    for k in range(per_id):
        table = SynFaceParams.sample(n_ids, seed=seed + NUISANCE_OFFSET + k).to_tensor()
        table[:, IDENTITY_COLUMNS] = ident[:, IDENTITY_COLUMNS]
        tables.append(table)
    # Row r = k·n_ids + i: render k of identity i.
    return torch.cat(tables), torch.arange(n_ids).repeat(per_id)


def identity_pool(n_ids: int, per_id: int, seed: int, size: int = 64, chunk: int = 256,
                  progress: bool = True) -> dict:
    """Rendered identity pool: {"images" uint8 [N,3,S,S], "labels" [N], "anchored" bool [N], "params" [N,P]}.

    Render k of every identity is drawn in anchored views when k is even, plain views when odd.
    """
    from tqdm import tqdm

    from toon3d.synth.synface import SynFaceSettings, render_synface

    table, labels = identity_tables(n_ids, per_id, seed)
    anchored = (torch.arange(len(table)) // n_ids) % 2 == 0
    images = torch.empty(len(table), 3, size, size, dtype=torch.uint8)
    for start in tqdm(range(0, len(table), chunk), desc="render identities", unit="chunk", disable=not progress):
        rows = slice(start, min(start + chunk, len(table)))
        for flag in (True, False):
            pick = torch.nonzero(anchored[rows] == flag).flatten() + start
            if len(pick):
                out = render_synface(SynFaceParams.from_tensor(table[pick]), size,
                                     settings=SynFaceSettings(anchor_eyes=flag))
                images[pick] = to_uint8(out["image"])
    return {"images": images, "labels": labels, "anchored": anchored, "params": table, "seed": seed,
            "n_ids": n_ids, "per_id": per_id, "size": size}


class CosFaceHead(nn.Module):
    """Unit class weights [n_classes,dim]; logits = s·(cos θ − m·[class = label])."""

    def __init__(self, n_classes: int, dim: int, scale: float = 30.0, margin: float = 0.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) / math.sqrt(dim))
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings [B,dim] (unit), labels [B] → logits [B,n_classes]."""
        cos = embeddings @ F.normalize(self.weight, dim=1).t()
        return self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos))


class _Training(nn.Module):
    # One module, so `_loop`'s optimiser sees the network and the class weights together.
    def __init__(self, net: SynFaceIdentityNet, head: CosFaceHead) -> None:
        super().__init__()
        self.net, self.head = net, head


def train_identity(pool: dict, s: TrainSettings, config: IdentityNetConfig | None = None,
                   scale: float = 30.0, margin: float = 0.3,
                   progress: bool = True) -> tuple[SynFaceIdentityNet, dict]:
    """Train the identity network with CosFace on a pool from `identity_pool` → (net in eval mode, record)."""
    net = _seeded(SynFaceIdentityNet, config, s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed + 1)
        head = CosFaceHead(int(pool["n_ids"]), net.config.dim, scale, margin)
    both = _Training(net, head)

    def step_loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # No colour jitter: skin, hair and lip colour are identity.
        x = augment(from_uint8(pool["images"][idx]), g, colour=False, blur_max=s.blur_max)
        y = pool["labels"][idx]
        return F.cross_entropy(head(net(x), y), y)

    record = _loop(both, s, len(pool["images"]), step_loss, progress, "identity")
    net.eval()
    record.update({"loss": "CosFace", "scale": scale, "margin": margin})
    return net, record


@torch.no_grad()
def embed_all(embed, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """embed(float images [b,3,S,S] in [-1,1]) over uint8 or float images [N,3,S,S] → [N,dim]."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        out.append(embed(from_uint8(x) if x.dtype == torch.uint8 else x))
    return torch.cat(out)


def verification_scores(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
    """Same/different identity over every pair of [N,dim] embeddings with labels [N].

    Returns pair counts, mean L2 distances, the equal-error rate and its threshold, the true-accept
    rate at a 1% false-accept rate, and rank-1 identification accuracy.
    """
    d = torch.cdist(embeddings.double(), embeddings.double())
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(same), 1)
    pos, neg = d[same & upper], d[~same & upper]
    thresholds = torch.cat([pos, neg]).sort().values
    # False rejects (positive above t) and false accepts (negative at or below t) at each threshold.
    frr = 1 - torch.searchsorted(pos.sort().values, thresholds, right=True).double() / len(pos)
    far = torch.searchsorted(neg.sort().values, thresholds, right=True).double() / len(neg)
    k = int(torch.argmin((frr - far).abs()))
    t_far = torch.quantile(neg, 0.01)
    d_self = d + torch.diag(torch.full((len(d),), float("inf"), dtype=d.dtype))
    nearest = d_self.argmin(1)
    return {"pairs_same": int(len(pos)), "pairs_different": int(len(neg)),
            "mean_distance_same": float(pos.mean()), "mean_distance_different": float(neg.mean()),
            "eer": float((frr[k] + far[k]) / 2), "eer_threshold": float(thresholds[k]),
            "tar_at_far_1pct": float((pos <= t_far).double().mean()),
            "rank1": float((labels[nearest] == labels).double().mean())}

"""SynFace parameters as a deterministic function of a Gaussian latent z.

The built-in base generator is first trained as a regression decoder: G(z) must reproduce the
SynFace render of `params_from_latent(z)`. Each of the first `NUM_LATENT_PARAMS` latent
dimensions drives one parameter through the normal CDF, so z ~ N(0, I) gives exactly
SynFace's own parameter distribution (neutral expressions with the same probabilities, glasses
on a quarter of faces), and random z at inference gives random SynFace faces. The remaining
dimensions carry no parameter (the generator learns to ignore them).
"""

from __future__ import annotations

import math

import torch

from toon3d.synth.face_params import _GLASSES_PROB, _NEUTRAL_PROB, PARAM_NAMES, PARAM_SPECS, SynFaceParams

NUM_LATENT_PARAMS = len(PARAM_NAMES)
# Keep uniforms off 0 and 1 so the inverse map stays finite.
_EPS = 1e-6


def _uniform(z: torch.Tensor) -> torch.Tensor:
    """Normal CDF: z [..] -> u in (0, 1)."""
    return (0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))).clamp(_EPS, 1.0 - _EPS)


def params_from_latent(z: torch.Tensor) -> SynFaceParams:
    """z [B,D>=56] ~ N(0,1) -> SynFaceParams: dimension k drives parameter k (PARAM_NAMES order)."""
    if z.dim() != 2 or z.shape[1] < NUM_LATENT_PARAMS:
        raise ValueError(f"z must be [B,>={NUM_LATENT_PARAMS}], got {tuple(z.shape)}")
    u = _uniform(z[:, :NUM_LATENT_PARAMS].float())
    values = []
    for k, (name, (_, lo, hi)) in enumerate(PARAM_SPECS.items()):
        uk = u[:, k]
        if name in _NEUTRAL_PROB:
            # Neutral (exactly 0) below the gate, then a uniform ramp: same law as SynFace's sampler,
            # and continuous in z so the generator can learn the expression as a smooth direction.
            p = _NEUTRAL_PROB[name]
            uk = ((uk - p) / (1.0 - p)).clamp(0.0, 1.0)
            values.append(lo + (hi - lo) * uk)
            continue
        if name == "glasses":
            values.append((uk < _GLASSES_PROB).float())
            continue
        values.append(lo + (hi - lo) * uk)
    return SynFaceParams.from_tensor(torch.stack(values, dim=1))


def latent_from_params(params: SynFaceParams, style_dim: int = 512,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse of `params_from_latent` (free dims and gated values drawn from `generator`): -> z [B,style_dim]."""
    table = params.to(dtype=torch.float32).to_tensor()
    b = table.shape[0]
    z = torch.randn(b, style_dim, generator=generator)
    extra = torch.rand(b, NUM_LATENT_PARAMS, generator=generator)
    us = []
    for k, (name, (_, lo, hi)) in enumerate(PARAM_SPECS.items()):
        v = table[:, k]
        if name in _NEUTRAL_PROB:
            p = _NEUTRAL_PROB[name]
            frac = ((v - lo) / (hi - lo)).clamp(0, 1)
            # a neutral value maps to a random point below the gate (all of them decode to 0)
            us.append(torch.where(frac > 0, p + (1 - p) * frac, p * extra[:, k]))
        elif name == "glasses":
            us.append(torch.where(v > 0.5, _GLASSES_PROB * extra[:, k],
                                  _GLASSES_PROB + (1 - _GLASSES_PROB) * extra[:, k]))
        else:
            us.append(((v - lo) / (hi - lo)).clamp(0, 1))
    u = torch.stack(us, dim=1).clamp(_EPS, 1 - _EPS)
    z[:, :NUM_LATENT_PARAMS] = math.sqrt(2.0) * torch.erfinv(2 * u - 1)
    return z

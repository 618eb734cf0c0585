"""Fréchet distance between two Gaussians fitted to feature sets (the formula behind FID).

    d² = |μ1 − μ2|² + tr(Σ1) + tr(Σ2) − 2·tr((Σ1 Σ2)^½)

Numerics follow pytorch-fid (Heusel et al.'s reference code): the matrix square root is
scipy's `sqrtm`; when it is not finite (a singular product, typical when there are fewer
samples than feature dimensions) both covariances get `eps·I` added and it is taken again; a
complex result whose diagonal has imaginary parts above 1e-3 is an error, smaller ones are
round-off and are dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from toon3d.errors import Toon3dError

IMAGINARY_TOLERANCE = 1e-3


def _as_array(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise Toon3dError(f"{name} must be a numeric array, got {type(x).__name__}") from None
    if not np.isfinite(array).all():
        raise Toon3dError(f"{name} contains NaN or inf; check the features it was computed from")
    return array


def feature_stats(feats: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D,D] (float64) of features [N,D], N ≥ 2."""
    x = _as_array(feats, "features")
    if x.ndim != 2 or x.shape[0] < 2:
        raise Toon3dError(f"features must be [N,D] with N ≥ 2 samples, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): mu [D], sigma [D,D]."""
    mu1, mu2 = _as_array(mu1, "mu1").reshape(-1), _as_array(mu2, "mu2").reshape(-1)
    sigma1, sigma2 = _as_array(sigma1, "sigma1"), _as_array(sigma2, "sigma2")
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise Toon3dError(f"Gaussians of different dimensions: mu {mu1.shape} / {mu2.shape}, "
                          f"sigma {sigma1.shape} / {sigma2.shape}; compute both from the same features")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imaginary = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imaginary > IMAGINARY_TOLERANCE:
            raise Toon3dError(f"the covariance product's square root has imaginary part {imaginary:.2g}: "
                              f"covariances too ill-conditioned; use more samples than the {d} feature dimensions")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_fd(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussians of two feature sets [Na,D] and [Nb,D]."""
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))

"""Z-buffer triangle rasteriser in pure PyTorch (CPU and CUDA), replacing neural_renderer.

It reproduces `neural_renderer.Renderer.render_depth` as Unsup3d/GAN2Shape use it:
projection by K, double-sided faces, per-pixel nearest face, screen-space barycentrics
(clamped to [0,1] and renormalised), perspective-correct depth `z = 1/Σ(w_k/z_k)`, samples
outside (near, far) are background (= far), anti-aliasing by rendering at 2× and averaging
2×2 blocks.

Two passes. Visibility: without autograd, every triangle tests the few samples in its
integer bounding box (triangles are bucketed by bounding-box size so one tensor op handles a
bucket), and the z-buffer keeps the nearest (depth, face) pair with `scatter_reduce(amin)`
on a packed int64 key (float32 depth bits in the high word: positive floats order like
their bit patterns). Differentiable pass: for each covered sample the chosen face's
barycentrics and depth are recomputed from the projected vertices with autograd, so
gradients reach the vertices through z_k and through the xy-dependence of the
barycentrics, as in neural_renderer; visibility itself (silhouettes) gets no gradient.

Pixel centres: neural_renderer samples pixel i at u = i + 0.5, half a pixel off the K /
`grid_sample(align_corners=True)` convention where pixel i sits at u = i. `pixel_offset`
chooses: 0.5 (default) reproduces neural_renderer and therefore the published
Unsup3d/GAN2Shape numerics; 0.0 samples pixel centres exactly, so a zero view returns the
canonical depth unshifted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from toon3d.errors import Toon3dError
from toon3d.shape.camera import project_points

_EMPTY = torch.iinfo(torch.int64).max
_HIGH_WORD = 1 if sys.byteorder == "little" else 0
# Edge-function tolerance (in barycentric units) so samples lying exactly on a shared edge
# are claimed by at least one of its two triangles despite rounding: no cracks in the mesh.
_INSIDE_EPS = 1e-5
_BOX_EPS = 1e-4
# Boxes with more candidate samples than this are scanned row by row.
_SCANLINE_MIN = 64
# Buckets with fewer triangles than this are merged into power-of-two buckets.
_RARE = 4096
# Candidate samples evaluated per tensor op; bounds the memory of one bucket chunk.
_CHUNK = 1 << 22
# Bounding-box extents (in samples) are rounded up to these sizes to form buckets.
_EXTENTS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
            1024, 1536, 2048, 3072, 4096, 6144, 8192]
# For each extent index, the index of the smallest power-of-two extent ≥ it.
_POW2_BUCKET = [next(j for j in range(i, len(_EXTENTS)) if _EXTENTS[j] & (_EXTENTS[j] - 1) == 0)
                for i in range(len(_EXTENTS))]


@dataclass
class Fragments:
    """What each sample of the (supersampled) image sees.

    pix [P]: flat indices into B·Hs·Ws of the covered samples; verts [P,3]: flat indices into
    B·N of the chosen face's vertices; bary [P,3]: screen-space barycentrics (differentiable);
    zk [P,3]: the face's vertex depths; depth [B,Hs,Ws]: perspective-correct depth, far where
    nothing is visible; covered [B,Hs,Ws] bool.
    """

    pix: torch.Tensor
    verts: torch.Tensor
    bary: torch.Tensor
    zk: torch.Tensor
    depth: torch.Tensor
    covered: torch.Tensor


def grid_faces(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Faces [2(h-1)(w-1),3] of the pixel-grid mesh: per quad [tl, bl, tr] then [tr, bl, br]."""
    idx = torch.arange(h * w, device=device).reshape(h, w)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    first = torch.stack([tl, bl, tr], dim=-1).reshape(-1, 3)
    second = torch.stack([tr, bl, br], dim=-1).reshape(-1, 3)
    return torch.cat([first, second], dim=0)


def _check_inputs(vertices: torch.Tensor, faces: torch.Tensor, face_mask: torch.Tensor | None) -> None:
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise Toon3dError(f"vertices must be [B,N,3], got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3 or faces.dtype not in (torch.int64, torch.int32):
        raise Toon3dError(f"faces must be an integer [F,3] tensor, got {faces.dtype} {tuple(faces.shape)}")
    if faces.numel() and (faces.min() < 0 or faces.max() >= vertices.shape[1]):
        raise Toon3dError(f"faces index vertices outside [0, {vertices.shape[1]}); check the mesh")
    if not torch.isfinite(vertices).all():
        raise Toon3dError("vertices contain NaN or inf; check the depth map and the view")
    if face_mask is not None and face_mask.shape != (vertices.shape[0], faces.shape[0]):
        raise Toon3dError(f"face_mask must be [B,F] = {(vertices.shape[0], faces.shape[0])}, "
                          f"got {tuple(face_mask.shape)}")


def _plane_coefficients(tri: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """[4,3,n]: barycentrics w0, w1, w2 and 1/z as c + a·(x - x0) + b·(y - y0), from tri [9,n] = (x_k, y_k, z_k).

    Coordinates are taken relative to each triangle's bounding-box corner so the constant
    terms stay small: in absolute coordinates (up to ~10³) float32 cancellation would blur the
    inside test by ~10⁻² barycentric units.
    """
    xa, xb, xc = tri[0] - x0, tri[1] - x0, tri[2] - x0
    ya, yb, yc = tri[3] - y0, tri[4] - y0, tri[5] - y0
    iza, izb, izc = 1.0 / tri[6], 1.0 / tri[7], 1.0 / tri[8]
    # w_k = c_k + a_k·x + b_k·y with (k, k+1, k+2) cyclic; Σ c_k is twice the signed area.
    c0, c1, c2 = xb * yc - xc * yb, xc * ya - xa * yc, xa * yb - xb * ya
    a0, a1, a2 = yb - yc, yc - ya, ya - yb
    b0, b1, b2 = xc - xb, xa - xc, xb - xa
    coef = torch.stack([c0, a0, b0, c1, a1, b1, c2, a2, b2,
                        c0 * iza + c1 * izb + c2 * izc,
                        a0 * iza + a1 * izb + a2 * izc,
                        b0 * iza + b1 * izb + b2 * izc])
    return (coef / (c0 + c1 + c2)).view(4, 3, -1)


def _bucket_of(extent: torch.Tensor) -> torch.Tensor:
    """Index into _EXTENTS of the smallest bucket ≥ extent (extent ≥ 1)."""
    lut = torch.tensor([0] + [next(i for i, e in enumerate(_EXTENTS) if e >= n) for n in range(1, 65)],
                       device=extent.device)
    small = lut.index_select(0, extent.clamp(0, 64))
    if bool((extent > 64).any()):
        big = torch.searchsorted(torch.tensor(_EXTENTS, device=extent.device), extent)
        small = torch.where(extent > 64, big, small)
    return small


def _scanline_candidates(coef: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor, kx: int, ky: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples inside large triangles, row by row: (triangle index [m], x [m], y [m]) box-relative.

    For each box row the three edge half-planes bound an exact x-span, so the work is
    proportional to the covered samples, not to the box area (long thin slivers at
    silhouettes have huge boxes).
    """
    n = coef.shape[-1]
    y = torch.arange(ky, device=coef.device, dtype=coef.dtype).view(1, ky)           # [1,ky]
    lo = torch.zeros(n, ky, device=coef.device, dtype=coef.dtype)
    hi = (nx - 1).to(coef.dtype).view(n, 1).expand(n, ky).clone()
    for k in range(3):
        c, a, b = coef[k, 0].view(n, 1), coef[k, 1].view(n, 1), coef[k, 2].view(n, 1)
        r = c + b * y + _INSIDE_EPS                                                  # w_k = r + a·x ≥ 0
        bound = (-r / a).clamp(-1.0, float(kx))  # also tames ±inf where a = 0
        lo = torch.where(a > 0, torch.maximum(lo, bound), lo)
        hi = torch.where(a < 0, torch.minimum(hi, bound), hi)
        hi = torch.where((a == 0) & (r < 0), torch.full_like(hi, -1.0), hi)
    x_lo = lo.ceil()
    count = torch.nan_to_num(hi.floor() - x_lo + 1, nan=0.0).clamp_min(0)
    count = torch.where(y < ny.view(n, 1), count, torch.zeros_like(count)).long().reshape(-1)
    spans = count.nonzero().squeeze(1)
    if spans.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=coef.device)
        return empty, empty.to(coef.dtype), empty.to(coef.dtype)
    count = count.index_select(0, spans)
    start = torch.cumsum(count, 0) - count
    span_of = torch.repeat_interleave(torch.arange(spans.numel(), device=coef.device), count)
    within = torch.arange(span_of.numel(), device=coef.device) - start.index_select(0, span_of)
    flat = spans.index_select(0, span_of)                                            # t·ky + row
    t_idx = torch.div(flat, ky, rounding_mode="floor")
    px = x_lo.reshape(-1).index_select(0, flat) + within.to(coef.dtype)
    py = (flat - t_idx * ky).to(coef.dtype)
    return t_idx, px, py


def _zbuffer(uv: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, hs: int, ws: int,
             near: float, far: float, face_mask: torch.Tensor | None) -> torch.Tensor:
    """No-grad z-buffer [B·Hs·Ws] int64: float32 depth bits << 32 | flat face id (b·F + f); _EMPTY if none."""
    b, n_verts = z.shape
    n_faces = faces.shape[0]
    # Structure-of-arrays triangles [9,T] = (x0,x1,x2, y0,y1,y2, z0,z1,z2), T = B·F, so every
    # per-triangle quantity below is a contiguous row.
    coords = torch.stack([uv[..., 0], uv[..., 1], z]).reshape(3, -1)                       # [3,B·N]
    gid = None  # global face id (b·F + f) of each row of `tri`; None: row t is face t
    if face_mask is None:
        vidx = (faces.t().unsqueeze(1) + torch.arange(b, device=uv.device).view(1, b, 1) * n_verts).reshape(-1)
    else:
        # Gather only the faces the mask keeps (a head without its background plane).
        gid = face_mask.reshape(-1).nonzero().squeeze(1)
        batch_of = torch.div(gid, n_faces, rounding_mode="floor")
        vidx = (faces.index_select(0, gid - batch_of * n_faces) + (batch_of * n_verts).unsqueeze(1)).t().reshape(-1)
    tri = coords.index_select(1, vidx).view(9, -1)
    t_count = tri.shape[1]
    xmin = (torch.minimum(torch.minimum(tri[0], tri[1]), tri[2]) - _BOX_EPS).ceil().clamp_min(0)
    xmax = (torch.maximum(torch.maximum(tri[0], tri[1]), tri[2]) + _BOX_EPS).floor().clamp_max(ws - 1)
    ymin = (torch.minimum(torch.minimum(tri[3], tri[4]), tri[5]) - _BOX_EPS).ceil().clamp_min(0)
    ymax = (torch.maximum(torch.maximum(tri[3], tri[4]), tri[5]) + _BOX_EPS).floor().clamp_max(hs - 1)
    # The box is widened by _BOX_EPS samples so that a sample a rounding error outside a
    # vertex still reaches the edge-function test, which has its own tolerance. Degenerate
    # (zero-area) triangles cover nothing and would divide by zero below: dropped here.
    zmin = torch.minimum(torch.minimum(tri[6], tri[7]), tri[8])
    area2 = (tri[1] - tri[0]) * (tri[5] - tri[3]) - (tri[2] - tri[0]) * (tri[4] - tri[3])
    keep = (zmin > 1e-6) & (xmin <= xmax) & (ymin <= ymax) & (area2.abs() > 1e-10)
    zbuf = torch.full((b * hs * ws,), _EMPTY, dtype=torch.int64, device=uv.device)
    nx = (xmax - xmin).long() + 1
    ny = (ymax - ymin).long() + 1
    n_ext = len(_EXTENTS)
    bucket = _bucket_of(nx.clamp_min(1)) * n_ext + _bucket_of(ny.clamp_min(1))
    bucket = torch.where(keep, bucket, n_ext * n_ext)
    counts = torch.bincount(bucket, minlength=n_ext * n_ext + 1)
    # Rare box shapes cost a loop iteration each; fold them into the bucket whose sides are the
    # next powers of two (at most 4x wasted candidates, and long slivers stay slivers).
    rare = ((counts[:-1] > 0) & (counts[:-1] < _RARE)).nonzero().squeeze(1)
    merged: set[int] = set()
    if rare.numel() > 0:
        pow2 = torch.tensor(_POW2_BUCKET, device=uv.device)
        side_x = pow2.index_select(0, torch.div(rare, n_ext, rounding_mode="floor"))
        side_y = pow2.index_select(0, rare % n_ext)
        remap = torch.arange(n_ext * n_ext + 1, device=uv.device)
        remap[rare] = side_x * n_ext + side_y
        bucket = remap.index_select(0, bucket)
        merged = set(remap[rare].tolist())
        counts = torch.bincount(bucket, minlength=n_ext * n_ext + 1)
    counts = counts[:-1].tolist()
    # A stable radix sort on a 16-bit key makes each bucket a contiguous run of triangle ids.
    order = torch.sort(bucket.to(torch.int16), stable=True).indices
    first = 0
    for key, count in enumerate(counts):
        if count == 0:
            continue
        kx, ky = _EXTENTS[key // n_ext], _EXTENTS[key % n_ext]
        members = order[first:first + count]
        first += count
        step = max(1, _CHUNK // (kx * ky))
        oy, ox = torch.meshgrid(torch.arange(ky, device=uv.device), torch.arange(kx, device=uv.device),
                                indexing="ij")
        oy, ox = oy.reshape(-1), ox.reshape(-1)
        offsets_xy = [(float(i), float(j)) for j in range(ky) for i in range(kx)]
        offset = oy * ws + ox
        # Extents up to 4 are not rounded, so unless rare shapes were merged in, every candidate is in the box.
        exact = max(kx, ky) <= 4 and key not in merged
        for start in range(0, count, step):
            # tid None: this chunk is every triangle, in order (no gathers needed).
            tid = None if count == t_count and step >= count else members[start:start + step]
            sub = tri if tid is None else tri.index_select(1, tid)
            x0 = xmin if tid is None else xmin.index_select(0, tid)
            y0 = ymin if tid is None else ymin.index_select(0, tid)
            coef = _plane_coefficients(sub, x0, y0)                         # [4,3,n]
            c, a, bb = coef[:, 0], coef[:, 1], coef[:, 2]                   # [4,n] each
            bx = by = None
            if not exact:
                bx = nx if tid is None else nx.index_select(0, tid)
                by = ny if tid is None else ny.index_select(0, tid)
            if kx * ky > _SCANLINE_MIN:
                rows = torch.arange(t_count, device=uv.device) if tid is None else tid
                face_id = rows if gid is None else gid.index_select(0, rows)
                bx = nx if tid is None else nx.index_select(0, tid)
                by = ny if tid is None else ny.index_select(0, tid)
                t_hit, px, py = _scanline_candidates(coef, bx, by, kx, ky)
                if t_hit.numel() == 0:
                    continue
                cf = coef.index_select(2, t_hit)                          # [4,3,m]
                val = cf[:, 0] + cf[:, 1] * px + cf[:, 2] * py            # [4,m]
                ok = (torch.minimum(torch.minimum(val[0], val[1]), val[2]) >= -_INSIDE_EPS) \
                    & (val[3] > 1.0 / far) & (val[3] < 1.0 / near)
                keep_c = ok.nonzero().squeeze(1)
                t_hit = t_hit.index_select(0, keep_c)
                corner = (torch.div(face_id, n_faces, rounding_mode="floor") * hs + y0.long()) * ws + x0.long()
                pix = corner.index_select(0, t_hit) + py.index_select(0, keep_c).long() * ws \
                    + px.index_select(0, keep_c).long()
                bits = (1.0 / val[3].index_select(0, keep_c)).float().view(torch.int32).to(torch.int64)
                zbuf.scatter_reduce_(0, pix, (bits << 32) | face_id.index_select(0, t_hit), reduce="amin")
                continue
            if len(offsets_xy) <= 16:
                # Small boxes: candidate-major, one contiguous [4,n] plane evaluation per box offset.
                insides, zinvs = [], []
                for dx, dy in offsets_xy:
                    val = torch.add(c, a, alpha=dx).add_(bb, alpha=dy)
                    ok = torch.minimum(torch.minimum(val[0], val[1]), val[2]) >= -_INSIDE_EPS
                    ok &= (val[3] > 1.0 / far) & (val[3] < 1.0 / near)
                    if bx is not None:
                        ok &= (bx > dx) & (by > dy)
                    insides.append(ok)
                    zinvs.append(val[3])
                inside, zinv = torch.stack(insides), torch.stack(zinvs)    # [ky·kx, n]
            else:
                # Large boxes (few triangles): separable broadcast (c + b·y) + a·x over the whole box.
                ys = torch.arange(ky, device=uv.device, dtype=uv.dtype).view(1, ky, 1, 1)
                xs = torch.arange(kx, device=uv.device, dtype=uv.dtype).view(1, 1, kx, 1)
                val = (c.unsqueeze(1).unsqueeze(1) + bb.unsqueeze(1).unsqueeze(1) * ys
                       + a.unsqueeze(1).unsqueeze(1) * xs).view(4, ky * kx, -1)  # [4, ky·kx, n]
                zinv = val[3]
                inside = (torch.minimum(torch.minimum(val[0], val[1]), val[2]) >= -_INSIDE_EPS) \
                    & (zinv > 1.0 / far) & (zinv < 1.0 / near)
                if bx is not None:
                    inside &= (ox.unsqueeze(1) < bx) & (oy.unsqueeze(1) < by)
            n = c.shape[1]
            hit = inside.view(-1).nonzero().squeeze(1)                      # index j·n + t
            if hit.numel() == 0:
                continue
            j_hit = torch.div(hit, n, rounding_mode="floor")
            t_hit = hit - j_hit * n
            rows = torch.arange(t_count, device=uv.device) if tid is None else tid
            face_id = rows if gid is None else gid.index_select(0, rows)
            corner = (torch.div(face_id, n_faces, rounding_mode="floor") * hs + y0.long()) * ws + x0.long()
            pix = corner.index_select(0, t_hit) + offset.index_select(0, j_hit)
            bits = (1.0 / zinv.reshape(-1).index_select(0, hit)).float().view(torch.int32).to(torch.int64)
            zbuf.scatter_reduce_(0, pix, (bits << 32) | face_id.index_select(0, t_hit), reduce="amin")
    return zbuf


def rasterise(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, size: int | tuple[int, int],
              near: float = 0.1, far: float = 10.0, supersample: int = 1, pixel_offset: float = 0.5,
              face_mask: torch.Tensor | None = None, need_bary: bool = True) -> Fragments:
    """Rasterise camera-space vertices [B,N,3] with faces [F,3] into an (S·supersample)² sample grid.

    Sample j of the fine grid lies at pixel coordinate u = (j + 0.5)/supersample - 0.5 + pixel_offset
    (same for rows). face_mask [B,F] bool drops faces per batch element. Without `need_bary`
    (and without autograd) the depth comes straight from the z-buffer and bary/verts/zk are empty.
    """
    _check_inputs(vertices, faces, face_mask)
    b, n_verts, _ = vertices.shape
    h, w = (size, size) if isinstance(size, int) else size
    hs, ws = h * supersample, w * supersample
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    uv = project_points(vertices, K)
    # Fine-grid sample index space: sample j sits at the integer j.
    uv = (uv - pixel_offset + 0.5) * supersample - 0.5
    z = vertices[..., 2]
    with torch.no_grad():
        zbuf = _zbuffer(uv.detach().float(), z.detach().float(), faces, hs, ws, near, far,
                        None if face_mask is None else face_mask.bool())
    covered = zbuf != _EMPTY
    if not need_bary and not (torch.is_grad_enabled() and vertices.requires_grad):
        # The high 32-bit word of each key is the float32 depth: read it in place.
        depth = zbuf.view(torch.float32).view(-1, 2)[:, _HIGH_WORD].to(vertices.dtype)
        depth = depth.masked_fill(~covered, far).reshape(b, hs, ws)
        empty = torch.empty(0, 3, dtype=vertices.dtype, device=vertices.device)
        return Fragments(pix=empty[:, 0].long(), verts=empty.long(), bary=empty, zk=empty,
                         depth=depth, covered=covered.reshape(b, hs, ws))
    pix = covered.nonzero().squeeze(1)
    fid = zbuf.index_select(0, pix) & 0xFFFFFFFF
    batch_of = torch.div(fid, faces.shape[0], rounding_mode="floor")
    verts = faces.index_select(0, fid - batch_of * faces.shape[0]) + (batch_of * n_verts).unsqueeze(1)
    n_pix = pix.numel()
    uvk = uv.reshape(-1, 2).index_select(0, verts.reshape(-1)).view(n_pix, 3, 2)
    zk = z.reshape(-1).index_select(0, verts.reshape(-1)).view(n_pix, 3)
    col = (pix % ws).to(uv.dtype)
    row = torch.div(pix, ws, rounding_mode="floor").remainder(hs).to(uv.dtype)
    dx0, dx1, dx2 = (uvk[..., 0] - col.unsqueeze(1)).unbind(1)
    dy0, dy1, dy2 = (uvk[..., 1] - row.unsqueeze(1)).unbind(1)
    edge = torch.stack([dx1 * dy2 - dx2 * dy1, dx2 * dy0 - dx0 * dy2, dx0 * dy1 - dx1 * dy0], dim=1)  # Σ = 2·area
    # Barycentrics clamped at 0 and renormalised, as neural_renderer does; the area divides out,
    # so only its sign (either winding: double-sided faces) is needed.
    edge = (edge * edge.detach().sum(1, keepdim=True).sign()).clamp_min(0)
    total = edge.sum(1)
    depth_pix = total / (edge / zk).sum(1)                                # 1 / Σ (w_k / z_k)
    bary = edge / total.unsqueeze(1) if need_bary else edge.new_empty(0, 3)
    depth = torch.full((b * hs * ws,), far, dtype=vertices.dtype, device=vertices.device)
    depth = depth.index_put((pix,), depth_pix).reshape(b, hs, ws)
    return Fragments(pix=pix, verts=verts, bary=bary, zk=zk, depth=depth, covered=covered.reshape(b, hs, ws))


def interpolate(fragments: Fragments, attributes: torch.Tensor, background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Perspective-correct interpolation of per-vertex attributes [B,N,C] → [B,C,Hs,Ws]."""
    b, _, c = attributes.shape
    _, hs, ws = fragments.depth.shape
    attr = attributes.reshape(-1, c)[fragments.verts]  # [P,3,C]
    depth_pix = fragments.depth.reshape(-1)[fragments.pix]
    vals = depth_pix.unsqueeze(-1) * ((fragments.bary / fragments.zk).unsqueeze(-1) * attr).sum(1)
    out = torch.as_tensor(background, dtype=attributes.dtype, device=attributes.device)
    out = out.expand(c).reshape(1, c).expand(b * hs * ws, c).clone()
    out = out.index_put((fragments.pix,), vals)
    return out.reshape(b, hs, ws, c).permute(0, 3, 1, 2)


def render_depth(vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, size: int,
                 near: float = 0.1, far: float = 10.0, anti_aliasing: bool = True,
                 pixel_offset: float = 0.5, face_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Depth image [B,S,S] of a mesh (vertices [B,N,3] in camera space, faces [F,3]); background = far.

    Equivalent to neural_renderer's `render_depth` with `fill_back=True`; with anti_aliasing the
    mesh is rasterised at 2S and 2×2-averaged, so silhouette pixels mix in `far`.
    """
    ss = 2 if anti_aliasing else 1
    frags = rasterise(vertices, faces, K, size, near=near, far=far, supersample=ss,
                      pixel_offset=pixel_offset, face_mask=face_mask, need_bary=False)
    depth = frags.depth
    if ss > 1:
        depth = torch.nn.functional.avg_pool2d(depth.unsqueeze(1), ss).squeeze(1)
    return depth

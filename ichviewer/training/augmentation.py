"""Training-time slice interpolation (Lee et al. 2019, Eq. 4) and real-time augmentation (Methods)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Lee et al. 2019: beta is drawn from 0.5 < beta < 1.0 on every training batch.
BETA_RANGE = (0.5, 1.0)
#: Lee et al. 2019 augmentation ranges at 512 x 512: rotation -10..10 deg in 1 deg steps,
#: scaling 90..100 % in 1 % steps, translation -12..12 px in 1 px steps, median filter 3.
ROTATION_DEG = 10
SCALE_RANGE_PERCENT = (90, 100)
PAPER_SIZE = 512
PAPER_TRANSLATION_PX = 12


def draw_beta(rng: np.random.Generator) -> float:
    """One beta strictly inside (0.5, 1.0) (Lee et al. 2019, Eq. 4)."""
    lo, hi = BETA_RANGE
    while True:
        b = float(rng.uniform(lo, hi))
        if lo < b < hi:
            return b


def interpolate_slices(
    x: np.ndarray,
    y: np.ndarray,
    x_lower: np.ndarray,
    y_lower: np.ndarray,
    x_upper: np.ndarray,
    y_upper: np.ndarray,
    is_edge: np.ndarray,
    beta: float,
    beta2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Originals plus their two interpolated images and labels: (3n, ...) and (3n, L).

    Lee et al. 2019, Eq. 4: x_{s,s-1} = beta x_s + (1 - beta) x_{s-1} and
    x_{s,s+1} = beta x_s + (1 - beta) x_{s+1}, labels likewise. For the first or last
    slice of a scan (`is_edge`), whose missing neighbour the caller has replaced by the
    existing one, the two interpolated images use two different ratios, beta and beta2.
    Output order: [originals; lower interpolations; upper interpolations].
    """
    n = x.shape[0]
    edge = np.asarray(is_edge, dtype=bool)
    b_lo = np.full(n, beta, dtype=np.float32)
    b_hi = np.where(edge, np.float32(beta2), np.float32(beta)).astype(np.float32)
    bx_lo = b_lo.reshape((n,) + (1,) * (x.ndim - 1))
    bx_hi = b_hi.reshape((n,) + (1,) * (x.ndim - 1))
    x_lo = bx_lo * x + (1.0 - bx_lo) * x_lower
    x_hi = bx_hi * x + (1.0 - bx_hi) * x_upper
    y_lo = b_lo[:, None] * y + (1.0 - b_lo[:, None]) * y_lower
    y_hi = b_hi[:, None] * y + (1.0 - b_hi[:, None]) * y_upper
    images = np.concatenate([x, x_lo, x_hi]).astype(np.float32, copy=False)
    labels = np.concatenate([y, y_lo, y_hi]).astype(np.float32, copy=False)
    return images, labels


def interpolate_one_per_slice(
    x: np.ndarray,
    y: np.ndarray,
    x_partner: np.ndarray,
    y_partner: np.ndarray,
    which: np.ndarray,
    is_edge: np.ndarray,
    beta: float,
    beta2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One image per slice of the three `interpolate_slices` makes: the same values, a third of the work.

    `which` per slice: 0 the original, 1 its interpolation towards the lower neighbour, 2
    towards the upper one (`x_partner`, `y_partner` hold that neighbour's image and labels;
    for 0 any finite image, it gets weight 0). Lee et al. 2019, Eq. 4 with the ratios of
    `interpolate_slices` (beta; beta2 for the upper interpolation of an end slice), so
    `interpolate_one_per_slice(...) == interpolate_slices(...)[which * n + arange(n)]`
    exactly: the original is 1 * x + 0 * partner.
    """
    n = x.shape[0]
    which = np.asarray(which)
    edge = np.asarray(is_edge, dtype=bool)
    b = np.where(which == 0, np.float32(1.0), np.where((which == 2) & edge, np.float32(beta2), np.float32(beta)))
    b = b.astype(np.float32)
    bx = b.reshape((n,) + (1,) * (x.ndim - 1))
    images = (bx * x + (1.0 - bx) * x_partner).astype(np.float32, copy=False)
    labels = (b[:, None] * y + (1.0 - b[:, None]) * y_partner).astype(np.float32, copy=False)
    return images, labels


@dataclass(frozen=True)
class AugmentParams:
    """Per-image augmentation draws (degrees, scale factor, translation in input pixels, denoise)."""

    rotation_deg: np.ndarray
    scale: np.ndarray
    shift_px: np.ndarray  # (n, 2) as (x, y)
    denoise: np.ndarray


def translation_px(input_size: int) -> int:
    """The paper's +-12 px at 512 px, scaled to the model input (e.g. +-3 px at 128)."""
    return max(1, int(round(PAPER_TRANSLATION_PX * input_size / PAPER_SIZE)))


def draw_augmentation(n: int, input_size: int, rng: np.random.Generator) -> AugmentParams:
    """Random draws on the paper's grids: 1 deg, 1 %, 1 px steps; median filter on half the images."""
    t = translation_px(input_size)
    return AugmentParams(
        rotation_deg=rng.integers(-ROTATION_DEG, ROTATION_DEG + 1, n).astype(np.float64),
        scale=rng.integers(SCALE_RANGE_PERCENT[0], SCALE_RANGE_PERCENT[1] + 1, n) / 100.0,
        shift_px=rng.integers(-t, t + 1, (n, 2)).astype(np.float64),
        denoise=rng.random(n) < 0.5,
    )


def median3x3(images):
    """3x3 median filter of (n, C, H, W) torch images, edges replicated (Lee et al.: window size 3).

    Column sort, then three-way selections (exact; the separable 3x3 median of Graphics Gems):
    sort each vertical triple into low <= mid <= high once per pixel, then the window's median
    is med3(max of the three lows, med3 of the three mids, min of the three highs) over the
    horizontal neighbours. 18 element-wise min/max passes instead of a sorting network's 38,
    most of them written in place: the same result as a sort-based median (a test compares
    them), about 4x faster than with fresh buffers for every pass (60 -> 16 ms for 16 images
    of 3 x 256 x 256 on two cores, most of it page faults of new buffers).
    """
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    top, centre, bottom = padded[:, :, 0:h], padded[:, :, 1 : h + 1], padded[:, :, 2 : h + 2]
    lo, hi = torch.minimum(top, centre), torch.maximum(top, centre)
    mid = torch.minimum(hi, bottom)
    torch.maximum(lo, mid, out=mid)  # median of the column triple
    torch.minimum(lo, bottom, out=lo)
    torch.maximum(hi, bottom, out=hi)

    def shifted(t):
        return t[..., 0:w], t[..., 1 : w + 1], t[..., 2 : w + 2]

    lo_a, lo_b, lo_c = shifted(lo)
    mid_a, mid_b, mid_c = shifted(mid)
    hi_a, hi_b, hi_c = shifted(hi)
    max_lo = torch.maximum(lo_a, lo_b)
    torch.maximum(max_lo, lo_c, out=max_lo)
    min_hi = torch.minimum(hi_a, hi_b)
    torch.minimum(min_hi, hi_c, out=min_hi)
    med_mid = _median3_into(mid_a, mid_b, mid_c)
    return _median3_into(max_lo, med_mid, min_hi)


def _median3_into(a, b, c):
    """Element-wise median of three same-shape tensors, max(min(a, b), min(max(a, b), c)): one new tensor, inputs unchanged."""
    import torch

    low = torch.minimum(a, b)
    high = torch.maximum(a, b)
    torch.minimum(high, c, out=high)
    torch.maximum(low, high, out=low)
    return low


def augment_images(images, params: AugmentParams):
    """Rotate, scale and translate each (n, C, H, W) torch image about its centre, then median-filter some.

    Pixels brought in from outside the image are 0, which is air in every Lee window
    (air is below every window's lower edge), so the head is never clipped with a
    bright border. Bilinear sampling keeps values inside the input's range.
    """
    import torch

    out = affine_warp(images, params)
    mask = torch.from_numpy(params.denoise)
    if bool(mask.any()):
        out[mask] = median3x3(out[mask])
    return out


def affine_warp(images, params: AugmentParams, shift_size: tuple[int, int] | None = None):
    """The rotation, scale and translation of `augment_images` alone (no median filter).

    It works in normalised coordinates, so a (n, C, h, w) map covering the same field as
    the images (e.g. a lesion map at 1/8 of their size) moves with them exactly when
    `shift_size` gives the (h, w) of the images `shift_px` was drawn for.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = images.shape
    theta_rad = np.deg2rad(params.rotation_deg)
    # Output pixel p samples input at A^-1 p: zooming out by `scale` means sampling a
    # larger area, i.e. dividing by the scale in the sampling matrix.
    inv = 1.0 / params.scale
    cos, sin = np.cos(theta_rad) * inv, np.sin(theta_rad) * inv
    mats = np.zeros((n, 2, 3), dtype=np.float32)
    mats[:, 0, 0], mats[:, 0, 1] = cos, -sin * h / w
    mats[:, 1, 0], mats[:, 1, 1] = sin * w / h, cos
    # translation in normalised coordinates: 2 px / size per pixel, sign so +x moves content right
    sh, sw = shift_size or (h, w)
    mats[:, 0, 2] = -2.0 * params.shift_px[:, 0] / sw
    mats[:, 1, 2] = -2.0 * params.shift_px[:, 1] / sh
    grid = F.affine_grid(torch.from_numpy(mats), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

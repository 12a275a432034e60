"""Image patches around a feature's strongest activation, and downsampled context slices, for the atlas."""

from __future__ import annotations

import numpy as np

from ichviewer.core.volume import AIR_HU
from ichviewer.inference.preprocessing import apply_taps, resample_taps

#: Patch side in mm (large enough for a convexity SDH or EDH with its neighbourhood).
PATCH_MM = 64.0
#: Patch side in pixels as stored.
PATCH_PX = 48
#: Longer side of the stored context slice, in pixels.
CONTEXT_PX = 128


def crop_resample(image: np.ndarray, centre: tuple[float, float], half_px: tuple[float, float], out_px: int, fill: float = 0.0) -> np.ndarray:
    """A square `out_px` patch of `image` (H, W) covering centre +- half_px (pixel units), antialiased; outside is `fill`."""
    img = np.asarray(image, dtype=np.float32) - np.float32(fill)
    taps = []
    for axis in (0, 1):
        scale = 2.0 * half_px[axis] / out_px
        lo = centre[axis] + 0.5 - half_px[axis]  # continuous coordinate of the box edge (pixel j covers [j, j+1])
        taps.append(resample_taps(out_px, img.shape[axis], scale, lo + 0.5 * scale - 0.5, mode="air"))
    return apply_taps(img[None], taps[0], taps[1])[0] + np.float32(fill)


def patch_around(hu: np.ndarray, heat: np.ndarray, pixel_spacing: tuple[float, float], *, patch_mm: float = PATCH_MM, patch_px: int = PATCH_PX) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """HU patch (int16), heat patch (uint8, scaled by the heat's maximum) and box (fractions y0, x0, y1, x1) at the heat's peak."""
    h = np.asarray(heat, dtype=np.float32)
    cy, cx = np.unravel_index(int(np.argmax(h)), h.shape)
    half = (patch_mm / 2.0 / pixel_spacing[0], patch_mm / 2.0 / pixel_spacing[1])
    hu_patch = crop_resample(hu, (cy, cx), half, patch_px, fill=AIR_HU)
    heat_patch = crop_resample(h, (cy, cx), half, patch_px, fill=0.0)
    peak = float(heat_patch.max())
    heat_u8 = np.clip(np.round(255.0 * heat_patch / peak), 0, 255).astype(np.uint8) if peak > 0 else np.zeros_like(heat_patch, np.uint8)
    rows, cols = h.shape
    box = ((cy + 0.5 - half[0]) / rows, (cx + 0.5 - half[1]) / cols, (cy + 0.5 + half[0]) / rows, (cx + 0.5 + half[1]) / cols)
    hu_i16 = np.clip(np.round(hu_patch), -32768, 32767).astype(np.int16)
    return hu_i16, heat_u8, tuple(float(b) for b in box)  # type: ignore[return-value]


def context_slice(hu: np.ndarray, max_px: int = CONTEXT_PX) -> np.ndarray:
    """The whole slice downsampled so its longer side is at most `max_px` (int16 HU), for context views."""
    img = np.asarray(hu, dtype=np.float32)
    scale = max(1.0, max(img.shape) / max_px)
    if scale == 1.0:
        return np.round(img).astype(np.int16)
    taps = [resample_taps(max(1, int(round(n / scale))), n, scale, 0.5 * scale - 0.5, mode="edge") for n in img.shape]
    return np.round(apply_taps(img[None], taps[0], taps[1])[0]).astype(np.int16)

"""Window presets as data; HU -> 8-bit display and HU -> multi-window model input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window in HU: `width` (WW) and `level` (WL, the centre)."""

    width: float
    level: float
    name: str = ""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"window width must be positive, got {self.width}")

    @property
    def low(self) -> float:
        return self.level - self.width / 2.0

    @property
    def high(self) -> float:
        return self.level + self.width / 2.0

    def label(self) -> str:
        return f"W{self.width:g} L{self.level:g}"


#: The three channel windows of Lee et al. 2019 (Methods, "Multi-window conversion"):
#: tissue (WL 40, WW 40) red, brain (WL 50, WW 100) green, blood (WL 60, WW 40) blue.
LEE_WINDOWS: tuple[Window, ...] = (
    Window(40, 40, "tissue"),
    Window(100, 50, "brain"),
    Window(40, 60, "blood"),
)

#: Brain (WL 40, WW 80), subdural (WL 80, WW 200) and bone (WL 600, WW 2800): the windows
#: radiologists page through for haemorrhage, common as model channels since the RSNA 2019
#: challenge. Unlike Lee et al.'s three (all inside 20-100 HU) they keep calcification,
#: metal and bone (hundreds of HU) apart from acute blood (50-90 HU), the mimics the seeds
#: name as a weak spot; the brain window still holds the blood-brain contrast.
BRAIN_SUBDURAL_BONE_WINDOWS: tuple[Window, ...] = (
    Window(80, 40, "brain"),
    Window(200, 80, "subdural"),
    Window(2800, 600, "bone"),
)

#: Brain/subdural/bone with Lee et al.'s narrow blood window (WL 60, WW 40) as a fourth channel
#: (departure 34 in `ichviewer.training`): acute blood (50-90 HU) against brain (25-45 HU) spans half
#: its 8-bit range instead of a quarter of the brain window's, for the punctate bleeds the target
#: turns on, while the bone window still keeps the mimics apart.
BRAIN_BLOOD_SUBDURAL_BONE_WINDOWS: tuple[Window, ...] = (
    Window(80, 40, "brain"),
    Window(40, 60, "blood"),
    Window(200, 80, "subdural"),
    Window(2800, 600, "bone"),
)

#: Channel window sets a training run can choose (`ichviewer train --windows`).
INPUT_WINDOW_SETS: dict[str, tuple[Window, ...]] = {
    "lee": LEE_WINDOWS,
    "brain-subdural-bone": BRAIN_SUBDURAL_BONE_WINDOWS,
    "brain-blood-subdural-bone": BRAIN_BLOOD_SUBDURAL_BONE_WINDOWS,
}


@lru_cache(maxsize=1)
def load_presets() -> tuple[Window, ...]:
    """The display presets shipped in `ichviewer/resources/presets.json`, in key order."""
    text = resources.files("ichviewer.resources").joinpath("presets.json").read_text("utf-8")
    return tuple(Window(float(p["width"]), float(p["level"]), p["name"]) for p in json.loads(text)["presets"])


def window_to_uint8(hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU to 0..255 with a linear ramp over [low, high], clipped (DICOM PS3.3 C.11.2.1.3, linear-exact)."""
    scale = 255.0 / window.width
    out = (np.asarray(hu, dtype=np.float32) - np.float32(window.low)) * np.float32(scale)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


class WindowLUT:
    """A cached lookup table for int16 HU -> uint8, the fast path for scrolling.

    Indexing a 64 K-entry table is several times faster than float arithmetic on a
    512 x 512 slice, which keeps a slice change well inside one frame.
    """

    _OFFSET = 32768

    def __init__(self, window: Window) -> None:
        self.window = window
        hu = np.arange(-self._OFFSET, self._OFFSET, dtype=np.float32)
        self._table = window_to_uint8(hu, window)

    def apply(self, hu: np.ndarray) -> np.ndarray:
        if hu.dtype == np.int16:
            return self._table[hu.astype(np.int32) + self._OFFSET]
        return window_to_uint8(hu, self.window)


def multi_window(hu: np.ndarray, windows: tuple[Window, ...] | list[Window] = LEE_WINDOWS) -> np.ndarray:
    """Stack one channel per window, each scaled to [0, 1] (Lee et al. 2019 multi-window conversion).

    `hu` is (..., H, W); the result is float32 (..., C, H, W). The paper encodes 8-bit
    greyscale images; we keep the same ramp in floating point, which differs only by
    the 8-bit quantisation.
    """
    hu = np.asarray(hu, dtype=np.float32)
    channels = [(hu - np.float32(w.low)) / np.float32(w.width) for w in windows]
    out = np.stack(channels, axis=-3)
    np.clip(out, 0.0, 1.0, out=out)
    return out

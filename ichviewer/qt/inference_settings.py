"""AI settings of the workstation as data: analyse on open, providers, model directory, overlay colour map."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ichviewer.qt.browser import SERIES_ORDERS
from ichviewer.qt.settings import write_json_atomic

log = logging.getLogger(__name__)

#: File in the settings folder holding these settings.
INFERENCE_SETTINGS_FILE = "inference.json"
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")


@dataclass(frozen=True)
class InferenceSettings:
    """What the reader chose for the AI.

    auto_infer     analyse every study as soon as it is opened
    providers      "auto" (GPU when it really works, else CPU), "cpu", "cuda" or "tensorrt"
    ensemble_dir   a model directory, or None for the bundled models/default
    colormap       pyqtgraph colour map of the attention overlay
    series_order   the series browser's order: "folder", or "ai" (the AI's priority, highest
                   probability of haemorrhage first; `ichviewer.qt.browser.SERIES_ORDERS`)
    keep_results   keep finished results in `<settings folder>/ai-results` so a series opened again,
                   in this session or a later one, shows its findings without running the models
                   (same voxels, same models, same provider; `ichviewer.inference.result_cache`)
    """

    auto_infer: bool = True
    providers: str = "auto"
    ensemble_dir: str | None = None
    colormap: str = "turbo"
    series_order: str = "folder"
    keep_results: bool = True

    def __post_init__(self) -> None:
        for name in ("auto_infer", "keep_results"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.providers not in PROVIDER_CHOICES:
            raise ValueError(f"providers must be one of {PROVIDER_CHOICES}, got {self.providers!r}")
        if self.series_order not in SERIES_ORDERS:
            raise ValueError(f"series_order must be one of {tuple(SERIES_ORDERS)}, got {self.series_order!r}")

    @classmethod
    def load(cls, folder: str | Path) -> InferenceSettings:
        """Settings from `<folder>/inference.json`; defaults when the file is missing, with a log line when it is invalid."""
        path = Path(folder) / INFERENCE_SETTINGS_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text("utf-8"))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A damaged settings file must not stop the viewer: defaults, and say why.
            log.warning("%s: ignored (%s); using the default AI settings", path, exc)
            return cls()

    def save(self, folder: str | Path) -> Path:
        return write_json_atomic(Path(folder) / INFERENCE_SETTINGS_FILE, asdict(self), indent=2)

    def with_changes(self, **changes: Any) -> InferenceSettings:
        return replace(self, **changes)

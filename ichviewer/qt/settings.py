"""Viewer settings on disk: the settings folder, recent studies and key/mouse bindings as data."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

#: Environment variable that moves every per-user file (tests point it at tmp_path).
SETTINGS_ENV = "ICHVIEWER_SETTINGS_DIR"
RECENT_FILE = "recent.json"
KEYMAP_FILE = "keymap.json"
MAX_RECENT = 10

log = logging.getLogger(__name__)

_MOUSE_BUTTONS = ("left", "right", "middle")
_MODIFIERS = ("ctrl", "shift", "alt", "meta")


def settings_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the viewer's per-user files: argument, else $ICHVIEWER_SETTINGS_DIR, else ~/.config/ichviewer."""
    if explicit:
        d = Path(explicit)
    elif os.environ.get(SETTINGS_ENV):
        d = Path(os.environ[SETTINGS_ENV])
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        d = Path(base) / "ichviewer"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = None) -> Path:
    """Write `data` as JSON to `path` through a temporary file beside it, so a crash leaves the old
    file or the new one, never half of one. Raises OSError (the callers decide what a failure costs).
    """
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=indent) + "\n", "utf-8")
    tmp.replace(path)
    return path


class RecentStudies:
    """Most recently opened paths, newest first, kept as JSON in the settings folder."""

    def __init__(self, folder: Path, limit: int = MAX_RECENT) -> None:
        self.path = Path(folder) / RECENT_FILE
        self.limit = limit

    def paths(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            # A missing or damaged list only costs the reader their history.
            return []
        return [str(p) for p in data.get("recent", []) if isinstance(p, str)][: self.limit]

    def add(self, path: str | os.PathLike[str]) -> list[str]:
        p = str(Path(path).resolve())
        items = [p] + [q for q in self.paths() if q != p]
        items = items[: self.limit]
        try:
            write_json_atomic(self.path, {"recent": items}, indent=2)
        except OSError as exc:  # a full disk or read-only folder costs the history, never the study being opened
            log.warning("could not save the recent studies to %s: %s", self.path, exc)
        return items


@dataclass(frozen=True)
class MouseBindings:
    """Which button does what on the slice views, and how sensitive window/level dragging is."""

    window_level: str = "right"
    pan: str = "middle"
    crosshair: str = "left"
    zoom_wheel_modifier: str = "ctrl"
    fine_modifier: str = "shift"
    wheel_down_is_next_slice: bool = True
    window_level_hu_per_pixel: float = 2.0
    window_level_relative_per_pixel: float = 0.005
    fine_factor: float = 0.1
    zoom_per_wheel_step: float = 1.15

    def __post_init__(self) -> None:
        for name in ("window_level", "pan", "crosshair"):
            if getattr(self, name) not in _MOUSE_BUTTONS:
                raise ValueError(f"keymap mouse.{name} must be one of {_MOUSE_BUTTONS}, got {getattr(self, name)!r}")
        for name in ("zoom_wheel_modifier", "fine_modifier"):
            if getattr(self, name) not in _MODIFIERS:
                raise ValueError(f"keymap mouse.{name} must be one of {_MODIFIERS}, got {getattr(self, name)!r}")
        if not self.zoom_per_wheel_step > 1.0:
            raise ValueError("keymap mouse.zoom_per_wheel_step must be greater than 1")

    def hu_per_pixel(self, width: float, fine: bool) -> float:
        """Window/level change per dragged pixel: coarse steps grow with the width (bone vs brain)."""
        step = max(self.window_level_hu_per_pixel, self.window_level_relative_per_pixel * width)
        return step * (self.fine_factor if fine else 1.0)


@dataclass(frozen=True)
class Keymap:
    """Keyboard actions (action -> key sequences), preset keys in preset order, and mouse bindings."""

    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    presets: tuple[str, ...] = ()
    mouse: MouseBindings = MouseBindings()
    source: str = ""

    def keys_for(self, action: str) -> tuple[str, ...]:
        return self.keys.get(action, ())


def _default_keymap_data() -> dict[str, Any]:
    text = resources.files("ichviewer.resources").joinpath(KEYMAP_FILE).read_text("utf-8")
    return json.loads(text)


def load_keymap(folder: Path | None = None) -> Keymap:
    """Bindings from the shipped keymap.json, with entries of `<folder>/keymap.json` overriding them.

    Raises ValueError naming the file when the user's override is not valid JSON or
    names an unknown button or modifier.
    """
    data = _default_keymap_data()
    source = "built-in"
    if folder is not None and (Path(folder) / KEYMAP_FILE).is_file():
        user_file = Path(folder) / KEYMAP_FILE
        try:
            user = json.loads(user_file.read_text("utf-8"))
        except ValueError as exc:
            raise ValueError(f"{user_file}: not valid JSON ({exc})") from None
        user_keys = user.get("keys", {})
        # A key the user gives to one action is taken from any built-in action that had it, so the
        # shortcut is not ambiguous (Qt would then run neither).
        taken = {str(k).strip().lower() for a, ks in user_keys.items() if not str(a).startswith("_") for k in ks}
        built_in = {a: [k for k in ks if str(k).strip().lower() not in taken] if not a.startswith("_") else ks
                    for a, ks in data.get("keys", {}).items()}
        data["keys"] = {**built_in, **user_keys}
        if "presets" in user:
            data["presets"] = user["presets"]
        data["mouse"] = {**data.get("mouse", {}), **user.get("mouse", {})}
        source = str(user_file)
    try:
        mouse = MouseBindings(**{k: v for k, v in data.get("mouse", {}).items() if not k.startswith("_")})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} keymap: {exc}") from None
    keys = {str(a): tuple(str(k) for k in ks) for a, ks in data.get("keys", {}).items() if not a.startswith("_")}
    return Keymap(keys=keys, presets=tuple(str(k) for k in data.get("presets", [])), mouse=mouse, source=source)

"""Before Qt opens a window on Linux: is there a display, and can the xcb plugin load?

Without either, Qt prints a generic line and aborts the process ("could not load the Qt
platform plugin 'xcb'"). `display_problem` finds the cause first, so `ichviewer open` and
`ichviewer demo` can say which system libraries are missing (and the Debian packages that
hold them) and exit cleanly. It imports nothing from Qt; it reads the plugin's linkage with
`ldd`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def xcb_plugin_path() -> Path | None:
    """The xcb platform plugin of the installed PySide6, if there is one."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for rel in ("Qt/plugins/platforms/libqxcb.so", "plugins/platforms/libqxcb.so"):
            p = Path(base) / rel
            if p.is_file():
                return p
    return None


def missing_libraries(plugin: Path) -> list[str]:
    """Shared libraries `plugin` links against that the dynamic loader cannot find (by `ldd`); [] if unknown."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(set(_NOT_FOUND.findall(out)))


def debian_package(soname: str) -> str:
    """Debian's package name for a library soname: libxcb-icccm.so.4 -> libxcb-icccm4, libxkbcommon-x11.so.0 -> libxkbcommon-x11-0."""
    m = re.match(r"^(lib.+?)\.so\.(\d+)", soname)
    if not m:
        return soname
    stem, major = m.groups()
    return f"{stem}-{major}" if stem[-1].isdigit() else f"{stem}{major}"


def display_problem(environ: Mapping[str, str] | None = None, plugin: Path | None = None, platform: str | None = None) -> str | None:
    """Why Qt could not open a window here, in a sentence a user can act on; None if nothing is known to be wrong."""
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").strip()
    if qpa and not qpa.startswith("xcb"):
        return None  # offscreen, wayland, vnc...: Qt reports its own problems
    if not qpa and env.get("WAYLAND_DISPLAY"):
        return None
    if not env.get("DISPLAY"):
        return (
            "no display to open a window on (DISPLAY is not set). Run it in a desktop session; on a server, "
            "under a virtual screen (`xvfb-run -a ichviewer ...`), or with QT_QPA_PLATFORM=offscreen and --screenshot"
        )
    plugin = plugin if plugin is not None else xcb_plugin_path()
    if plugin is None:
        return None
    missing = missing_libraries(plugin)
    if not missing:
        return None
    packages = " ".join(debian_package(s) for s in missing)
    return (
        f"Qt's X11 plugin ({plugin.name}) cannot load: the system libraries {', '.join(missing)} are missing. "
        f"On Debian or Ubuntu: `apt-get install {packages}` (README, 'Using it')"
    )

"""Install-level promises: the Qt boundary, a clean interpreter exit with Qt + pyqtgraph, a light CLI start."""

from __future__ import annotations

import importlib.metadata
import pkgutil
import subprocess
import sys
import textwrap

import ichviewer

QT_MODULES = ("PySide6", "pyqtgraph", "vtkmodules.qt", "shiboken6")


def _non_qt_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(ichviewer.__path__, "ichviewer."):
        if info.name.startswith("ichviewer.qt") or info.name.startswith("ichviewer.training"):
            continue
        names.append(info.name)
    return names


def test_nothing_outside_qt_room_imports_qt() -> None:
    """Import every non-Qt module with Qt blocked (GUIDE: the Qt boundary)."""
    modules = _non_qt_modules()
    assert "ichviewer.io.dicom" in modules and "ichviewer.core.volume" in modules
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, sys
        BLOCKED = {QT_MODULES!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"Qt module {{name}} imported outside ichviewer.qt")
                return None
        sys.meta_path.insert(0, Block())
        for m in {modules!r}:
            importlib.import_module(m)
        print("ok", len({modules!r}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_cli_help_starts_without_heavy_imports() -> None:
    script = (
        "import sys, ichviewer.cli as c; c.build_parser().format_help();"
        "print(sorted(m for m in ('onnxruntime','vtk','torch','PySide6','pyqtgraph','scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_qt_and_pyqtgraph_exit_cleanly() -> None:
    """PySide6 6.12.0 with pyqtgraph 0.14 aborts at exit ("Fatal Python error: bool_dealloc"); catch a regression."""
    script = textwrap.dedent(
        """
        import os
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import numpy as np
        from PySide6.QtWidgets import QApplication
        import pyqtgraph as pg
        app = QApplication([])
        w = pg.PlotWidget()
        w.plot(np.arange(10), np.arange(10) ** 2)
        img = pg.ImageItem(np.zeros((8, 8), np.uint8), levels=(0, 255))
        w.addItem(img)
        w.show()
        app.processEvents()
        w.close()
        print("done")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "Fatal Python error" not in out.stderr, out.stderr
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr


def test_installed_pyside6_is_inside_the_tested_range() -> None:
    version = importlib.metadata.version("PySide6-Essentials")
    major, minor = (int(x) for x in version.split(".")[:2])
    assert (6, 8) <= (major, minor) < (6, 12), version

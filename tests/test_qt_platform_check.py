"""The pre-flight before Qt opens a window: a missing display or missing xcb libraries are named, not an abort."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ichviewer.cli import main
from ichviewer.qt.platform_check import debian_package, display_problem, missing_libraries, xcb_plugin_path


def test_debian_package_names_follow_the_soname():
    assert debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert debian_package("libxcb-cursor.so.0") == "libxcb-cursor0"


def test_no_display_is_named_and_other_platforms_are_left_to_qt(tmp_path):
    assert "DISPLAY is not set" in display_problem({}, platform="linux")
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, platform="linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, platform="linux") is None
    assert display_problem({}, platform="darwin") is None


@pytest.fixture
def plugin_missing_a_library(tmp_path):
    """A real shared object linked against a library that is then removed: what ldd shows for a bare server's plugin."""
    gcc, ldd = shutil.which("gcc"), shutil.which("ldd")
    if gcc is None or ldd is None or not sys.platform.startswith("linux"):
        pytest.skip("needs gcc and ldd on Linux")
    (tmp_path / "dep.c").write_text("int dep(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int dep(void); int plugin(void) { return dep(); }\n")
    run = lambda *a: subprocess.run(a, cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run(gcc, "-shared", "-fPIC", "-o", "libichtestdep.so.3", "-Wl,-soname,libichtestdep.so.3", "dep.c")
    run("ln", "-s", "libichtestdep.so.3", "libichtestdep.so")
    run(gcc, "-shared", "-fPIC", "-o", "libqxcb.so", "plugin.c", "-L.", "-lichtestdep")
    (tmp_path / "libichtestdep.so.3").unlink()
    return tmp_path / "libqxcb.so"


def test_missing_xcb_libraries_are_named_with_their_packages(plugin_missing_a_library):
    assert missing_libraries(plugin_missing_a_library) == ["libichtestdep.so.3"]
    problem = display_problem({"DISPLAY": ":99"}, plugin=plugin_missing_a_library, platform="linux")
    assert "libichtestdep.so.3" in problem and "apt-get install libichtestdep3" in problem


def test_the_installed_plugin_is_found_and_open_refuses_without_a_display(monkeypatch, tmp_path, capsys):
    if sys.platform.startswith("linux"):
        assert xcb_plugin_path() is not None and xcb_plugin_path().name == "libqxcb.so"
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["open", str(tmp_path), "--settings-dir", str(tmp_path / "s"), "--no-ai"]) == 1
    assert "no display to open a window on" in capsys.readouterr().err


def test_demo_without_a_display_refuses_before_writing_the_case(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    cache = tmp_path / "demo-cache"
    assert main(["demo", "--cache-dir", str(cache), "--settings-dir", str(tmp_path / "s"), "--no-ai"]) == 1
    assert "no display to open a window on" in capsys.readouterr().err
    assert not cache.exists()

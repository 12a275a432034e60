"""Shared fixtures: offscreen Qt, the real CT series, per-test settings, and a thread-leak check."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ICHVIEWER_DISABLE_SPLASH", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SERIES = ("ge-head-tilted", "philips-phantom-5mm", "philips-phantom-1mm")


def find_ct_data_dir() -> Path | None:
    """The folder of real head-CT series: $ICHVIEWER_CT_DATA, else ../shared/data/ct beside the checkout."""
    candidates = [os.environ.get("ICHVIEWER_CT_DATA")]
    candidates += [str(p / "shared" / "data" / "ct") for p in REPO_ROOT.parents]
    for c in candidates:
        if c and all((Path(c) / s).is_dir() for s in REAL_SERIES):
            return Path(c)
    return None


@pytest.fixture(scope="session")
def ct_data_dir() -> Path:
    found = find_ct_data_dir()
    if found is None:
        pytest.fail(
            "the real CT series were not found: set ICHVIEWER_CT_DATA to the folder holding "
            f"{', '.join(REAL_SERIES)} (normally ../shared/data/ct beside the checkout)"
        )
    return found


@pytest.fixture(autouse=True)
def settings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own settings, cache and review database location."""
    d = tmp_path / "settings"
    d.mkdir()
    monkeypatch.setenv("ICHVIEWER_SETTINGS_DIR", str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return d


@pytest.fixture(autouse=True)
def no_thread_left_running():
    """Fail a test that leaves a Python thread or a Qt pool thread running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        busy_pool = 0
        if "PySide6.QtCore" in sys.modules:
            from PySide6.QtCore import QThreadPool

            busy_pool = QThreadPool.globalInstance().activeThreadCount()
        if not extra and not busy_pool:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"test left threads running: {[t.name for t in extra]}, Qt pool threads busy: {busy_pool}")
        time.sleep(0.02)


@pytest.fixture
def shown_main_window(qtbot):
    """A shown MainWindow; after the test it is closed, and its AI and atlas workers must have stopped."""
    from ichviewer.qt.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()  # the window's Close event stops the AI and atlas workers (bounded)
    for name in ("inference", "atlas"):
        pool = getattr(getattr(getattr(w, name, None), "controller", None), "_pool", None)
        if pool is not None:
            assert pool.activeThreadCount() == 0, f"the {name} worker was still running after the window closed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """An unexpected skip is a failure (GUIDE): a skipped test hides a broken feature."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"test was skipped, which this project treats as a failure: {report.longrepr}"


@pytest.fixture
def store(tmp_path: Path):
    """A new review database under tmp_path, written as "tester" (panel and widget tests define their own)."""
    from ichviewer.review import ReviewStore

    with ReviewStore(tmp_path / "review.sqlite", actor="tester") as s:
        yield s

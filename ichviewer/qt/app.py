"""Start the workstation: one QApplication, one MainWindow, a clean exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from ichviewer.qt.main_window import MainWindow


def ensure_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("ICH Viewer")
        app.setOrganizationName("ichviewer")
    return app  # type: ignore[return-value]


def build_workstation(
    settings_path: str | os.PathLike[str] | None = None,
    *,
    models_dir: str | os.PathLike[str] | None = None,
    ai: bool = True,
    db_path: str | os.PathLike[str] | None = None,
    reader: tuple[str, str] | None = None,
    ask_reader: bool = True,
) -> MainWindow:
    """The main window with the AI panels (findings, plot, attention map, prediction basis) and the review panels."""
    from ichviewer.qt.inference_attach import attach_inference
    from ichviewer.qt.review_attach import attach_review

    window = MainWindow(settings_path)
    if ai:
        attach_inference(window, ensemble_dir=models_dir)
    attach_review(window, db_path, reader=reader, ask_reader=ask_reader)
    if ai:
        from ichviewer.qt.atlas_attach import attach_atlas

        # After the review panels: the atlas self-test keeps its answers in the review database.
        atlas = attach_atlas(window)
        review = getattr(window, "review", None)
        if review is not None:
            # Stacking four panels on the right makes the window taller than a 1080p
            # screen; the verdict and the prediction basis share one place as tabs.
            window.tabifyDockWidget(review.adjudication_dock, atlas.dock)
            review.adjudication_dock.raise_()
    return window


def run_viewer(
    path: str | os.PathLike[str] | None = None,
    settings_path: str | os.PathLike[str] | None = None,
    on_shown: Callable[[MainWindow], None] | None = None,
    **workstation: object,
) -> int:
    """Open the workstation (on `path` if given) and run the event loop until it closes.

    `on_shown` is called once the event loop runs (screenshots, scripted demos);
    `workstation` options go to `build_workstation`.
    """
    app = ensure_app()
    window = build_workstation(settings_path, **workstation)  # type: ignore[arg-type]
    window.show()
    if path is not None:
        window.open_path(path)
    if on_shown is not None:
        QTimer.singleShot(0, lambda: on_shown(window))
    code = app.exec()
    # Tear down while the interpreter is intact: stop workers, then delete the widgets,
    # so nothing Qt-owned is left for Python's final garbage collection.
    window.shutdown()
    window.deleteLater()
    app.processEvents()
    del window
    return int(code)


#: Longest wait for the AI's findings before a screenshot is taken anyway.
SCREENSHOT_AI_WAIT_MS = 120_000


def run_viewer_for_screenshot(
    path: str | os.PathLike[str] | None,
    settings_path: str | os.PathLike[str] | None,
    screenshot: str,
    **workstation: object,
) -> int:
    """Open the workstation, save a PNG once the study (and its reformats) is on screen, then quit.

    When the AI is analysing the study, the PNG waits for its findings (at most
    SCREENSHOT_AI_WAIT_MS), so the picture shows what a reader would see.
    Returns 1 if the notifier reported an error (the PNG then shows it), else the app's exit code.
    """
    result = {"code": 0, "saved": False}

    def arm(window: MainWindow) -> None:
        def save() -> None:
            if result["saved"]:
                return
            result["saved"] = True
            window.grab().save(screenshot)
            print(f"screenshot: {screenshot}")
            window.close()

        def on_error(_message: str) -> None:
            result["code"] = 1
            QTimer.singleShot(300, save)

        def when_shown(_volume: object) -> None:
            controller = getattr(getattr(window, "inference", None), "controller", None)
            if controller is not None and controller.is_running:
                for signal in (controller.sig_finished, controller.sig_failed, controller.sig_cancelled):
                    signal.connect(lambda *_a: QTimer.singleShot(300, save))
                QTimer.singleShot(SCREENSHOT_AI_WAIT_MS, save)
            else:
                QTimer.singleShot(300, save)

        window.sig_reformats_ready.connect(when_shown)
        window.sig_error.connect(on_error)
        if path is None:
            QTimer.singleShot(300, save)

    code = run_viewer(path, settings_path, on_shown=arm, **workstation)
    return int(result["code"] or code)

"""Worker bridge: runs plain loading functions off the GUI thread and brings results back by queued signals."""

from __future__ import annotations

import itertools
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from ichviewer.core.volume import CTVolume
from ichviewer.io import DicomInputError, LoadResult, load_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadRequest:
    """An immutable snapshot of one 'open this path' request; `request_id` says whether it is still current."""

    request_id: int
    path: str


@dataclass(frozen=True)
class ReformatRequest:
    """Resample one shown volume for MPR; tied to the load request and series it belongs to."""

    request_id: int
    series_uid: str
    volume: CTVolume


def load_study(request: LoadRequest) -> LoadResult:
    """The work of opening a path: scan and load every CT series (plain function, no Qt)."""
    return load_path(request.path)


def regularize_volume(request: ReformatRequest) -> CTVolume:
    """The work of preparing reformats: an orthogonal, evenly spaced copy (plain function, no Qt)."""
    return request.volume.regularized()


def describe_error(path: str, exc: BaseException) -> str:
    """One message a reader can act on: the loader's own message, or the path and the exception."""
    if isinstance(exc, DicomInputError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or path}: {exc.strerror or exc}"
    return f"{path}: unexpected error while loading ({type(exc).__name__}: {exc})"


class WorkerJob(QRunnable):
    """Runs `fn` on a pool thread; its result goes to `done`, an exception to `fail` (both normally emit
    a queued signal). Never touches widgets. The one job class of every worker bridge in `qt/`."""

    def __init__(self, fn: Callable[[], Any], done: Callable[[Any], None], fail: Callable[[BaseException], None]) -> None:
        super().__init__()
        self._fn, self._done, self._fail = fn, done, fail

    def run(self) -> None:  # worker thread: never touch widgets here
        try:
            result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the notifier
            log.debug("worker failed:\n%s", traceback.format_exc())
            emit_safely(self._fail, exc)
        else:
            emit_safely(self._done, result)


def emit_safely(emit: Callable[..., None], *args: Any) -> None:
    # After a shutdown that timed out, the bridge may be gone when a late job ends.
    try:
        emit(*args)
    except RuntimeError:
        log.debug("late worker result after its bridge was deleted")


class StudyLoader(QObject):
    """Starts load and reformat jobs on its own thread pool; emits results on the GUI thread.

    Each `open()` makes a new request id and supersedes the previous one: results
    of an older request still arrive but are marked stale and dropped here, so a
    slow folder opened first can never replace the study opened after it.
    """

    sig_loaded = Signal(object, object)  # LoadRequest, LoadResult
    sig_load_failed = Signal(object, str)  # LoadRequest, message
    sig_reformatted = Signal(object, object)  # ReformatRequest, CTVolume
    sig_reformat_failed = Signal(object, str)
    # Emitted from worker threads; connected to the slots below, so they are queued.
    _sig_job_done = Signal(str, object, object)
    _sig_job_failed = Signal(str, object, object)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._ids = itertools.count(1)
        self._current = 0
        self._closed = False
        self._sig_job_done.connect(self._on_job_done)
        self._sig_job_failed.connect(self._on_job_failed)

    @property
    def current_request_id(self) -> int:
        return self._current

    def is_current(self, request_id: int) -> bool:
        return request_id == self._current and not self._closed

    def open(self, path: str | os.PathLike[str]) -> LoadRequest:
        """Start loading `path`; earlier requests become stale."""
        request = LoadRequest(next(self._ids), os.fspath(path))
        self._current = request.request_id
        self._start("load", request, lambda: load_study(request))
        return request

    def reformat(self, request_id: int, volume: CTVolume) -> ReformatRequest:
        request = ReformatRequest(request_id, volume.series_uid, volume)
        self._start("reformat", request, lambda: regularize_volume(request))
        return request

    def _start(self, kind: str, request: Any, fn: Callable[[], Any]) -> None:
        if self._closed:
            return
        job = WorkerJob(
            fn,
            lambda result: self._sig_job_done.emit(kind, request, result),
            lambda exc: self._sig_job_failed.emit(kind, request, exc),
        )
        self._pool.start(job)

    def _on_job_done(self, kind: str, request: Any, result: Any) -> None:
        if not self.is_current(request.request_id):
            log.debug("dropped stale %s result for request %s", kind, request.request_id)
            return
        if kind == "load":
            self.sig_loaded.emit(request, result)
        else:
            self.sig_reformatted.emit(request, result)

    def _on_job_failed(self, kind: str, request: Any, exc: BaseException) -> None:
        if not self.is_current(request.request_id):
            return
        path = getattr(request, "path", "") or getattr(request.volume, "series_description", "")
        message = describe_error(path, exc)
        if kind == "load":
            self.sig_load_failed.emit(request, message)
        else:
            self.sig_reformat_failed.emit(request, message)

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Block until running jobs finish (tests and shutdown)."""
        return bool(self._pool.waitForDone(timeout_ms))

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Bounded shutdown: drop queued jobs, mark everything stale, wait for running ones."""
        self._closed = True
        self._pool.clear()
        ok = self.wait(timeout_ms)
        if not ok:
            log.warning("a loading job was still running after %d ms at shutdown", timeout_ms)
        return ok

"""Worker bridge for the prediction basis: runs atlas retrieval off the GUI thread, newest request wins, results by queued signals."""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal

from ichviewer.qt.workers import WorkerJob

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RetrievalRequest:
    """Immutable snapshot of one 'prediction basis for this slice and label' request."""

    request_id: int
    volume: Any
    slice_index: int
    label: str
    k: int = 6


def find_atlas(ensemble_dir: str | Path) -> tuple[Path | None, str]:
    """(atlas path, "") for the ensemble's explaining member, or (None, why not) in words a reader can act on."""
    from ichviewer.atlas.store import atlas_path_for
    from ichviewer.inference import InferenceError
    from ichviewer.inference.manifest import load_manifest

    try:
        manifest = load_manifest(ensemble_dir)
    except InferenceError as exc:
        return None, f"No prediction basis: the AI models could not be read ({exc})"
    spec = manifest.explaining
    if spec is None:
        return None, "No prediction basis: no model in the ensemble has attention maps"
    path = atlas_path_for(manifest.directory, spec.name)
    if not path.is_file():
        return None, f"No prediction basis: there is no atlas for model '{spec.name}' ({path.name}); build it with `ichviewer atlas build`"
    return path, ""


def describe_retrieval_error(exc: BaseException) -> str:
    """One sentence for the panel and the notifier; the findings themselves are not affected."""
    from ichviewer.atlas.store import AtlasError, AtlasMismatchError

    if isinstance(exc, AtlasMismatchError):
        return f"The atlas does not belong to the installed model and is not used: {exc.problem}"
    if isinstance(exc, AtlasError):
        return f"The atlas cannot be used: {exc}"
    first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
    return f"The prediction basis could not be retrieved: {first}. The findings are not affected."


def run_retrieval(request: RetrievalRequest, atlas: Any, ensemble: Any) -> Any:
    """The work of one request (plain function, no Qt)."""
    from ichviewer.atlas import retrieve

    return retrieve(request.volume, request.slice_index, request.label, atlas, ensemble, k=request.k)


class AtlasController(QObject):
    """Retrieves prediction bases on one worker thread.

    `request()` snapshots volume, slice and label with a new id. While a retrieval
    runs, newer requests replace the one waiting (scrolling through 30 slices
    queues at most one), and only the result of the newest request is emitted.
    Signals: `sig_started(id, slice, label)`, `sig_ready(id, Retrieval)`,
    `sig_failed(id, message)`.
    """

    sig_started = Signal(int, int, str)
    sig_ready = Signal(int, object)
    sig_failed = Signal(int, str)
    _sig_done = Signal(object, object)
    _sig_fail = Signal(object, object)

    def __init__(self, ensemble_dir: str | Path | None, atlas_path: str | Path | None = None, *, cache: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        from ichviewer.qt.inference_controller import EnsembleCache

        self.cache = cache if cache is not None else EnsembleCache()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._ids = itertools.count(1)
        self._current = 0
        self._running: RetrievalRequest | None = None
        self._pending: RetrievalRequest | None = None
        self._closed = False
        self._atlas: Any = None
        self._atlas_lock = threading.Lock()
        self.unavailable_reason = ""
        self.ensemble_dir: Path | None = None
        self.atlas_path: Path | None = None
        if ensemble_dir is None:
            from ichviewer.inference import InferenceError
            from ichviewer.inference.manifest import default_models_dir

            try:
                ensemble_dir = default_models_dir()
            except InferenceError:
                self.unavailable_reason = "No prediction basis: no AI models are installed"
        if ensemble_dir is not None:
            self.ensemble_dir = Path(ensemble_dir)
            if atlas_path is not None:
                self.atlas_path = Path(atlas_path)
                if not self.atlas_path.is_file():
                    self.unavailable_reason = f"No prediction basis: the atlas {self.atlas_path} does not exist"
            else:
                self.atlas_path, self.unavailable_reason = find_atlas(self.ensemble_dir)
        self._sig_done.connect(self._on_done)
        self._sig_fail.connect(self._on_fail)

    @property
    def available(self) -> bool:
        return not self.unavailable_reason and self.atlas_path is not None and self.ensemble_dir is not None

    @property
    def current_request_id(self) -> int:
        return self._current

    def request(self, volume: Any, slice_index: int, label: str, k: int = 6) -> int:
        """Ask for the basis of `label` on `slice_index`; returns the request id (0 if unavailable)."""
        if self._closed or not self.available or volume is None:
            return 0
        req = RetrievalRequest(next(self._ids), volume, int(slice_index), str(label), int(k))
        self._current = req.request_id
        self.sig_started.emit(req.request_id, req.slice_index, req.label)
        if self._running is None:
            self._start(req)
        else:
            self._pending = req  # newest wins; the one waiting before is dropped unseen
        return req.request_id

    def cancel(self) -> None:
        """Forget the waiting request and make the running one stale (e.g. another study opened)."""
        self._pending = None
        self._current = next(self._ids)

    def _worker_atlas(self) -> Any:
        with self._atlas_lock:
            if self._atlas is None:
                from ichviewer.atlas import open_atlas

                self._atlas = open_atlas(self.atlas_path)
            return self._atlas

    def _start(self, req: RetrievalRequest) -> None:
        self._running = req
        ensemble_dir = self.ensemble_dir

        def work() -> Any:
            return run_retrieval(req, self._worker_atlas(), self.cache.get(ensemble_dir))

        self._pool.start(WorkerJob(work, lambda result: self._sig_done.emit(req, result), lambda exc: self._sig_fail.emit(req, exc)))

    def _next(self) -> None:
        self._running = None
        if self._pending is not None and not self._closed:
            req, self._pending = self._pending, None
            self._start(req)

    def _on_done(self, req: RetrievalRequest, result: Any) -> None:
        self._next()
        if req.request_id == self._current and not self._closed:
            self.sig_ready.emit(req.request_id, result)

    def _on_fail(self, req: RetrievalRequest, exc: BaseException) -> None:
        self._next()
        if req.request_id == self._current and not self._closed:
            self.sig_failed.emit(req.request_id, describe_retrieval_error(exc))

    def wait(self, timeout_ms: int = 10000) -> bool:
        return bool(self._pool.waitForDone(timeout_ms))

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Bounded: drop the waiting request, wait for the running one, close the atlas."""
        self._closed = True
        self._pending = None
        self._pool.clear()
        ok = self.wait(timeout_ms)
        if not ok:
            log.warning("an atlas retrieval was still running after %d ms at shutdown", timeout_ms)
        with self._atlas_lock:
            if self._atlas is not None and ok:
                self._atlas.close()
                self._atlas = None
        return ok

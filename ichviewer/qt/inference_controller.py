"""Worker bridge for AI inference: runs the Qt-free engine off the GUI thread and brings results back by queued signals."""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, Signal

from ichviewer.qt.workers import WorkerJob, emit_safely

log = logging.getLogger(__name__)

#: What the reader is told after every AI failure: the images are still there.
CONTINUES = "Reading continues without AI."

#: Provider names as a radiologist reads them in the panel.
PROVIDER_NAMES = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "GPU (CUDA)",
    "TensorrtExecutionProvider": "GPU (TensorRT)",
    "DmlExecutionProvider": "GPU (DirectML)",
    "CoreMLExecutionProvider": "Apple Neural Engine (CoreML)",
}


def provider_display_name(provider: str) -> str:
    """'CPUExecutionProvider' -> 'CPU'; 'A, B' (members on different providers) -> 'CPU, GPU (CUDA)'."""
    parts = [p.strip() for p in str(provider).split(",") if p.strip()]
    return ", ".join(PROVIDER_NAMES.get(p, p.removesuffix("ExecutionProvider")) for p in parts) or "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def describe_inference_error(exc: BaseException, *, provider: str | None = None) -> str:
    """One sentence a radiologist can act on, for any failure of model loading, inference or attention maps."""
    from ichviewer.inference import EnsembleNotFoundError, ManifestError, ModelContractError

    if isinstance(exc, EnsembleNotFoundError):
        return f"No AI models installed (models/default missing). {CONTINUES}"
    if isinstance(exc, ModelContractError):
        problem = exc.problem
        low = problem.lower()
        if "sha-256 mismatch" in low and "cam" in low:
            what = "attention-map weights file is damaged (checksum mismatch)"
        elif "sha-256 mismatch" in low:
            what = "file is damaged (checksum mismatch)"
        elif "model file is missing" in low:
            what = "file is missing"
        elif "cam weights file" in low and "missing" in low:
            what = "attention-map weights file is missing"
        elif "onnx runtime cannot load" in low:
            what = "file cannot be opened by ONNX Runtime (damaged or unsupported)"
        else:
            what = f"does not match its manifest ({problem})"
        return f"The AI models could not be loaded: model '{exc.model}' {what}. {CONTINUES}"
    if isinstance(exc, ManifestError):
        return f"The AI models could not be loaded: the model list (manifest) is invalid: {exc}. {CONTINUES}"
    if isinstance(exc, MemoryError):
        return (
            "The AI analysis ran out of memory on this computer. Close other studies or programs and "
            f"open the study again. {CONTINUES}"
        )
    where = f" on {provider_display_name(provider)}" if provider else ""
    return f"The AI analysis failed{where}: {_first_line(exc)}. {CONTINUES}"


def describe_attention_error(exc: BaseException, *, provider: str | None = None) -> str:
    """Like `describe_inference_error`, for an attention map (the findings may still be fine)."""
    from ichviewer.inference import ModelContractError

    if isinstance(exc, ModelContractError) and ("cam" in exc.problem.lower() or "attention" in exc.problem.lower()):
        return f"Attention maps are not available: {exc.problem}. The findings are not affected."
    message = describe_inference_error(exc, provider=provider)
    if message.startswith("The AI analysis failed"):
        message = message.replace("The AI analysis failed", "The attention map could not be computed", 1)
    return message


class EnsembleCache:
    """Loaded ensembles by directory, shared by the inference and attention jobs (loading is slow: checksums, sessions).

    Thread-safe: the first job to need a directory loads it while later ones wait.
    A failure is not cached, so a repaired model directory works on the next study.
    """

    def __init__(self, providers: str | None = None) -> None:
        self.providers = providers
        self._load_lock = threading.Lock()  # one load at a time (held for seconds)
        self._lock = threading.Lock()  # the dict only (held for microseconds: the GUI thread peeks)
        self._loaded: dict[str, Any] = {}

    def get(self, directory: str | Path) -> Any:
        from ichviewer.inference import load_ensemble

        key = str(Path(directory).resolve())
        with self._lock:
            ensemble = self._loaded.get(key)
        if ensemble is not None:
            return ensemble
        with self._load_lock:
            with self._lock:
                ensemble = self._loaded.get(key)
            if ensemble is None:
                ensemble = load_ensemble(key, providers=self.providers)
                with self._lock:
                    self._loaded[key] = ensemble
            return ensemble

    def peek(self, directory: str | Path) -> Any | None:
        """The ensemble if it is already loaded (never loads, never waits for a load)."""
        with self._lock:
            return self._loaded.get(str(Path(directory).resolve()))

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


@dataclass(frozen=True, eq=False)
class StudyRequest:
    """Immutable snapshot of one 'analyse this volume' request; `request_id` says whether it is still current."""

    request_id: int
    volume: Any  # CTVolume
    ensemble_dir: Path
    chunk: int = 8
    #: False: run the models even when a result of the same voxels by the same models is kept
    #: (AI › Analyse this study asks for a fresh run).
    use_kept: bool = True


@dataclass(frozen=True, eq=False)
class AttentionRequest:
    """Immutable snapshot of one 'attention map for this slice and label' request, tied to a study request."""

    request_id: int
    volume: Any
    ensemble_dir: Path
    slice_index: int
    label: str

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.request_id, self.slice_index, self.label)


def run_study_request(
    request: StudyRequest,
    cache: EnsembleCache,
    *,
    on_loaded: Callable[[Any], None] | None = None,
    progress: Callable[[int, int, Any], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    kept: Any = None,
) -> Any:
    """The work of one request (plain function, no Qt): load the ensemble (cached), then run every slice.

    With `kept` (a `ResultCache`), a result of the same voxels by the same models is given back
    without running them (when `request.use_kept`), and a fresh complete result is kept. The key
    needs the pixel hash, which is computed here, off the GUI thread.
    """
    from ichviewer.inference import Cancelled
    from ichviewer.inference.result_cache import run_study_kept

    ensemble = cache.get(request.ensemble_dir)
    if on_loaded is not None:
        on_loaded(ensemble)
    if is_cancelled is not None and is_cancelled():
        raise Cancelled(None)
    return run_study_kept(request.volume, ensemble, kept, use_kept=request.use_kept, progress=progress,
                          is_cancelled=is_cancelled, chunk=request.chunk, request_id=request.request_id)


def compute_attention(request: AttentionRequest, cache: EnsembleCache) -> Any:
    """The work of one attention map (plain function): CAM of the label on the slice, on the slice's own pixels."""
    from ichviewer.inference import attention_map

    ensemble = cache.get(request.ensemble_dir)
    return attention_map(request.volume, request.slice_index, request.label, ensemble)


class InferenceController(QObject):
    """Starts study inference and attention-map jobs on its own thread pool; emits results on the GUI thread.

    `start(volume)` snapshots a StudyRequest with a new id and cancels the one in
    flight (the reader opened another study): the old job stops at its next
    chunk and whatever it still sends is dropped here, never shown. All failures
    reach one signal, `sig_error(message)`, in words a radiologist understands,
    besides `sig_failed(request_id, message)` for the panel.

    Signals (GUI thread, current requests only):
      sig_opened(request_id, volume)                a study became current (analysed or not)
      sig_started(request_id, n_slices)             its analysis started
      sig_ensemble_loaded(request_id, ensemble)     models, versions, provider known
      sig_slices_updated(request_id, first, last, probs)   probs (last-first, 6) for slices first..last-1
      sig_partial(request_id, StudyResult)          the snapshot after each chunk (case, triage so far)
      sig_finished(request_id, StudyResult)
      sig_cancelled(request_id)
      sig_failed(request_id, message)
      sig_attention_ready(AttentionRequest, AttentionMap)
      sig_attention_failed(AttentionRequest, message)
      sig_error(message)                             the one notifier path

    Besides the reader's own study, the other series of the opened folder can be analysed in the
    background (`queue_background`), one at a time and only while the reader's study is not being
    analysed, so a worklist shows every study's triage (DeepRadiologyNet's use of the AI) without
    slowing the one on screen. Their results are kept like the reader's own (opening one later
    shows its findings at once) and reported by:
      sig_background_finished(volume, StudyResult)
      sig_background_failed(volume, message)       logged; raised (sig_error) only when the models
                                                   cannot load, once, and the queue stops
    """

    sig_opened = Signal(int, object)
    sig_started = Signal(int, int)
    sig_ensemble_loaded = Signal(int, object)
    sig_slices_updated = Signal(int, int, int, object)
    sig_partial = Signal(int, object)
    sig_finished = Signal(int, object)
    sig_cancelled = Signal(int)
    sig_failed = Signal(int, str)
    sig_attention_ready = Signal(object, object)
    sig_attention_failed = Signal(object, str)
    sig_error = Signal(str)
    sig_background_finished = Signal(object, object)
    sig_background_failed = Signal(object, str)

    # Emitted from pool threads; connected to GUI-thread slots, so delivery is queued.
    _sig_loaded = Signal(object, object)
    _sig_chunk = Signal(object, int, int, object)
    _sig_done = Signal(object, object)
    _sig_fail = Signal(object, object)
    _sig_att_done = Signal(object, object)
    _sig_att_fail = Signal(object, object)
    _sig_bg_done = Signal(object, object)
    _sig_bg_fail = Signal(object, object)

    def __init__(
        self,
        ensemble_dir: str | Path | None = None,
        *,
        providers: str | None = None,
        chunk: int = 8,
        kept_results: Any = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.cache = EnsembleCache(providers)
        #: ResultCache of finished results between sessions (None: every series is analysed afresh).
        self.kept_results = kept_results
        self.chunk = int(chunk)
        self.ensemble_dir: Path | None = None
        self.unavailable_reason = ""
        self.set_ensemble_dir(ensemble_dir)
        self._pool = QThreadPool(self)
        # One study job and one attention job may run together on a 2-core machine.
        self._pool.setMaxThreadCount(2)
        self._ids = itertools.count(1)
        self._current: StudyRequest | None = None
        self._cancel_flags: dict[int, threading.Event] = {}
        self._running = False
        self._closed = False
        self.last_result: Any = None
        self.ensemble: Any = None
        # Attention jobs: one at a time, the newest wish replaces any waiting one.
        self._att_running: AttentionRequest | None = None
        self._att_waiting: AttentionRequest | None = None
        self._attention_errors_reported: set[int] = set()
        self._load_failures: dict[str, str] = {}
        # Complete results per volume object (weakly: a closed study's results go with it).
        self._results: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Background analysis of the folder's other series: volumes waiting, and the one running.
        self._background: list[Any] = []
        self._bg_running: StudyRequest | None = None
        self._bg_put_back: dict[int, bool] = {}
        self._sig_loaded.connect(self._on_loaded)
        self._sig_chunk.connect(self._on_chunk)
        self._sig_done.connect(self._on_done)
        self._sig_fail.connect(self._on_fail)
        self._sig_att_done.connect(self._on_attention_done)
        self._sig_att_fail.connect(self._on_attention_fail)
        self._sig_bg_done.connect(self._on_background_done)
        self._sig_bg_fail.connect(self._on_background_fail)

    # -- configuration -------------------------------------------------------------------
    def set_ensemble_dir(self, ensemble_dir: str | Path | None) -> None:
        """Use this ensemble (None: the bundled default); `available` is False with a reason when there is none."""
        from ichviewer.inference import EnsembleNotFoundError, default_models_dir

        if ensemble_dir is None:
            try:
                ensemble_dir = default_models_dir()
            except EnsembleNotFoundError:
                self.ensemble_dir = None
                self.unavailable_reason = "No AI models installed (models/default missing)"
                return
        self.ensemble_dir = Path(ensemble_dir)
        self.unavailable_reason = ""

    @property
    def available(self) -> bool:
        return self.ensemble_dir is not None

    # -- state ---------------------------------------------------------------------------
    @property
    def current_request(self) -> StudyRequest | None:
        return self._current

    @property
    def current_request_id(self) -> int:
        return self._current.request_id if self._current is not None else 0

    def is_current(self, request_id: int) -> bool:
        return not self._closed and self._current is not None and request_id == self._current.request_id

    @property
    def is_running(self) -> bool:
        return self._running

    # -- study jobs ----------------------------------------------------------------------
    def open_volume(self, volume: Any, *, run: bool = True, retry: bool = False, use_kept: bool | None = None) -> int:
        """A study was opened: cancel the job in flight, make `volume` current and (if `run`) analyse it.

        A volume analysed before (same object, same models) gets its findings at once, `run` or not.
        Returns the new request id (0 when no models are available). Without `run`,
        attention maps can still be asked for and `start()` analyses it later. When the
        models already failed to load, the failure is reported to the panel again
        (`sig_failed`) but not to the notifier, unless `retry`. A result kept from an earlier session
        is given back instead of running the models unless `use_kept` is False (default: not `retry`,
        since the reader's "Analyse" means a fresh run).
        """
        self.cancel()
        if self._closed or volume is None or self.ensemble_dir is None:
            return 0
        if use_kept is None:
            use_kept = not retry
        request = StudyRequest(next(self._ids), volume, self.ensemble_dir, self.chunk, use_kept=use_kept)
        self._current = request
        self.last_result = None
        self.sig_opened.emit(request.request_id, volume)
        done = self.result_for(volume)
        if done is not None and not retry:
            # Back to a series already analysed (PgUp/PgDown, or in the background): its findings, at
            # once, also when studies are not analysed as they are opened.
            self.sig_started.emit(request.request_id, int(volume.hu.shape[0]))
            self.last_result = done
            self.sig_finished.emit(request.request_id, done)
        elif run:
            known = self._load_failures.get(str(self.ensemble_dir))
            if known is not None and not retry:
                # Already told once: say it in the panel, do not raise the alarm on every study.
                self.sig_failed.emit(request.request_id, known)
            else:
                self._load_failures.pop(str(self.ensemble_dir), None)
                self._run(request)
        self._pump_background()
        return request.request_id

    def start(self, volume: Any | None = None, *, fresh: bool = True) -> int:
        """Analyse `volume` (default: the current one, again) under a new request id; retries models that
        failed to load. `fresh`: run the models even when a result is kept from an earlier session
        (the reader's "Analyse this study"); otherwise a kept result is given back (a whole folder
        asked for at once)."""
        if volume is None:
            if self._current is None:
                return 0
            volume = self._current.volume
        return self.open_volume(volume, run=True, retry=True, use_kept=not fresh)

    def result_for(self, volume: Any) -> Any | None:
        """The finished StudyResult of `volume` by the models in use (None: not analysed yet)."""
        done = self._results.get(volume) if volume is not None else None
        if done is None or self.ensemble_dir is None or done[0] != str(self.ensemble_dir):
            return None
        return done[1]

    def _run(self, request: StudyRequest) -> None:
        self._stop_background_job(put_back=True)  # the reader's study has both cores
        flag = threading.Event()
        self._cancel_flags[request.request_id] = flag
        self._running = True
        self.sig_started.emit(request.request_id, int(request.volume.hu.shape[0]))
        first = [0]

        def progress(done: int, total: int, partial: Any) -> None:  # worker thread
            emit_safely(self._sig_chunk.emit, request, first[0], done, partial)
            first[0] = done

        def work() -> Any:
            return run_study_request(
                request,
                self.cache,
                on_loaded=lambda ens: emit_safely(self._sig_loaded.emit, request, ens),
                progress=progress,
                is_cancelled=flag.is_set,
                kept=self.kept_results,
            )

        self._pool.start(
            WorkerJob(work, lambda r: self._sig_done.emit(request, r), lambda e: self._sig_fail.emit(request, e))
        )

    def cancel(self) -> None:
        """Stop the job in flight (it ends at its next chunk); nothing it sends afterwards is shown."""
        current = self._current
        background = self._bg_running.request_id if self._bg_running is not None else None
        for request_id, flag in self._cancel_flags.items():
            if request_id != background:
                flag.set()
        self._current = None
        self._att_waiting = None
        if current is not None and self._running:
            self._running = False
            self.sig_cancelled.emit(current.request_id)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Bounded: cancel, drop queued jobs, wait at most `timeout_ms`, then disconnect the worker signals."""
        self.cancel()
        self.queue_background([])
        self._closed = True
        self._pool.clear()
        ok = bool(self._pool.waitForDone(timeout_ms))
        if not ok:
            log.warning("an AI job was still running %d ms after shutdown was requested", timeout_ms)
        for sig in (self._sig_loaded, self._sig_chunk, self._sig_done, self._sig_fail, self._sig_att_done, self._sig_att_fail,
                    self._sig_bg_done, self._sig_bg_fail):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass
        return ok

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Block until running jobs end (tests)."""
        return bool(self._pool.waitForDone(timeout_ms))

    # -- background jobs (the folder's other series) ---------------------------------------
    def queue_background(self, volumes: list[Any]) -> None:
        """Analyse `volumes` in this order while the reader's own study is not being analysed; an
        empty list stops it. Replaces the queue (a new folder replaces the old one's); volumes that
        already have results, and the reader's own study, are passed over."""
        self._background = [v for v in volumes if v is not None]
        running = self._bg_running
        if running is not None and not any(v is running.volume for v in self._background):
            self._stop_background_job()  # a series of the folder closed: neither finished nor put back
        self._pump_background()

    @property
    def background_pending(self) -> int:
        """Series waiting for or in background analysis."""
        return len(self._background) + (self._bg_running is not None)

    def _stop_background_job(self, *, put_back: bool = False) -> None:
        """Cancel the background job in flight (it stops at its next chunk); with `put_back` its
        series goes to the front of the queue again once it has stopped."""
        if self._bg_running is not None:
            flag = self._cancel_flags.get(self._bg_running.request_id)
            if flag is not None:
                flag.set()
                self._bg_put_back[self._bg_running.request_id] = put_back

    def _pump_background(self) -> None:
        """Start the next background job when nothing else is analysing."""
        if self._closed or self._running or self._bg_running is not None or self.ensemble_dir is None:
            return
        if str(self.ensemble_dir) in self._load_failures:
            return  # the models cannot load: the reader was told once already
        current = self._current.volume if self._current is not None else None
        while self._background:
            volume = self._background.pop(0)
            if volume is current or self.result_for(volume) is not None:
                continue
            request = StudyRequest(next(self._ids), volume, self.ensemble_dir, self.chunk)
            flag = threading.Event()
            self._cancel_flags[request.request_id] = flag
            self._bg_running = request
            self._pool.start(
                WorkerJob(
                    lambda: run_study_request(request, self.cache, is_cancelled=flag.is_set, kept=self.kept_results),
                    lambda r: self._sig_bg_done.emit(request, r),
                    lambda e: self._sig_bg_fail.emit(request, e),
                )
            )
            return

    def _on_background_done(self, request: StudyRequest, result: Any) -> None:
        self._cancel_flags.pop(request.request_id, None)
        self._bg_put_back.pop(request.request_id, None)
        if self._bg_running is request:
            self._bg_running = None
        if self._closed:
            return
        self._results[request.volume] = (str(request.ensemble_dir), result)
        self.sig_background_finished.emit(request.volume, result)
        self._pump_background()

    def _on_background_fail(self, request: StudyRequest, exc: BaseException) -> None:
        from ichviewer.inference import Cancelled, InferenceError

        self._cancel_flags.pop(request.request_id, None)
        if self._bg_running is request:
            self._bg_running = None
        put_back = self._bg_put_back.pop(request.request_id, False)
        if self._closed:
            return
        if isinstance(exc, Cancelled):
            if put_back:  # stopped for the reader's study: first again
                self._background = [request.volume] + [v for v in self._background if v is not request.volume]
        else:
            message = describe_inference_error(exc, provider=getattr(self.ensemble, "provider", None))
            log.warning("background AI analysis of %s failed: %s (%s: %s)",
                        getattr(request.volume, "series_uid", "?"), message, type(exc).__name__, exc)
            self.sig_background_failed.emit(request.volume, message)
            if isinstance(exc, InferenceError):  # the models themselves: no other series will do better
                self._load_failures[str(request.ensemble_dir)] = message
                self._background = []
                self.sig_error.emit(message)  # once: the reader's studies then say it in the panel only
        self._pump_background()

    # -- attention jobs ------------------------------------------------------------------
    def request_attention(self, slice_index: int, label: str) -> AttentionRequest | None:
        """Ask for the CAM of `label` on `slice_index` of the current study; the answer comes by `sig_attention_ready`."""
        cur = self._current
        if cur is None or self._closed:
            return None
        request = AttentionRequest(cur.request_id, cur.volume, cur.ensemble_dir, int(slice_index), str(label))
        if self._att_running is not None:
            if self._att_running.key != request.key:
                self._att_waiting = request
            return request
        self._start_attention(request)
        return request

    def _start_attention(self, request: AttentionRequest) -> None:
        self._att_running = request
        self._pool.start(
            WorkerJob(
                lambda: compute_attention(request, self.cache),
                lambda m: self._sig_att_done.emit(request, m),
                lambda e: self._sig_att_fail.emit(request, e),
            )
        )

    def _next_attention(self) -> None:
        self._att_running = None
        waiting, self._att_waiting = self._att_waiting, None
        if waiting is not None and self.is_current(waiting.request_id):
            self._start_attention(waiting)

    # -- slots (GUI thread) --------------------------------------------------------------
    def _on_loaded(self, request: StudyRequest, ensemble: Any) -> None:
        if not self.is_current(request.request_id):
            return
        self.ensemble = ensemble
        for note in getattr(ensemble, "notes", ()):
            log.info("AI models: %s", note)
        self.sig_ensemble_loaded.emit(request.request_id, ensemble)

    def _on_chunk(self, request: StudyRequest, first: int, last: int, partial: Any) -> None:
        if not self.is_current(request.request_id):
            log.debug("dropped stale inference chunk %d..%d of request %d", first, last, request.request_id)
            return
        probs = np.array(partial.slice_probabilities[first:last])
        self.sig_slices_updated.emit(request.request_id, first, last, probs)
        self.sig_partial.emit(request.request_id, partial)

    def _on_done(self, request: StudyRequest, result: Any) -> None:
        self._cancel_flags.pop(request.request_id, None)
        if not self.is_current(request.request_id):
            log.debug("dropped stale inference result of request %d", request.request_id)
            return
        self._running = False
        self.last_result = result
        self._results[request.volume] = (str(request.ensemble_dir), result)
        self.sig_finished.emit(request.request_id, result)
        self._pump_background()

    def _on_fail(self, request: StudyRequest, exc: BaseException) -> None:
        from ichviewer.inference import Cancelled, InferenceError

        self._cancel_flags.pop(request.request_id, None)
        if isinstance(exc, Cancelled) or not self.is_current(request.request_id):
            return
        self._running = False
        provider = getattr(self.ensemble, "provider", None)
        message = describe_inference_error(exc, provider=provider)
        if isinstance(exc, InferenceError):  # the models themselves (manifest, files): same on the next study
            self._load_failures[str(request.ensemble_dir)] = message
        log.error("AI analysis of %s failed: %s (%s: %s)", getattr(request.volume, "series_uid", "?"), message, type(exc).__name__, exc)
        self.sig_failed.emit(request.request_id, message)
        self.sig_error.emit(message)
        self._pump_background()

    def _on_attention_done(self, request: AttentionRequest, amap: Any) -> None:
        self._next_attention()
        if self.is_current(request.request_id):
            self.sig_attention_ready.emit(request, amap)

    def _on_attention_fail(self, request: AttentionRequest, exc: BaseException) -> None:
        self._next_attention()
        if not self.is_current(request.request_id):
            return
        message = describe_attention_error(exc, provider=getattr(self.ensemble, "provider", None))
        log.warning("attention map for slice %d, %s failed: %s", request.slice_index + 1, request.label, exc)
        self.sig_attention_failed.emit(request, message)
        if request.request_id not in self._attention_errors_reported:
            # Once per study: scrolling must not raise the same message on every slice.
            self._attention_errors_reported.add(request.request_id)
            self.sig_error.emit(message)

"""Finished AI results kept on disk between sessions, keyed by everything that determines them.

A worklist folder opened again (the next morning, after a restart) would otherwise be analysed
again series by series: about 1.5 s per 5 mm head on a 2-core CPU, far more for thin series. The
per-slice probabilities of a series depend only on its voxels and geometry, on the ensemble (its
manifest, which carries every member file's SHA-256, so a changed model file changes the
manifest's checks or the manifest itself), on the code that preprocesses and runs it, and on the
execution provider (a GPU's numbers differ from a CPU's in the last digits). `result_key` hashes
exactly those; a hit gives back the probabilities, and the StudyResult is rebuilt around them with
the ensemble's current operating points and aggregation, a fresh head-CT check and the loader's
warnings, so thresholds and the triage are always today's. `StudyResult.restored` then says when
the findings were computed, so the reader is never shown kept numbers as if the models had just
run.

A cache that cannot be read or written costs only the time of running the models again: every
failure is logged and treated as a miss, a damaged entry is removed, and nothing is raised to the
reader. Entries are small (about 35 kB for 140 slices and four members); the oldest are removed
beyond `max_entries`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import LABELS, __version__
from ichviewer.core.applicability import check_head_ct
from ichviewer.core.volume import incomplete_series
from ichviewer.inference.findings import StudyResult
from ichviewer.inference.manifest import MANIFEST_NAME, file_sha256
from ichviewer.inference.study import ensemble_result, run_study

log = logging.getLogger(__name__)

#: Bump when what is stored, or how a result is computed from the same inputs, changes.
CACHE_FORMAT = 1
#: The folder name under the viewer's settings folder.
RESULT_CACHE_DIR = "ai-results"
DEFAULT_MAX_ENTRIES = 2000


def ensemble_fingerprint(ensemble: Any) -> str:
    """SHA-256 of the ensemble's manifest file (it names every member file's SHA-256, which loading checked)."""
    return file_sha256(Path(ensemble.manifest.directory) / MANIFEST_NAME)


def result_key(volume: Any, ensemble: Any, *, fingerprint: str | None = None) -> str:
    """The key of `volume`'s result by `ensemble`: its voxels, geometry, the ensemble, the provider and this code."""
    h = hashlib.sha256()
    for part in (
        f"format={CACHE_FORMAT}",
        f"ichviewer={__version__}",
        f"ensemble={fingerprint or ensemble_fingerprint(ensemble)}",
        f"provider={ensemble.provider}",
        f"pixels={volume.pixel_sha256()}",
    ):
        h.update(part.encode() + b"\n")
    h.update(np.asarray(volume.spacing, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(volume.direction, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(volume.slice_origins, dtype=np.float64).tobytes())
    return h.hexdigest()


class ResultCache:
    """Complete StudyResults on disk under `root`, one `.npz` per key; safe to use from several threads."""

    def __init__(self, root: str | os.PathLike[str], *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.root = Path(root)
        self.max_entries = int(max_entries)
        self._fingerprints: dict[str, tuple[tuple[int, int], str]] = {}
        self._lock = threading.Lock()
        #: entries on disk as this object last counted them (None: not counted yet); `store` lists the
        #: folder only when the count may pass `max_entries`, not after every result
        self._count: int | None = None

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def key(self, volume: Any, ensemble: Any) -> str:
        """`result_key`, with the manifest's hash read once per manifest file version."""
        manifest = Path(ensemble.manifest.directory) / MANIFEST_NAME
        st = manifest.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            known = self._fingerprints.get(str(manifest))
        if known is None or known[0] != stamp:
            known = (stamp, ensemble_fingerprint(ensemble))
            with self._lock:
                self._fingerprints[str(manifest)] = known
        return result_key(volume, ensemble, fingerprint=known[1])

    def load(self, key: str, volume: Any, ensemble: Any, *, request_id: Any = None) -> StudyResult | None:
        """The kept result for `key`, rebuilt with `ensemble`'s operating points (None: not kept, or unreadable)."""
        path = self._path(key)
        if not path.is_file():
            return None
        n_members, n = len(ensemble.models), int(volume.hu.shape[0])
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                slice_p = np.array(data["slice_probabilities"], dtype=np.float64)
                member_p = np.array(data["member_probabilities"], dtype=np.float64)
            if (meta.get("format") != CACHE_FORMAT or slice_p.shape != (n, len(LABELS))
                    or member_p.shape != (n_members, n, len(LABELS)) or np.isnan(slice_p).any()):
                raise ValueError(f"it does not fit this series ({slice_p.shape}, {member_p.shape}) or this cache format")
            result = ensemble_result(
                volume, ensemble, slice_p, member_p, provider=str(meta["provider"]), seconds=float(meta["seconds"]),
                request_id=request_id, complete=True, head_check=check_head_ct(volume),
                incomplete=incomplete_series(volume), restored=str(meta["computed_at"]),
            )
        except Exception as exc:  # damaged, truncated, from another version: run the models again
            log.warning("kept AI result %s cannot be used (%s: %s); the models run again", path, type(exc).__name__, exc)
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # recently used: kept longest
        except OSError:
            pass
        return result

    def store(self, key: str, result: StudyResult) -> Path | None:
        """Keep a complete result under `key` (written whole or not at all); None when it could not be written."""
        if not result.complete or result.restored:
            return None
        meta = {
            "format": CACHE_FORMAT,
            "series_uid": result.series_uid,
            "provider": result.provider,
            "seconds": float(result.seconds),
            "computed_at": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
            "models": [m.to_dict() for m in result.models],
        }
        path = self._path(key)
        tmp = self.root / f".{key}.{uuid.uuid4().hex}.tmp.npz"
        is_new = not path.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, meta=np.array(json.dumps(meta)), slice_probabilities=result.slice_probabilities,
                     member_probabilities=result.member_probabilities)
            tmp.replace(path)
        except OSError as exc:
            log.warning("AI result of %s not kept in %s: %s", result.series_uid, self.root, exc)
            try:
                tmp.unlink()
            except OSError:
                pass
            return None
        with self._lock:
            if self._count is not None and is_new:
                self._count += 1
            due = self._count is None or self._count > self.max_entries
        if due:
            self._prune()
        return path

    def _prune(self) -> None:
        """Remove the least recently used entries beyond `max_entries` (and count what is left)."""
        entries = []
        for p in self._entries():
            try:
                entries.append((p.stat().st_mtime, p))
            except OSError:  # removed meanwhile (another session, or Forget)
                pass
        entries.sort()
        removed = 0
        for _, p in entries[: max(len(entries) - self.max_entries, 0)]:
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
        with self._lock:
            self._count = len(entries) - removed

    def _entries(self) -> list[Path]:
        return [p for p in self.root.glob("*.npz") if not p.name.startswith(".")] if self.root.is_dir() else []

    def __len__(self) -> int:
        return len(self._entries())

    def usage(self) -> tuple[int, int]:
        """(entries kept, bytes on disk)."""
        count = size = 0
        for p in self._entries():
            try:
                size += p.stat().st_size
                count += 1
            except OSError:  # removed meanwhile
                pass
        return count, size

    def clear(self) -> int:
        """Remove every kept result (and any half-written one); the number of results removed.

        A result being computed now is still kept when it finishes."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for p in self.root.glob("*.npz"):
            try:
                p.unlink()
            except OSError as exc:
                log.warning("kept AI result %s could not be removed: %s", p, exc)
                continue
            if not p.name.startswith("."):
                removed += 1
        with self._lock:
            self._count = None  # count again at the next store
        return removed


def run_study_kept(volume: Any, ensemble: Any, kept: ResultCache | None, *, use_kept: bool = True,
                   **run_kwargs: Any) -> StudyResult:
    """`run_study`, unless `kept` holds this series' result by these models (given back when `use_kept`);
    a fresh complete result is kept. The key needs the pixel hash, computed here (off a GUI thread)."""
    key = None
    if kept is not None:
        try:
            key = kept.key(volume, ensemble)
        except OSError as exc:  # the manifest went away under us: loading the models will say so next time
            log.warning("no key for kept AI results: %s", exc)
        if key is not None and use_kept:
            restored = kept.load(key, volume, ensemble, request_id=run_kwargs.get("request_id"))
            if restored is not None:
                return restored
    result = run_study(volume, ensemble, **run_kwargs)
    if key is not None:
        kept.store(key, result)
    return result

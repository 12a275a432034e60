"""Run an ensemble over one CT series: the plain, Qt-free function the GUI worker, CLI and tests call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.core.applicability import check_head_ct
from ichviewer.core.volume import incomplete_series
from ichviewer.inference.ensemble import Ensemble
from ichviewer.inference.errors import Cancelled
from ichviewer.inference.findings import StudyResult, apply_any_rule
from ichviewer.inference.interpolation import combine, interpolated_images, neighbours, with_context
from ichviewer.inference.preprocessing import geometry_for, preprocess_slices, slab_slices

#: progress(done_slices, total_slices, partial_result)
ProgressCallback = Callable[[int, int, StudyResult], None]


def ensemble_result(volume: Any, ensemble: Ensemble, slice_p: np.ndarray, member_p: np.ndarray, **fields: Any) -> StudyResult:
    """A StudyResult of `volume` by `ensemble` (its operating points, aggregation, members and provider)
    from these probabilities; `fields` sets the rest (seconds, complete, head_check, ...) or overrides."""
    return StudyResult(**{
        "study_uid": str(getattr(volume, "study_uid", "")),
        "series_uid": str(getattr(volume, "series_uid", "")),
        "slice_probabilities": slice_p,
        "member_probabilities": member_p,
        "operating_points": ensemble.manifest.operating_points,
        "aggregation": ensemble.manifest.aggregation,
        "models": ensemble.infos,
        "provider": ensemble.provider,
        **fields,
    })


def _chunks(n: int, chunk: int, first_chunk: int) -> list[tuple[int, int]]:
    out, a = [], 0
    size = max(1, min(first_chunk, chunk))
    while a < n:
        b = min(n, a + size)
        out.append((a, b))
        a, size = b, chunk
    return out


def run_study(
    volume: Any,
    ensemble: Ensemble,
    *,
    progress: ProgressCallback | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    chunk: int = 8,
    first_chunk: int = 1,
    request_id: Any = None,
    check_head: bool = True,
) -> StudyResult:
    """Per-slice, per-label ensemble probabilities for a CTVolume, filled in ascending slice order.

    Slices run in chunks (the first of `first_chunk` slices so a finding shows up
    fast, then `chunk` at a time). Per chunk, each model gets one batch holding all
    its images: every slice plus its Lee et al. Eq. 4 interpolated images (a member whose
    manifest says `input.context_slices` 3 reads each with its neighbours as channels). After
    each chunk `progress(done, total, partial)` receives an immutable snapshot whose
    unfinished slices are NaN. `is_cancelled()` is polled before each chunk and each
    model; when it returns True, `Cancelled` is raised with the snapshot of the
    finished chunks as `.partial`. Errors from ONNX Runtime propagate unchanged.

    `check_head` runs `ichviewer.core.applicability.check_head_ct` first (the result's
    `head_check`; a series that does not look like a head CT is triaged "refer"); False skips
    it (`head_check` None), for callers that test the triage thresholds on toy volumes.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    t0 = time.perf_counter()
    n = int(volume.hu.shape[0])
    members = ensemble.models
    weights = ensemble.weights
    any_rule = ensemble.manifest.aggregation.any_rule
    member_p = np.full((len(members), n, len(LABELS)), np.nan)
    slice_p = np.full((n, len(LABELS)), np.nan)
    head_check = check_head_ct(volume) if check_head else None  # a head CT as the ensemble knows it? (else triage "refer")
    incomplete = incomplete_series(volume)  # part of the series missing? (else triage "refer" too)

    def snapshot(complete: bool = False) -> StudyResult:
        return ensemble_result(volume, ensemble, slice_p, member_p, seconds=time.perf_counter() - t0,
                               request_id=request_id, complete=complete, head_check=head_check, incomplete=incomplete)

    def check_cancel() -> None:
        if is_cancelled is not None and is_cancelled():
            raise Cancelled(snapshot())

    # Members sharing input size and channel recipe share one preprocessing.
    recipes: dict[tuple, Any] = {}
    member_recipe = []
    for m in members:
        s = m.spec
        key = (s.input_size, s.windows, s.mean, s.std, s.crop, s.slab_mm)
        if key not in recipes:
            recipes[key] = geometry_for(volume, s.input_size, s.crop)
        member_recipe.append(key)

    # Preprocessed slices carried over between chunks, so each slice is resampled once per recipe.
    carried: dict[tuple, tuple[int, np.ndarray]] = {}

    def prepared(key: tuple, lo: int, hi: int) -> np.ndarray:
        start, have = carried.get(key, (lo, np.empty((0,))))
        keep = have[max(0, lo - start) :] if have.size and start <= lo < start + len(have) else None
        first_new = lo + (len(keep) if keep is not None else 0)
        geom = recipes[key]
        new = (
            preprocess_slices(slab_slices(volume, np.arange(first_new, hi), key[5]), geom, key[1], key[2], key[3])
            if first_new < hi
            else None
        )
        parts = [p for p in (keep, new) if p is not None and len(p)]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        carried[key] = (lo, x)
        return x

    widest_context = max(m.spec.context_slices for m in members)
    for a, b in _chunks(n, chunk, first_chunk):
        check_cancel()
        idx = np.arange(a, b)
        lower, upper = neighbours(idx, n)
        # the slices read: each slice and its Eq. 4 neighbours, and (context slices) theirs
        reach = np.concatenate([idx, lower, upper])
        if widest_context > 1:
            reach = np.concatenate([reach, *neighbours(reach, n)])
        lo, hi = int(reach.min()), int(reach.max()) + 1
        inputs = {key: prepared(key, lo, hi) for key in recipes}
        for mi, m in enumerate(members):
            if mi:
                check_cancel()
            x = inputs[member_recipe[mi]]
            degree = m.spec.interpolation_degree
            context = m.spec.context_slices

            def stack(rows: np.ndarray, x: np.ndarray = x, context: int = context) -> np.ndarray:
                """Member inputs of `rows`: each slice, with its neighbours as channels for context 3."""
                if context == 1:
                    return x[rows - lo]
                below, above = neighbours(rows, n)
                return with_context(x[rows - lo], x[below - lo], x[above - lo], context)

            own = stack(idx)
            # degree 1 reads no blend: its neighbours' stacks are not made
            images = interpolated_images(own, *((stack(lower), stack(upper)) if degree > 1 else (own, own)), degree)
            flat = images.reshape((-1,) + images.shape[2:])
            probs = m.probabilities(flat).reshape(images.shape[0], b - a, len(LABELS))
            member_p[mi, a:b] = combine(probs, degree)
        # weighted mean of members, then ANY by the manifest's rule (its own output, or noisy-OR of the subtypes)
        slice_p[a:b] = apply_any_rule(np.tensordot(weights, member_p[:, a:b], axes=(0, 0)), any_rule)
        if progress is not None:
            progress(b, n, snapshot())
    return snapshot(complete=True)

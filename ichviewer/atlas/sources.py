"""Labelled training slices for atlas building: synthetic phantoms by seed, or DICOM studies with a slice-labels CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ichviewer import SUBTYPES


class AtlasDataError(ValueError):
    """Training data for the atlas that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, eq=False)
class LabelledStudy:
    """One training study: its volume and per-slice subtype labels (z, 5) bool in SUBTYPES order."""

    key: str
    volume: Any
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        lab = np.asarray(self.labels, dtype=bool)
        n = int(self.volume.hu.shape[0])
        if lab.shape != (n, len(SUBTYPES)):
            raise ValueError(f"study {self.key}: labels must be ({n}, {len(SUBTYPES)}), got {lab.shape}")
        object.__setattr__(self, "labels", lab)


class TrainingSource(Protocol):
    """Where the atlas's training images come from: study keys, and a way to (re)load one study."""

    description: str

    def keys(self) -> list[str]: ...

    def load(self, key: str) -> LabelledStudy: ...


def parse_seeds(text: str) -> list[int]:
    """'0-39' or '1,5,9' or '0-9,20-29' -> seeds."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise AtlasDataError(f"phantom seeds must look like 0-39 or 1,5,9, got {part!r}") from None
    if not seeds:
        raise AtlasDataError("no phantom seeds given")
    return seeds


class PhantomSource:
    """Synthetic head CTs (`ichviewer.core.phantom.generate_case`) by seed; redistributable, so usable for a bundled atlas.

    `subtypes` None lets each seed draw its subtype (one of five, mixed or none);
    otherwise seed i gets `subtypes[i % len(subtypes)]` (balanced atlases). Cases
    are kept in memory (they are small at the default 128 matrix), so the second
    pass of the build does not generate them again.
    """

    def __init__(
        self, seeds: Sequence[int], *, subtypes: Sequence[str] | None = None, matrix: int = 128, slice_mm: float = 5.0, volume_ml: float | None = None
    ) -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise AtlasDataError("no phantom seeds given")
        self.subtypes = tuple(subtypes) if subtypes else None
        self.matrix = int(matrix)
        self.slice_mm = float(slice_mm)
        self.volume_ml = volume_ml
        self._cache: dict[str, LabelledStudy] = {}
        what = f", subtypes cycling {list(self.subtypes)}" if self.subtypes else ""
        self.description = f"phantom seeds {self.seeds[0]}..{self.seeds[-1]} ({len(self.seeds)} cases, matrix {self.matrix}{what})"

    def keys(self) -> list[str]:
        return [f"phantom:{s}" for s in self.seeds]

    def load(self, key: str) -> LabelledStudy:
        if key in self._cache:
            return self._cache[key]
        from ichviewer.core.phantom import generate_case

        seed = int(key.split(":", 1)[1])
        subtype = self.subtypes[self.seeds.index(seed) % len(self.subtypes)] if self.subtypes else None
        volume_ml = self.volume_ml if subtype != "none" else None
        case = generate_case(seed, subtype=subtype, matrix=self.matrix, slice_mm=self.slice_mm, volume_ml=volume_ml)
        labels = np.asarray([[row[s] for s in SUBTYPES] for row in case.slice_labels], dtype=bool)
        study = LabelledStudy(key, case.volume, labels, f"phantom seed {seed} ({case.subtype})")
        self._cache[key] = study
        return study


class PlannedPhantomSource(PhantomSource):
    """The training recipe's own phantom plans (`ichviewer.training.data.plan_phantom_cases`).

    With the plans of the ensemble's training split, the atlas is built from exactly
    the cases the models were trained on (Lee et al. built theirs from the training
    images); with the test split's plans, the held-out check uses cases no model saw.
    """

    def __init__(self, plans: Sequence[Any], *, matrix: int = 256) -> None:
        self.plans = {int(p.seed): p for p in plans}
        super().__init__(list(self.plans), matrix=matrix)
        kinds = sorted({p.kind for p in plans})
        self.description = (f"the training recipe's phantom plans, seeds {self.seeds[0]}..{self.seeds[-1]} "
                            f"({len(self.seeds)} cases, {len(kinds)} kinds, matrix {self.matrix})")

    def load(self, key: str) -> LabelledStudy:
        if key in self._cache:
            return self._cache[key]
        plan = self.plans[int(key.split(":", 1)[1])]
        case = plan.generate(self.matrix)
        labels = np.asarray([[row[s] for s in SUBTYPES] for row in case.slice_labels], dtype=bool)
        study = LabelledStudy(key, case.volume, labels, f"phantom seed {plan.seed} ({plan.kind})")
        self._cache[key] = study
        return study


class DicomSource:
    """DICOM studies under a folder plus a slice-labels CSV (the same CSV `ichviewer train --source dicom` reads).

    Columns (case-insensitive): the series as `series` (its folder relative to the
    data folder), `series_uid` or `study_uid`; the slice as `slice` or `slice_index`
    (0-based, slice 0 the most inferior, as the viewer counts); one 0/1 column per
    subtype present in the file (iph, ivh, sdh, edh, sah; others ignored, e.g. any).
    The atlas needs slice-level labels: without a slice column (case-level files such
    as `ichviewer phantom-set` writes) each series folder must hold the `labels.json`
    that `ichviewer phantom` writes beside it, whose per-slice labels are used. Slices of
    a listed series without a row are negative for every subtype.

    Per-image files, as `ichviewer train` reads them, work too: a `sop_instance_uid` column
    (or `SOPInstanceUID`, `image_id`) with the label columns (ours or RSNA's names), or the RSNA
    challenge's own `ID,Label` file; each series holding a listed image is a study, and its
    images without a row are negative.
    """

    def __init__(self, folder: str | Path, labels_csv: str | Path | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise AtlasDataError(f"{self.folder}: data folder does not exist")
        csv_path = Path(labels_csv) if labels_csv else self.folder / "labels.csv"
        if not csv_path.is_file():
            raise AtlasDataError(f"{csv_path}: labels CSV not found (give --labels CSV or put labels.csv in the data folder)")
        self.csv_path = csv_path
        self._rows: dict[str, dict[int, np.ndarray]] = {}
        self._folders: dict[str, Path] | None = None
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise AtlasDataError(f"{csv_path}: empty file")
        col = {h.strip().lower(): i for i, h in enumerate(rows[0])}
        self.key = next((k for k in ("series", "series_uid", "study_uid") if k in col), None)
        self._image_labels: dict[str, np.ndarray] | None = None
        from ichviewer.training.data import is_per_image_header

        if self.key is None and is_per_image_header(list(col)):
            self._read_per_image(csv_path)
            return
        slice_col = next((k for k in ("slice", "slice_index") if k in col), None)
        present = [s for s in SUBTYPES if s.lower() in col]
        if self.key is None or not present:
            raise AtlasDataError(
                f"{csv_path}: need a series column (series, series_uid or study_uid), a slice column (slice or slice_index) "
                f"and at least one subtype column ({', '.join(s.lower() for s in SUBTYPES)}); it has {', '.join(col)}"
            )
        self.per_slice = slice_col is not None
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if not self.per_slice:  # case-level row: the slices come from labels.json at load time
                self._rows.setdefault(row[col[self.key]].strip(), {})
                continue
            try:
                idx = int(row[col[slice_col]])
                flags = np.asarray([int(row[col[s.lower()]] or 0) if s in present else 0 for s in SUBTYPES]) > 0
            except (ValueError, IndexError):
                raise AtlasDataError(f"{csv_path}, line {line}: slice and label columns must be integers") from None
            self._rows.setdefault(row[col[self.key]].strip(), {})[idx] = flags
        if not self._rows:
            raise AtlasDataError(f"{csv_path}: no labelled slices")
        self.description = f"DICOM studies in {self.folder} labelled by {csv_path.name} ({len(self._rows)} series)"

    def _read_per_image(self, csv_path: Path) -> None:
        """A per-image CSV (RSNA style): images are found by SOP Instance UID in one header scan."""
        from ichviewer.io import scan_path
        from ichviewer.training.data import TrainingDataError, read_training_labels, series_holds_listed_image

        try:
            table = read_training_labels(csv_path)
        except TrainingDataError as exc:
            raise AtlasDataError(str(exc)) from None
        present = [s for s in SUBTYPES if s in table.labels_present]
        if not present:
            raise AtlasDataError(f"{csv_path}: no subtype column or rows ({', '.join(s.lower() for s in SUBTYPES)} or RSNA's names)")
        self.key, self.per_slice = "series_uid", True
        self._image_labels = {
            uid: np.asarray([v[-1][table.labels_present.index(s)] if s in present else 0 for s in SUBTYPES]) > 0
            for uid, v in table.rows.items()
        }
        self._folders = {}
        for series in scan_path(self.folder).series:
            if series_holds_listed_image(series, self._image_labels):
                self._rows[series.series_uid] = {}
                self._folders.setdefault(series.series_uid, Path(series.folder))
            series.datasets = []
        if not self._rows:
            raise AtlasDataError(f"{csv_path}: none of its {len(self._image_labels)} images is under {self.folder}")
        self.description = f"DICOM studies in {self.folder} labelled by {csv_path.name} per image ({len(self._rows)} series)"

    def keys(self) -> list[str]:
        return sorted(self._rows)

    def _folder_of(self, key: str) -> Path | None:
        if self.key == "series":
            candidate = self.folder / key
            return candidate if candidate.exists() else None
        if self._folders is None:  # one header scan of the whole folder, then each study loads on its own
            from ichviewer.io import scan_path

            self._folders = {}
            for series in scan_path(self.folder).series:
                uid = series.series_uid if self.key == "series_uid" else series.study_uid
                self._folders.setdefault(uid, Path(series.folder))
                series.datasets = []
        return self._folders.get(key)

    def load(self, key: str) -> LabelledStudy:
        from ichviewer.io import load_path

        where = self._folder_of(key)
        volumes = []
        if where is not None:
            volumes = load_path(where).volumes
            if self.key == "series_uid":
                volumes = [v for v in volumes if v.series_uid == key]
            elif self.key == "study_uid":
                volumes = [v for v in volumes if v.study_uid == key]
        if not volumes:
            raise AtlasDataError(f"{self.csv_path}: {self.key} {key!r} not found or not loadable under {self.folder}")
        volume = volumes[0]  # the series with most slices
        labels = np.zeros((volume.n_slices, len(SUBTYPES)), dtype=bool)
        if not self.per_slice:
            return LabelledStudy(key, volume, self._phantom_slice_labels(where, key, volume.n_slices), str(where))
        if self._image_labels is not None:
            for idx, uid in enumerate(volume.metadata.get("sop_instance_uids") or ()):
                if uid in self._image_labels:
                    labels[idx] = self._image_labels[uid]
            return LabelledStudy(key, volume, labels, str(where))
        for idx, flags in self._rows[key].items():
            if not 0 <= idx < volume.n_slices:
                raise AtlasDataError(f"{self.csv_path}: {self.key} {key!r} has {volume.n_slices} slices, the CSV labels slice {idx}")
            labels[idx] = flags
        return LabelledStudy(key, volume, labels, str(where))

    def _phantom_slice_labels(self, where: Path, key: str, n: int) -> np.ndarray:
        import json

        folder = where if where.is_dir() else where.parent
        path = folder / "labels.json"
        try:
            slices = json.loads(path.read_text(encoding="utf-8"))["slices"]
            labels = np.asarray([[int(row[s]) for s in SUBTYPES] for row in slices], dtype=bool)
        except (OSError, ValueError, KeyError, TypeError):
            raise AtlasDataError(
                f"{self.csv_path}: case-level labels only, and {path} has no per-slice labels for {key!r}; "
                "the atlas needs slice labels (add a slice_index column)"
            ) from None
        if labels.shape[0] != n:
            raise AtlasDataError(f"{path}: {labels.shape[0]} slice labels for a series of {n} slices")
        return labels


def source_from_spec(data: str, labels_csv: str | None = None, *, matrix: int = 128, volume_ml: float | None = None) -> TrainingSource:
    """`phantom:0-39` (optionally `phantom:0-39:SDH,IPH,...` to cycle subtypes) or a DICOM folder (+ labels CSV)."""
    if data.startswith("phantom:"):
        parts = data.split(":")
        subtypes = [s.strip() for s in parts[2].split(",")] if len(parts) > 2 and parts[2] else None
        if subtypes:
            from ichviewer.core.phantom import SUBTYPE_CHOICES

            bad = [s for s in subtypes if s not in SUBTYPE_CHOICES]
            if bad:
                raise AtlasDataError(f"unknown phantom subtype(s) {bad}; choose from {list(SUBTYPE_CHOICES)}")
        return PhantomSource(parse_seeds(parts[1]), subtypes=subtypes, matrix=matrix, volume_ml=volume_ml)
    return DicomSource(data, labels_csv)

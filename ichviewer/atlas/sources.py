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


class DicomSource:
    """DICOM studies under a folder plus a slice-labels CSV.

    CSV columns: `series` (the series folder relative to the data folder, or its
    SeriesInstanceUID), `slice` (0-based index, slice 0 the most inferior, as the
    viewer counts), and one 0/1 column per subtype (IPH, IVH, SDH, EDH, SAH). Slices
    of a listed series that have no row are taken as negative for every subtype.
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
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("series", "slice", *SUBTYPES) if c not in (reader.fieldnames or [])]
            if missing:
                raise AtlasDataError(f"{csv_path}: missing column(s) {missing} (need series, slice, {', '.join(SUBTYPES)})")
            for line, row in enumerate(reader, start=2):
                try:
                    idx = int(row["slice"])
                    flags = np.asarray([int(row[s] or 0) for s in SUBTYPES]) > 0
                except ValueError:
                    raise AtlasDataError(f"{csv_path}, line {line}: slice and label columns must be integers") from None
                self._rows.setdefault(row["series"].strip(), {})[idx] = flags
        if not self._rows:
            raise AtlasDataError(f"{csv_path}: no labelled slices")
        self.description = f"DICOM studies in {self.folder} labelled by {csv_path.name} ({len(self._rows)} series)"

    def keys(self) -> list[str]:
        return sorted(self._rows)

    def load(self, key: str) -> LabelledStudy:
        from ichviewer.io import load_path

        candidate = self.folder / key
        if candidate.exists():
            result = load_path(candidate)
            volumes = result.volumes
        else:  # a SeriesInstanceUID: look through the whole folder (slow, but only once per study)
            volumes = [v for v in load_path(self.folder).volumes if v.series_uid == key]
        if not volumes:
            raise AtlasDataError(f"{self.csv_path}: series {key!r} not found or not loadable under {self.folder}")
        volume = volumes[0]
        labels = np.zeros((volume.n_slices, len(SUBTYPES)), dtype=bool)
        for idx, flags in self._rows[key].items():
            if not 0 <= idx < volume.n_slices:
                raise AtlasDataError(f"{self.csv_path}: series {key!r} has {volume.n_slices} slices, the CSV labels slice {idx}")
            labels[idx] = flags
        return LabelledStudy(key, volume, labels, str(candidate if candidate.exists() else key))


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

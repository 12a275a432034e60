"""The atlas file: one versioned SQLite file next to the model, holding selected filters, patches, heat maps and provenance.

Why SQLite (not .npz + JSON): one file, readable without loading it all. Opening an
atlas reads only the small index columns (feature, image, rank) and the pooled
features into numpy; the patches, heat maps and context slices (the bulk of the
file) are read only for the handful of entries shown, so a 100,000-entry atlas
opens and answers queries without holding its images in memory.

Layout (format "ichviewer.atlas", version 1):

* `header(key, value)`: JSON values: format, format_version, model_name,
  model_version, model_sha256, ensemble_name, labels, blocks ({name: [K, h, w]}),
  fraction, patch_px, patch_mm, created_at, n_training_images, data.
* `images`: one row per training slice that appears in the atlas: provenance
  (study_uid, series_uid, source, slice_index), its labels, a downsampled copy of
  the whole slice for context (zlib int16 HU) and its pooled last-block features.
* `features`: one row per (filter, label) selection: block, channel, label,
  relevance count and rank within the label (Lee et al. 2019, Methods).
* `entries`: per selected feature, its strongest training slices: the HU patch
  around the strongest activation, the activation map on the patch (uint8), the
  box on the slice (fractions of rows/cols) and the maximum activation.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ATLAS_FORMAT = "ichviewer.atlas"
ATLAS_FORMAT_VERSION = 1
#: Default file name of a member's atlas inside the ensemble directory.
ATLAS_SUFFIX = ".atlas.sqlite"


class AtlasError(ValueError):
    """An atlas file that cannot be used: missing, not an atlas, a newer format, damaged."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class AtlasMismatchError(AtlasError):
    """The atlas was built with another model (different SHA-256) than the one asked to explain."""


def atlas_path_for(models_dir: str | Path, model_name: str) -> Path:
    """Where a member's atlas lives: next to the model, `<models_dir>/<model_name>.atlas.sqlite`."""
    return Path(models_dir) / f"{model_name}{ATLAS_SUFFIX}"


def pack_array(a: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(a).tobytes(), 6)


def unpack_array(blob: bytes, dtype: Any, shape: Sequence[int]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype=dtype).reshape(tuple(shape))


_SCHEMA = """
CREATE TABLE header (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE images (
  id INTEGER PRIMARY KEY,
  study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, source TEXT NOT NULL, slice_index INTEGER NOT NULL,
  labels TEXT NOT NULL,
  rows INTEGER NOT NULL, cols INTEGER NOT NULL, pixel_dy REAL NOT NULL, pixel_dx REAL NOT NULL,
  context_rows INTEGER NOT NULL, context_cols INTEGER NOT NULL, context BLOB NOT NULL,
  pooled BLOB NOT NULL
) STRICT;
CREATE TABLE features (
  id INTEGER PRIMARY KEY,
  block TEXT NOT NULL, channel INTEGER NOT NULL, label TEXT NOT NULL,
  relevance INTEGER NOT NULL, label_rank INTEGER NOT NULL
) STRICT;
CREATE TABLE entries (
  id INTEGER PRIMARY KEY,
  feature_id INTEGER NOT NULL REFERENCES features(id),
  image_id INTEGER NOT NULL REFERENCES images(id),
  rank INTEGER NOT NULL,
  max_activation REAL NOT NULL,
  box_y0 REAL NOT NULL, box_x0 REAL NOT NULL, box_y1 REAL NOT NULL, box_x1 REAL NOT NULL,
  patch BLOB NOT NULL, heat BLOB NOT NULL
) STRICT;
CREATE INDEX entries_by_feature ON entries(feature_id, rank);
"""


@dataclass(frozen=True)
class Provenance:
    """Where an atlas example came from, and which model chose it."""

    study_uid: str
    series_uid: str
    source: str
    slice_index: int
    model_name: str
    model_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "source": self.source,
            "slice_index": self.slice_index,
            "model": self.model_name,
            "model_sha256": self.model_sha256,
        }


@dataclass(frozen=True, eq=False)
class AtlasEntry:
    """One atlas example: a training patch (HU) with the selected feature's activation on it.

    `heat` is in [0, 1] (scaled by the entry's own maximum); `box` is (y0, x0, y1, x1)
    as fractions of the source slice's rows and columns; `labels` are the source
    slice's subtypes; `feature_label` the subtype the feature was selected for.
    """

    entry_id: int
    feature_id: int
    block: str
    channel: int
    feature_label: str
    relevance: int
    rank: int
    labels: tuple[str, ...]
    max_activation: float
    patch: np.ndarray
    heat: np.ndarray
    box: tuple[float, float, float, float]
    image_id: int
    provenance: Provenance

    def to_dict(self, *, arrays: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "entry_id": self.entry_id,
            "feature": {"block": self.block, "channel": self.channel, "label": self.feature_label, "relevance": self.relevance},
            "labels": list(self.labels),
            "max_activation": round(self.max_activation, 6),
            "box": [round(v, 5) for v in self.box],
            "provenance": self.provenance.to_dict(),
        }
        if arrays:
            data["patch_hu"] = self.patch.astype(int).tolist()
            data["heat"] = np.round(self.heat, 3).tolist()
        return data


@dataclass(frozen=True, eq=False)
class AtlasHeader:
    """What the atlas says about itself (the `header` table)."""

    values: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def model_sha256(self) -> str:
        return str(self.values["model_sha256"])

    @property
    def model_name(self) -> str:
        return str(self.values["model_name"])

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.values["labels"])

    @property
    def blocks(self) -> dict[str, tuple[int, int, int]]:
        return {k: tuple(v) for k, v in self.values["blocks"].items()}  # type: ignore[misc]


def write_atlas(
    path: str | Path,
    header: Mapping[str, Any],
    images: Sequence[Mapping[str, Any]],
    features: Sequence[Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
) -> Path:
    """Write a complete atlas atomically (a temporary file renamed into place).

    `images` rows: study_uid, series_uid, source, slice_index, labels (tuple),
    rows, cols, pixel_dy, pixel_dx, context (int16 2-D), pooled (float32 1-D).
    `features` rows: block, channel, label, relevance, label_rank.
    `entries` rows: feature (index into features), image (index into images), rank,
    max_activation, box (4 floats), patch (int16 2-D), heat (uint8 2-D).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    head = dict(header)
    head.setdefault("format", ATLAS_FORMAT)
    head.setdefault("format_version", ATLAS_FORMAT_VERSION)
    patch_shape = {tuple(np.shape(e["patch"])) for e in entries} or {(0, 0)}
    if len(patch_shape) != 1:
        raise ValueError(f"all patches must have the same shape, got {sorted(patch_shape)}")
    head["patch_shape"] = list(next(iter(patch_shape)))
    pooled_dims = {int(np.size(im["pooled"])) for im in images} or {0}
    if len(pooled_dims) != 1:
        raise ValueError(f"all pooled feature vectors must have the same length, got {sorted(pooled_dims)}")
    head["pooled_dim"] = next(iter(pooled_dims))
    conn = sqlite3.connect(str(tmp))
    try:
        conn.executescript(_SCHEMA)
        with conn:
            conn.executemany("INSERT INTO header (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in head.items()])
            conn.executemany(
                "INSERT INTO images (id, study_uid, series_uid, source, slice_index, labels, rows, cols, pixel_dy, pixel_dx,"
                " context_rows, context_cols, context, pooled) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    (
                        i, im["study_uid"], im["series_uid"], im["source"], int(im["slice_index"]), ",".join(im["labels"]),
                        int(im["rows"]), int(im["cols"]), float(im["pixel_dy"]), float(im["pixel_dx"]),
                        int(np.shape(im["context"])[0]), int(np.shape(im["context"])[1]),
                        pack_array(np.asarray(im["context"], dtype=np.int16)),
                        np.asarray(im["pooled"], dtype=np.float32).tobytes(),
                    )
                    for i, im in enumerate(images)
                ),
            )
            conn.executemany(
                "INSERT INTO features (id, block, channel, label, relevance, label_rank) VALUES (?,?,?,?,?,?)",
                ((i, f["block"], int(f["channel"]), f["label"], int(f["relevance"]), int(f["label_rank"])) for i, f in enumerate(features)),
            )
            conn.executemany(
                "INSERT INTO entries (id, feature_id, image_id, rank, max_activation, box_y0, box_x0, box_y1, box_x1, patch, heat)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    (
                        i, int(e["feature"]), int(e["image"]), int(e["rank"]), float(e["max_activation"]), *map(float, e["box"]),
                        pack_array(np.asarray(e["patch"], dtype=np.int16)), pack_array(np.asarray(e["heat"], dtype=np.uint8)),
                    )
                    for i, e in enumerate(entries)
                ),
            )
        conn.execute("VACUUM")
    finally:
        conn.close()
    tmp.replace(out)
    return out


class Atlas:
    """An open atlas file. Index arrays are in memory; images are read on demand.

    Arrays: `feature_block` (F,) block names, `feature_channel` (F,), `feature_label`
    (F,), `feature_relevance` (F,); `entry_feature`, `entry_image`, `entry_rank` (E,);
    `feature_offsets` (F + 1,) so entries of feature f are `entry_order[offsets[f]:offsets[f+1]]`
    (best rank first); `image_labels` (I,) tuples; `pooled` (I, D) L2-normalised.
    Use one Atlas per thread (SQLite connections are not shared across threads).
    """

    def __init__(self, path: str | Path, *, index: bool = True) -> None:
        """Open read-only; `index=False` skips loading the index arrays (enough for `entry` and `context`)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise AtlasError(self.path, "atlas file does not exist")
        try:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            rows = self.conn.execute("SELECT key, value FROM header").fetchall()
        except sqlite3.DatabaseError as exc:
            raise AtlasError(self.path, f"not an ICH Viewer atlas ({exc})") from None
        values = {k: json.loads(v) for k, v in rows}
        if values.get("format") != ATLAS_FORMAT:
            self.conn.close()
            raise AtlasError(self.path, f"not an ICH Viewer atlas (format {values.get('format')!r})")
        version = values.get("format_version")
        if not isinstance(version, int) or version > ATLAS_FORMAT_VERSION:
            self.conn.close()
            raise AtlasError(self.path, f"atlas format version {version} is newer than this ICH Viewer reads (up to {ATLAS_FORMAT_VERSION}); update ICH Viewer")
        self.header = AtlasHeader(values)
        if index:
            self._load_index()

    def _load_index(self) -> None:
        c = self.conn
        feats = c.execute("SELECT block, channel, label, relevance FROM features ORDER BY id").fetchall()
        self.feature_block = np.asarray([f[0] for f in feats], dtype=object)
        self.feature_channel = np.asarray([f[1] for f in feats], dtype=np.int64)
        self.feature_label = np.asarray([f[2] for f in feats], dtype=object)
        self.feature_relevance = np.asarray([f[3] for f in feats], dtype=np.int64)
        ent = np.asarray(c.execute("SELECT id, feature_id, image_id, rank FROM entries ORDER BY feature_id, rank").fetchall(), dtype=np.int64).reshape(-1, 4)
        self.entry_order = ent[:, 0]
        self.entry_feature = ent[:, 1]
        self.entry_image = ent[:, 2]
        self.entry_rank = ent[:, 3]
        self.feature_offsets = np.searchsorted(self.entry_feature, np.arange(len(feats) + 1)).astype(np.int64)
        imgs = c.execute("SELECT labels, pooled FROM images ORDER BY id").fetchall()
        self.image_labels = [tuple(x for x in r[0].split(",") if x) for r in imgs]
        dim = int(self.header.values.get("pooled_dim", 0))
        pooled = np.frombuffer(b"".join(r[1] for r in imgs), dtype=np.float32).reshape(len(imgs), dim) if imgs else np.zeros((0, dim), np.float32)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        self.pooled = np.divide(pooled, norm, out=np.zeros_like(pooled), where=norm > 0)
        # entries per image, best (lowest rank) first: for the pooled-feature ranking
        by_image = np.lexsort((self.entry_rank, self.entry_image))
        self.image_entry_order = self.entry_order[by_image]
        self.image_offsets = np.searchsorted(self.entry_image[by_image], np.arange(len(imgs) + 1)).astype(np.int64)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return int(self.feature_channel.size)

    @property
    def n_entries(self) -> int:
        return int(self.entry_order.size)

    @property
    def n_images(self) -> int:
        return len(self.image_labels)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pairing ---------------------------------------------------------------------------
    def check_model(self, model_sha256: str, model_name: str = "", where: str | Path | None = None) -> None:
        """Refuse a model other than the one the atlas was built with (its features would mean something else)."""
        if str(model_sha256).lower() != self.header.model_sha256.lower():
            who = f"model '{model_name}'" + (f" in {where}" if where else "")
            raise AtlasMismatchError(
                self.path,
                f"the atlas was built with model '{self.header.model_name}' (SHA-256 {self.header.model_sha256[:12]}…) "
                f"but {who} has SHA-256 {str(model_sha256)[:12]}…; rebuild the atlas with `ichviewer atlas build`",
            )

    # -- reading entries -------------------------------------------------------------------
    def feature_entries(self, feature_id: int) -> np.ndarray:
        """Entry ids of one selected feature, strongest first."""
        lo, hi = self.feature_offsets[feature_id], self.feature_offsets[feature_id + 1]
        return self.entry_order[lo:hi]

    def image_entries(self, image_id: int) -> np.ndarray:
        lo, hi = self.image_offsets[image_id], self.image_offsets[image_id + 1]
        return self.image_entry_order[lo:hi]

    def entries_for_label(self, label: str) -> np.ndarray:
        """Entry ids of the features selected for `label` (the atlas browser's page for a subtype)."""
        feats = np.flatnonzero(self.feature_label == label)
        return np.concatenate([self.feature_entries(int(f)) for f in feats]) if feats.size else np.zeros(0, np.int64)

    def entry(self, entry_id: int) -> AtlasEntry:
        row = self.conn.execute(
            "SELECT e.id, e.feature_id, f.block, f.channel, f.label, f.relevance, e.rank, e.max_activation,"
            " e.box_y0, e.box_x0, e.box_y1, e.box_x1, e.patch, e.heat, e.image_id,"
            " i.study_uid, i.series_uid, i.source, i.slice_index, i.labels"
            " FROM entries e JOIN features f ON f.id = e.feature_id JOIN images i ON i.id = e.image_id WHERE e.id = ?",
            (int(entry_id),),
        ).fetchone()
        if row is None:
            raise KeyError(f"no atlas entry {entry_id} in {self.path}")
        shape = self.header.values["patch_shape"]
        return AtlasEntry(
            entry_id=row[0], feature_id=row[1], block=row[2], channel=row[3], feature_label=row[4], relevance=row[5],
            rank=row[6], max_activation=row[7], box=(row[8], row[9], row[10], row[11]),
            patch=unpack_array(row[12], np.int16, shape),
            heat=unpack_array(row[13], np.uint8, shape).astype(np.float32) / 255.0,
            image_id=row[14],
            labels=tuple(x for x in row[19].split(",") if x),
            provenance=Provenance(row[15], row[16], row[17], row[18], self.header.model_name, self.header.model_sha256),
        )

    def context(self, image_id: int) -> np.ndarray:
        """The downsampled whole source slice (HU, int16) of an atlas image, for showing a patch in context."""
        row = self.conn.execute("SELECT context_rows, context_cols, context FROM images WHERE id = ?", (int(image_id),)).fetchone()
        if row is None:
            raise KeyError(f"no atlas image {image_id} in {self.path}")
        return unpack_array(row[2], np.int16, (row[0], row[1]))


def open_atlas(path: str | Path, *, model_sha256: str | None = None, model_name: str = "", index: bool = True) -> Atlas:
    """Open an atlas; with `model_sha256`, refuse it (AtlasMismatchError) unless it was built with that model."""
    atlas = Atlas(path, index=index)
    if model_sha256 is not None:
        try:
            atlas.check_model(model_sha256, model_name)
        except AtlasMismatchError:
            atlas.close()
            raise
    return atlas


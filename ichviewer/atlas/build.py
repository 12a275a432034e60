"""Atlas building: training slices through the explaining model, filter relevance, and the selected features' patches (Lee et al. 2019, Methods).

Two passes over the training data, so activations of all images never sit in memory:

1. every slice goes through the explaining member; per filter of the chosen blocks
   only its maximum activation is kept (N x F floats);
2. relevance counts pick the top 5 % of filters per label; only the slices that
   head those filters' runs are run again to cut their patches and heat maps.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import SUBTYPES
from ichviewer.atlas.patches import PATCH_MM, PATCH_PX, context_slice, patch_around
from ichviewer.atlas.relevance import DEFAULT_FRACTION, filter_relevance, select_filters
from ichviewer.atlas.sources import AtlasDataError, TrainingSource
from ichviewer.atlas.store import write_atlas
from ichviewer.inference.errors import Cancelled, ModelContractError
from ichviewer.inference.model import LoadedModel
from ichviewer.inference.preprocessing import geometry_for, model_inputs

#: progress(stage, done, total): stage is "activations" (pass 1, per study), "patches" (pass 2, per study), "writing".
BuildProgress = Callable[[str, int, int], None]

#: Training slices the explaining member runs at once.
BATCH = 16
#: Strongest slices stored per selected feature (the first of its relevance run).
DEFAULT_PATCHES_PER_FEATURE = 4
#: The last convolutional block, i.e. the CAM features (always available to an explaining member).
LAST_BLOCK = "features"


@dataclass(frozen=True)
class AtlasSummary:
    """What a build produced (printed by the CLI)."""

    path: Path
    model_name: str
    model_sha256: str
    n_training_images: int
    n_filters: int
    n_features: int
    n_entries: int
    n_images: int
    per_label: dict[str, int]
    seconds: float
    size_bytes: int


def _checksum_beside_the_models(ensemble: Any, path: Path) -> None:
    """An atlas written into its ensemble's folder joins the folder's SHA256SUMS (when it has
    one), so the shipped atlas is checked with the networks it explains."""
    from ichviewer.inference.manifest import refresh_checksums

    directory = getattr(ensemble, "directory", None)
    if directory is not None and Path(directory).resolve() == path.resolve().parent:
        refresh_checksums(directory, add=(path.name,))


def explaining_member(ensemble: Any, name: str | None = None) -> LoadedModel:
    """The member that builds the atlas: `name`, else the manifest's `explaining_model`, else its attention model."""
    if name:
        model = ensemble.model(name)
    else:
        spec = ensemble.manifest.explaining
        model = ensemble.model(spec.name) if spec is not None else None
    if model is None or not model.has_cam:
        who = f"'{name}'" if name else "the ensemble"
        raise ModelContractError(getattr(model, "name", name or ensemble.name), ensemble.directory, f"{who} has no member with a CAM head, which the atlas needs (Lee et al. Eq. 5-6)")
    return model


def explainable_blocks(model: LoadedModel) -> tuple[str, ...]:
    """Blocks whose filters the retrieval can rank by Eq. 6-7: the last block (exact CAM gradient) and blocks with a gradient tail."""
    return tuple(b.name for b in model.spec.block_outputs if getattr(b, "tail_file", None)) + (LAST_BLOCK,)


def _slices_through(model: LoadedModel, volume: Any, indices: Sequence[int], blocks: Sequence[str]) -> dict[str, np.ndarray]:
    spec = model.spec
    geometry = geometry_for(volume, spec.input_size, spec.crop)
    parts: dict[str, list[np.ndarray]] = {b: [] for b in blocks}
    idx = list(indices)
    for lo in range(0, len(idx), BATCH):
        x = model_inputs(volume, idx[lo : lo + BATCH], spec, geometry)
        _, feats = model.block_features(x, blocks)
        for b in blocks:
            parts[b].append(feats[b])
    return {b: np.concatenate(p, axis=0) for b, p in parts.items()}


def build_atlas(
    ensemble: Any,
    source: TrainingSource,
    out: str | Path,
    *,
    model_name: str | None = None,
    blocks: Sequence[str] | None = None,
    fraction: float = DEFAULT_FRACTION,
    patches_per_feature: int = DEFAULT_PATCHES_PER_FEATURE,
    patch_mm: float = PATCH_MM,
    patch_px: int = PATCH_PX,
    progress: BuildProgress | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> AtlasSummary:
    """Build the atlas of the explaining member from `source` and write it to `out` (one SQLite file).

    `blocks` defaults to every block the retrieval can explain (`explainable_blocks`).
    Raises AtlasDataError for unusable data, ModelContractError for a member that
    cannot explain, Cancelled when `is_cancelled()` turns true.
    """
    t0 = time.perf_counter()
    model = explaining_member(ensemble, model_name)
    blocks = tuple(blocks) if blocks else explainable_blocks(model)
    unknown = [b for b in blocks if b not in model.block_names]
    if unknown:
        raise ModelContractError(model.name, model.path, f"no block named {unknown}; the model exposes {list(model.block_names)}")
    report = progress or (lambda stage, done, total: None)
    cancelled = is_cancelled or (lambda: False)
    keys = source.keys()
    if not keys:
        raise AtlasDataError(f"{source.description}: no studies")

    # -- pass 1: maximum activation of every filter on every slice -----------------------------
    max_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    refs: list[tuple[str, int]] = []
    block_shapes: dict[str, tuple[int, int, int]] = {}
    for i, key in enumerate(keys):
        if cancelled():
            raise Cancelled(None)
        study = source.load(key)
        n = int(study.volume.hu.shape[0])
        feats = _slices_through(model, study.volume, range(n), blocks)
        for b in blocks:
            block_shapes.setdefault(b, tuple(int(s) for s in feats[b].shape[1:]))  # type: ignore[arg-type]
        max_parts.append(np.concatenate([feats[b].reshape(n, feats[b].shape[1], -1).max(axis=2) for b in blocks], axis=1))
        label_parts.append(study.labels)
        refs.extend((key, z) for z in range(n))
        report("activations", i + 1, len(keys))
    max_act = np.concatenate(max_parts, axis=0)
    labels = np.concatenate(label_parts, axis=0)
    filter_block = np.concatenate([[b] * block_shapes[b][0] for b in blocks])
    filter_channel = np.concatenate([np.arange(block_shapes[b][0]) for b in blocks])

    # -- relevance and selection (Lee et al. 2019: top 5 % of filters per label) -------------
    counts, tops = filter_relevance(max_act, labels, top=patches_per_feature)
    selections = select_filters(counts, fraction)
    features: list[dict[str, Any]] = []
    wanted: dict[int, list[tuple[int, int]]] = {}  # training image -> [(feature row, rank)]
    for sel in selections:
        fid = len(features)
        features.append(
            {
                "block": str(filter_block[sel.filter_index]),
                "channel": int(filter_channel[sel.filter_index]),
                "label": SUBTYPES[sel.label_index],
                "relevance": sel.relevance,
                "label_rank": sel.rank,
            }
        )
        # the run of slices carrying the label from the top: those are the examples
        for rank, img in enumerate(tops[sel.filter_index, : min(sel.relevance, patches_per_feature)]):
            wanted.setdefault(int(img), []).append((fid, rank))

    # -- pass 2: patches, heat maps, context and pooled features of the needed slices ----------
    by_study: dict[str, list[int]] = {}
    for img in sorted(wanted):
        by_study.setdefault(refs[img][0], []).append(img)
    images: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    image_row: dict[int, int] = {}
    need_blocks = tuple(dict.fromkeys((*{f["block"] for f in features}, LAST_BLOCK)))
    global_index = {(str(b), int(c)): i for i, (b, c) in enumerate(zip(filter_block, filter_channel, strict=True))}
    for i, (key, imgs) in enumerate(by_study.items()):
        if cancelled():
            raise Cancelled(None)
        study = source.load(key)
        vol = study.volume
        zs = [refs[img][1] for img in imgs]
        feats = _slices_through(model, vol, zs, need_blocks)
        geometry = geometry_for(vol, model.spec.input_size, model.spec.crop)
        spacing = (float(vol.spacing[1]), float(vol.spacing[2]))
        for j, (img, z) in enumerate(zip(imgs, zs, strict=True)):
            image_row[img] = len(images)
            images.append(
                {
                    "study_uid": vol.study_uid,
                    "series_uid": vol.series_uid,
                    "source": study.source,
                    "slice_index": z,
                    "labels": tuple(s for s, on in zip(SUBTYPES, study.labels[z], strict=True) if on),
                    "rows": vol.hu.shape[1],
                    "cols": vol.hu.shape[2],
                    "pixel_dy": spacing[0],
                    "pixel_dx": spacing[1],
                    "context": context_slice(vol.hu[z]),
                    "pooled": feats[LAST_BLOCK][j].reshape(feats[LAST_BLOCK].shape[1], -1).mean(axis=1),
                }
            )
            for fid, rank in wanted[img]:
                f = features[fid]
                amap = np.maximum(geometry.to_source(feats[f["block"]][j, f["channel"]]), 0.0)
                patch, heat, box = patch_around(vol.hu[z], amap, spacing, patch_mm=patch_mm, patch_px=patch_px)
                entries.append(
                    {
                        "feature": fid,
                        "image": image_row[img],
                        "rank": rank,
                        "max_activation": float(max_act[img, global_index[(f["block"], f["channel"])]]),
                        "box": box,
                        "patch": patch,
                        "heat": heat,
                    }
                )
        report("patches", i + 1, len(by_study))

    report("writing", 0, 1)
    header = {
        "model_name": model.name,
        "model_version": model.spec.version,
        "model_sha256": model.spec.sha256,
        "model_file": model.spec.file,
        "ensemble_name": ensemble.name,
        "labels": list(SUBTYPES),
        "blocks": {b: list(block_shapes[b]) for b in blocks},
        "fraction": fraction,
        "patches_per_feature": patches_per_feature,
        "patch_mm": patch_mm,
        "patch_px": patch_px,
        "input_size": list(model.spec.input_size),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_training_images": int(labels.shape[0]),
        "n_filters": int(filter_channel.size),
        "data": source.description,
    }
    path = write_atlas(out, header, images, features, entries)
    _checksum_beside_the_models(ensemble, path)
    report("writing", 1, 1)
    per_label = {s: sum(1 for f in features if f["label"] == s) for s in SUBTYPES}
    return AtlasSummary(
        path=path,
        model_name=model.name,
        model_sha256=model.spec.sha256,
        n_training_images=int(labels.shape[0]),
        n_filters=int(filter_channel.size),
        n_features=len(features),
        n_entries=len(entries),
        n_images=len(images),
        per_label=per_label,
        seconds=time.perf_counter() - t0,
        size_bytes=path.stat().st_size,
    )


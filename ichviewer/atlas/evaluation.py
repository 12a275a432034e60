"""How well the prediction basis matches the finding: top-example subtype agreement on held-out labelled slices, versus pooled features and chance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import SUBTYPES
from ichviewer.atlas.build import AtlasSummary, build_atlas, explaining_member
from ichviewer.atlas.retrieval import retrieve
from ichviewer.atlas.sources import PhantomSource, TrainingSource
from ichviewer.atlas.store import Atlas, atlas_path_for, open_atlas
from ichviewer.inference.model import LoadedModel

#: Seeds of the bundled atlas's synthetic training set and of its held-out check (disjoint).
BUNDLED_TRAIN_SEEDS = range(0, 200)
BUNDLED_HELDOUT_SEEDS = range(5000, 5060)
#: Cases of the recipe's training / test splits used for the bundled atlas and its held-out check.
BUNDLED_TRAIN_CASES = 200
BUNDLED_HELDOUT_CASES = 60
#: Balanced subtypes for the bundled synthetic set (normals keep relevance runs honest).
BUNDLED_SUBTYPES = ("IPH", "IVH", "SDH", "EDH", "SAH", "mixed", "none")


@dataclass(frozen=True)
class RetrievalReport:
    """Share of held-out queries whose top example carries the query's subtype, per ranking, and chance."""

    n_queries: int
    attention: float  # Eq. 7 over the features selected for the query's subtype (the product)
    pooled: float
    chance: float
    per_label: dict[str, dict[str, float]]
    attention_all_features: float = float("nan")  # Eq. 7 over every selected feature (diagnostic)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_queries": self.n_queries,
            "top1_same_subtype": {
                "attention_eq7": round(self.attention, 4),
                "attention_eq7_all_features": round(self.attention_all_features, 4),
                "pooled_features": round(self.pooled, 4),
                "chance": round(self.chance, 4),
            },
            "per_label": self.per_label,
        }


def evaluate_retrieval(
    atlas: Atlas,
    ensemble: Any,
    source: TrainingSource,
    *,
    every: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> RetrievalReport:
    """For every labelled slice (every `every`-th) and subtype present, retrieve one example per ranking and score it.

    Chance is the share of atlas slices carrying the subtype (a uniformly drawn atlas example).
    "attention" ranks the features selected for the subtype (what the workstation shows, as the
    paper); "all features" ranks every selected feature, so the Eq. 7 distance alone must pick
    the subtype: a diagnostic of the features, not of the product.
    """
    model = ensemble if isinstance(ensemble, LoadedModel) else explaining_member(ensemble)
    image_has = {s: np.asarray([s in labels for labels in atlas.image_labels], dtype=bool) for s in SUBTYPES}
    kinds = ("attention", "all_features", "pooled", "chance")
    hits = dict.fromkeys(kinds, 0.0)
    per: dict[str, dict[str, float]] = {s: {"n": 0, **dict.fromkeys(kinds, 0.0)} for s in SUBTYPES}
    n = 0
    keys = source.keys()
    for i, key in enumerate(keys):
        study = source.load(key)
        positive = np.flatnonzero(study.labels.any(axis=1))[::every]
        for z in positive:
            for li in np.flatnonzero(study.labels[z]):
                label = SUBTYPES[li]
                r = retrieve(study.volume, int(z), label, atlas, model, k=1, also_all_features=True)
                every_feature = r.extras["all_features_examples"]
                got = {
                    "attention": bool(r.examples) and label in r.examples[0].entry.labels,
                    "all_features": bool(every_feature) and label in every_feature[0].entry.labels,
                    "pooled": bool(r.pooled_examples) and label in r.pooled_examples[0].entry.labels,
                    "chance": float(image_has[label].mean()) if atlas.n_images else 0.0,
                }
                n += 1
                per[label]["n"] += 1
                for kind, v in got.items():
                    hits[kind] += v
                    per[label][kind] += v
        if progress:
            progress(i + 1, len(keys))
    per_label = {
        s: {"n": int(v["n"]), **{k: round(v[k] / v["n"], 4) for k in kinds}}
        for s, v in per.items()
        if v["n"]
    }
    d = max(n, 1)
    return RetrievalReport(
        n, hits["attention"] / d, hits["pooled"] / d, hits["chance"] / d, per_label, hits["all_features"] / d
    )


def build_bundled_atlas(
    ensemble: Any,
    *,
    out: str | Path | None = None,
    train_seeds: range | list[int] | None = None,
    heldout_seeds: range | list[int] | None = None,
    matrix: int | None = None,
    run_seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[AtlasSummary, RetrievalReport]:
    """The redistributable atlas of the bundled ensemble: built from synthetic phantoms only, then checked on held-out phantoms.

    By default the atlas is built from the first BUNDLED_TRAIN_CASES cases of the training
    recipe's own training split (run seed `run_seed`), i.e. the very phantoms the models
    learnt from, at the recipe's 256 matrix, and checked on BUNDLED_HELDOUT_CASES cases of
    its test split. Explicit `train_seeds`/`heldout_seeds` use seed-drawn phantoms instead.
    Written next to the explaining member (`<models>/<member>.atlas.sqlite`) unless `out` is given.
    """
    from ichviewer.atlas.sources import PlannedPhantomSource
    from ichviewer.training.data import plan_phantom_cases

    model = explaining_member(ensemble)
    target = Path(out) if out else atlas_path_for(ensemble.directory, model.name)
    if train_seeds is None:
        train = PlannedPhantomSource(plan_phantom_cases(BUNDLED_TRAIN_CASES, "train", seed=run_seed), matrix=matrix or 256)
    else:
        train = PhantomSource(list(train_seeds), subtypes=BUNDLED_SUBTYPES, matrix=matrix or 128)
    summary = build_atlas(ensemble, train, target, progress=progress)
    if heldout_seeds is None:
        heldout = PlannedPhantomSource(plan_phantom_cases(BUNDLED_HELDOUT_CASES, "test", seed=run_seed), matrix=matrix or 256)
    else:
        heldout = PhantomSource(list(heldout_seeds), subtypes=BUNDLED_SUBTYPES, matrix=matrix or 128)
    with open_atlas(summary.path, model_sha256=model.spec.sha256, model_name=model.name) as atlas:
        report = evaluate_retrieval(atlas, model, heldout, every=2, progress=(lambda d, t: progress("held-out", d, t)) if progress else None)
    return summary, report


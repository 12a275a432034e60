"""The training recipe end to end: data, four members, export, ensemble weights, operating points, manifest, log."""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ichviewer import LABELS, __version__
from ichviewer.evaluation.triage import CLINICAL_ICH_PREVALENCE, check_prevalence
from ichviewer.training.data import (
    SliceCache,
    TrainingDataError,
    build_dicom_cache,
    build_phantom_cache,
    concat_caches,
    add_twin_negatives,
    estimate_cache_bytes,
    plan_phantom_cases,
    plans_fingerprint,
    split_by_patient,
    thickness_plane_choices,
)
from ichviewer.training.networks import FAMILIES
from ichviewer.training.trainer import check_batch_options, check_lesion_map_stride
from ichviewer.training.progress import ProgressBar

#: The documented command that trains the bundled ensemble (the other defaults are its recipe).
#: It departs from the defaults in its input (256 pixels through the learned stem, departure 17,
#: in four windows: brain, Lee et al.'s blood, subdural and bone, departure 34), bfloat16 autocast
#: (departure 16), its length (8 epochs of 450 steps), its ANY (the noisy-OR of the subtypes,
#: departure 20) and the loss that trains that noisy-OR (departure 22). About 32 minutes on an
#: otherwise idle 2-core CPU with the allocator tuning (see training_log.json for the real timing).
BUNDLED_COMMAND = (
    "ichviewer train --out models/default --work build/train-work --seed 0 --n-cases 400 100 "
    "--epochs 8 --steps-per-epoch 450 --batch-size 32 --input-size 256 --input-stem --precision bf16 --threads 2 "
    "--any-rule noisy-or --noisy-or-any-weight 1 --windows brain-blood-subdural-bone"
)

SOURCES = ("phantoms", "dicom")
SPECIALISTS = ("IPH", "IVH", "SDH", "EDH", "SAH", "small")
LOG_NAME = "training_log.json"


@dataclass(frozen=True)
class RecipeConfig:
    """Everything `ichviewer train` controls. Defaults are the bundled ensemble's recipe."""

    out: Path
    source: str = "phantoms"
    data_dir: Path | None = None
    labels_csv: Path | None = None
    families: tuple[str, ...] = FAMILIES
    specialists: tuple[str, ...] = ()
    specialist_family: str = "resnet"
    epochs: int = 10
    seed: int = 0
    n_train: int = 400
    n_validation: int = 100
    thin_every: int = 1
    thickness_planes: int | tuple[int, ...] = 1  # a tuple mixes them (`plan_phantom_cases`)
    matrix: int = 256
    input_size: int = 128
    windows: str = "brain-subdural-bone"
    crop: str = "head"
    interpolation: str = "sample"
    slab_mm: float | None = 5.0
    twins: bool = True
    pair_twins: bool = False
    width: int = 16
    batch_size: int = 32
    steps_per_epoch: int | None = 500
    lr: float = 3e-3
    positive_fraction: float = 0.5
    hard_fraction: float = 0.0
    hard_stratum: str = "all"  # departure 29: "negative" mines the negatives only
    positive_sampling: str = "slice"
    precision: str = "fp32"
    input_stem: bool = False
    wide_stem: bool = False  # departure 23: the stem's 16 channels feed the network (needs input_stem)
    pooling: str = "avg"  # departure 26: the head's pooling of per-cell logits ("avg" = Lee et al.'s GAP)
    lesion_map_weight: float = 0.0
    lesion_map_stride: int | None = None
    mimic_map_weight: float = 0.0  # departure 33: the auxiliary head also learns where the mimics are
    noisy_or_any_weight: float = 0.0  # departure 22: train the subtypes' noisy-OR against the ANY label
    twin_rank_weight: float = 0.0  # departure 27: rank each paired twin below its bleeding slice (needs pair_twins)
    context_slices: int = 1  # departure 30: 3 reads each slice with its neighbours as channels (2.5D)
    ignore_invisible: bool = False  # departure 24: positive slice labels with no visible blood leave the loss
    ensemble: str = "mean"
    any_rule: str = "model"  # manifest aggregation.any: the models' ANY output, or noisy-OR of the subtypes
    min_sensitivity: float = 0.95
    # Subtypes' specific thresholds ("positive" rather than "possible", ichviewer.core.decisions) at this
    # validation specificity.
    min_specificity: float = 0.95
    target_miss_rate: float = 0.01
    # Triage rates stated at this share of studies with haemorrhage (None: the validation set's own mix).
    triage_prevalence: float | None = CLINICAL_ICH_PREVALENCE
    calibration_cases: int = 0  # extra validation-split phantoms for the operating points only (departure 21)
    workers: int = 2
    threads: int | None = None
    resume: bool = False
    max_steps: int | None = None  # stop each member early (timing runs and tests)
    name: str = "ichviewer-default"
    work_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "dicom" and (self.data_dir is None or self.labels_csv is None):
            raise ValueError("the dicom source needs a data folder (--data) and a labels CSV (--labels)")
        if int(self.calibration_cases) < 0:
            raise ValueError(f"calibration cases must be >= 0, got {self.calibration_cases}")
        if self.calibration_cases and self.source != "phantoms":
            raise ValueError("calibration cases are planned phantoms; a DICOM site fits its operating points on its validation split")
        if self.lesion_map_weight > 0 and self.source != "phantoms":
            raise ValueError("the lesion-map loss needs phantoms (DICOM studies come without blood masks)")
        if self.mimic_map_weight > 0 and self.source != "phantoms":
            raise ValueError("the mimic-map loss needs phantoms (DICOM studies come without mimic masks)")
        if self.ignore_invisible and self.source != "phantoms":
            raise ValueError("--ignore-invisible-positives needs phantoms (DICOM studies come without blood masks)")
        from ichviewer.core.windowing import INPUT_WINDOW_SETS
        from ichviewer.inference.preprocessing import CROPS

        if self.windows not in INPUT_WINDOW_SETS:
            raise ValueError(f"windows must be one of {list(INPUT_WINDOW_SETS)}, got {self.windows!r}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {list(CROPS)}, got {self.crop!r}")
        if self.slab_mm is not None and not 0 < float(self.slab_mm) <= 20:
            raise ValueError(f"slab must be in (0, 20] mm, got {self.slab_mm}")
        # the trainer's own checks, here too: before minutes of data generation
        check_batch_options(
            interpolation=self.interpolation, positive_fraction=self.positive_fraction, hard_fraction=self.hard_fraction,
            hard_stratum=self.hard_stratum, positive_sampling=self.positive_sampling, precision=self.precision, lesion_map_weight=self.lesion_map_weight,
            lesion_map_stride=self.lesion_map_stride, noisy_or_any_weight=self.noisy_or_any_weight,
            input_stem=self.input_stem, wide_stem=self.wide_stem, pooling=self.pooling,
            twin_rank_weight=self.twin_rank_weight, pair_twins=self.twins and self.pair_twins,
            context_slices=self.context_slices, mimic_map_weight=self.mimic_map_weight,
        )
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise ValueError(f"families must be among {FAMILIES}, got {list(self.families)}")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families must not repeat, got {list(self.families)}")
        if self.specialist_family not in FAMILIES:
            raise ValueError(f"specialist family must be one of {FAMILIES}, got {self.specialist_family!r}")
        from ichviewer.inference.manifest import ANY_RULES

        if self.any_rule not in ANY_RULES:
            raise ValueError(f"any_rule must be one of {ANY_RULES}, got {self.any_rule!r}")
        bad = [s for s in self.specialists if s not in SPECIALISTS]
        if bad:
            raise ValueError(f"specialists must be among {SPECIALISTS}, got {bad}")
        thickness_plane_choices(self.thickness_planes)
        for key, lo in (("epochs", 1), ("n_train", 2), ("n_validation", 2), ("input_size", 32), ("batch_size", 1), ("matrix", 64)):
            if int(getattr(self, key)) < lo:
                raise ValueError(f"{key.replace('_', ' ')} must be at least {lo}, got {getattr(self, key)}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(f"steps per epoch must be at least 1, got {self.steps_per_epoch}")
        if not 0.0 < self.min_sensitivity <= 1.0:
            raise ValueError(f"min sensitivity must be in (0, 1], got {self.min_sensitivity}")
        if not 0.0 < self.min_specificity <= 1.0:
            raise ValueError(f"min specificity must be in (0, 1], got {self.min_specificity}")
        if not 0.0 <= self.target_miss_rate < 1.0:
            raise ValueError(f"target miss rate must be in [0, 1), got {self.target_miss_rate}")
        check_prevalence(self.triage_prevalence)
        families = set(self.families) | ({self.specialist_family} if self.specialists else set())
        check_lesion_map_stride(
            sorted(families), self.width, self.input_size, self.input_stem, self.lesion_map_stride, self.wide_stem
        )

    @property
    def window_set(self):
        from ichviewer.core.windowing import INPUT_WINDOW_SETS

        return INPUT_WINDOW_SETS[self.windows]

    @property
    def work(self) -> Path:
        return Path(self.work_dir) if self.work_dir else self.out / "work"

    def members(self) -> list[tuple[str, str, str | None]]:
        """(name, family, specialist) of every member, in manifest order."""
        out = [(f, f, None) for f in self.families]
        out += [(f"{self.specialist_family}-{s.lower()}", self.specialist_family, s) for s in self.specialists]
        return out


@dataclass
class RecipeResult:
    manifest_path: Path
    log_path: Path
    log: dict = field(default_factory=dict)


def _progress_fn(label: str, stream: TextIO | None):
    bar: dict[str, ProgressBar] = {}

    def update(done: int, total: int) -> None:
        if "b" not in bar:
            bar["b"] = ProgressBar(total, label, stream)
        bar["b"].update(done)
        if done >= total:
            bar["b"].close()

    return update


def check_free_disk(folder: Path, needed_bytes: int) -> None:
    """Raise TrainingDataError, naming the folder and both sizes, if its disk has less free space than needed."""
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise TrainingDataError(
            f"{folder}: the training caches need about {needed_bytes / 1e9:.1f} GB and the disk has "
            f"{free / 1e9:.1f} GB free; free some space or give --work a folder on a larger disk"
        )


def phantom_split_plans(config: RecipeConfig) -> dict[str, list]:
    """The phantom case plans of each data split the recipe uses: train (with twins), validation and,
    when `calibration_cases` > 0, calibration: the validation split's plans that follow the validation
    cases (same seed block, so disjoint from them, from training, from the test split and from the
    development set's seed 5)."""
    out = {}
    for split, n in (("train", config.n_train), ("validation", config.n_validation)):
        plans = plan_phantom_cases(n, split, config.seed, config.thin_every, config.thickness_planes)
        if split == "train" and config.twins:
            plans = add_twin_negatives(plans)
        out[split] = plans
    if config.calibration_cases:
        n = config.n_validation + config.calibration_cases
        out["calibration"] = plan_phantom_cases(n, "validation", config.seed, config.thin_every, config.thickness_planes)[
            config.n_validation:
        ]
    return out


def phantom_caches(
    config: RecipeConfig, stream: TextIO | None = None, splits: Sequence[str] | None = None
) -> dict[str, tuple[SliceCache, list, bool]]:
    """The phantom cache of each split of `phantom_split_plans` (or only those in `splits`), loaded
    from the work folder or built and saved there, keyed by content (plans, sizes, windows,
    framing, lesion maps, label rule). Returns split -> (cache, plans, invisible positives left out)."""
    cache_dir = config.work / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    planned = {}
    for split, plans in phantom_split_plans(config).items():
        if splits is not None and split not in splits:
            continue
        with_mimic = split == "train" and config.mimic_map_weight > 0  # departure 33
        with_maps = with_mimic or (split == "train" and config.lesion_map_weight > 0)  # departure 19
        ignore = split == "train" and config.ignore_invisible  # departure 24: validation is scored as the test set
        key = plans_fingerprint(
            plans, config.input_size, config.matrix, config.window_set, config.crop, config.slab_mm, with_maps, ignore,
            with_mimic,
        )
        planned[split] = (plans, with_maps, with_mimic, ignore, cache_dir / f"{split}-{key}.npz")
    check_free_disk(
        cache_dir,
        sum(
            estimate_cache_bytes(p, config.input_size, m, mim, channels=len(config.window_set))
            for p, m, mim, _ignore, path in planned.values() if not path.exists()
        ),
    )
    out = {}
    for split, (plans, with_maps, with_mimic, ignore, path) in planned.items():
        if path.exists():
            cache = SliceCache.load(path)
        else:
            cache = build_phantom_cache(
                plans, config.input_size, config.matrix, config.workers, _progress_fn(f"phantoms ({split})", stream),
                windows=config.window_set, crop=config.crop, slab_mm=config.slab_mm, with_maps=with_maps,
                ignore_invisible=ignore, with_mimic=with_mimic,
            )
            cache.save(path)
        out[split] = (cache, plans, ignore)
    return out


def load_data(
    config: RecipeConfig, stream: TextIO | None = None
) -> tuple[SliceCache, SliceCache, SliceCache | None, dict]:
    """Training, validation and (if asked for) calibration caches, built once and reused from the work
    folder (keyed by content). The calibration cache is None unless `config.calibration_cases` > 0."""
    work = config.work
    (work / "cache").mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"source": config.source}
    t0 = time.perf_counter()
    calibration = None
    if config.source == "phantoms":
        caches = {}
        for split, (cache, plans, ignore) in phantom_caches(config, stream).items():
            caches[split] = cache
            n = {"train": config.n_train, "validation": config.n_validation}.get(split, len(plans))
            kinds: dict[str, int] = {}
            for p in plans:
                kinds[p.kind] = kinds.get(p.kind, 0) + 1
            info[split] = {
                "cases": len(plans),
                "planned_cases": n,
                "seeds": [plans[0].seed, plans[-1].seed] if plans else [],
                "slices": cache.n_slices,
                "kinds": kinds,
            }
            if ignore:
                info[split]["positive_labels_left_out_invisible"] = int((cache.known == 0).sum())
        info["matrix"] = config.matrix
        train, val = caches["train"], caches["validation"]
        calibration = caches.get("calibration")
    else:
        path = work / "cache" / f"dicom-{config.input_size}-{config.windows}-{config.crop}-{config.slab_mm}.npz"
        if path.exists() and config.resume:
            cache = SliceCache.load(path)
        else:
            cache = build_dicom_cache(
                config.data_dir, config.labels_csv, config.input_size, _progress_fn("DICOM", stream),
                windows=config.window_set, crop=config.crop, slab_mm=config.slab_mm,
            )
            # A site's studies are only counted once read; refuse before a half-written save.
            check_free_disk(work / "cache", cache.nbytes)
            cache.save(path)
        splits = split_by_patient(cache, config.seed)
        if splits["train"] is None or splits["validation"] is None:
            raise ValueError(
                f"{config.labels_csv}: too few labelled studies to split by patient into training and validation "
                f"({len(cache.cases)} found)"
            )
        train, val = splits["train"], splits["validation"]
        info.update(
            {
                "per_slice_labels": cache.slice_labelled,
                "labels_key": cache.meta.get("labels_key"),
                "missing_in_folder": cache.meta.get("missing_in_folder", []),
                "missing_in_folder_count": cache.meta.get("missing_in_folder_count", len(cache.meta.get("missing_in_folder", []))),
                "failed_series": cache.meta.get("failed_series", []),
                "failed_series_count": cache.meta.get("failed_series_count", 0),
                **{s: {"cases": len(c.cases), "slices": c.n_slices} for s, c in splits.items() if c is not None},
                "test_case_ids": [c.case_id for c in splits["test"].cases] if splits["test"] is not None else [],
            }
        )
    info["seconds"] = time.perf_counter() - t0
    for name, c in (("train", train), ("validation", val), ("calibration", calibration)):
        if c is not None:
            info.setdefault(name, {})["positive_cases"] = {
                lab: int(v) for lab, v in zip(LABELS, c.case_labels().sum(axis=0))
            }
    return train, val, calibration, info


def member_train_config(config: RecipeConfig, index: int, name: str, family: str, specialist: str | None):
    """The `TrainConfig` of the recipe's member number `index` (as `config.members()` lists them)."""
    from ichviewer.training.trainer import TrainConfig

    return TrainConfig(
        name=name, family=family, width=config.width, input_size=config.input_size, epochs=config.epochs,
        batch_size=config.batch_size, steps_per_epoch=config.steps_per_epoch, lr=config.lr,
        seed=config.seed * 1000 + index, specialist=specialist, threads=config.threads,
        positive_fraction=config.positive_fraction, interpolation=config.interpolation,
        pair_twins=config.twins and config.pair_twins,
        hard_fraction=config.hard_fraction, hard_stratum=config.hard_stratum, positive_sampling=config.positive_sampling,
        precision=config.precision, input_stem=config.input_stem, wide_stem=config.wide_stem,
        lesion_map_weight=config.lesion_map_weight, mimic_map_weight=config.mimic_map_weight,
        lesion_map_stride=config.lesion_map_stride, noisy_or_any_weight=config.noisy_or_any_weight,
        pooling=config.pooling, twin_rank_weight=config.twin_rank_weight, context_slices=config.context_slices,
    )


def _git(root: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()


def package_digest(package: Path | None = None) -> str:
    """SHA-256 over the package's source (every `.py` and `.json` file under `ichviewer/`, by
    relative path and bytes, in path order): names the code that trained an ensemble also when
    it ran from a copy outside git. `python -c "from ichviewer.training.recipe import
    package_digest; print(package_digest())"` in a checkout gives the figure to compare."""
    import hashlib

    package = Path(package) if package is not None else Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".json") and p.is_file() and "__pycache__" not in p.parts):
        rel = f.relative_to(package).as_posix().encode()
        data = f.read_bytes()
        h.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def source_code_revision() -> dict[str, Any]:
    """Which code trained the ensemble: the package folder, a digest of its source
    (`package_digest`) and, when it is a git checkout, its commit.

    `commit` and `dirty` (uncommitted changes to tracked files) are None where git is missing
    or the package is not the checkout's own source (an installed wheel, also one inside a
    virtual environment that sits in some other repository): the log then still names the version.
    """
    import subprocess

    package = Path(__file__).resolve().parents[1]
    root = package.parent
    out: dict[str, Any] = {"package_dir": str(package), "commit": None, "dirty": None, "package_sha256": package_digest(package)}
    try:
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root:
            return out
        out["commit"] = _git(root, "rev-parse", "HEAD")
        out["dirty"] = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def run_recipe(config: RecipeConfig, stream: TextIO | None = sys.stderr) -> RecipeResult:
    """Train, export and describe an ensemble in `config.out` (see `ichviewer.training` for the recipe).

    Writes `<member>.onnx`, `<member>_cam.npz`, `manifest.json`, `SHA256SUMS` and
    `training_log.json`; caches and checkpoints go to `config.work` (default
    `out/work`, safe to delete once done; `resume=True` continues from it).
    """
    import torch

    from ichviewer.inference.manifest import Aggregation, EnsembleManifest, write_checksums
    from ichviewer.training.allocator import tune_allocator_for_training
    from ichviewer.training.ensembling import choose_operating_points, combine_members, fit_ensemble_weights
    from ichviewer.training.export import export_member
    from ichviewer.training.trainer import (
        case_auc,
        choose_interpolation_degree,
        predict_slices,
        train_member,
        validation_map,
    )

    t_all = time.perf_counter()
    allocator = tune_allocator_for_training()  # cheaper steps, identical numbers (see allocator.py)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.work / "checkpoints").mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    train, val, calibration, data_info = load_data(config, stream)
    if stream is not None:
        stream.write(
            f"data: {len(train.cases)} training cases ({train.n_slices} slices), "
            f"{len(val.cases)} validation cases ({val.n_slices} slices)"
            + (f", {len(calibration.cases)} calibration cases ({calibration.n_slices} slices)" if calibration else "")
            + f", {data_info['seconds']:.0f} s\n"
        )
        for what, count, listed in (
            ("series could not be read", data_info.get("failed_series_count", 0), [f"{f['path']}: {f['reason']}" for f in data_info.get("failed_series", [])]),
            ("labelled series or images are not in the folder", data_info.get("missing_in_folder_count", 0), data_info.get("missing_in_folder", [])),
        ):
            if count:
                stream.write(f"warning: {count} {what} (left out; the training log lists them): {'; '.join(listed[:3])}\n")
    members_log = []
    trained = []
    for i, (name, family, specialist) in enumerate(config.members()):
        tc = member_train_config(config, i, name, family, specialist)
        result = train_member(
            tc, train, val, config.work / "checkpoints" / f"{name}.pt", resume=config.resume, stream=stream,
            max_steps=config.max_steps,
        )
        t0 = time.perf_counter()
        degree, degree_scores, probs = choose_interpolation_degree(result.model, val, context_slices=config.context_slices)
        trained.append((name, result, degree, probs))
        members_log.append(
            {
                "name": name,
                "family": family,
                "specialist": specialist,
                "parameters": int(sum(p.numel() for p in result.model.parameters())),
                "best_epoch": result.best_epoch + 1,
                "validation_map": result.best_map,
                "interpolation_degree": degree,
                "validation_map_by_degree": degree_scores,
                "validation_case_auc_any": case_auc(val, probs),
                "history": [asdict(h) for h in result.history],
                "train_seconds": result.seconds,
                "step_seconds": result.step_seconds,
                "cpu_seconds": result.cpu_seconds,
                "steps": result.steps,
                "images_per_step": config.batch_size * tc.images_per_slice,
                "degree_selection_seconds": time.perf_counter() - t0,
                "config": tc.fingerprint(),
            }
        )
    # Ensemble weights and operating points on validation, then export.
    member_probs = [p for _, _, _, p in trained]
    weights, weight_info = fit_ensemble_weights(member_probs, val, config.ensemble, any_rule=config.any_rule)
    ens_probs = combine_members(member_probs, weights, config.any_rule)
    if calibration is None:
        ops, op_report = choose_operating_points(
            val, ens_probs, config.min_sensitivity, config.target_miss_rate, config.triage_prevalence,
            min_specificity=config.min_specificity,
        )
    else:
        # Departure 21: operating points on validation + calibration cases, the members' own
        # interpolation degrees, combined as the engine will (weights and ANY rule as above).
        t0 = time.perf_counter()
        cal_probs = [
            predict_slices(result.model, calibration, degree=degree, context_slices=config.context_slices)
            for _, result, degree, _ in trained
        ]
        op_cache = concat_caches([val, calibration])
        op_probs = combine_members(
            [np.concatenate([pv, pc]) for pv, pc in zip(member_probs, cal_probs)], weights, config.any_rule
        )
        ops, op_report = choose_operating_points(
            op_cache, op_probs, config.min_sensitivity, config.target_miss_rate, config.triage_prevalence,
            min_specificity=config.min_specificity,
        )
        op_report["fitted_on"] = {
            "validation_cases": len(val.cases), "calibration_cases": len(calibration.cases),
            "calibration_seconds": time.perf_counter() - t0,
        }
    ens_map, ens_ap = validation_map(val, ens_probs)
    specs, files = [], []
    check_rows = np.linspace(0, val.n_slices - 1, num=min(8, val.n_slices)).astype(int)
    for (name, result, degree, _), w, log in zip(trained, weights, members_log):
        spec, check = export_member(
            result.model, config.out, name, config.input_size, val.context_images(check_rows, config.context_slices),
            interpolation_degree=degree, weight=float(w), version=f"{__version__}+seed{config.seed}",
            windows=config.window_set, crop=config.crop, slab_mm=config.slab_mm, context_slices=config.context_slices,
        )
        specs.append(spec)
        files += [spec.file, spec.cam_weights_file] + [b.tail_file for b in spec.block_outputs if b.tail_file]
        log["weight"] = float(w)
        log["onnx_bytes"] = (config.out / spec.file).stat().st_size
        log["onnx_check"] = asdict(check)
    description = (
        f"{len(specs)}-member ensemble trained by `ichviewer train` ({config.source}, seed {config.seed}); "
        f"{config.ensemble} ensemble; input {config.input_size}x{config.input_size} ({config.crop} crop), "
        f"{config.windows} windows" + (f", thin slices in {config.slab_mm:g} mm slabs" if config.slab_mm else "")
        + (", each slice read with its two neighbours. " if config.context_slices == 3 else ". ")
        + "Not for clinical use."
    )
    # Lee et al. made attention maps with their ResNet-50; ours is the ResNet-style member when present,
    # until `ichviewer.training.explainer` chooses by localisation below (phantom data only).
    explaining = next((s.name for s in specs if s.name == "resnet"), specs[0].name)
    manifest = EnsembleManifest(
        name=config.name, models=tuple(specs), operating_points=ops, aggregation=Aggregation("max", any_rule=config.any_rule),
        attention_model=explaining, explaining_model=explaining, description=description, directory=config.out,
    )
    manifest_path = manifest.write()
    log = {
        "ichviewer_version": __version__,
        "process_argv": list(sys.argv),
        "source_code": source_code_revision(),
        "command_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "hardware": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "allocator": allocator,
        },
        "data": data_info,
        "members": members_log,
        "ensemble": {
            **weight_info,
            "weights": [float(w) for w in weights],
            "validation_map": ens_map,
            "validation_ap": ens_ap,
            "validation_case_auc_any": case_auc(val, ens_probs),
            "validation_case_auc": {lab: case_auc(val, ens_probs, lab) for lab in LABELS},
        },
        "operating_points": op_report,
        "seconds_total": time.perf_counter() - t_all,
    }
    log_path = config.out / LOG_NAME
    log_path.write_text(json.dumps(_jsonable(log), indent=2) + "\n", encoding="utf-8")
    write_checksums(config.out, files + [manifest_path.name, LOG_NAME])
    if config.source == "phantoms":
        # Lee et al. chose the network whose maps the system shows by how well they point at the bleed:
        # so does the recipe, on its own validation phantoms (`ichviewer.training.explainer`).
        from ichviewer.training.explainer import LOG_KEY, apply_explainer_choice

        log[LOG_KEY] = apply_explainer_choice(config.out, phantom_split_plans(config)["validation"], config.matrix, stream)
    if stream is not None:
        stream.write(
            f"ensemble: validation mAP {ens_map:.4f}, case AUC(ANY) {log['ensemble']['validation_case_auc_any']:.4f}; "
            f"wrote {manifest_path} in {log['seconds_total'] / 60:.1f} min\n"
        )
    return RecipeResult(manifest_path, log_path, log)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj

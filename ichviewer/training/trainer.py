"""Training one ensemble member: weighted BCE, slice interpolation, augmentation, mAP model selection, resumable checkpoints."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.inference.findings import ANY_COLUMN, SUBTYPE_COLUMNS
from ichviewer.training.augmentation import (
    affine_warp,
    augment_images,
    draw_augmentation,
    draw_beta,
    interpolate_one_per_slice,
    interpolate_slices,
)
from ichviewer.training.data import SliceCache
from ichviewer.training.losses import (
    class_weights,
    noisy_or_any_bce_per_sample,
    twin_rank_loss_per_pair,
    weighted_bce,
    weighted_bce_per_sample,
)
from ichviewer.training.progress import ProgressBar

#: Bump when the checkpoint layout changes; an older checkpoint is then not resumed.
CHECKPOINT_VERSION = 1
#: Ways of using Eq. 4 in training (`TrainConfig.interpolation`).
INTERPOLATIONS: tuple[str, ...] = ("sample", "all")
#: How the positive share of a batch is drawn (`StratifiedSampler`): "slice", every positive
#: slice equally often (a 10-slice bleed ten times as often as a one-slice punctate one);
#: "case", every positive case equally often, its positive slices sharing its turns
#: (departure 18 in `ichviewer.training`); "thickness", thin-series slices as large a share of the
#: positive draws as of the negative ones (departure 31); "thickness-weight", drawn as "slice", with
#: the thin positive slices' loss weighted down to that share (departure 32).
POSITIVE_SAMPLINGS: tuple[str, ...] = ("slice", "case", "thickness", "thickness-weight")
#: Which strata hard-example mining draws from (`TrainConfig.hard_stratum`): "all", or
#: "negative" only (the positives keep their walk; departure 29 in `ichviewer.training`).
HARD_STRATA: tuple[str, ...] = ("all", "negative")
#: Arithmetic of the training forward pass (`TrainConfig.precision`).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def check_batch_options(
    *,
    interpolation: str | None = None,
    positive_fraction: float | None = None,
    hard_fraction: float | None = None,
    hard_stratum: str | None = None,
    positive_sampling: str | None = None,
    precision: str | None = None,
    lesion_map_weight: float | None = None,
    lesion_map_stride: int | None = None,
    noisy_or_any_weight: float | None = None,
    input_stem: bool | None = None,
    mimic_map_weight: float | None = None,
    wide_stem: bool | None = None,
    pooling: str | None = None,
    twin_rank_weight: float | None = None,
    pair_twins: bool | None = None,
    context_slices: int | None = None,
) -> None:
    """Raise ValueError naming the first of these options (those given) that is out of range.

    One place for the checks that TrainConfig, RecipeConfig (before minutes of data
    generation), StratifiedSampler and `networks.build_network` each need.
    """
    if context_slices is not None:
        from ichviewer.inference.manifest import CONTEXT_SLICES

        if context_slices not in CONTEXT_SLICES:
            raise ValueError(f"context slices must be one of {CONTEXT_SLICES}, got {context_slices}")
    if wide_stem and not input_stem:
        raise ValueError("--wide-stem needs --input-stem (a wide stem is a kind of input stem)")
    if pooling is not None:
        from ichviewer.inference.manifest import HEAD_POOLINGS

        if pooling not in HEAD_POOLINGS:
            raise ValueError(f"head pooling must be one of {HEAD_POOLINGS}, got {pooling!r}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if positive_fraction is not None and not 0.0 <= positive_fraction < 1.0:
        raise ValueError(f"positive fraction must be in [0, 1), got {positive_fraction}")
    if hard_fraction is not None and not 0.0 <= hard_fraction < 1.0:
        raise ValueError(f"hard-example fraction must be in [0, 1), got {hard_fraction}")
    if hard_stratum is not None and hard_stratum not in HARD_STRATA:
        raise ValueError(f"hard-example stratum must be one of {HARD_STRATA}, got {hard_stratum!r}")
    if positive_sampling is not None and positive_sampling not in POSITIVE_SAMPLINGS:
        raise ValueError(f"positive sampling must be one of {POSITIVE_SAMPLINGS}, got {positive_sampling!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if lesion_map_weight is not None and not (math.isfinite(lesion_map_weight) and lesion_map_weight >= 0):
        raise ValueError(f"lesion map weight must be >= 0, got {lesion_map_weight}")
    if mimic_map_weight is not None and not (math.isfinite(mimic_map_weight) and mimic_map_weight >= 0):
        raise ValueError(f"mimic map weight must be >= 0, got {mimic_map_weight}")
    if noisy_or_any_weight is not None and not (math.isfinite(noisy_or_any_weight) and noisy_or_any_weight >= 0):
        raise ValueError(f"noisy-OR ANY loss weight must be >= 0, got {noisy_or_any_weight}")
    if twin_rank_weight is not None:
        if not (math.isfinite(twin_rank_weight) and twin_rank_weight >= 0):
            raise ValueError(f"twin rank loss weight must be >= 0, got {twin_rank_weight}")
        if twin_rank_weight > 0 and pair_twins is False:
            raise ValueError("the twin rank loss needs --pair-twins (a bleeding slice's twin in its batch) and the twins")
    if lesion_map_stride is not None:
        from ichviewer.training.data import LESION_MAP_STRIDE

        if not lesion_map_weight and not mimic_map_weight:
            raise ValueError("a lesion-map stride needs a lesion-map or mimic-map weight above 0")
        if lesion_map_stride < LESION_MAP_STRIDE:
            raise ValueError(
                f"lesion map stride must be at least {LESION_MAP_STRIDE} (the cache keeps maps at 1/{LESION_MAP_STRIDE} "
                f"of the input), got {lesion_map_stride}"
            )


#: MIL bags (study-level labels): at most this many slices per study per step.
MIL_MAX_SLICES = 32


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed (other settings or an unreadable file); the message says which."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one member. Departures from Lee et al. 2019 are documented in `ichviewer.training`."""

    name: str
    family: str
    width: int = 16
    input_size: int = 128
    epochs: int = 5
    batch_size: int = 16  # slices per step; x3 images with slice interpolation
    steps_per_epoch: int | None = None  # None: one pass over the training slices
    lr: float = 3e-3
    weight_decay: float = 5e-5  # Lee et al. 2019, Methods
    seed: int = 0
    interpolate: bool = True  # Lee et al. 2019, Eq. 4
    #: "all": each slice plus both its interpolations in the batch (3 images per slice, as Lee et al.);
    #: "sample": each slice replaced by one of the three at random (1 image per slice, so three
    #: times the distinct slices per unit of compute on a CPU).
    interpolation: str = "all"
    augment: bool = True
    specialist: str | None = None  # a subtype or "small": train on those positives plus all negatives
    positive_fraction: float = 0.5  # share of ANY-positive slices per batch (0: uniform sampling as Lee et al.)
    #: Put the counterfactual twin slice (`data.add_twin_negatives`) of each positive slice in the same batch.
    pair_twins: bool = False
    #: Share of each stratum's quota drawn in proportion to the slice's last training loss
    #: (hard-example mining; 0: every slice in turn, as Lee et al.). See `StratifiedSampler`.
    hard_fraction: float = 0.0
    #: "all" (both strata) or "negative" (see HARD_STRATA and `StratifiedSampler`).
    hard_stratum: str = "all"
    #: "slice", "case", "thickness" or "thickness-weight" (see POSITIVE_SAMPLINGS and `StratifiedSampler`).
    positive_sampling: str = "slice"
    #: "bf16": forward pass under CPU bfloat16 autocast (~1.35x faster steps on AVX-512-BF16
    #: CPUs); weights, optimiser, loss, validation and export stay float32.
    precision: str = "fp32"
    #: Prepend `networks.make_input_stem()` (a learned 2x downsampler): train at twice the input size
    #: for the cost of the usual size in every later layer (departure 17 in `ichviewer.training`).
    input_stem: bool = False
    #: With `input_stem`: its 16 feature channels feed the network directly instead of a 1x1
    #: projection to three (`networks.make_input_stem(wide=True)`; departure 23).
    wide_stem: bool = False
    #: Weight of the lesion-map loss (`lesion_map_loss`; departure 19 in `ichviewer.training`): an
    #: auxiliary 1x1 convolution on the last features learns where the blood is from the cache's
    #: maps. 0 (default) trains on labels alone, as Lee et al. The head is not exported.
    lesion_map_weight: float = 0.0
    #: Input pixels per cell of the grid the lesion-map head reads: the last body block at that
    #: stride (`networks.body_taps`). None: the last features (stride 16 with the input stem).
    #: A finer grid gives a punctate bleed a cell of its own.
    lesion_map_stride: int | None = None
    #: Weight of the mimic-map loss (departure 33 in `ichviewer.training`): the same auxiliary head
    #: (one more output channel, or a head of its own without the lesion maps) learns where a
    #: mimic's dense or streaked voxels are (`PhantomCase.mimic_mask`), so the shared features
    #: name a dense non-blood focus instead of only not calling it blood. 0 (default): none.
    mimic_map_weight: float = 0.0
    #: Weight of the noisy-OR ANY loss (`losses.noisy_or_any_bce_per_sample`; departure 22 in
    #: `ichviewer.training`): the five subtype heads are also trained so that their noisy-OR,
    #: the ANY a `--any-rule noisy-or` manifest reads, matches the ANY label. 0 (default): Eq. 2 alone.
    noisy_or_any_weight: float = 0.0
    #: How the head pools its per-cell logits (`networks.build_network`; departure 26): "avg" is
    #: Lee et al.'s global average pooling, "lse" / "max" let one cell carry the logit.
    pooling: str = "avg"
    #: Weight of the twin rank loss (`losses.twin_rank_loss_per_pair`; departure 27 in
    #: `ichviewer.training`), with `pair_twins`: each paired twin is shown in its bleeding slice's
    #: pose (the same Eq. 4 blend and augmentation) and ranked below it by the noisy-OR ANY.
    #: 0 (default): no such term, and paired twins get their own draws.
    twin_rank_weight: float = 0.0
    #: Slices per input (`ichviewer.inference.manifest.CONTEXT_SLICES`; departure 30 in
    #: `ichviewer.training`): 3 gives the network each slice's neighbours as further channels.
    #: Eq. 4 then blends whole stacks. 1 (default): the slice alone, as Lee et al.
    context_slices: int = 1
    threads: int | None = None

    def __post_init__(self) -> None:
        check_batch_options(
            interpolation=self.interpolation, positive_fraction=self.positive_fraction, hard_fraction=self.hard_fraction,
            hard_stratum=self.hard_stratum,
            positive_sampling=self.positive_sampling, precision=self.precision, lesion_map_weight=self.lesion_map_weight,
            lesion_map_stride=self.lesion_map_stride, noisy_or_any_weight=self.noisy_or_any_weight,
            input_stem=self.input_stem, wide_stem=self.wide_stem, pooling=self.pooling,
            twin_rank_weight=self.twin_rank_weight, pair_twins=self.pair_twins,
            context_slices=self.context_slices, mimic_map_weight=self.mimic_map_weight,
        )

    @property
    def uses_maps(self) -> bool:
        """True when the auxiliary map head trains (lesion maps, mimic maps or both)."""
        return self.lesion_map_weight > 0 or self.mimic_map_weight > 0

    @property
    def images_per_slice(self) -> int:
        return 3 if self.interpolate and self.interpolation == "all" else 1

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("threads")
        if d["positive_sampling"] == "slice":  # options added later leave out their default,
            d.pop("positive_sampling")  # so checkpoints made before them still resume
        for key in ("lesion_map_weight", "lesion_map_stride", "noisy_or_any_weight", "wide_stem", "twin_rank_weight",
                    "mimic_map_weight"):
            if not d[key]:
                d.pop(key)
        if d["pooling"] == "avg":
            d.pop("pooling")
        if d["context_slices"] == 1:
            d.pop("context_slices")
        if d["hard_stratum"] == "all":
            d.pop("hard_stratum")
        return d


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_map: float
    val_ap: dict[str, float]
    val_case_auc_any: float
    seconds: float


@dataclass
class TrainResult:
    """A trained member: its best state (by validation mAP) and the history that chose it."""

    config: TrainConfig
    model: Any  # torch.nn.Module holding the best weights, in eval mode
    best_epoch: int
    best_map: float
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    cpu_seconds: float = 0.0  # process CPU time (all threads): a load-independent cost measure
    step_seconds: float = 0.0  # wall time inside training steps only (no validation)


# --------------------------------------------------------------------------- metrics


def slice_map(labels: np.ndarray, probs: np.ndarray, known: np.ndarray | None = None) -> tuple[float, dict[str, float]]:
    """Mean average precision over the labels with positives (Lee et al. 2019 model selection).

    Uses `ichviewer.evaluation.average_precision` (scikit-learn's step-wise AP).
    """
    from ichviewer.evaluation import average_precision, mean_average_precision

    ap = {}
    for j, lab in enumerate(LABELS):
        sel = np.ones(labels.shape[0], bool) if known is None else known[:, j] > 0
        y = (labels[sel, j] >= 0.5).astype(np.int8)
        ap[lab] = average_precision(y, probs[sel, j]) if y.size and y.any() else math.nan
    return mean_average_precision(ap), ap


def case_probabilities(cache: SliceCache, slice_probs: np.ndarray) -> np.ndarray:
    """Case-level probabilities as the inference engine aggregates them by default: the max over slices."""
    return np.stack([slice_probs[c.start : c.stop].max(axis=0) for c in cache.cases])


def case_auc(cache: SliceCache, slice_probs: np.ndarray, label: str = "ANY") -> float:
    from ichviewer.evaluation import roc_auc

    y = cache.case_labels()[:, LABELS.index(label)]
    if y.min() == y.max():
        return math.nan
    return float(roc_auc(y, case_probabilities(cache, slice_probs)[:, LABELS.index(label)]))


def validation_map(cache: SliceCache, slice_probs: np.ndarray) -> tuple[float, dict[str, float]]:
    """Slice-level mAP for slice-labelled data; case-level (max over slices) mAP for study labels."""
    if cache.slice_labelled:
        return slice_map(cache.labels, slice_probs, cache.known)
    known = np.stack([cache.known[c.start] for c in cache.cases])
    return slice_map(cache.case_labels().astype(np.float32), case_probabilities(cache, slice_probs), known)


# --------------------------------------------------------------------------- prediction


def predict_slices(
    model, cache: SliceCache, degree: int = 1, batch: int = 96, progress: ProgressBar | None = None,
    context_slices: int = 1,
) -> np.ndarray:
    """Per-slice probabilities (N, L) exactly as the inference engine combines them for `degree`.

    Uses the engine's own `interpolated_images` and `combine` (Lee et al. 2019, Eq. 4 and
    "Slice interpolation" at inference), with neighbours inside each case; with
    `context_slices` 3 each image is a slice's stack with its neighbours, and Eq. 4 blends stacks.
    """
    import torch

    from ichviewer.inference.interpolation import combine, interpolated_images

    model.eval()
    n = cache.n_slices
    out = np.empty((n, len(LABELS)), dtype=np.float64)
    rows_all = np.arange(n)
    lower_all, upper_all, _ = cache.neighbours(rows_all)
    with torch.inference_mode():
        for a in range(0, n, batch):
            rows = rows_all[a : a + batch]
            x = cache.context_images(rows, context_slices)
            if degree > 1:
                imgs = interpolated_images(
                    x, cache.context_images(lower_all[rows], context_slices),
                    cache.context_images(upper_all[rows], context_slices), degree,
                )
            else:
                imgs = x[None]
            flat = torch.from_numpy(np.ascontiguousarray(imgs.reshape((-1,) + x.shape[1:])))
            flat = flat.contiguous(memory_format=torch.channels_last)
            logits, _ = model(flat)
            p = torch.sigmoid(logits.double()).numpy().reshape(imgs.shape[0], rows.size, len(LABELS))
            out[rows] = combine(p, degree) if degree > 1 else p[0]
            if progress is not None:
                progress.update(min(n, a + batch))
    return out


# --------------------------------------------------------------------------- training


def specialist_rows(cache: SliceCache, specialist: str | None) -> np.ndarray:
    """Training rows of a member: all, or for a specialist (Kang et al.) its positive cases plus every negative case.

    `specialist` is a subtype (e.g. "SDH") or "small" (cases of at most 5 mL).
    """
    if not specialist:
        return np.arange(cache.n_slices)
    any_col = LABELS.index("ANY")
    keep = []
    for c in cache.cases:
        negative = c.labels[any_col] == 0
        if specialist == "small":
            chosen = not negative and 0 < c.volume_ml <= 5.0
        else:
            chosen = c.labels[LABELS.index(specialist)] == 1
        if negative or chosen:
            keep.append(np.arange(c.start, c.stop))
    if not keep:
        raise ValueError(f"specialist {specialist!r}: no training cases")
    return np.concatenate(keep)


def _set_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _float_maps(cache: SliceCache, rows: np.ndarray) -> np.ndarray:
    return cache.maps[rows].astype(np.float32) * np.float32(1.0 / 255.0)


def _slice_batch(
    cache: SliceCache, rows: np.ndarray, config: TrainConfig, rng: np.random.Generator, with_maps: bool = False,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Images, soft labels, known-mask and (`with_maps`) lesion maps for one step of slice-level training.

    The maps are interpolated with their slices exactly as the images are (Eq. 4), so an
    interpolated image's map is as soft as its labels. `pairs` (batch positions of bleeding
    slices and of their twins, departure 27) give each twin its bleeding slice's blend; the
    random draws are the same as without them. With `config.context_slices` 3 every image is
    a slice's stack with its neighbours (departure 30), and Eq. 4 blends the stacks.
    """
    def images(r: np.ndarray) -> np.ndarray:
        return cache.context_images(r, config.context_slices)

    x = images(rows)
    y = cache.labels[rows]
    k = cache.known[rows]
    maps = _float_maps(cache, rows) if with_maps else None
    if config.interpolate:
        lower, upper, edge = cache.neighbours(rows)
        beta = draw_beta(rng)  # one beta per batch (Lee et al. 2019, Eq. 4)
        beta2 = draw_beta(rng)  # the second ratio for first/last slices
        if config.interpolation == "sample":
            which = rng.integers(0, 3, rows.size)  # 0 original, 1 towards the lower, 2 towards the upper neighbour
            if pairs is not None and pairs[0].size:
                which[pairs[1]] = which[pairs[0]]  # the twin's slices neighbour each other as the bleeding case's do
            partner = np.where(which == 1, lower, np.where(which == 2, upper, rows))
            if with_maps:
                maps, _ = interpolate_one_per_slice(
                    maps, y, _float_maps(cache, partner), cache.labels[partner], which, edge, beta, beta2,
                )
            x, y = interpolate_one_per_slice(
                x, y, images(partner), cache.labels[partner], which, edge, beta, beta2,
            )
            k = np.minimum(k, cache.known[partner])
        else:
            if with_maps:
                maps, _ = interpolate_slices(
                    maps, y, _float_maps(cache, lower), cache.labels[lower], _float_maps(cache, upper), cache.labels[upper],
                    edge, beta, beta2,
                )
            x, y = interpolate_slices(
                x, y, images(lower), cache.labels[lower], images(upper), cache.labels[upper],
                edge, beta, beta2,
            )
            k = np.concatenate([k, np.minimum(k, cache.known[lower]), np.minimum(k, cache.known[upper])])
    return x, y, k, maps


def _image_pairs(pairs: tuple[np.ndarray, np.ndarray] | None, n_rows: int, images_per_slice: int):
    """Batch-row pairs -> image pairs: with Eq. 4's "all" each row's images are `n_rows` apart."""
    if pairs is None:
        return None
    offsets = np.arange(images_per_slice, dtype=np.int64)[:, None] * n_rows
    return tuple((offsets + np.asarray(p, dtype=np.int64)[None, :]).ravel() for p in pairs)


def _share_augmentation(aug, source: np.ndarray, target: np.ndarray) -> None:
    """Give images `target` the augmentation draws of images `source` (in place)."""
    for name in ("rotation_deg", "scale", "shift_px", "denoise"):
        values = getattr(aug, name)
        values[target] = values[source]


def lesion_map_targets(maps, grid: tuple[int, int]):
    """Lesion maps (n, 5, m, m) torch -> targets (n, 6, h, w) on the feature grid: each cell's highest
    coverage per subtype, and for ANY the highest over the subtypes (LABELS order)."""
    import torch
    import torch.nn.functional as F

    sub = F.adaptive_max_pool2d(maps, grid)
    return torch.cat([sub, sub.max(dim=1, keepdim=True).values], dim=1)


def lesion_map_loss(map_logits, targets):
    """Balanced binary cross-entropy of a (n, 6, h, w) logit map against lesion-map targets (departure 19).

    For each label, the mean loss over blood cells plus the mean over blood-free cells
    (targets are soft: a cell counts by its coverage), averaged over labels: a punctate
    bleed's one cell weighs as much as the rest of the batch's background. Less than one
    cell's worth of blood in the batch counts by its mass (the sums are floored at 1).
    """
    import torch
    import torch.nn.functional as F

    dims = (0, 2, 3)
    pos = (targets * -F.logsigmoid(map_logits)).sum(dims) / targets.sum(dims).clamp_min(1.0)
    neg = ((1.0 - targets) * -F.logsigmoid(-map_logits)).sum(dims) / (1.0 - targets).sum(dims).clamp_min(1.0)
    return (pos + neg).mean()


def auxiliary_map_loss(map_logits, maps, config: "TrainConfig"):
    """The weighted map losses of the auxiliary head's output (n, c, h, w) against the batch's maps.

    Lesion maps (departure 19): the first six channels against `lesion_map_targets`, times
    `lesion_map_weight`. Mimic map (departure 33): the last channel against the mimic's own map
    channel (`data.MAP_CHANNELS`), pooled to the grid the same way, times `mimic_map_weight`;
    both with the balanced `lesion_map_loss`, so a grazed calcification's one cell weighs as much
    as the rest of the batch's mimic-free cells.
    """
    import torch.nn.functional as F

    grid = tuple(map_logits.shape[-2:])
    loss = map_logits.new_zeros(())
    if config.lesion_map_weight > 0:
        targets = lesion_map_targets(maps[:, : len(SUBTYPES)], grid)
        loss = loss + config.lesion_map_weight * lesion_map_loss(map_logits[:, : len(LABELS)], targets)
    if config.mimic_map_weight > 0:
        mimic = F.adaptive_max_pool2d(maps[:, len(SUBTYPES) :], grid)
        loss = loss + config.mimic_map_weight * lesion_map_loss(map_logits[:, -1:], mimic)
    return loss


class _BlockTap:
    """Keeps the output of one body block from the latest training forward pass (a forward hook)."""

    def __init__(self, block, channels: int) -> None:
        self.channels = channels
        self.output = None
        self._handle = block.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        if module.training:
            self.output = output

    def remove(self) -> None:
        self._handle.remove()
        self.output = None


def _lesion_map_block(model, family: str, input_size: int, stride: int) -> tuple[int, int]:
    """(body index, channels) of the block at `stride`; ValueError naming the strides on offer if none."""
    from ichviewer.training.data import LESION_MAP_STRIDE
    from ichviewer.training.networks import body_taps

    taps = body_taps(model, input_size)
    if stride not in taps:
        offered = sorted(s for s in taps if s >= LESION_MAP_STRIDE)
        raise ValueError(
            f"the {family} network at input size {input_size} has no block at lesion-map stride {stride}; "
            f"choose one of {offered}"
        )
    return taps[stride]


def check_lesion_map_stride(
    families, width: int, input_size: int, input_stem: bool, stride: int | None, wide_stem: bool = False
) -> None:
    """Raise ValueError if any of `families` has no block at `stride` (before minutes of data generation)."""
    if stride is None:
        return
    from ichviewer.training.networks import build_network

    for family in families:
        _lesion_map_block(build_network(family, width, input_stem, wide_stem), family, input_size, stride)


def lesion_map_tap(model, config: TrainConfig) -> _BlockTap | None:
    """The block the lesion-map head reads at `config.lesion_map_stride` (None: the last features)."""
    if config.lesion_map_stride is None:
        return None
    index, channels = _lesion_map_block(model, config.family, config.input_size, config.lesion_map_stride)
    return _BlockTap(model.body[index], channels)


class StratifiedSampler:
    """Batches with a fixed share of ANY-positive slices, and importance weights that undo it.

    Uniform sampling (Lee et al.) puts ~2 positive slices in a 16-slice batch here, and a
    rare subtype's positive then arrives every few dozen steps with an Eq. 3 weight in the
    hundreds: a noisy gradient. Drawing `fraction` of each batch from positive slices and
    weighting every sample by p_uniform / p_drawn keeps the expected loss exactly Eq. 2
    over the training set while lowering its variance. Each stratum is walked through in
    a fresh permutation, so every slice is seen before any repeats.

    Hard-example mining (`hard_fraction` > 0; departure 15 in `ichviewer.training`): that
    share of each stratum's quota is drawn among the slices already seen, with probability
    proportional to the loss each had when last trained on (`record`). The rest of the quota
    continues the walk, so every slice is still visited. A case is read by its highest
    slice, so the few normal slices that look like blood (basal cisterns, calcified falx, the
    skull base of thin series) and the faint small bleeds decide the case-level AUC; uniform
    sampling shows each of them once per pass. The drawn rows keep their stratum's
    importance weight: the emphasis on hard slices is intended, not undone.
    `hard_stratum="negative"` mines the negative stratum only: a positive's loss stays high
    when its bleed is invisible (a sliver in the bone's edge), so mining both strata spends
    the positive draws on the slices no network can learn, while the negatives that look
    like blood are exactly the slices that decide which faint bleeds rank above them.

    Case-balanced positives (`positive_sampling="case"`; departure 18): the positive quota is
    drawn with each positive slice's probability 1 / (positive slices of its case), so every
    bleeding case gets the same share of turns. Drawn slice by slice, a punctate bleed (one
    or two positive slices) is about 3 % of the positive draws here although such cases are
    about a sixth of the positive cases; a case is read by its highest slice, so each case
    should count alike. The positive stratum's importance weight stays as it is: the extra
    emphasis on small bleeds is intended, not undone (as with hard examples).

    Thickness-matched positives (`positive_sampling="thickness"`; departure 31): the positive
    quota is drawn so that thin-series slices are the same share of it as of the negative
    stratum. Slice by slice, a thin series' SAH spans dozens of overlapping slabs, so on the
    phantom mix about half of the positive slices are thin against a third of the negative ones:
    a thin slab's look alone is then evidence of haemorrhage, and every normal thin series is
    lifted by it. Matched, the thickness says nothing about the label, and the positive draws it
    frees go to the 5 mm bleeds. The importance weights stay as they are: the change of the
    training distribution is the point, not something to undo.

    Thickness-weighted positives (`positive_sampling="thickness-weight"`; departure 32): the
    positives are drawn as they come (the same rows as "slice", draw for draw), and each thin
    positive slice's importance weight is multiplied by `thin_positive_weight_factor`, so that in
    the weighted loss thin slices are as large a share of the positives as of the negatives. Unlike
    "thickness", nothing is re-drawn: the 5 mm bleeds keep exactly the recipe's emphasis against
    the 5 mm negatives (stop 33 measured that the draws "thickness" freed taught the networks to
    call more 5 mm normal structure blood), and only the thin positives' lead over the thin
    negatives is taken away.
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        fraction: float,
        rng: np.random.Generator,
        partners: np.ndarray | None = None,
        hard_fraction: float = 0.0,
        positive_sampling: str = "slice",
        hard_stratum: str = "all",
    ) -> None:
        check_batch_options(positive_fraction=fraction, hard_fraction=hard_fraction, positive_sampling=positive_sampling,
                            hard_stratum=hard_stratum)
        any_col = LABELS.index("ANY")
        pos = rows[cache.labels[rows, any_col] >= 0.5]
        neg = rows[cache.labels[rows, any_col] < 0.5]
        if fraction == 0.0 or pos.size == 0 or neg.size == 0:
            self.strata = [(rows, 1.0, 1.0)]
        else:
            n = rows.size
            self.strata = [(pos, fraction, (pos.size / n) / fraction), (neg, 1.0 - fraction, (neg.size / n) / (1.0 - fraction))]
        self.rng = rng
        # partners[row]: the twin row of a positive slice (or -1). Paired twins take up to half of
        # a batch's negatives; the importance weights stay those of the negative stratum (the
        # twins are over-represented among negatives, on purpose).
        self.partners = partners if partners is not None and len(self.strata) == 2 else None
        #: Batch positions (bleeding, twin) of the pairs in the last `batch` (empty without partners).
        self.last_pairs: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        #: per stratum: None (walk a permutation) or the drawing probability of each member
        self._probs: list[np.ndarray | None] = [None] * len(self.strata)
        if positive_sampling == "case" and len(self.strata) == 2:
            self._probs[0] = case_balanced_probabilities(cache, self.strata[0][0])
        elif positive_sampling == "thickness" and len(self.strata) == 2:
            self._probs[0] = thickness_matched_probabilities(cache, self.strata[0][0], self.strata[1][0])
        #: per cache row: the factor on a positive row's importance weight (None: 1 everywhere)
        self._positive_factor: np.ndarray | None = None
        if positive_sampling == "thickness-weight" and len(self.strata) == 2:
            thin_row = thin_rows(cache)
            factor = thin_positive_weight_factor(thin_row[self.strata[0][0]], thin_row[self.strata[1][0]])
            self._positive_factor = np.where(thin_row, factor, 1.0).astype(np.float32)
        self._orders = [rng.permutation(s[0]) for s in self.strata]
        self._pos = [0] * len(self.strata)
        self.hard_fraction = float(hard_fraction)
        #: per stratum: whether its quota has a hard-example share (the negatives are the last stratum)
        self._mined = [hard_stratum == "all" or (i == len(self.strata) - 1 and len(self.strata) == 2)
                       for i in range(len(self.strata))]
        #: last training loss of each cache row (NaN: not trained on yet); only with mining
        self.loss = np.full(cache.n_slices, np.nan, dtype=np.float32) if hard_fraction > 0 else None

    def record(self, rows: np.ndarray, losses: np.ndarray) -> None:
        """Remember each row's training loss (`losses` per row, or per image when a row gave several)."""
        if self.loss is None:
            return
        rows = np.asarray(rows)
        per_row = np.asarray(losses, dtype=np.float32).reshape(-1, rows.size).mean(axis=0)
        self.loss[rows] = per_row

    def _take_hard(self, k: int, i: int) -> np.ndarray:
        """`k` rows of stratum `i` drawn by last loss among the rows seen (none until `k` are seen)."""
        members = self.strata[i][0]
        loss = self.loss[members]
        seen = np.isfinite(loss)
        if k <= 0 or seen.sum() < k:
            return np.zeros(0, dtype=np.int64)
        weight = np.maximum(loss[seen], 0.0).astype(np.float64) + 1e-6
        return self.rng.choice(members[seen], size=k, replace=True, p=weight / weight.sum())

    def _draw(self, k: int, i: int) -> np.ndarray:
        """`k` rows of stratum `i`: the hard-example share by loss, the rest in walk order."""
        mined = self.loss is not None and self._mined[i]
        hard = self._take_hard(int(round(self.hard_fraction * k)), i) if mined else np.zeros(0, np.int64)
        return np.concatenate([hard, self._take(k - hard.size, i)]).astype(np.int64)

    def _take(self, k: int, i: int) -> np.ndarray:
        if k > 0 and self._probs[i] is not None:
            return self.rng.choice(self.strata[i][0], size=k, replace=True, p=self._probs[i]).astype(np.int64)
        out = [np.zeros(0, dtype=np.int64)]
        while k > 0:
            order = self._orders[i]
            if self._pos[i] >= order.size:
                self._orders[i] = order = self.rng.permutation(self.strata[i][0])
                self._pos[i] = 0
            chunk = order[self._pos[i] : self._pos[i] + k]
            self._pos[i] += chunk.size
            out.append(chunk)
            k -= chunk.size
        return np.concatenate(out)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, importance weights) of one batch."""
        if len(self.strata) == 1:
            return self._draw(size, 0), np.ones(size, dtype=np.float32)
        n_pos = int(round(self.strata[0][1] * size))
        n_pos = min(max(n_pos, 1), size - 1)
        pos = self._draw(n_pos, 0)
        paired = np.zeros(0, dtype=np.int64)
        self.last_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if self.partners is not None:
            twins = self.partners[pos]
            # at most half the negative quota, so mimics, children and normal heads keep their share
            has_twin = np.flatnonzero(twins >= 0)[: (size - n_pos) // 2]
            paired = twins[has_twin]
            self.last_pairs = (has_twin.astype(np.int64), n_pos + np.arange(paired.size, dtype=np.int64))
        rows = np.concatenate([pos, paired, self._draw(size - n_pos - paired.size, 1)])
        w = np.concatenate([np.full(n_pos, self.strata[0][2]), np.full(size - n_pos, self.strata[1][2])]).astype(np.float32)
        if self._positive_factor is not None:
            w[:n_pos] *= self._positive_factor[pos]
        return rows, w

    def state(self) -> dict:
        return {
            "orders": [o.copy() for o in self._orders],
            "pos": list(self._pos),
            "loss": None if self.loss is None else self.loss.copy(),
        }

    def restore(self, state: dict) -> None:
        self._orders = [np.asarray(o) for o in state["orders"]]
        self._pos = list(state["pos"])
        if self.loss is not None and state.get("loss") is not None:
            self.loss = np.asarray(state["loss"], dtype=np.float32).copy()


def case_balanced_probabilities(cache: SliceCache, rows: np.ndarray) -> np.ndarray:
    """Drawing probability of each of `rows` so that every case holding some of them is drawn equally often.

    A row's probability is 1 / (number of `rows` in its case), normalised: a case with one
    positive slice and a case with ten get the same total.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0, dtype=np.float64)
    case_of = cache.case_of_row()[rows]
    counts = np.bincount(case_of, minlength=len(cache.cases))
    p = 1.0 / counts[case_of]
    return p / p.sum()


#: A series with slices thinner than this (mm) counts as thin for `thickness_matched_probabilities`.
THIN_SLICE_MM = 3.0


def thin_rows(cache: SliceCache) -> np.ndarray:
    """Per cache row: whether its series is thin (slices under `THIN_SLICE_MM`)."""
    thin_case = np.array([0.0 < c.slice_mm < THIN_SLICE_MM for c in cache.cases], dtype=bool)
    return thin_case[cache.case_of_row()]


def thin_positive_weight_factor(thin_positive: np.ndarray, thin_negative: np.ndarray) -> float:
    """The factor on thin positive slices' loss weight that makes the weighted share of thin slices
    among the positives equal to their share among the negatives (departure 32).

    With shares p (positives) and q (negatives), weighting the thin positives by
    f = [q / (1 - q)] / [p / (1 - p)] gives f p / (f p + 1 - p) = q: the odds of "thin" become the
    same given either label, so the thickness says nothing about it. 1.0 when either thickness has
    no positive, or the negatives are all of one thickness (nothing to match, or nothing to match to).
    """
    thin_positive, thin_negative = np.asarray(thin_positive, bool), np.asarray(thin_negative, bool)
    if thin_positive.size == 0 or thin_negative.size == 0:
        return 1.0
    p, q = float(thin_positive.mean()), float(thin_negative.mean())
    if p in (0.0, 1.0) or q in (0.0, 1.0):
        return 1.0
    return (q / (1.0 - q)) / (p / (1.0 - p))


def thickness_matched_probabilities(cache: SliceCache, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Drawing probability of each of `positives` so that thin-series slices are as large a share of
    the positive draws as they are of `negatives` (departure 31).

    Within each thickness the rows keep equal probability. Uniform when either thickness has no
    positive row (nothing to match).
    """
    positives = np.asarray(positives, dtype=np.int64)
    if positives.size == 0:
        return np.zeros(0, dtype=np.float64)
    thin_row = thin_rows(cache)
    thin_pos = thin_row[positives]
    n_thin = int(thin_pos.sum())
    if n_thin in (0, positives.size) or len(negatives) == 0:
        return np.full(positives.size, 1.0 / positives.size)
    share = float(thin_row[np.asarray(negatives, dtype=np.int64)].mean())
    p = np.where(thin_pos, share / n_thin, (1.0 - share) / (positives.size - n_thin))
    return p / p.sum()


def twin_partners(cache: SliceCache) -> np.ndarray | None:
    """Row -> the same slice of the case's counterfactual twin (`data.add_twin_negatives`), -1 where none.

    A twin shares its positive's patient id and slice count. Only slices with haemorrhage get a
    partner (they are the ones the sampler pairs). None when the cache holds no twins.
    """
    from ichviewer.training.data import TWIN_TAG

    out = np.full(cache.n_slices, -1, dtype=np.int64)
    by_patient = {c.patient_id: c for c in cache.cases if not c.case_id.endswith(TWIN_TAG)}
    any_col = LABELS.index("ANY")
    found = False
    for twin in cache.cases:
        if not twin.case_id.endswith(TWIN_TAG):
            continue
        pos = by_patient.get(twin.patient_id)
        if pos is None or pos.n_slices != twin.n_slices:
            continue
        rows = np.arange(pos.start, pos.stop)
        bleeding = cache.labels[rows, any_col] >= 0.5
        out[rows[bleeding]] = np.arange(twin.start, twin.stop)[bleeding]
        found = True
    return out if found else None


def _mil_bags(cache: SliceCache, case_ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[slice]]:
    """Rows of each study's bag: all slices, or MIL_MAX_SLICES evenly spaced with a random phase."""
    rows, spans, start = [], [], 0
    for ci in case_ids:
        c = cache.cases[int(ci)]
        if c.n_slices <= MIL_MAX_SLICES:
            r = np.arange(c.start, c.stop)
        else:
            step = c.n_slices / MIL_MAX_SLICES
            r = c.start + np.floor(rng.uniform(0, step) + step * np.arange(MIL_MAX_SLICES)).astype(np.int64)
        rows.append(r)
        spans.append(slice(start, start + r.size))
        start += r.size
    return np.concatenate(rows), spans


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train_member(
    config: TrainConfig,
    train: SliceCache,
    validation: SliceCache,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    stream: TextIO | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train one network; keep the epoch with the best validation mAP (Lee et al. 2019, "Model selection").

    With `checkpoint`, model, optimiser, scheduler, epoch, RNG states, best weights and
    history are saved after every epoch; `resume=True` continues from it (a finished
    member returns at once). `max_steps` stops early (timing runs, tests); its
    checkpoint then counts the cut epoch as done.
    Slice-labelled caches train on slices with Eq. 4 interpolation; study-labelled
    caches train by multiple-instance learning: per study, the max of the slice logits
    meets the study labels.
    """
    import torch

    from ichviewer.training.networks import build_network

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    if config.threads:
        torch.set_num_threads(config.threads)
    _set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # channels_last makes CPU convolutions ~1.7x faster here (oneDNN's preferred layout).
    model = build_network(
        config.family, config.width, config.input_stem, config.wide_stem, config.pooling,
        in_channels=train.images.shape[1] * config.context_slices,
    ).to(memory_format=torch.channels_last)
    rows = specialist_rows(train, config.specialist)
    mil = not train.slice_labelled
    use_maps = config.uses_maps
    if use_maps and (mil or train.maps is None):
        raise ValueError("the lesion-map loss needs slice-labelled training data with lesion maps (phantoms)")
    if config.mimic_map_weight > 0 and not train.has_mimic_maps:
        raise ValueError("the mimic-map loss needs training data with mimic maps (phantoms built with_mimic)")
    # The auxiliary map head (departures 19 and 33) lives beside the network, never in it: export is unchanged.
    # Its channels: the six labels' lesion maps (with a lesion-map weight), then the mimic's (with a mimic-map weight).
    map_head, map_tap = None, None
    if use_maps:
        map_tap = lesion_map_tap(model, config)
        n_out = (len(LABELS) if config.lesion_map_weight > 0 else 0) + (1 if config.mimic_map_weight > 0 else 0)
        map_head = torch.nn.Conv2d(map_tap.channels if map_tap else model.n_features, n_out, 1)
    study_labels = train.case_labels().astype(np.float32)
    if mil:
        ap, an = class_weights(train.case_labels())  # Eq. 3 from study counts
        n_units = len(train.cases)
        per_step = max(1, config.batch_size // 8)  # studies per step (each a bag of slices)
    else:
        ap, an = class_weights(train.labels[rows])  # Eq. 3 from the member's training slices
        n_units = rows.size
        per_step = config.batch_size
    steps = config.steps_per_epoch or max(1, n_units // per_step)
    partners = twin_partners(train) if config.pair_twins and not mil else None
    rank_twins = config.twin_rank_weight > 0
    if rank_twins and partners is None:
        raise ValueError("the twin rank loss needs slice-labelled training data with counterfactual twins (phantoms)")
    sampler = None if mil else StratifiedSampler(
        train, rows, config.positive_fraction, rng, partners, config.hard_fraction, config.positive_sampling,
        config.hard_stratum,
    )
    total_steps = steps * config.epochs
    params = list(model.parameters()) + (list(map_head.parameters()) if map_head is not None else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.15)
    alpha_p = torch.as_tensor(ap, dtype=torch.float32)
    alpha_n = torch.as_tensor(an, dtype=torch.float32)

    def noisy_or_term(logits, targets, known):
        """Departure 22 per sample: W x the weighted BCE of the subtypes' noisy-OR against ANY."""
        return config.noisy_or_any_weight * noisy_or_any_bce_per_sample(
            logits[:, SUBTYPE_COLUMNS], targets[:, ANY_COLUMN], alpha_p[ANY_COLUMN], alpha_n[ANY_COLUMN], known[:, ANY_COLUMN]
        )

    history: list[EpochRecord] = []
    best_state, best_map, best_epoch, first_epoch = None, -math.inf, -1, 0
    ckpt = Path(checkpoint) if checkpoint else None
    data_fingerprint = {"train": train.fingerprint(), "validation": validation.fingerprint()} if ckpt is not None else None
    if ckpt is not None and resume and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CheckpointError(f"{ckpt}: cannot read the checkpoint ({exc})") from None
        if state.get("version") != CHECKPOINT_VERSION or state.get("config") != config.fingerprint():
            raise CheckpointError(
                f"{ckpt}: the checkpoint was made with other settings; resume with the same options or use a new --out"
            )
        # Checkpoints from before the data fingerprint have none and resume as they did.
        if state.get("data") is not None and state["data"] != data_fingerprint:
            raise CheckpointError(
                f"{ckpt}: the checkpoint was trained on other data (cases, labels or pixels differ, e.g. another "
                "--n-cases, --seed or --ignore-invisible-positives); resume with the same options or use a new --work"
            )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:  # e.g. an input-stem checkpoint from before the stem joined the body
            raise CheckpointError(f"{ckpt}: the checkpoint's network layout differs ({str(exc).splitlines()[0]}); "
                                  "train again with a new --work") from None
        if map_head is not None:
            map_head.load_state_dict(state["map_head"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        if sampler is not None and state.get("sampler") is not None:
            sampler.restore(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochRecord(**h) for h in state["history"]]
        best_state, best_map, best_epoch = state["best_state"], state["best_map"], state["best_epoch"]
        first_epoch = state["epoch"] + 1
    step_count = first_epoch * steps
    train_seconds = 0.0
    for epoch in range(first_epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        bar = ProgressBar(steps, f"{config.name} epoch {epoch + 1}/{config.epochs}", stream)
        order = rng.permutation(n_units) if mil else None
        losses = []
        for s in range(steps):
            weights = maps = pairs = None
            if mil:
                pick = np.take(order, np.arange(s * per_step, (s + 1) * per_step), mode="wrap")
                bag_rows, spans = _mil_bags(train, pick, rng)
                x = train.context_images(bag_rows, config.context_slices)
                y = study_labels[pick]
                k = np.stack([train.known[train.cases[int(c)].start] for c in pick])
            else:
                pick, w = sampler.batch(per_step)
                pairs = sampler.last_pairs if rank_twins else None
                x, y, k, maps = _slice_batch(train, pick, config, rng, use_maps, pairs)
                # interpolated copies inherit their slice's importance weight
                weights = torch.from_numpy(np.tile(w, x.shape[0] // w.size))
            xt = torch.from_numpy(np.ascontiguousarray(x))
            mt = torch.from_numpy(np.ascontiguousarray(maps)) if maps is not None else None
            image_pairs = _image_pairs(pairs, pick.size, config.images_per_slice)
            if config.augment:
                aug = draw_augmentation(xt.shape[0], config.input_size, rng)
                if image_pairs is not None:
                    _share_augmentation(aug, *image_pairs)  # each twin in its bleeding slice's pose
                xt = augment_images(xt, aug)
                if mt is not None:
                    mt = affine_warp(mt, aug, tuple(xt.shape[-2:]))  # the same rotation, scale and shift as its image
            xt = xt.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                logits, feats = model(xt)
            logits = logits.float()
            if mil:
                logits = torch.stack([logits[sp].max(dim=0).values for sp in spans])
                loss = weighted_bce(logits, torch.from_numpy(y), alpha_p, alpha_n, torch.from_numpy(k))
                if config.noisy_or_any_weight > 0:  # on each subtype's bag maximum (an upper bound of the slices' noisy-OR)
                    loss = loss + noisy_or_term(logits, torch.from_numpy(y), torch.from_numpy(k)).mean()
            else:
                yt, kt = torch.from_numpy(y), torch.from_numpy(k)
                per_sample = weighted_bce_per_sample(logits, yt, alpha_p, alpha_n, kt)
                if config.noisy_or_any_weight > 0:
                    per_sample = per_sample + noisy_or_term(logits, yt, kt)
                sampler.record(pick, per_sample.detach().numpy())
                loss = (per_sample * weights).mean()
                if image_pairs is not None and image_pairs[0].size:
                    bleeding, twin = (torch.from_numpy(i) for i in image_pairs)
                    rank = twin_rank_loss_per_pair(logits[bleeding][:, SUBTYPE_COLUMNS], logits[twin][:, SUBTYPE_COLUMNS])
                    loss = loss + config.twin_rank_weight * rank.mean()
                if map_head is not None:
                    feats = (map_tap.output if map_tap else feats).float()
                    loss = loss + auxiliary_map_loss(map_head(feats), mt, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_count += 1
            losses.append(float(loss.detach()))
            bar.update(s + 1, f"loss {np.mean(losses[-20:]):.3f}")
            if max_steps is not None and step_count >= max_steps:
                break
        bar.close()
        train_seconds += time.perf_counter() - t0
        vbar = ProgressBar(validation.n_slices, f"{config.name} validation", stream)
        probs = predict_slices(model, validation, degree=1, progress=vbar, context_slices=config.context_slices)
        vbar.close()
        vmap, vap = validation_map(validation, probs)
        rec = EpochRecord(epoch, float(np.mean(losses)), vmap, vap, case_auc(validation, probs), time.perf_counter() - t0)
        history.append(rec)
        if stream is not None:
            stream.write(
                f"{config.name} epoch {epoch + 1}: loss {rec.train_loss:.4f}  validation mAP {vmap:.4f}"
                f"  case AUC(ANY) {rec.val_case_auc_any:.4f}  {rec.seconds:.0f} s\n"
            )
        score = vmap if math.isfinite(vmap) else -rec.train_loss
        if score > best_map:
            best_map, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if ckpt is not None:
            _save_checkpoint(
                ckpt,
                {
                    "version": CHECKPOINT_VERSION,
                    "config": config.fingerprint(),
                    "data": data_fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "map_head": map_head.state_dict() if map_head is not None else None,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "sampler": sampler.state() if sampler is not None else None,
                    "torch_rng": torch.get_rng_state(),
                    "history": [asdict(h) for h in history],
                    "best_state": best_state,
                    "best_map": best_map,
                    "best_epoch": best_epoch,
                },
            )
        if max_steps is not None and step_count >= max_steps:
            break
    if map_tap is not None:
        map_tap.remove()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        config, model, best_epoch, best_map, history, time.perf_counter() - t_start, step_count,
        time.process_time() - cpu_start, train_seconds,
    )


#: Inference interpolation degrees tried on validation (each costs `degree` forward passes per slice).
DEFAULT_DEGREES: tuple[int, ...] = (1, 3)


def choose_interpolation_degree(
    model, validation: SliceCache, degrees: Sequence[int] = DEFAULT_DEGREES, context_slices: int = 1,
) -> tuple[int, dict[int, float], np.ndarray]:
    """The inference interpolation degree with the best validation mAP (Lee et al. 2019 chose 3 or 5 per model).

    Returns (degree, {degree: mAP}, slice probabilities at that degree).
    """
    scores: dict[int, float] = {}
    best = (None, -math.inf, None)
    for d in degrees:
        p = predict_slices(model, validation, degree=d, context_slices=context_slices)
        m, _ = validation_map(validation, p)
        scores[d] = m
        if m > best[1] or best[0] is None:
            best = (d, m, p)
    return int(best[0]), scores, best[2]

"""Training data: case plans, phantom and DICOM sources, and the slice cache at model input size.

A `SliceCache` holds every slice of every case already converted to the model input
(the inference engine's own `preprocess_slices`: keep-aspect pad with air,
antialiased resize, Lee et al. multi-window channels), quantised to 8 bits per
channel as in the paper's 8-bit window images. Slices of one case are contiguous and
in ascending order along the slice normal, so the neighbours needed for slice
interpolation (Lee et al. 2019, Eq. 4) are the previous and next rows. Splits are
always by case (phantoms: disjoint seed ranges) or by patient / study (DICOM),
never by slice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ichviewer import LABELS, SUBTYPES

#: Split names, and the seed-range offset of each for phantoms (cases never share a seed).
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_SEED_OFFSET = {"train": 0, "validation": 1_000_000, "test": 2_000_000}
#: Phantom seed blocks per run seed, so runs with different `--seed` use different cases.
SEED_BLOCK = 10_000_000

ProgressFn = Callable[[int, int], None]

#: Lesion maps (`SliceCache.maps`) are stored at the model input size divided by this.
LESION_MAP_STRIDE = 8
#: The channels `SliceCache.maps` may hold: one per subtype, then (departure 33) the mimic's voxels.
MAP_CHANNELS: tuple[str, ...] = (*SUBTYPES, "mimic")


class TrainingDataError(ValueError):
    """The training data cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- case plans


@dataclass(frozen=True)
class CasePlan:
    """Arguments of one `generate_case` call."""

    seed: int
    subtype: str | None  # IPH.. SAH, "mixed", "none"
    mimic: str | None = None
    slice_mm: float = 5.0
    age: str = "adult"
    volume_ml: float | None = None
    kind: str = ""  # a short tag for logs ("SDH child", "none 1mm metal", ...)
    #: planes averaged across each slice's thickness (`generate_case(thickness_planes=...)`; 1: centre plane)
    thickness_planes: int = 1

    def generate(self, matrix: int = 256):
        """The planned `PhantomCase` (`ichviewer.core.phantom.generate_case`) at `matrix` pixels in-plane."""
        from ichviewer.core.phantom import generate_case

        return generate_case(
            self.seed, subtype=self.subtype, volume_ml=self.volume_ml, mimic=self.mimic, slice_mm=self.slice_mm,
            age=self.age, matrix=matrix, thickness_planes=self.thickness_planes,
        )


#: One cycle of the balanced mix (half with haemorrhage). Every subtype, mixed bleeds,
#: small bleeds, mimic-only negatives (calcification, metal, beam hardening), normal
#: heads, children, and thin (1 mm) slices appear in every 20 consecutive cases.
_CYCLE: tuple[tuple[str, str | None, float, str, str], ...] = (
    # (subtype, mimic, slice_mm, age, volume: "default" | "small")
    ("IPH", None, 5.0, "adult", "default"),
    ("none", None, 5.0, "adult", "default"),
    ("SDH", None, 5.0, "adult", "default"),
    ("none", "calcification", 5.0, "adult", "default"),
    ("SAH", None, 5.0, "adult", "default"),
    ("none", "metal", 5.0, "adult", "default"),
    ("IVH", None, 5.0, "adult", "default"),
    ("none", "beam-hardening", 5.0, "adult", "default"),
    ("EDH", None, 5.0, "adult", "default"),
    ("none", None, 5.0, "child", "default"),
    ("mixed", None, 5.0, "adult", "default"),
    ("none", None, 1.0, "adult", "default"),
    ("IPH", None, 5.0, "adult", "small"),
    ("none", "calcification", 5.0, "child", "default"),
    ("SDH", None, 5.0, "child", "default"),
    ("none", None, 5.0, "adult", "default"),
    ("SAH", None, 1.0, "adult", "default"),
    ("none", "calcification", 5.0, "adult", "default"),
    ("IPH", "calcification", 5.0, "adult", "default"),
    ("none", "beam-hardening", 5.0, "child", "default"),
)


def plan_phantom_cases(n: int, split: str, seed: int = 0, thin_every: int = 1,
                       thickness_planes: int | Sequence[int] = 1) -> list[CasePlan]:
    """`n` balanced case plans for `split`, with seeds disjoint between splits and run seeds.

    The mix cycles through `_CYCLE` (every subtype, mixed, small bleeds, mimic-only
    negatives, normal heads, children, 1 mm slices). `thin_every` > 1 keeps only every
    k-th 1 mm entry thin (the others become 5 mm), because a 1 mm phantom costs about
    ten 5 mm ones to generate and its slices are strongly redundant.
    `thickness_planes` > 1 builds every 5 mm case from that many planes across each slice
    (partial volume across the slice, as real thick slices have); thin cases keep 1.
    A sequence of values mixes them: each 5 mm plan draws one from its own seed, so the
    reconstructions vary the way a site's scanners do (and independently of the subtype).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"number of cases must be >= 0, got {n}")
    choices = thickness_plane_choices(thickness_planes)
    base = seed * SEED_BLOCK + SPLIT_SEED_OFFSET[split]
    out: list[CasePlan] = []
    thin_seen = 0
    for i in range(n):
        subtype, mimic, slice_mm, age, vol = _CYCLE[i % len(_CYCLE)]
        if slice_mm < 5.0:
            thin_seen += 1
            if thin_every > 1 and thin_seen % thin_every:
                slice_mm = 5.0
        s = base + i
        volume = None
        if vol == "small":
            rng = np.random.default_rng([s, 99])
            volume = float(np.exp(rng.uniform(np.log(0.03), np.log(5.0))))
        tags = [subtype, f"{slice_mm:g}mm"] + ([age] if age != "adult" else []) + ([mimic] if mimic else [])
        tags += ["small"] if vol == "small" else []
        planes = 1
        if slice_mm >= 5.0:
            planes = choices[0] if len(choices) == 1 else int(np.random.default_rng([s, 98]).choice(choices))
        out.append(CasePlan(s, subtype, mimic, slice_mm, age, volume, " ".join(tags), planes))
    return out


def thickness_plane_choices(value: int | str | Sequence[int]) -> tuple[int, ...]:
    """Thickness-plane counts from an int, a sequence or text such as "3" or "1,3"; each is checked.

    Raises ValueError naming the bad value.
    """
    from ichviewer.core.phantom import check_thickness_planes

    if isinstance(value, str):
        parts = [t.strip() for t in value.split(",")]
        try:
            values: list = [int(t) for t in parts]
        except ValueError:
            raise ValueError(f"thickness planes must be integers separated by commas, got {value!r}") from None
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [value]
    if not values:
        raise ValueError("thickness planes: give at least one value")
    for v in values:
        check_thickness_planes(v)
    return tuple(int(v) for v in values)


#: Tag ending the `kind` of a counterfactual twin (see `add_twin_negatives`).
TWIN_TAG = "twin"


def add_twin_negatives(plans: Sequence[CasePlan]) -> list[CasePlan]:
    """The plans plus, after each haemorrhage plan, its counterfactual twin: the same head without the bleed.

    The phantom draws anatomy, mimics and noise from streams independent of the lesion, so
    `generate_case(seed, subtype="none", ...)` with the positive's seed, mimic, slice
    thickness and age is the very same scan without the haemorrhage (and without its mass
    effect). A network shown both cannot separate them by anatomy, slice level or noise,
    only by the blood: on a 128-px CPU budget it otherwise learns "basal-ganglia level with
    Sylvian fissures" as a prior for SAH and calls normal slices positive.
    """
    out: list[CasePlan] = []
    for p in plans:
        out.append(p)
        if p.subtype != "none":
            tags = ["none", f"{p.slice_mm:g}mm"] + ([p.age] if p.age != "adult" else []) + ([p.mimic] if p.mimic else [])
            out.append(CasePlan(p.seed, "none", p.mimic, p.slice_mm, p.age, None, " ".join(tags + [TWIN_TAG]), p.thickness_planes))
    return out


# --------------------------------------------------------------------------- the cache


@dataclass
class CaseRecord:
    """One case (study) in a cache: rows [start, stop) of the slice arrays."""

    case_id: str
    start: int
    stop: int
    labels: list[int]  # case-level 0/1 in LABELS order (max over slices, or the study labels)
    slice_labelled: bool = True
    patient_id: str = ""
    kind: str = ""
    volume_ml: float = 0.0
    mimic: str | None = None
    age: str = ""
    slice_mm: float = 0.0

    @property
    def n_slices(self) -> int:
        return self.stop - self.start


@dataclass
class SliceCache:
    """Model inputs of many cases at one input size: images uint8 (N, C, H, W), labels (N, L).

    `known` (N, L) is 1 where a label is known; a study-level CSV without subtype
    columns leaves the subtypes unknown, and the loss ignores those entries.
    `maps` (N, 5, m, m) uint8, optional: where each subtype's blood is on the slice, in the
    model input's frame at 1/LESION_MAP_STRIDE of its size (0-255 = the highest fraction of
    a map cell's input pixels covered). Phantoms know their masks; DICOM studies have none.
    A sixth channel, when present (`has_mimic_maps`), is where a mimic is (departure 33).
    """

    images: np.ndarray
    labels: np.ndarray
    known: np.ndarray
    cases: list[CaseRecord]
    input_size: int
    meta: dict = field(default_factory=dict)
    maps: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n, len(LABELS)) or self.known.shape != (n, len(LABELS)):
            raise ValueError(f"labels and known must be ({n}, {len(LABELS)})")
        expected = 0
        for c in self.cases:
            if c.start != expected or c.stop <= c.start:
                raise ValueError(f"case {c.case_id}: rows [{c.start}, {c.stop}) are not contiguous")
            expected = c.stop
        if expected != n:
            raise ValueError(f"cases cover {expected} rows, the arrays have {n}")
        if self.maps is not None:
            m = self.input_size // LESION_MAP_STRIDE
            ok = self.maps.ndim == 4 and self.maps.shape[1] in (len(SUBTYPES), len(MAP_CHANNELS))
            if self.maps.dtype != np.uint8 or not ok or self.maps.shape[::2] != (n, m) or self.maps.shape[3] != m:
                raise ValueError(
                    f"maps must be uint8 ({n}, {len(SUBTYPES)} or {len(MAP_CHANNELS)}, {m}, {m}), got {self.maps.dtype} {self.maps.shape}"
                )

    @property
    def has_mimic_maps(self) -> bool:
        """True when `maps` holds the mimic channel (departure 33) after the subtypes'."""
        return self.maps is not None and self.maps.shape[1] == len(MAP_CHANNELS)

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[0])

    @property
    def slice_labelled(self) -> bool:
        return all(c.slice_labelled for c in self.cases)

    def fingerprint(self, sample_rows: int = 16) -> str:
        """SHA-256 of what training reads: cases, labels, the known mask, map presence and the
        pixels of `sample_rows` evenly spaced slices (cheap; a changed phantom generator, window,
        matrix or label rule shows up in them). A resumed checkpoint must match it."""
        import hashlib

        h = hashlib.sha256()
        h.update(repr((self.images.shape, self.input_size, self.maps is not None)).encode())
        if self.has_mimic_maps:  # (keeps the fingerprints of caches made before departure 33)
            h.update(b"mimic-maps")
        h.update(repr([(c.case_id, c.start, c.stop) for c in self.cases]).encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        h.update(np.ascontiguousarray(self.known).tobytes())
        rows = np.unique(np.linspace(0, self.n_slices - 1, num=min(sample_rows, self.n_slices)).astype(np.int64))
        h.update(np.ascontiguousarray(self.images[rows]).tobytes())
        return h.hexdigest()

    def case_of_row(self) -> np.ndarray:
        out = np.empty(self.n_slices, dtype=np.int64)
        for i, c in enumerate(self.cases):
            out[c.start : c.stop] = i
        return out

    def neighbours(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper, is_edge) rows of each row within its case; an end slice uses its one neighbour twice."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray([c.start for c in self.cases])
        stops = np.asarray([c.stop for c in self.cases])
        ci = self.case_of_row()[rows]
        first, last = rows == starts[ci], rows == stops[ci] - 1
        single = first & last
        lower = np.where(first, rows + 1, rows - 1)
        upper = np.where(last, rows - 1, rows + 1)
        lower = np.where(single, rows, lower)
        upper = np.where(single, rows, upper)
        return lower, upper, first | last

    def case_labels(self) -> np.ndarray:
        return np.asarray([c.labels for c in self.cases], dtype=np.int8)

    def float_images(self, rows) -> np.ndarray:
        return self.images[rows].astype(np.float32) * np.float32(1.0 / 255.0)

    def context_images(self, rows, context_slices: int = 1) -> np.ndarray:
        """`float_images` of `rows`, each with its neighbours in its own case as further channels
        when `context_slices` is 3 (`ichviewer.inference.interpolation.with_context`)."""
        from ichviewer.inference.interpolation import with_context

        x = self.float_images(rows)
        if context_slices == 1:
            return x
        lower, upper, _ = self.neighbours(np.asarray(rows, dtype=np.int64))
        return with_context(x, self.float_images(lower), self.float_images(upper), context_slices)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays: about what `save` writes (uncompressed)."""
        return int(sum(a.nbytes for a in (self.images, self.labels, self.known, self.maps) if a is not None))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            images=self.images,
            labels=self.labels,
            known=self.known,
            cases=np.asarray(json.dumps([asdict(c) for c in self.cases])),
            meta=np.asarray(json.dumps({**self.meta, "input_size": self.input_size})),
            **({"maps": self.maps} if self.maps is not None else {}),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> SliceCache:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            cases = [CaseRecord(**c) for c in json.loads(str(z["cases"]))]
            maps = z["maps"] if "maps" in z.files else None
            return cls(z["images"], z["labels"], z["known"], cases, int(meta.pop("input_size")), meta, maps)


#: Head length (mm) the phantom generator covers, with margin: a case has about this / slice_mm slices.
_PHANTOM_HEAD_MM = 150.0


def estimate_cache_bytes(
    plans: Sequence[CasePlan], input_size: int, with_maps: bool = False, with_mimic: bool = False, channels: int = 3
) -> int:
    """About how many bytes `build_phantom_cache(plans, input_size, with_maps=...)` keeps and saves.

    Each slice is `channels` uint8 window channels at the input size (plus five uint8 lesion maps,
    six with the mimic's, at 1/LESION_MAP_STRIDE of it); a case has about _PHANTOM_HEAD_MM / slice_mm
    slices. Used to refuse a run before minutes of generation when its work folder's disk cannot hold
    the cache.
    """
    per_slice = int(channels) * input_size * input_size + len(LABELS) * 4
    if with_maps:
        per_slice += (len(MAP_CHANNELS) if with_mimic else len(SUBTYPES)) * (input_size // LESION_MAP_STRIDE) ** 2
    n_slices = sum(int(math.ceil(_PHANTOM_HEAD_MM / float(p.slice_mm))) + 1 for p in plans)
    return n_slices * per_slice


def concat_caches(parts: Sequence[SliceCache]) -> SliceCache:
    if not parts:
        raise ValueError("nothing to concatenate")
    offset, cases = 0, []
    for p in parts:
        for c in p.cases:
            cases.append(CaseRecord(**{**asdict(c), "start": c.start + offset, "stop": c.stop + offset}))
        offset += p.n_slices
    return SliceCache(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.known for p in parts]),
        cases,
        parts[0].input_size,
        dict(parts[0].meta),
        np.concatenate([p.maps for p in parts]) if all(p.maps is not None for p in parts) else None,
    )


#: Slices `volume_to_inputs` windows and resamples at once.
INPUT_CHUNK_SLICES = 16


def volume_to_inputs(volume, input_size: int, windows=None, crop: str = "none", slab_mm: float | None = None) -> np.ndarray:
    """A CTVolume's slices as the inference engine feeds them, quantised to uint8 (n, C, S, S).

    `windows` default to Lee et al.'s; `crop` is the manifest's input framing ("none" or "head");
    `slab_mm` averages thin slices into slabs (`preprocessing.slab_slices`).
    """
    from ichviewer.core.windowing import LEE_WINDOWS
    from ichviewer.inference.preprocessing import geometry_for, preprocess_slices, slab_slices

    geom = geometry_for(volume, (input_size, input_size), crop)
    wins = tuple(windows) if windows else LEE_WINDOWS
    n = volume.hu.shape[0]
    out: np.ndarray | None = None
    # A few slices at a time: the windowed float channels of a whole thin series at full
    # resolution would take several times the volume's own memory (benchmarks/bench_dicom_cache.py).
    for lo in range(0, n, INPUT_CHUNK_SLICES):
        idx = np.arange(lo, min(n, lo + INPUT_CHUNK_SLICES))
        hu = slab_slices(volume, idx, slab_mm) if slab_mm else volume.hu[idx]
        q = np.rint(np.clip(preprocess_slices(hu, geom, wins), 0.0, 1.0) * 255.0).astype(np.uint8)
        if out is None:
            out = np.empty((n, *q.shape[1:]), dtype=np.uint8)
        out[lo : lo + idx.size] = q
    assert out is not None
    return out


# --------------------------------------------------------------------------- phantoms


def lesion_maps(case, input_size: int, crop: str = "none", with_mimic: bool = False) -> np.ndarray:
    """Where each subtype's blood is on every slice of a PhantomCase, in the model input's frame (`SliceCache.maps`).

    Each slice's own mask (the one its labels come from, also when the model sees a slab)
    is resampled onto the input grid like the pixels (`preprocess_slices`), and each block of
    LESION_MAP_STRIDE x LESION_MAP_STRIDE input pixels keeps its highest coverage. Only
    slices and subtypes with blood are resampled. `with_mimic` adds a sixth channel, the
    mimic's voxels (`PhantomCase.mimic_mask`; departure 33), resampled the same way.
    """
    from ichviewer.inference.preprocessing import apply_taps, geometry_for

    n = case.volume.hu.shape[0]
    m = int(input_size) // LESION_MAP_STRIDE
    channels = MAP_CHANNELS if with_mimic else SUBTYPES
    out = np.zeros((n, len(channels), m, m), dtype=np.uint8)
    geom = geometry_for(case.volume, (int(input_size), int(input_size)), crop)
    ty, tx = geom.input_taps()
    for j, sub in enumerate(channels):
        mask = case.mimic_mask if sub == "mimic" else case.masks[sub]
        if mask is None:  # no mimic in this case
            continue
        rows = np.nonzero(mask.any(axis=(1, 2)))[0]
        if rows.size == 0:
            continue
        cover = apply_taps(mask[rows].astype(np.float32), ty, tx)[:, : m * LESION_MAP_STRIDE, : m * LESION_MAP_STRIDE]
        block = cover.reshape(rows.size, m, LESION_MAP_STRIDE, m, LESION_MAP_STRIDE).max(axis=(2, 4))
        out[rows, j] = np.rint(np.clip(block, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def invisible_positive_mask(labels: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(z, 6) bool: slice labels that are positive although none of that label's blood can be seen.

    `visible` is `ichviewer.core.phantom.visible_blood_by_slice` (LABELS order). Departure 24
    leaves these entries out of the loss (`known` 0): the label says blood, the pixels show the
    skull's own partial-volume edge, and a network taught to call that edge blood calls it
    blood in every normal head too.
    """
    return (np.asarray(labels) > 0) & (np.asarray(visible) == 0)


def _phantom_part(args: tuple) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray | None, np.ndarray]:
    from ichviewer.core.phantom import visible_blood_by_slice

    plan, input_size, matrix, windows, crop, slab_mm, with_maps, ignore_invisible, with_mimic = args
    case = plan.generate(matrix)
    images = volume_to_inputs(case.volume, input_size, windows, crop, slab_mm)
    labels = np.asarray([[int(d[lab]) for lab in LABELS] for d in case.slice_labels], dtype=np.float32)
    twin = plan.kind.endswith(TWIN_TAG)
    info = {
        "case_id": f"phantom-{plan.seed}" + (f"-{TWIN_TAG}" if twin else ""),
        "kind": plan.kind,
        "volume_ml": float(case.volume_ml.get("total", 0.0)),
        "mimic": case.mimic,
        "age": case.age,
        "slice_mm": float(case.slice_mm),
    }
    known = np.ones_like(labels)
    if ignore_invisible and labels.any():
        known[invisible_positive_mask(labels, visible_blood_by_slice(case))] = 0.0
    return images, labels, info, (lesion_maps(case, input_size, crop, with_mimic) if with_maps else None), known


def build_phantom_cache(
    plans: Sequence[CasePlan],
    input_size: int,
    matrix: int = 256,
    workers: int = 1,
    progress: ProgressFn | None = None,
    windows=None,
    crop: str = "none",
    slab_mm: float | None = None,
    with_maps: bool = False,
    ignore_invisible: bool = False,
    with_mimic: bool = False,
) -> SliceCache:
    """Generate every planned phantom, convert its slices to model inputs and keep only those.

    `matrix` is the phantom's in-plane size; the field of view is the same at every
    matrix, so at a model input of 128-192 pixels a 256 matrix gives nearly the same
    inputs as 512 at a quarter of the generation time. `workers` > 1 generates in
    separate processes. `with_maps` keeps each slice's lesion maps too (`lesion_maps`), and
    `with_mimic` the mimic's map after them (departure 33; needs `with_maps`).
    `ignore_invisible` marks positive slice labels whose blood no reader could see as unknown
    (`invisible_positive_mask`; the labels themselves are kept, so case labels do not change).
    """
    if not plans:
        raise ValueError("no cases planned")
    jobs = [
        (p, int(input_size), int(matrix), tuple(windows) if windows else None, crop, slab_mm, with_maps, bool(ignore_invisible),
         bool(with_mimic))
        for p in plans
    ]
    results: list = []
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads
        with ctx.Pool(workers) as pool:
            for r in pool.imap(_phantom_part, jobs, chunksize=1):
                results.append(r)
                if progress:
                    progress(len(results), len(jobs))
    else:
        for job in jobs:
            results.append(_phantom_part(job))
            if progress:
                progress(len(results), len(jobs))
    images, labels, maps, knowns, cases, start = [], [], [], [], [], 0
    for im, lab, info, lesion, known in results:
        n = im.shape[0]
        # a twin is the same head as its positive: one patient
        patient = info["case_id"].removesuffix(f"-{TWIN_TAG}")
        cases.append(CaseRecord(start=start, stop=start + n, labels=[int(v) for v in lab.max(axis=0)], patient_id=patient, **info))
        images.append(im)
        labels.append(lab)
        maps.append(lesion)
        knowns.append(known)
        start += n
    lab = np.concatenate(labels)
    meta = {"source": "phantoms", "matrix": matrix}
    if ignore_invisible:
        meta["ignore_invisible"] = True
    return SliceCache(
        np.concatenate(images), lab, np.concatenate(knowns), cases, int(input_size), meta,
        np.concatenate(maps) if with_maps else None,
    )


def plans_fingerprint(
    plans: Sequence[CasePlan], input_size: int, matrix: int, windows=None, crop: str = "none", slab_mm: float | None = None,
    with_maps: bool = False,
    ignore_invisible: bool = False,
    with_mimic: bool = False,
) -> str:
    """Cache key: the plans, sizes, windows, framing, and the code that makes the pixels (phantom, preprocessing, windows)."""
    from ichviewer.core import phantom, windowing
    from ichviewer.inference import preprocessing

    code = "|".join(_file_digest(m.__file__) for m in (phantom, preprocessing, windowing))
    text = json.dumps([asdict(p) for p in plans]) + f"|{input_size}|{matrix}|{code}"
    if windows or crop != "none" or slab_mm:  # (keeps the keys of older caches made with the defaults)
        text += f"|{[(w.width, w.level) for w in windows or ()]}|{crop}|{slab_mm}"
    if with_maps:
        text += f"|maps{LESION_MAP_STRIDE}" + ("|mimic" if with_mimic else "")
    if ignore_invisible:
        text += "|ignore-invisible"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- DICOM + CSV


#: The RSNA Intracranial Hemorrhage Detection challenge's names for the labels (its CSV, and the
#: per-image tables sites pivot from it), by the label each means here.
RSNA_LABEL_NAMES = {
    "epidural": "EDH", "intraparenchymal": "IPH", "intraventricular": "IVH",
    "subarachnoid": "SAH", "subdural": "SDH", "any": "ANY",
}
#: Columns that key a per-image labels CSV by each image's SOP Instance UID (case-insensitive).
IMAGE_KEY_COLUMNS = ("sop_instance_uid", "sopinstanceuid", "image_id")
#: How many unfound series or images a training log lists (the count is always given).
MISSING_LISTED = 50


@dataclass(frozen=True)
class LabelRows:
    """A labels CSV read for training: per-slice, per-image or per-study rows."""

    path: str
    key: str  # "series_uid", "study_uid" or "sop_instance_uid" (per image, RSNA style)
    per_slice: bool
    labels_present: tuple[str, ...]  # LABELS with a column (ANY always)
    # per slice: {series_uid: {slice_index: [0/1 per present label]}}; per image: {sop_instance_uid: {-1: [...]}};
    # per study: {uid: {-1: [...]}}
    rows: dict[str, dict[int, list[int]]]
    patient: dict[str, str]


def is_rsna_long_header(header: Sequence[str]) -> bool:
    """The RSNA challenge's own `ID,Label` CSV (lower-cased, stripped header cells)."""
    return list(header) == ["id", "label"]


def is_per_image_header(header: Sequence[str]) -> bool:
    """A labels CSV that names images by SOP Instance UID: RSNA's `ID,Label` or an image key column."""
    return is_rsna_long_header(header) or any(k in header for k in IMAGE_KEY_COLUMNS)


def series_holds_listed_image(series, image_uids) -> bool:
    """Whether a scanned series (`ichviewer.io.scan_path`, headers still held) has an image whose SOP
    Instance UID is in `image_uids`: how per-image labels find their series before any pixel is read."""
    return any(str(ds.get("SOPInstanceUID", "")) in image_uids for ds in series.datasets)


def _label_of_column(name: str) -> str | None:
    """The label a CSV column names: ours (`any`, `iph`, ..., any case) or RSNA's (`subdural`, ...)."""
    n = name.strip().lower()
    if n.upper() in LABELS:
        return n.upper()
    return RSNA_LABEL_NAMES.get(n)


def _zero_one(path: Path, line: int, column: str, raw: str) -> int:
    try:
        v = float(raw.strip())
    except ValueError:
        v = math.nan
    if v not in (0.0, 1.0):
        raise TrainingDataError(f"{path}, line {line}, column {column}: expected 0 or 1, got {raw.strip()!r}")
    return int(v)


def read_training_labels(path: str | Path) -> LabelRows:
    """Read a training labels CSV in one of four forms (column names case-insensitive):

    - per study: `series_uid` or `study_uid`, optional `patient_id`, and 0/1 label columns;
    - per slice: the same with `slice_index` (indices count from 0 in ascending order along
      the slice normal, as `ichviewer info` lists slices);
    - per image, RSNA style: `sop_instance_uid` (or `SOPInstanceUID`, `image_id`) and the label
      columns, so a slice is named by its image whatever its place in the series;
    - the RSNA challenge's own CSV: the header `ID,Label` and one row per image and label,
      `ID_<image>_<subtype>,0|1`, where `ID_<image>` is the image's SOP Instance UID.

    Label columns are ours (`any`, `iph`, `ivh`, `sdh`, `edh`, `sah`) or RSNA's names
    (`any`, `intraparenchymal`, `intraventricular`, `subdural`, `epidural`, `subarachnoid`);
    `any` is required, subtypes are optional.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainingDataError(f"{path}: cannot read labels ({exc})") from None
    if len(rows) < 2:
        raise TrainingDataError(f"{path}: needs a header and at least one row")
    header = [h.strip().lower() for h in rows[0]]
    if is_rsna_long_header(header):
        return _read_rsna_long_labels(path, rows)
    col = {h: i for i, h in enumerate(header)}
    image_key = next((k for k in IMAGE_KEY_COLUMNS if k in col), None)
    key = "series_uid" if "series_uid" in col else "study_uid" if "study_uid" in col else image_key
    if key is None:
        raise TrainingDataError(
            f"{path}: no 'series_uid', 'study_uid' or 'sop_instance_uid' column, and not the RSNA 'ID,Label' form "
            f"(columns: {', '.join(header)})"
        )
    label_col: dict[str, int] = {}
    for i, h in enumerate(header):
        lab = _label_of_column(h)
        if lab is None:
            continue
        if lab in label_col:
            raise TrainingDataError(f"{path}: columns {rows[0][label_col[lab]].strip()!r} and {rows[0][i].strip()!r} both give {lab}")
        label_col[lab] = i
    if "ANY" not in label_col:
        raise TrainingDataError(f"{path}: no 'any' column; it is required (columns: {', '.join(header)})")
    present = tuple(lab for lab in LABELS if lab in label_col)
    per_image = key == image_key
    slice_indexed = not per_image and "slice_index" in col
    per_slice = per_image or slice_indexed
    out: dict[str, dict[int, list[int]]] = {}
    patient: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        row = row + [""] * (len(header) - len(row))
        uid = row[col[key]].strip()
        if not uid:
            raise TrainingDataError(f"{path}, line {line}: empty {rows[0][col[key]].strip()}")
        idx = -1
        if slice_indexed:
            raw = row[col["slice_index"]].strip()
            try:
                idx = int(raw)
            except ValueError:
                raise TrainingDataError(f"{path}, line {line}, column slice_index: not an integer: {raw!r}") from None
            if idx < 0:
                raise TrainingDataError(f"{path}, line {line}, column slice_index: must be >= 0, got {idx}")
        values = [_zero_one(path, line, header[label_col[lab]], row[label_col[lab]]) for lab in present]
        if idx in out.setdefault(uid, {}):
            what = f"slice {idx} of {uid}" if slice_indexed else f"{key} {uid}"
            raise TrainingDataError(f"{path}, line {line}: {what} is listed twice")
        out[uid][idx] = values
        if "patient_id" in col and row[col["patient_id"]].strip():
            patient[uid] = row[col["patient_id"]].strip()
    return LabelRows(str(path), "sop_instance_uid" if per_image else key, per_slice, present, out, patient)


def _read_rsna_long_labels(path: Path, rows: list[list[str]]) -> LabelRows:
    """The RSNA challenge's `ID,Label` CSV: `ID_<image>_<subtype>` rows, six per image.

    The challenge's own file repeats a few images with the same labels; a repeat that agrees is
    taken once, one that disagrees is refused with both lines named."""
    labels: dict[str, dict[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    names = ", ".join(RSNA_LABEL_NAMES)
    for line, row in enumerate(rows[1:], start=2):
        row = row + ["", ""]
        rid = row[0].strip()
        stem, sep, name = rid.rpartition("_")
        lab = RSNA_LABEL_NAMES.get(name.lower()) if sep else None
        if not stem or lab is None:
            raise TrainingDataError(f"{path}, line {line}: ID {rid!r} is not <image>_<label> with a label among {names}")
        value = _zero_one(path, line, "Label", row[1])
        before = labels.setdefault(stem, {}).get(lab)
        if before is not None and before != value:
            raise TrainingDataError(
                f"{path}, line {line}: {rid} is {value} here and {before} on line {seen[(stem, lab)]}"
            )
        labels[stem][lab] = value
        seen.setdefault((stem, lab), line)
    present = tuple(lab for lab in LABELS if any(lab in v for v in labels.values()))
    if "ANY" not in present:
        raise TrainingDataError(f"{path}: no '_any' rows; ANY is required")
    out: dict[str, dict[int, list[int]]] = {}
    for stem, v in labels.items():
        lacking = [lab for lab in present if lab not in v]
        if lacking:
            inverse = {lab: n for n, lab in RSNA_LABEL_NAMES.items()}
            raise TrainingDataError(f"{path}: image {stem} has no row for {', '.join(inverse[lab] for lab in lacking)}")
        out[stem] = {-1: [v[lab] for lab in present]}
    return LabelRows(str(path), "sop_instance_uid", True, present, out, {})


def build_dicom_cache(
    data_dir: str | Path, labels_csv: str | Path, input_size: int, progress: ProgressFn | None = None,
    windows=None, crop: str = "none", slab_mm: float | None = None,
) -> SliceCache:
    """Load every CT series under `data_dir` that the labels CSV names and cache its model inputs.

    Per-slice files must label every slice of a series (0..n-1), per-image files (RSNA
    style) every image of a series they name; per-study files give the same labels to the
    whole series and the cache is marked study-labelled, which the trainer handles by
    multiple-instance learning (max over slices). Labels without a column are unknown.

    The split unit (`split_by_patient`) is the CSV's `patient_id`, else the DICOM PatientID
    when the folder's studies carry more than one, else the study: a patient's studies never
    straddle training and validation.
    """
    from ichviewer.io import DicomInputError, scan_path

    table = read_training_labels(labels_csv)
    try:
        # Headers only: a series' pixels are read when it is cached, then let go, so memory holds
        # one CT volume and the model inputs, however many studies the folder has.
        scan = scan_path(data_dir, defer_pixels=True)
    except DicomInputError as exc:
        raise TrainingDataError(str(exc)) from None
    known_row = np.asarray([1.0 if lab in table.labels_present else 0.0 for lab in LABELS], dtype=np.float32)
    labels, knowns, cases, start = [], [], [], 0
    used: set[str] = set()
    failed: list[dict[str, str]] = []
    # Largest series of each study first, as `load_path` orders volumes (a study key takes the first that loads).
    candidates = sorted(scan.series, key=lambda sr: (sr.study_uid, -sr.n_files))
    # The model inputs go straight into one array sized from the headers (grown in the rare case a
    # series loads more slices than it has files), never a list concatenated at the end: the
    # cache is held once, not twice.
    images = _InputRows(_slices_named(candidates, table))
    dicom_patients = _dicom_patient_ids(candidates)
    for i, series in enumerate(candidates):
        try:
            vol = _load_named_series(series, table, used)
        except DicomInputError as exc:
            failed.append({"path": series.folder or series.series_uid, "reason": str(exc)})
            vol = None
        finally:
            series.datasets = []  # the parsed headers (and any pixels) are let go
        if vol is None:
            if progress:
                progress(i + 1, len(candidates))
            continue
        n = vol.n_slices
        if table.key == "sop_instance_uid":
            sops = [str(u) for u in (vol.metadata.get("sop_instance_uids") or ())]
            absent = [u for u in sops if u not in table.rows]
            if absent:
                raise TrainingDataError(
                    f"{table.path}: series {vol.series_uid} ({series.folder or data_dir}) has {n} images and {len(absent)} of them "
                    f"are not in the CSV (the first: {absent[0]}); label every image of a series it names"
                )
            uid = vol.series_uid
            used.update(sops)
            entries = {s: table.rows[u][-1] for s, u in enumerate(sops)}
        else:
            uid = vol.series_uid if table.key == "series_uid" else vol.study_uid
            used.add(uid)
            entries = table.rows[uid]
        lab = np.zeros((n, len(LABELS)), dtype=np.float32)
        if table.per_slice:
            missing = sorted(set(range(n)) - set(entries))
            extra = sorted(set(entries) - set(range(n)))
            if missing or extra:
                raise TrainingDataError(
                    f"{table.path}: series {uid} has {n} slices; the CSV "
                    + (f"misses slice indices {missing[:5]}" if missing else f"has indices beyond it {extra[:5]}")
                )
            for s in range(n):
                for j, labn in enumerate(table.labels_present):
                    lab[s, LABELS.index(labn)] = entries[s][j]
        else:
            for j, labn in enumerate(table.labels_present):
                lab[:, LABELS.index(labn)] = entries[-1][j]
        # ANY is the union of the subtypes wherever the subtypes are given.
        sub_cols = [LABELS.index(s) for s in SUBTYPES if s in table.labels_present]
        if sub_cols and table.per_slice:
            lab[:, LABELS.index("ANY")] = np.maximum(lab[:, LABELS.index("ANY")], lab[:, sub_cols].max(axis=1))
        images.put(start, volume_to_inputs(vol, input_size, windows, crop, slab_mm))
        labels.append(lab)
        knowns.append(np.tile(known_row, (n, 1)))
        cases.append(
            CaseRecord(
                case_id=uid, start=start, stop=start + n, labels=[int(v) for v in lab.max(axis=0)],
                slice_labelled=table.per_slice,
                patient_id=_patient_of(table, uid, vol, dicom_patients),
                kind="dicom", slice_mm=float(vol.spacing[0]),
            )
        )
        start += n
        del vol
        if progress:
            progress(i + 1, len(candidates))
    missing = sorted(set(table.rows) - used)
    if not cases:
        what = "images" if table.key == "sop_instance_uid" else "series"
        raise TrainingDataError(f"{data_dir}: none of the {what} named in {table.path} was found ({len(table.rows)} listed)")
    lab_all = np.concatenate(labels)
    cache = SliceCache(images.rows(start), lab_all, np.concatenate(knowns), cases, int(input_size), {"source": "dicom"})
    cache.meta["missing_in_folder"] = missing[:MISSING_LISTED]
    cache.meta["missing_in_folder_count"] = len(missing)
    cache.meta["labels_key"] = table.key
    cache.meta["failed_series"] = failed[:MISSING_LISTED]
    cache.meta["failed_series_count"] = len(failed)
    return cache


class _InputRows:
    """Model-input rows written in place into one uint8 array of `capacity` rows (allocated at the
    first write, when the row shape is known; doubled if a write goes past it)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self.array: np.ndarray | None = None

    def put(self, start: int, rows: np.ndarray) -> None:
        if self.array is None:
            self.array = np.empty((self.capacity, *rows.shape[1:]), dtype=np.uint8)
        stop = start + rows.shape[0]
        if stop > self.array.shape[0]:
            grown = np.empty((max(stop, 2 * self.array.shape[0]), *self.array.shape[1:]), dtype=np.uint8)
            grown[:start] = self.array[:start]
            self.array = grown
        self.array[start:stop] = rows

    def rows(self, n: int) -> np.ndarray:
        """The first n rows (a view: rows never written were never touched, so take no memory)."""
        assert self.array is not None
        return self.array[:n]


def _named(series, table: LabelRows, studies_taken: set[str]) -> bool:
    """Whether the labels name a scanned series, from its headers alone. With a study key only
    one series per study counts: none once its study is in `studies_taken`."""
    if table.key == "sop_instance_uid":
        return series_holds_listed_image(series, table.rows)
    if table.key == "series_uid":
        return series.series_uid in table.rows
    return series.study_uid in table.rows and series.study_uid not in studies_taken


def _slices_named(candidates, table: LabelRows) -> int:
    """How many images the series the labels name hold, from the headers (an upper bound of the
    slices cached: a study key counts its largest series only)."""
    total, studies = 0, set()
    for sr in candidates:
        total += sr.n_files if _named(sr, table, studies) else 0
        studies.add(sr.study_uid)
    return total


def _load_named_series(series, table: LabelRows, used: set[str]):
    """The series' CTVolume when the labels name it (None otherwise), judged from its headers
    before any pixel is read. With a study key only the study's first loadable series counts."""
    from ichviewer.io import load_series

    return load_series(series) if _named(series, table, used) else None


def _dicom_patient_ids(series_list) -> dict[str, str]:
    """Each study's DICOM PatientID (from its series' headers), when they tell patients apart: at
    least two distinct non-empty IDs across the folder's studies (an anonymiser that writes one ID
    for all, or none, leaves each study its own unit). Empty otherwise."""
    ids: dict[str, str] = {}
    for sr in series_list:
        head = sr.datasets[0] if sr.datasets else None
        ids.setdefault(sr.study_uid, str(head.get("PatientID", "") or "").strip() if head is not None else "")
    distinct = {p for p in ids.values() if p}
    if len(ids) < 2 or len(distinct) < 2:
        return {}
    return {study: p for study, p in ids.items() if p}


def _patient_of(table: LabelRows, uid: str, vol, dicom_patients: dict[str, str]) -> str:
    """The split unit of a labelled series: the CSV's patient_id (per image: its first image's),
    else the DICOM PatientID (`_dicom_patient_ids`), else the study."""
    if table.key == "sop_instance_uid":
        first = (vol.metadata.get("sop_instance_uids") or [""])[0]
        named = table.patient.get(str(first))
    else:
        named = table.patient.get(uid)
    if named:
        return named
    patient = dicom_patients.get(vol.study_uid)
    return f"PatientID {patient}" if patient else (vol.study_uid or uid)


def split_by_patient(cache: SliceCache, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, SliceCache]:
    """Split a cache into train/validation/test by patient (all of a patient's studies together).

    The assignment is a seeded shuffle of patients, stratified by case-level ANY so
    each split gets positives and negatives when there are enough of both.
    """
    patients: dict[str, list[int]] = {}
    for i, c in enumerate(cache.cases):
        patients.setdefault(c.patient_id or c.case_id, []).append(i)
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    any_col = LABELS.index("ANY")
    for positive in (True, False):
        group = sorted(p for p, idx in patients.items() if any(cache.cases[i].labels[any_col] for i in idx) == positive)
        rng.shuffle(group)
        n = len(group)
        n_val = max(1 if n >= 3 else 0, int(round(fractions[1] * n)))
        n_test = max(1 if n >= 3 else 0, int(round(fractions[2] * n)))
        for k, p in enumerate(group):
            assign[p] = "validation" if k < n_val else "test" if k < n_val + n_test else "train"
    out = {}
    for split in SPLITS:
        idx = sorted(i for p, ids in patients.items() if assign[p] == split for i in ids)
        out[split] = subset_cases(cache, idx) if idx else None
    return out


def subset_cases(cache: SliceCache, case_indices: Sequence[int]) -> SliceCache:
    rows, cases, start = [], [], 0
    for i in case_indices:
        c = cache.cases[i]
        rows.append(np.arange(c.start, c.stop))
        cases.append(CaseRecord(**{**asdict(c), "start": start, "stop": start + c.n_slices}))
        start += c.n_slices
    r = np.concatenate(rows)
    maps = cache.maps[r] if cache.maps is not None else None
    return SliceCache(cache.images[r], cache.labels[r], cache.known[r], cases, cache.input_size, dict(cache.meta), maps)

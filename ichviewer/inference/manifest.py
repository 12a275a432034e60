"""Ensemble manifest: the versioned JSON contract between ONNX models and the inference engine.

The full contract, with an example, is documented in `models/README.md`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import LABELS, SUBTYPES
from ichviewer.core.windowing import LEE_WINDOWS, Window
from ichviewer.inference.errors import EnsembleNotFoundError, ManifestError
from ichviewer.inference.preprocessing import CROPS

#: Value of the manifest's "schema" key.
MANIFEST_SCHEMA = "ichviewer.ensemble"
#: Newest manifest schema version this code reads. A manifest is written with the lowest
#: version that describes it: 1, or 2 when ANY is derived from the subtypes
#: (`aggregation.any`), so an older reader refuses it instead of misreading its thresholds.
MANIFEST_SCHEMA_VERSION = 2
#: File name of the manifest inside an ensemble directory.
MANIFEST_NAME = "manifest.json"
#: Environment variable naming the default ensemble directory (overrides the bundled one).
MODELS_ENV = "ICHVIEWER_MODELS_DIR"

#: Lee et al. 2019 (Methods, "Slice interpolation"): the betas used at inference per degree.
#: Degree 1 means no interpolation (the original image only); not in the paper.
INTERPOLATION_BETAS: Mapping[int, tuple[float, ...]] = {
    1: (),
    3: (0.67,),
    5: (0.8, 0.6),
    7: (0.86, 0.72, 0.58),
    9: (0.89, 0.78, 0.67, 0.56),
}

#: Slices a model reads at once (`input.context_slices`): 1, the slice alone (Lee et al.); 3, the
#: slice with its lower and upper neighbour as further channels ("2.5D";
#: `ichviewer.inference.interpolation.with_context`).
CONTEXT_SLICES: tuple[int, ...] = (1, 3)

AGGREGATIONS = ("max", "mean", "top_k_mean")
#: Where a slice's ANY comes from: the models' own ANY output ("model", Lee et al. 2019), or
#: "noisy-or" of the ensemble's five subtype probabilities, 1 - prod(1 - p_subtype).
ANY_RULES = ("model", "noisy-or")
ACTIVATIONS = ("sigmoid", "none")
#: How a member's head pools its per-cell logits s^c_ij = w^c . A_ij + b^c into the logit z^c
#: (manifest `cam.pooling`): "avg" is Lee et al.'s global average pooling (then linear; the same
#: thing), "lse" the log-sum-exp (z = log(mean_ij exp(r s_ij)) / r, r = LSE_SHARPNESS), "max" the
#: highest cell. A bleed that fills one cell of 256 moves an average by 1/256 of its evidence;
#: LSE and max let one cell carry the logit (departure 26 in `ichviewer.training`).
HEAD_POOLINGS = ("avg", "lse", "max")
LSE_SHARPNESS = 5.0


def pool_cell_logits(cell_logits: Any, pooling: str) -> Any:
    """Logits (..., C) from per-cell logits (..., C, n_cells) by `pooling` (see HEAD_POOLINGS), in float64."""
    s = np.asarray(cell_logits, dtype=np.float64)
    if pooling == "avg":
        return s.mean(axis=-1)
    if pooling == "max":
        return s.max(axis=-1)
    if pooling == "lse":
        r = LSE_SHARPNESS
        m = s.max(axis=-1, keepdims=True)
        return (m[..., 0] + np.log(np.exp(r * (s - m)).mean(axis=-1)) / r)
    raise ValueError(f"head pooling must be one of {HEAD_POOLINGS}, got {pooling!r}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: An ensemble folder's checksums, in the `sha256sum -c` format.
CHECKSUMS_NAME = "SHA256SUMS"


def checksummed_names(directory: str | Path) -> list[str]:
    """The file names `<directory>/SHA256SUMS` lists (none when there is no such file)."""
    sums = Path(directory) / CHECKSUMS_NAME
    if not sums.is_file():
        return []
    return [line.split(None, 1)[1].strip() for line in sums.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_checksums(directory: str | Path, names) -> Path:
    """Write `<directory>/SHA256SUMS` (`sha256sum -c` format, sorted) for the named files."""
    directory = Path(directory)
    out = directory / CHECKSUMS_NAME
    out.write_text("".join(f"{file_sha256(directory / n)}  {n}\n" for n in sorted(set(names))), encoding="utf-8")
    return out


def refresh_checksums(directory: str | Path, add=()) -> Path | None:
    """Rewrite `SHA256SUMS` for the files it lists plus `add`, after a step changed or added some
    (operating points chosen again, the explaining member, the atlas); None, and nothing
    written, when the folder has no checksums file."""
    names = checksummed_names(directory)
    if not names:
        return None
    return write_checksums(directory, [*names, *add])


@dataclass(frozen=True)
class BlockOutput:
    """An intermediate convolutional block exposed as an extra ONNX output (for the atlas, Lee et al. 2019 Methods).

    `name` is how the atlas refers to the block (e.g. "block3"), `output` the ONNX
    output holding its activations (N, K_l, h_l, w_l). The optional `tail_file` is a
    second ONNX model from this block's activations (input `tail_input`) to the
    logits (output `tail_logits`): with it the engine gets the gradient term of Lee
    et al. Eq. 6 for this block (ONNX has no backward pass), so the block's filters
    can be ranked as prediction basis, not only browsed.
    """

    name: str
    output: str
    tail_file: str | None = None
    tail_sha256: str | None = None
    tail_input: str = "block"
    tail_logits: str = "logits"

    def __post_init__(self) -> None:
        if not self.name or not self.output:
            raise ValueError(f"a block output needs a non-empty 'name' and 'output', got {self.name!r}, {self.output!r}")
        if self.tail_file:
            digest = (self.tail_sha256 or "").lower()
            if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
                raise ValueError(f"block '{self.name}': 'tail.sha256' must be the 64-hex-digit SHA-256 of the tail file")
            object.__setattr__(self, "tail_sha256", digest)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "output": self.output}
        if self.tail_file:
            data["tail"] = {"file": self.tail_file, "sha256": self.tail_sha256, "input": self.tail_input, "logits": self.tail_logits}
        return data


@dataclass(frozen=True)
class ModelSpec:
    """One ensemble member as the manifest describes it (paths relative to the manifest's directory)."""

    name: str
    file: str
    sha256: str
    version: str = "0"
    input_name: str = "image"
    input_size: tuple[int, int] = (256, 256)
    windows: tuple[Window, ...] = LEE_WINDOWS
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: Input framing (`preprocessing.CROPS`): "none" fits the whole slice; "head" a square around the head.
    crop: str = "none"
    #: Thin slices are averaged into a slab of about this many mm before preprocessing (None: never).
    slab_mm: float | None = None
    logits_output: str = "logits"
    activation: str = "sigmoid"
    output_labels: tuple[str, ...] = LABELS
    features_output: str | None = None
    cam_weights_file: str | None = None
    cam_weights_sha256: str | None = None
    interpolation_degree: int = 3
    weight: float = 1.0
    #: Optional intermediate block outputs (atlas building); older manifests have none.
    block_outputs: tuple[BlockOutput, ...] = ()
    #: How the head pools its per-cell logits (HEAD_POOLINGS; manifest `cam.pooling`, default "avg").
    head_pooling: str = "avg"
    #: Slices per input (manifest `input.context_slices`, default 1): 3 stacks each slice's lower
    #: neighbour, the slice and its upper neighbour as channels, each with every window
    #: (`ichviewer.inference.interpolation.with_context`).
    context_slices: int = 1

    def __post_init__(self) -> None:
        where = f"model '{self.name}'"
        blocks = tuple(self.block_outputs)
        block_names = [b.name for b in blocks]
        if len(set(block_names)) != len(block_names):
            raise ValueError(f"{where}: block output names must be unique, got {block_names}")
        if self.features_output and any(b.output == self.features_output for b in blocks):
            raise ValueError(f"{where}: the feature output '{self.features_output}' is the last block already; do not list it in 'block_outputs'")
        object.__setattr__(self, "block_outputs", blocks)
        if not self.name:
            raise ValueError("a model needs a non-empty name")
        if not self.file:
            raise ValueError(f"{where}: 'file' is empty")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256.lower()):
            raise ValueError(f"{where}: 'sha256' must be 64 hex digits, got {self.sha256!r}")
        object.__setattr__(self, "sha256", self.sha256.lower())
        if self.slab_mm is not None and not (isinstance(self.slab_mm, (int, float)) and 0 < float(self.slab_mm) <= 20):
            raise ValueError(f"{where}: input slab_mm must be a number of mm in (0, 20], got {self.slab_mm!r}")
        if self.crop not in CROPS:
            raise ValueError(f"{where}: input crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        size = tuple(int(s) for s in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"{where}: input size must be (H, W) positive integers, got {self.input_size}")
        object.__setattr__(self, "input_size", size)
        if not self.windows:
            raise ValueError(f"{where}: needs at least one input window")
        object.__setattr__(self, "windows", tuple(self.windows))
        n = len(self.windows)
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != n:
                    raise ValueError(f"{where}: '{key}' needs one value per window ({n}), got {len(value)}")
                object.__setattr__(self, key, value)
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError(f"{where}: 'std' must not contain 0")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{where}: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        labels = tuple(self.output_labels)
        if sorted(labels) != sorted(LABELS):
            raise ValueError(f"{where}: output labels must be a permutation of {list(LABELS)}, got {list(labels)}")
        object.__setattr__(self, "output_labels", labels)
        if self.interpolation_degree not in INTERPOLATION_BETAS:
            raise ValueError(
                f"{where}: interpolation degree must be one of {sorted(INTERPOLATION_BETAS)}, got {self.interpolation_degree}"
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"{where}: ensemble weight must be a positive number, got {self.weight}")
        if self.cam_weights_file and not self.features_output:
            raise ValueError(f"{where}: 'cam' needs the name of the feature output ('output.features')")
        if self.cam_weights_file and (
            not self.cam_weights_sha256 or len(self.cam_weights_sha256) != 64
        ):
            raise ValueError(f"{where}: 'cam.sha256' must be the 64-hex-digit SHA-256 of the CAM weights file")
        if self.cam_weights_sha256:
            object.__setattr__(self, "cam_weights_sha256", self.cam_weights_sha256.lower())
        if self.context_slices not in CONTEXT_SLICES:
            raise ValueError(f"{where}: input context_slices must be one of {list(CONTEXT_SLICES)}, got {self.context_slices!r}")
        if self.head_pooling not in HEAD_POOLINGS:
            raise ValueError(f"{where}: cam pooling must be one of {HEAD_POOLINGS}, got {self.head_pooling!r}")

    @property
    def has_cam(self) -> bool:
        return bool(self.features_output and self.cam_weights_file)

    @property
    def input_channels(self) -> int:
        """Channels of the model's input image: every window of every context slice."""
        return len(self.windows) * self.context_slices

    @property
    def betas(self) -> tuple[float, ...]:
        return INTERPOLATION_BETAS[self.interpolation_degree]

    @property
    def label_order(self) -> tuple[int, ...]:
        """Indices into the model's output that give `ichviewer.LABELS` order."""
        return tuple(self.output_labels.index(label) for label in LABELS)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "file": self.file,
            "sha256": self.sha256,
            "input": {
                "name": self.input_name,
                "size": list(self.input_size),
                "windows": [{"width": w.width, "level": w.level, "name": w.name} for w in self.windows],
            },
            "output": {
                "logits": self.logits_output,
                "activation": self.activation,
                "labels": list(self.output_labels),
            },
            "interpolation_degree": self.interpolation_degree,
            "weight": self.weight,
        }
        if self.mean is not None:
            data["input"]["mean"] = list(self.mean)
        if self.std is not None:
            data["input"]["std"] = list(self.std)
        if self.crop != "none":
            data["input"]["crop"] = self.crop
        if self.slab_mm is not None:
            data["input"]["slab_mm"] = self.slab_mm
        if self.context_slices != 1:
            data["input"]["context_slices"] = self.context_slices
        if self.features_output:
            data["output"]["features"] = self.features_output
        if self.cam_weights_file:
            data["cam"] = {"weights_file": self.cam_weights_file, "sha256": self.cam_weights_sha256}
            if self.head_pooling != "avg":
                data["cam"]["pooling"] = self.head_pooling
        if self.block_outputs:
            data["block_outputs"] = [b.to_dict() for b in self.block_outputs]
        return data


@dataclass(frozen=True)
class OperatingPoints:
    """Per-label decision thresholds and the study triage rule (DeepRadiologyNet-style referral).

    A case label is positive when its probability is >= its threshold. Triage looks at
    the case probability of `triage_label`: below `negative_below` is "confident
    negative", above `positive_above` is "confident positive", anything else "refer".
    `triage_prevalence` (manifest key triage.prevalence; optional) is the share of studies with
    haemorrhage at which the triage thresholds' miss and false-positive rates were stated
    (`ichviewer.evaluation.triage`); None when they are shares of the validation set itself.
    `specific_thresholds` (manifest key `specific_thresholds`; optional, subtypes only): the
    threshold at which a called subtype is "positive" rather than "possible"
    (`ichviewer.core.decisions`); each at least the subtype's own threshold. A reader that does
    not know the key ignores it and shows every call as positive, as before.
    """

    thresholds: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(LABELS, 0.5))
    triage_label: str = "ANY"
    negative_below: float = 0.05
    positive_above: float = 0.95
    triage_prevalence: float | None = None
    specific_thresholds: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        th = {str(k): float(v) for k, v in dict(self.thresholds).items()}
        missing = [label for label in LABELS if label not in th]
        if missing:
            raise ValueError(f"operating points: thresholds missing for {missing}")
        unknown = [k for k in th if k not in LABELS]
        if unknown:
            raise ValueError(f"operating points: unknown labels {unknown}")
        for label, t in th.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"operating points: threshold for {label} must be in [0, 1], got {t}")
        object.__setattr__(self, "thresholds", {label: th[label] for label in LABELS})
        if self.triage_label not in LABELS:
            raise ValueError(f"operating points: triage label must be one of {LABELS}, got {self.triage_label!r}")
        if not 0.0 <= self.negative_below <= self.positive_above <= 1.0:
            raise ValueError(
                "operating points: need 0 <= triage negative_below <= positive_above <= 1, "
                f"got {self.negative_below} and {self.positive_above}"
            )
        if self.triage_prevalence is not None and not 0.0 < float(self.triage_prevalence) < 1.0:
            raise ValueError(f"operating points: triage prevalence must be between 0 and 1, got {self.triage_prevalence}")
        if self.specific_thresholds is not None:
            spec = {str(k): float(v) for k, v in dict(self.specific_thresholds).items()}
            wrong = [k for k in spec if k not in SUBTYPES]
            if wrong:
                raise ValueError(f"operating points: specific thresholds are for subtypes only ({list(SUBTYPES)}), got {wrong}")
            for label, t in spec.items():
                if not self.thresholds[label] <= t <= 1.0:
                    raise ValueError(
                        f"operating points: specific threshold for {label} must be in [{self.thresholds[label]:g} "
                        f"(its own threshold), 1], got {t}"
                    )
            object.__setattr__(self, "specific_thresholds", {label: spec[label] for label in SUBTYPES if label in spec})

    def specific_threshold(self, label: str) -> float | None:
        """The label's specific threshold, or None (ANY, or a manifest without one)."""
        return None if self.specific_thresholds is None else self.specific_thresholds.get(label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": dict(self.thresholds),
            "triage": {
                "label": self.triage_label,
                "negative_below": self.negative_below,
                "positive_above": self.positive_above,
                **({"prevalence": self.triage_prevalence} if self.triage_prevalence is not None else {}),
            },
            **({"specific_thresholds": dict(self.specific_thresholds)} if self.specific_thresholds is not None else {}),
        }


@dataclass(frozen=True)
class Aggregation:
    """How per-slice probabilities become a case probability, per label.

    "max" (default): the highest slice. "mean": the mean over slices.
    "top_k_mean": the mean of the k highest slices (k=1 equals "max").
    `any_rule` (manifest key "any"): each slice's ANY is the ensemble's own ANY output
    ("model", the default) or the noisy-OR of its five subtype probabilities ("noisy-or";
    `ichviewer.inference.findings.apply_any_rule`), before slices are aggregated.
    """

    method: str = "max"
    k: int = 3
    any_rule: str = "model"

    def __post_init__(self) -> None:
        if self.method not in AGGREGATIONS:
            raise ValueError(f"aggregation method must be one of {AGGREGATIONS}, got {self.method!r}")
        if int(self.k) < 1:
            raise ValueError(f"aggregation k must be >= 1, got {self.k}")
        if self.any_rule not in ANY_RULES:
            raise ValueError(f"aggregation 'any' must be one of {ANY_RULES}, got {self.any_rule!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "k": self.k} if self.method == "top_k_mean" else {"method": self.method}
        if self.any_rule != "model":
            out["any"] = self.any_rule
        return out


@dataclass(frozen=True)
class EnsembleManifest:
    """A validated ensemble manifest. `directory` is where model files are looked up."""

    name: str
    models: tuple[ModelSpec, ...]
    operating_points: OperatingPoints = field(default_factory=OperatingPoints)
    aggregation: Aggregation = field(default_factory=Aggregation)
    attention_model: str | None = None
    description: str = ""
    #: Member whose features build the atlas and explain findings (default: the attention model).
    explaining_model: str | None = None
    directory: Path = field(default_factory=Path.cwd)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    #: Keys present in the file that this version does not know (kept, not fatal).
    unknown_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an ensemble needs a non-empty name")
        models = tuple(self.models)
        if not models:
            raise ValueError("an ensemble needs at least one model")
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique, repeated: {dupes}")
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "directory", Path(self.directory))
        if self.attention_model is not None:
            spec = self.model(self.attention_model)
            if not spec.has_cam:
                raise ValueError(f"attention model '{self.attention_model}' has no 'cam' entry")
        if self.explaining_model is not None:
            spec = self.model(self.explaining_model)
            if not spec.has_cam:
                raise ValueError(f"explaining model '{self.explaining_model}' has no 'cam' entry")

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r} in ensemble '{self.name}' (has {[m.name for m in self.models]})")

    @property
    def cam_model(self) -> ModelSpec | None:
        """The member that provides attention maps: `attention_model`, else the first with a CAM head."""
        if self.attention_model:
            return self.model(self.attention_model)
        return next((m for m in self.models if m.has_cam), None)

    @property
    def explaining(self) -> ModelSpec | None:
        """The member that builds the atlas and retrieves the prediction basis: `explaining_model`, else `cam_model`.

        Lee et al. 2019 used one model (their ResNet-50, chosen for its localisation);
        by default we use the same member as the attention maps so the heat maps and the
        prediction basis explain the same network.
        """
        if self.explaining_model:
            return self.model(self.explaining_model)
        return self.cam_model

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": MANIFEST_SCHEMA,
            "schema_version": self.written_schema_version,
            "name": self.name,
            "description": self.description,
            "models": [m.to_dict() for m in self.models],
            "operating_points": self.operating_points.to_dict(),
            "aggregation": self.aggregation.to_dict(),
        }
        if self.attention_model:
            data["attention_model"] = self.attention_model
        if self.explaining_model:
            data["explaining_model"] = self.explaining_model
        return data

    @property
    def written_schema_version(self) -> int:
        """The lowest schema version that describes this manifest (see MANIFEST_SCHEMA_VERSION)."""
        return 2 if self.aggregation.any_rule != "model" else 1

    def write(self, path: str | Path | None = None) -> Path:
        """Write the manifest as JSON (default: `directory/manifest.json`) and return the path."""
        out = Path(path) if path is not None else self.directory / MANIFEST_NAME
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return out


# -- reading -----------------------------------------------------------------------------


class _Fields:
    """Typed access to a JSON object that names the manifest and field path in every error."""

    def __init__(self, data: Any, where: str, path: Path) -> None:
        if not isinstance(data, Mapping):
            raise ManifestError(path, f"'{where}' must be a JSON object")
        self.data, self.where, self.path = data, where, path

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.data:
            if required or default is ...:
                raise ManifestError(self.path, f"missing field '{self._name(key)}'")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind in (int, float):
            raise ManifestError(self.path, f"field '{self._name(key)}' must be a number, got {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ManifestError(self.path, f"field '{self._name(key)}' must be {names}, got {value!r}")
        return value

    def sub(self, key: str, *, required: bool = False) -> _Fields:
        return _Fields(self.get(key, dict, {}, required=required), self._name(key), self.path)


def _parse_windows(raw: Any, where: str, path: Path) -> tuple[Window, ...]:
    if not isinstance(raw, list) or not raw:
        raise ManifestError(path, f"'{where}' must be a non-empty list of {{\"width\", \"level\"}} windows")
    out = []
    for i, item in enumerate(raw):
        f = _Fields(item, f"{where}[{i}]", path)
        try:
            out.append(Window(f.get("width", float, required=True), f.get("level", float, required=True), f.get("name", str, "")))
        except ValueError as exc:
            raise ManifestError(path, f"'{where}[{i}]': {exc}") from None
    return tuple(out)


def _parse_model(raw: Any, i: int, path: Path) -> ModelSpec:
    f = _Fields(raw, f"models[{i}]", path)
    inp, out = f.sub("input"), f.sub("output")
    cam = f.sub("cam")
    windows = _parse_windows(inp.data["windows"], f"{inp.where}.windows", path) if "windows" in inp.data else LEE_WINDOWS
    size = inp.get("size", list, [256, 256])
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ManifestError(path, f"field '{inp.where}.size' must be [H, W] integers, got {size!r}")
    mean = inp.get("mean", list, None)
    std = inp.get("std", list, None)
    blocks = []
    for j, raw_block in enumerate(f.get("block_outputs", list, [])):
        b = _Fields(raw_block, f"{f.where}.block_outputs[{j}]", path)
        try:
            tail = b.sub("tail")
            blocks.append(
                BlockOutput(
                    b.get("name", str, required=True),
                    b.get("output", str, required=True),
                    tail_file=tail.get("file", str, None),
                    tail_sha256=tail.get("sha256", str, None),
                    tail_input=tail.get("input", str, "block"),
                    tail_logits=tail.get("logits", str, "logits"),
                )
            )
        except ValueError as exc:
            raise ManifestError(path, f"'{b.where}': {exc}") from None
    try:
        return ModelSpec(
            name=f.get("name", str, required=True),
            version=str(f.get("version", (str, int, float), "0")),
            file=f.get("file", str, required=True),
            sha256=f.get("sha256", str, required=True),
            input_name=inp.get("name", str, "image"),
            input_size=(size[0], size[1]),
            windows=windows,
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None,
            crop=inp.get("crop", str, "none"),
            slab_mm=inp.get("slab_mm", (int, float), None),
            context_slices=inp.get("context_slices", int, 1),
            logits_output=out.get("logits", str, "logits"),
            activation=out.get("activation", str, "sigmoid"),
            output_labels=tuple(out.get("labels", list, list(LABELS))),
            features_output=out.get("features", str, None),
            cam_weights_file=cam.get("weights_file", str, None),
            cam_weights_sha256=cam.get("sha256", str, None),
            interpolation_degree=f.get("interpolation_degree", int, 3),
            weight=f.get("weight", float, 1.0),
            block_outputs=tuple(blocks),
            head_pooling=cam.get("pooling", str, "avg"),
        )
    except (TypeError, ValueError) as exc:
        raise ManifestError(path, f"models[{i}]: {exc}") from None


def _migrate(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring an older manifest up to the current schema (version 1 is the first; nothing to do yet).

    Later versions add optional fields (e.g. intermediate block outputs for the atlas);
    a migration step fills their defaults so old manifests stay loadable.
    """
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ManifestError(path, f"'schema_version' must be a positive integer, got {version!r}")
    if version > MANIFEST_SCHEMA_VERSION:
        raise ManifestError(
            path,
            f"manifest schema version {version} is newer than this ICH Viewer reads "
            f"(up to {MANIFEST_SCHEMA_VERSION}); update ICH Viewer",
        )
    return data


_KNOWN_TOP = {
    "schema", "schema_version", "name", "description", "models", "operating_points", "aggregation",
    "attention_model", "explaining_model",
}


def manifest_from_dict(data: Any, directory: str | Path, *, source: str | Path | None = None) -> EnsembleManifest:
    """Validate a manifest already parsed from JSON; `directory` resolves the model files."""
    path = Path(source) if source is not None else Path(directory) / MANIFEST_NAME
    if not isinstance(data, dict):
        raise ManifestError(path, "the manifest must be a JSON object")
    if data.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
        raise ManifestError(path, f"'schema' must be {MANIFEST_SCHEMA!r}, got {data.get('schema')!r}")
    data = _migrate(data, path)
    top = _Fields(data, "", path)
    raw_models = top.get("models", list, required=True)
    if not raw_models:
        raise ManifestError(path, "'models' is empty: an ensemble needs at least one model")
    models = tuple(_parse_model(m, i, path) for i, m in enumerate(raw_models))
    op = top.sub("operating_points")
    triage = op.sub("triage")
    thresholds = op.get("thresholds", dict, dict.fromkeys(LABELS, 0.5))
    specific = op.get("specific_thresholds", dict, None)
    agg = top.sub("aggregation")
    try:
        operating_points = OperatingPoints(
            thresholds={k: float(v) for k, v in thresholds.items()},
            triage_label=triage.get("label", str, "ANY"),
            negative_below=triage.get("negative_below", float, 0.05),
            positive_above=triage.get("positive_above", float, 0.95),
            triage_prevalence=triage.get("prevalence", float, None),
            specific_thresholds=None if specific is None else {k: float(v) for k, v in specific.items()},
        )
        aggregation = Aggregation(method=agg.get("method", str, "max"), k=agg.get("k", int, 3),
                                  any_rule=agg.get("any", str, "model"))
        return EnsembleManifest(
            name=top.get("name", str, required=True),
            description=top.get("description", str, ""),
            models=models,
            operating_points=operating_points,
            aggregation=aggregation,
            attention_model=top.get("attention_model", str, None),
            explaining_model=top.get("explaining_model", str, None),
            directory=Path(directory),
            schema_version=int(data.get("schema_version", 1)),
            unknown_keys=tuple(sorted(set(data) - _KNOWN_TOP)),
        )
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(path, str(exc).strip("\"'")) from None


def load_manifest(path: str | Path) -> EnsembleManifest:
    """Read and validate `path` (a manifest.json, or a directory holding one)."""
    p = Path(path)
    file = p / MANIFEST_NAME if p.is_dir() else p
    if not file.exists():
        if p.is_dir():
            raise EnsembleNotFoundError(file, f"no {MANIFEST_NAME} in the model directory {p}")
        raise EnsembleNotFoundError(file, "model directory or manifest does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(file, f"cannot read the manifest: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(file, f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    return manifest_from_dict(data, file.parent, source=file)


def default_models_candidates() -> list[Path]:
    """Where the default ensemble is looked for, in order ($ICHVIEWER_MODELS_DIR alone when set)."""
    import ichviewer

    env = os.environ.get(MODELS_ENV)
    if env:  # a site's explicit choice wins outright
        return [Path(env)]
    package = Path(ichviewer.__file__).resolve().parent
    return [
        package / "resources" / "models" / "default",  # installed package
        package.parent / "models" / "default",  # source checkout
    ]


def default_models_dir() -> Path:
    """The default ensemble directory, or EnsembleNotFoundError saying where it was looked for."""
    candidates = default_models_candidates()
    for c in candidates:
        if (c / MANIFEST_NAME).is_file():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise EnsembleNotFoundError(
        None,
        "no bundled model ensemble is installed (models/default is missing; looked in "
        f"{looked}). Pass a model directory with --models DIR or set {MODELS_ENV}; "
        "models/README.md describes what the directory must contain.",
    )

"""Qt-free inference engine: manifest, preprocessing, ONNX Runtime ensemble, CAM, aggregation, triage.

The GUI, CLI and tests use this public API:

    ensemble = load_ensemble(models_dir)            # or None for the bundled models/default
    result = run_study(volume, ensemble, progress=cb, is_cancelled=flag)   # -> StudyResult
    amap = attention_map(volume, slice_index, "SDH", ensemble)            # -> AttentionMap

onnxruntime is imported only when a model is loaded.
"""

from ichviewer.inference.cam import (
    AttentionMap,
    attention_map,
    class_activation_map,
    feature_attention_maps,
    map_distances,
)
from ichviewer.inference.ensemble import Ensemble, load_ensemble
from ichviewer.inference.errors import (
    Cancelled,
    EnsembleNotFoundError,
    InferenceError,
    ManifestError,
    ModelContractError,
)
from ichviewer.inference.findings import (
    CONFIDENT_NEGATIVE,
    CONFIDENT_POSITIVE,
    REFER,
    TRIAGE_CLASSES,
    LabelFinding,
    StudyResult,
    aggregate,
    triage,
)
from ichviewer.inference.manifest import (
    INTERPOLATION_BETAS,
    Aggregation,
    EnsembleManifest,
    ModelSpec,
    OperatingPoints,
    default_models_dir,
    file_sha256,
    load_manifest,
)
from ichviewer.inference.model import LoadedModel, ModelInfo
from ichviewer.inference.study import ProgressCallback, run_study

__all__ = [
    "CONFIDENT_NEGATIVE",
    "CONFIDENT_POSITIVE",
    "INTERPOLATION_BETAS",
    "REFER",
    "TRIAGE_CLASSES",
    "Aggregation",
    "AttentionMap",
    "Cancelled",
    "Ensemble",
    "EnsembleManifest",
    "EnsembleNotFoundError",
    "InferenceError",
    "LabelFinding",
    "LoadedModel",
    "ManifestError",
    "ModelContractError",
    "ModelInfo",
    "ModelSpec",
    "OperatingPoints",
    "ProgressCallback",
    "StudyResult",
    "aggregate",
    "attention_map",
    "class_activation_map",
    "default_models_dir",
    "feature_attention_maps",
    "file_sha256",
    "load_ensemble",
    "load_manifest",
    "map_distances",
    "run_study",
    "triage",
]

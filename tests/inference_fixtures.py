"""Tiny real ONNX models, ensemble directories, volumes and DICOM series for inference tests (shared with other rooms)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ichviewer import LABELS
from ichviewer.core.volume import CTVolume
from ichviewer.inference.manifest import file_sha256


def build_cnn_onnx(
    path: str | Path,
    *,
    input_size: tuple[int, int] = (16, 16),
    channels: int = 3,
    n_features: int = 4,
    widths: tuple[int, ...] | None = None,
    conv_weights: list[np.ndarray] | None = None,
    conv_biases: list[np.ndarray] | None = None,
    head_weight: np.ndarray | None = None,
    head_bias: np.ndarray | None = None,
    strides: tuple[int, ...] = (1,),
    kernel: int = 3,
    input_name: str = "image",
    logits_name: str = "logits",
    features_name: str = "features",
    batch: int | str = "N",
    n_labels: int = 6,
    seed: int = 0,
) -> dict[str, Any]:
    """Write (Conv -> Relu) x len(strides) -> features output; GAP -> Flatten -> Gemm -> logits output.

    Returns the weights used ({"conv_weights", "conv_biases", "head_weight", "head_bias"}),
    head_weight being (n_labels, K) in the model's output order.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n_layers = len(strides)
    # `widths` gives each conv layer's output channels (the last is K); default n_features throughout.
    widths = [channels] + (list(widths) if widths is not None else [n_features] * n_layers)
    n_features = widths[-1]
    if conv_weights is None:
        conv_weights = [
            (rng.standard_normal((widths[i + 1], widths[i], kernel, kernel)) / np.sqrt(widths[i] * kernel * kernel)).astype(np.float32)
            for i in range(n_layers)
        ]
    if conv_biases is None:
        conv_biases = [np.full(widths[i + 1], 0.05, dtype=np.float32) for i in range(n_layers)]
    if head_weight is None:
        head_weight = rng.standard_normal((n_labels, n_features)).astype(np.float32)
    if head_bias is None:
        head_bias = np.linspace(-1.0, 1.0, n_labels).astype(np.float32)
    h, w = input_size
    inits, nodes, prev = [], [], input_name
    for i, (cw, cb, st) in enumerate(zip(conv_weights, conv_biases, strides, strict=True)):
        k = cw.shape[-1]
        inits += [numpy_helper.from_array(np.asarray(cw, np.float32), f"conv{i}.w"), numpy_helper.from_array(np.asarray(cb, np.float32), f"conv{i}.b")]
        out = features_name if i == n_layers - 1 else f"act{i}"
        nodes.append(helper.make_node("Conv", [prev, f"conv{i}.w", f"conv{i}.b"], [f"conv{i}"], pads=[k // 2] * 4, strides=[st, st]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [out]))
        prev = out
    inits += [numpy_helper.from_array(np.asarray(head_weight, np.float32), "head.w"), numpy_helper.from_array(np.asarray(head_bias, np.float32), "head.b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [features_name], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "head.w", "head.b"], [logits_name], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_ich_cnn",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, channels, h, w])],
        [
            helper.make_tensor_value_info(logits_name, TensorProto.FLOAT, [batch, n_labels]),
            helper.make_tensor_value_info(features_name, TensorProto.FLOAT, [batch, n_features, None, None]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ichviewer-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
    return {"conv_weights": conv_weights, "conv_biases": conv_biases, "head_weight": head_weight, "head_bias": head_bias}


def add_member(
    directory: str | Path,
    name: str,
    *,
    degree: int = 3,
    weight: float = 1.0,
    cam: bool = True,
    output_labels: tuple[str, ...] = LABELS,
    version: str = "1.0",
    **build_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build `name`.onnx (+ `name`_cam.npz) in `directory`; return (manifest entry, weights)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / f"{name}.onnx"
    weights = build_cnn_onnx(onnx_path, **build_kwargs)
    size = list(build_kwargs.get("input_size", (16, 16)))
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "input": {"name": build_kwargs.get("input_name", "image"), "size": size},
        "output": {
            "logits": build_kwargs.get("logits_name", "logits"),
            "features": build_kwargs.get("features_name", "features"),
            "labels": list(output_labels),
            "activation": "sigmoid",
        },
        "interpolation_degree": degree,
        "weight": weight,
    }
    if cam:
        npz = directory / f"{name}_cam.npz"
        np.savez(npz, weight=np.asarray(weights["head_weight"], np.float32), bias=np.asarray(weights["head_bias"], np.float32))
        entry["cam"] = {"weights_file": npz.name, "sha256": file_sha256(npz)}
    return entry, weights


def write_manifest(
    directory: str | Path,
    entries: list[dict[str, Any]],
    *,
    name: str = "test-ensemble",
    thresholds: dict[str, float] | None = None,
    negative_below: float = 0.05,
    positive_above: float = 0.95,
    aggregation: dict[str, Any] | None = None,
    specific_thresholds: dict[str, float] | None = None,
    **extra: Any,
) -> Path:
    data = {
        "schema": "ichviewer.ensemble",
        "schema_version": 1,
        "name": name,
        "models": entries,
        "operating_points": {
            "thresholds": thresholds or dict.fromkeys(LABELS, 0.5),
            "triage": {"label": "ANY", "negative_below": negative_below, "positive_above": positive_above},
            **({"specific_thresholds": specific_thresholds} if specific_thresholds is not None else {}),
        },
        "aggregation": aggregation or {"method": "max"},
        **extra,
    }
    path = Path(directory) / "manifest.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def make_volume(hu: np.ndarray, spacing: tuple[float, float, float] = (5.0, 0.5, 0.5), **kwargs: Any) -> CTVolume:
    """A CTVolume from (z, y, x) HU with identity orientation and slices `spacing[0]` mm apart."""
    hu = np.asarray(hu)
    hu = hu.astype(np.int16) if np.issubdtype(hu.dtype, np.integer) else hu.astype(np.float32)
    origins = np.zeros((hu.shape[0], 3))
    origins[:, 2] = np.arange(hu.shape[0]) * spacing[0]
    return CTVolume(hu=hu, spacing=spacing, direction=np.eye(3), slice_origins=origins, **kwargs)


def constant_slices_volume(values_hu: list[float], shape: tuple[int, int] = (16, 16), **kwargs: Any) -> CTVolume:
    """One constant HU value per slice (square slices: the preprocessing keeps each constant exactly)."""
    hu = np.stack([np.full(shape, v, dtype=np.float32) for v in values_hu])
    return make_volume(hu, **kwargs)


def write_dicom_series(volume: CTVolume, out_dir: str | Path, *, description: str = "TEST HEAD") -> list[Path]:
    """Write `volume` as a minimal, valid CT Image Storage series (one file per slice) with pydicom."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = volume.study_uid or generate_uid()
    series_uid = volume.series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for i in range(volume.n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"slice{i:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientName = "Test^Phantom"
        ds.PatientID = "TEST0001"
        ds.StudyDate = "20260101"
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in volume.slice_origins[i]]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [volume.spacing[1], volume.spacing[2]]
        ds.SliceThickness = volume.spacing[0]
        ds.Rows, ds.Columns = volume.hu.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = np.ascontiguousarray(np.round(volume.hu[i]).astype(np.int16)).tobytes()
        path = out / f"slice{i:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths

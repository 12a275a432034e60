"""The model contract: manifests, checksum and signature checks that name the model, corrupt files, providers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ichviewer import LABELS
from ichviewer.core.windowing import LEE_WINDOWS
from ichviewer.inference import (
    EnsembleNotFoundError,
    ManifestError,
    ModelContractError,
    load_ensemble,
    load_manifest,
    run_study,
)
from ichviewer.inference.manifest import default_models_dir, manifest_from_dict
from ichviewer.inference.providers import CPU, resolve_providers
from inference_fixtures import add_member, build_cnn_onnx, constant_slices_volume, write_manifest


@pytest.fixture
def ensemble_dir(tmp_path):
    """Two good members, "alpha" and "beta"; returns (directory, manifest entries)."""
    a = add_member(tmp_path, "alpha", seed=1)[0]
    b = add_member(tmp_path, "beta", seed=2, degree=5)[0]
    write_manifest(tmp_path, [a, b])
    return tmp_path, [a, b]


def _rewrite(directory, entries, **kw):
    write_manifest(directory, entries, **kw)


def test_manifest_defaults_and_round_trip(ensemble_dir):
    directory, _ = ensemble_dir
    manifest = load_manifest(directory)
    assert [m.name for m in manifest.models] == ["alpha", "beta"]
    assert manifest.models[0].windows == LEE_WINDOWS  # default channels: the Lee et al. windows
    assert manifest.models[1].betas == (0.8, 0.6)
    assert manifest.aggregation.method == "max"
    assert manifest.cam_model.name == "alpha"
    again = manifest_from_dict(json.loads(json.dumps(manifest.to_dict())), directory)
    assert again.to_dict() == manifest.to_dict()


def test_minimal_old_style_manifest_still_loads(tmp_path):
    build_cnn_onnx(tmp_path / "m.onnx", input_size=(16, 16))
    from ichviewer.inference.manifest import file_sha256

    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "name": "minimal",
                "models": [{"name": "m", "file": "m.onnx", "sha256": file_sha256(tmp_path / "m.onnx"), "input": {"size": [16, 16]}}],
                "some_future_field": {"ignored": True},
            }
        )
    )
    ensemble = load_ensemble(tmp_path)
    spec = ensemble.models[0].spec
    assert spec.interpolation_degree == 3 and spec.weight == 1.0 and spec.output_labels == LABELS
    assert ensemble.manifest.operating_points.thresholds == dict.fromkeys(LABELS, 0.5)
    assert ensemble.manifest.unknown_keys == ("some_future_field",)
    assert ensemble.cam_model is None  # no CAM entry: the model runs, attention maps are unavailable
    assert run_study(constant_slices_volume([30, 40]), ensemble).complete


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["models"][1].update(interpolation_degree=4), "models[1]: model 'beta': interpolation degree"),
        (lambda d: d.update(schema_version=99), "newer than this ICH Viewer reads"),
        (lambda d: d["models"][0].pop("sha256"), "missing field 'models[0].sha256'"),
        (lambda d: d["operating_points"]["thresholds"].update(SDH=1.5), "threshold for SDH must be in [0, 1]"),
        (lambda d: d["operating_points"]["triage"].update(negative_below=0.9, positive_above=0.1), "negative_below"),
        (lambda d: d["models"][0]["output"].update(labels=["IPH", "IVH", "SDH", "EDH", "SAH"]), "permutation"),
        (lambda d: d["models"][1].update(name="alpha"), "unique"),
        (lambda d: d["aggregation"].update(method="median"), "aggregation method"),
        (lambda d: d["aggregation"].update(any="max-subtype"), "aggregation 'any' must be one of"),
        (lambda d: d["models"][0]["input"].update(windows=[{"width": 0, "level": 40}]), "window width must be positive"),
    ],
)
def test_invalid_manifest_names_file_and_field(ensemble_dir, change, message):
    directory, _ = ensemble_dir
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        load_ensemble(directory)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_json_and_missing_directory(tmp_path):
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(EnsembleNotFoundError, match="does not exist"):
        load_ensemble(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnsembleNotFoundError, match="no manifest.json"):
        load_ensemble(tmp_path / "empty")


def test_missing_default_ensemble_says_so_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("ICHVIEWER_MODELS_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(EnsembleNotFoundError) as info:
        default_models_dir()
    text = str(info.value)
    assert "models/default is missing" in text and "--models" in text and "not-installed" in text
    with pytest.raises(EnsembleNotFoundError):
        load_ensemble()


def test_checksum_mismatch_names_the_model(ensemble_dir):
    directory, entries = ensemble_dir
    with open(directory / "beta.onnx", "ab") as f:
        f.write(b"\0")  # the file changed after the manifest was written
    with pytest.raises(ModelContractError) as info:
        load_ensemble(directory)
    assert info.value.model == "beta"
    assert "model 'beta'" in str(info.value) and "SHA-256 mismatch" in str(info.value)
    assert entries[1]["sha256"] in str(info.value)


def test_missing_and_corrupt_model_files_raise_contract_errors(ensemble_dir):
    directory, entries = ensemble_dir
    (directory / "alpha.onnx").unlink()
    with pytest.raises(ModelContractError, match=r"model 'alpha'.*model file is missing"):
        load_ensemble(directory)
    # Garbage with a matching checksum: ONNX Runtime must refuse it without taking the process down.
    (directory / "alpha.onnx").write_bytes(b"this is not an onnx model" * 40)
    from ichviewer.inference.manifest import file_sha256

    entries[0]["sha256"] = file_sha256(directory / "alpha.onnx")
    _rewrite(directory, entries)
    with pytest.raises(ModelContractError, match=r"model 'alpha'.*ONNX Runtime cannot load the model"):
        load_ensemble(directory)
    # A truncated real model, same story.
    build_cnn_onnx(directory / "alpha.onnx", seed=1)
    data = (directory / "alpha.onnx").read_bytes()
    (directory / "alpha.onnx").write_bytes(data[: len(data) // 2])
    entries[0]["sha256"] = file_sha256(directory / "alpha.onnx")
    _rewrite(directory, entries)
    with pytest.raises(ModelContractError, match=r"model 'alpha'"):
        load_ensemble(directory)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e["input"].update(name="x"), "input 'x' named in the manifest is not in the model (it has ['image'])"),
        (lambda e: e["input"].update(windows=[{"width": 40, "level": 40}, {"width": 80, "level": 40}]), "has 3 channels, the manifest lists 2 windows"),
        (lambda e: e["input"].update(size=[32, 32]), "height is 16, the manifest says input size [32, 32]"),
        (lambda e: e["output"].update(logits="scores"), "logits output 'scores' is not in the model"),
        (lambda e: e["output"].update(features="conv9"), "feature output 'conv9' is not in the model"),
    ],
)
def test_signature_mismatch_names_model_and_mismatch(ensemble_dir, edit, message):
    directory, entries = ensemble_dir
    edit(entries[1])
    _rewrite(directory, entries)
    with pytest.raises(ModelContractError) as info:
        load_ensemble(directory)
    assert "model 'beta'" in str(info.value)
    assert message in str(info.value)


def test_wrong_label_count_and_inconsistent_cam_weights(tmp_path):
    five = add_member(tmp_path / "five", "five-labels", n_labels=5, cam=False)[0]
    write_manifest(tmp_path / "five", [five])
    with pytest.raises(ModelContractError, match="model 'five-labels'.*has 5 labels, the manifest lists 6"):
        load_ensemble(tmp_path / "five")
    entry = add_member(tmp_path / "cam", "headless", seed=3)[0]
    np.savez(tmp_path / "cam" / "headless_cam.npz", weight=np.ones((6, 4), np.float32), bias=np.zeros(6, np.float32))
    from ichviewer.inference.manifest import file_sha256

    entry["cam"]["sha256"] = file_sha256(tmp_path / "cam" / "headless_cam.npz")
    write_manifest(tmp_path / "cam", [entry])
    with pytest.raises(ModelContractError, match="model 'headless'.*CAM weights do not reproduce the model's logits"):
        load_ensemble(tmp_path / "cam")


def test_model_giving_nan_is_refused(tmp_path):
    entry = add_member(tmp_path, "nan-head", cam=False, head_bias=np.full(6, np.nan, np.float32))[0]
    write_manifest(tmp_path, [entry])
    with pytest.raises(ModelContractError, match="model 'nan-head'.*not finite"):
        load_ensemble(tmp_path)


def test_cuda_request_falls_back_to_cpu_quietly_and_reports_cpu(ensemble_dir, capfd):
    directory, _ = ensemble_dir
    ensemble = load_ensemble(directory, providers=["CUDAExecutionProvider"])
    out, err = capfd.readouterr()
    # No GPU here: the provider that really ran is the CPU, and nothing alarming was printed.
    assert ensemble.provider == CPU
    assert not ensemble.on_gpu
    assert all(m.session.get_providers()[0] == CPU for m in ensemble.models)
    assert any("CUDAExecutionProvider could not start here" in n for n in ensemble.notes)
    assert out == "" and err == ""
    result = run_study(constant_slices_volume([30, 40, 50]), ensemble)
    assert result.provider == CPU
    auto = load_ensemble(directory)  # auto: TensorRT/CUDA if they work, else CPU
    out, err = capfd.readouterr()
    assert auto.provider == CPU and out == "" and err == ""
    assert resolve_providers("cpu") == ([CPU], [])


def test_importing_the_engine_does_not_load_onnxruntime():
    code = "import sys, ichviewer.inference, ichviewer.commands.infer; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and out.stderr == ""

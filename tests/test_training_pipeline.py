"""Training recipe end to end: loss goes down on phantoms, ONNX export matches PyTorch, resume, inference round trip, CLI."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ichviewer import LABELS
from ichviewer.core.phantom import generate_case
from ichviewer.training.data import build_phantom_cache, plan_phantom_cases
from ichviewer.training.export import ExportMismatchError, export_member, verify_onnx
from ichviewer.training.losses import class_weights, weighted_bce
from ichviewer.training.networks import build_network
from ichviewer.training.trainer import CheckpointError, TrainConfig, train_member

SIZE = 32


@pytest.fixture(scope="module")
def phantom_caches():
    """Tiny phantom train/validation caches (64-pixel phantoms, 32-pixel inputs), generated once."""
    train = build_phantom_cache(plan_phantom_cases(6, "train", seed=3), SIZE, matrix=64, with_maps=True)
    val = build_phantom_cache(plan_phantom_cases(4, "validation", seed=3), SIZE, matrix=64)
    return train, val


def _config(**kw) -> TrainConfig:
    base = dict(name="t", family="resnet", width=4, input_size=SIZE, epochs=2, batch_size=8, steps_per_epoch=4, lr=1e-2, seed=5, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_a_few_training_steps_reduce_the_weighted_loss_on_phantom_slices(phantom_caches):
    train, _ = phantom_caches
    torch.manual_seed(0)
    net = build_network("vgg", width=4)
    any_col = train.labels[:, LABELS.index("ANY")]
    rows = np.concatenate([np.flatnonzero(any_col > 0)[:8], np.flatnonzero(any_col == 0)[::7][:8]])
    x = torch.from_numpy(train.float_images(rows))
    y = torch.from_numpy(train.labels[rows])
    ap, an = (torch.as_tensor(a, dtype=torch.float32) for a in class_weights(train.labels))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    losses = []
    for _ in range(30):
        loss = weighted_bce(net(x)[0], y, ap, an)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    before, after = losses[0], float(np.mean(losses[-3:]))
    assert after < 0.7 * before


def test_export_matches_pytorch_and_a_wrong_model_is_caught(tmp_path, phantom_caches):
    _, val = phantom_caches
    torch.manual_seed(1)
    net = build_network("inception", width=4).eval()
    spec, check = export_member(net, tmp_path, "inc", SIZE, val.float_images(np.arange(4)), interpolation_degree=3)
    assert check.max_logit_diff <= 1e-4 and check.n_images == 6
    assert (tmp_path / spec.file).is_file() and (tmp_path / spec.cam_weights_file).is_file()
    (block,) = spec.block_outputs  # the atlas extension: the penultimate block and its tail to the logits
    assert (tmp_path / block.tail_file).is_file() and block.tail_sha256
    with np.load(tmp_path / spec.cam_weights_file) as z:
        np.testing.assert_allclose(z["weight"], net.classifier.weight.detach().numpy())
    other = build_network("inception", width=4).eval()  # different random weights
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        verify_onnx(other, tmp_path / spec.file, val.float_images(np.arange(4)))


@pytest.mark.parametrize(
    "options",
    [{}, {"hard_fraction": 0.5, "precision": "bf16"}, {"lesion_map_weight": 1.0}, {"noisy_or_any_weight": 1.0}],
    ids=["plain", "mining-bf16", "lesion-maps", "noisy-or-any"],
)
def test_resume_continues_from_the_checkpoint_to_the_same_weights(tmp_path, phantom_caches, options):
    train, val = phantom_caches
    full = train_member(_config(**options), train, val, tmp_path / "a.pt")
    # Interrupted after the first epoch (4 steps), then resumed (with the mining losses).
    part = train_member(_config(**options), train, val, tmp_path / "b.pt", max_steps=4)
    assert len(part.history) == 1
    resumed = train_member(_config(**options), train, val, tmp_path / "b.pt", resume=True)
    assert [h.epoch for h in resumed.history] == [0, 1] and resumed.steps == 8
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, atol=1e-5, rtol=1e-4)
    with pytest.raises(CheckpointError, match="other settings"):
        train_member(_config(lr=5e-3, **options), train, val, tmp_path / "b.pt", resume=True)
    # Same options, other data: a label left out of the loss (as --ignore-invisible-positives does).
    known = train.known.copy()
    known[np.flatnonzero(train.labels[:, -1] > 0)[0]] = 0
    with pytest.raises(CheckpointError, match="other data"):
        train_member(_config(**options), replace(train, known=known), val, tmp_path / "b.pt", resume=True)


def test_noisy_or_any_loss_changes_training_and_is_checked(phantom_caches):
    train, val = phantom_caches
    with_term = train_member(_config(noisy_or_any_weight=1.0, epochs=1, steps_per_epoch=2, seed=9), train, val)
    without = train_member(_config(epochs=1, steps_per_epoch=2, seed=9), train, val)
    w1 = with_term.model.classifier.weight.detach()
    w0 = without.model.classifier.weight.detach()
    assert not torch.allclose(w1, w0)  # the same seed and batches: only the loss differs
    # study-level labels (MIL bags): the term reads each subtype's bag maximum
    study = replace(train, cases=[replace(c, slice_labelled=False) for c in train.cases])
    mil = train_member(_config(noisy_or_any_weight=1.0, epochs=1, steps_per_epoch=2, seed=9), study, val)
    assert all(np.isfinite(h.train_loss) for h in mil.history)
    assert "noisy_or_any_weight" not in _config().fingerprint()  # old checkpoints still resume
    with pytest.raises(ValueError, match="noisy-OR ANY loss weight"):
        _config(noisy_or_any_weight=-1.0)


def test_twin_rank_loss_trains_on_paired_twins_and_is_checked(phantom_caches):
    from ichviewer.training.data import add_twin_negatives
    from ichviewer.training.recipe import RecipeConfig

    no_twins, val = phantom_caches
    train = build_phantom_cache(add_twin_negatives(plan_phantom_cases(3, "train", seed=3)), SIZE, matrix=64)
    ranked = train_member(_config(pair_twins=True, twin_rank_weight=1.0, epochs=1, steps_per_epoch=2, seed=9), train, val)
    paired = train_member(_config(pair_twins=True, epochs=1, steps_per_epoch=2, seed=9), train, val)
    assert all(np.isfinite(h.train_loss) for h in ranked.history)
    assert not torch.allclose(ranked.model.classifier.weight.detach(), paired.model.classifier.weight.detach())
    assert "twin_rank_weight" not in _config().fingerprint()  # old checkpoints still resume
    with pytest.raises(ValueError, match="needs --pair-twins"):
        _config(twin_rank_weight=1.0)
    with pytest.raises(ValueError, match="needs --pair-twins"):
        RecipeConfig(out="x", pair_twins=True, twins=False, twin_rank_weight=1.0)
    with pytest.raises(ValueError, match="twin rank loss weight"):
        _config(pair_twins=True, twin_rank_weight=-1.0)
    with pytest.raises(ValueError, match="counterfactual twins"):
        train_member(_config(pair_twins=True, twin_rank_weight=1.0, epochs=1, steps_per_epoch=1), no_twins, val)


def test_lesion_map_loss_trains_a_head_beside_the_network_and_needs_maps(phantom_caches):
    train, val = phantom_caches
    with_maps = train_member(_config(lesion_map_weight=1.0, epochs=1, steps_per_epoch=2, seed=9), train, val)
    without = train_member(_config(epochs=1, steps_per_epoch=2, seed=9), train, val)
    # the exported network is the same shape either way (the map head is not part of it) ...
    assert with_maps.model.state_dict().keys() == without.model.state_dict().keys()
    # ... but the map loss changed its training
    assert any(not torch.equal(v, without.model.state_dict()[k]) for k, v in with_maps.model.state_dict().items())
    no_maps = replace(train, maps=None)
    with pytest.raises(ValueError, match="lesion maps"):
        train_member(_config(lesion_map_weight=1.0, epochs=1, steps_per_epoch=1), no_maps, val)
    study = replace(train, cases=[replace(c, slice_labelled=False) for c in train.cases])
    with pytest.raises(ValueError, match="lesion maps"):
        train_member(_config(lesion_map_weight=1.0, epochs=1, steps_per_epoch=1), study, val)
    with pytest.raises(ValueError, match="lesion map weight"):
        _config(lesion_map_weight=-1.0)
    assert "lesion_map_weight" not in _config().fingerprint()  # older checkpoints still resume
    assert _config(lesion_map_weight=0.5).fingerprint()["lesion_map_weight"] == 0.5


def test_mimic_map_loss_trains_a_head_beside_the_network_and_needs_mimic_maps(phantom_caches):
    train, val = phantom_caches
    m = train.input_size // 8
    six = replace(train, maps=np.concatenate([train.maps, np.zeros((train.n_slices, 1, m, m), np.uint8)], axis=1))
    six.maps[::5, 5, 1, 1] = 255  # a mimic cell on every fifth slice
    with_mimic = train_member(_config(mimic_map_weight=1.0, epochs=1, steps_per_epoch=2, seed=9), six, val)
    without = train_member(_config(epochs=1, steps_per_epoch=2, seed=9), six, val)
    assert with_mimic.model.state_dict().keys() == without.model.state_dict().keys()  # not exported
    assert any(not torch.equal(v, without.model.state_dict()[k]) for k, v in with_mimic.model.state_dict().items())
    with pytest.raises(ValueError, match="mimic maps"):
        train_member(_config(mimic_map_weight=1.0, epochs=1, steps_per_epoch=1), train, val)  # five channels only
    train_member(_config(mimic_map_weight=1.0, lesion_map_weight=1.0, epochs=1, steps_per_epoch=1), six, val)


def test_lesion_map_stride_puts_the_head_on_the_finer_block_and_leaves_no_hook(tmp_path, phantom_caches):
    train, val = phantom_caches
    config = _config(input_stem=True, lesion_map_weight=1.0, lesion_map_stride=8, epochs=1, steps_per_epoch=2)
    result = train_member(config, train, val, tmp_path / "fine.pt")
    head = torch.load(tmp_path / "fine.pt", map_location="cpu", weights_only=False)["map_head"]
    # resnet, width 4, with the input stem: the stride-8 block is the 2w-channel residual block, not the 6w last features
    assert head["weight"].shape == (len(LABELS), 8, 1, 1) and result.model.n_features == 24
    assert not any(m._forward_hooks for m in result.model.modules())  # the tap is removed after training
    coarse = train_member(replace(config, lesion_map_stride=None), train, val, tmp_path / "coarse.pt")
    assert torch.load(tmp_path / "coarse.pt", weights_only=False)["map_head"]["weight"].shape[1] == 24
    assert any(not torch.equal(v, coarse.model.state_dict()[k]) for k, v in result.model.state_dict().items())
    assert config.fingerprint()["lesion_map_stride"] == 8 and "lesion_map_stride" not in coarse.config.fingerprint()
    with pytest.raises(ValueError, match="no block at lesion-map stride 32; choose one of \\[8, 16\\]"):
        train_member(replace(config, lesion_map_stride=32), train, val)
    with pytest.raises(ValueError, match="needs a lesion-map or mimic-map weight"):
        _config(lesion_map_stride=8)
    with pytest.raises(ValueError, match="at least 8"):
        _config(lesion_map_weight=1.0, lesion_map_stride=4)


def test_recipe_checks_the_lesion_map_stride_for_every_member_before_data(tmp_path):
    from ichviewer.training.recipe import RecipeConfig

    RecipeConfig(out=tmp_path, input_size=256, input_stem=True, lesion_map_weight=1.0, lesion_map_stride=16)
    with pytest.raises(ValueError, match="network at input size 128 has no block at lesion-map stride 16; choose one of \\[8\\]"):
        RecipeConfig(out=tmp_path, input_size=128, lesion_map_weight=1.0, lesion_map_stride=16)


def test_the_wide_stem_is_checked_and_old_checkpoints_still_resume(tmp_path, capsys):
    from ichviewer.cli import main
    from ichviewer.training.recipe import RecipeConfig

    assert "wide_stem" not in _config().fingerprint()  # checkpoints made before the option still resume
    assert _config(input_stem=True, wide_stem=True).fingerprint()["wide_stem"] is True
    with pytest.raises(ValueError, match="input stem"):
        _config(wide_stem=True)
    with pytest.raises(ValueError, match="--wide-stem needs --input-stem"):
        RecipeConfig(out=tmp_path, wide_stem=True)
    rc = main(["train", "--out", str(tmp_path / "o"), "--wide-stem"])
    assert rc == 2 and "--wide-stem needs --input-stem" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cache_size_estimate_covers_the_built_cache(phantom_caches):
    from ichviewer.training.data import estimate_cache_bytes

    train, val = phantom_caches
    for cache, plans, maps in ((train, plan_phantom_cases(6, "train", seed=3), True),
                               (val, plan_phantom_cases(4, "validation", seed=3), False)):
        built = cache.images.nbytes + cache.labels.nbytes + (cache.maps.nbytes if maps else 0)
        assert built <= estimate_cache_bytes(plans, SIZE, maps) <= 1.5 * built
    # a four-window cache (--windows brain-blood-subdural-bone) holds a third more pixels
    built_four = val.images.nbytes * 4 // 3 + val.labels.nbytes
    assert built_four <= estimate_cache_bytes(plans, SIZE, False, channels=4) <= 1.5 * built_four


def test_recipe_refuses_to_start_without_disk_for_its_caches(tmp_path, monkeypatch):
    import shutil as shutil_module

    from ichviewer.training import recipe
    from ichviewer.training.data import TrainingDataError

    config = recipe.RecipeConfig(out=tmp_path / "out", work_dir=tmp_path / "work", n_train=4, n_validation=2)
    full = shutil_module.disk_usage(tmp_path)._replace(free=10_000_000)
    monkeypatch.setattr(recipe.shutil, "disk_usage", lambda path: full)
    with pytest.raises(TrainingDataError, match=r"cache: the training caches need about 0\.\d GB and the disk has 0\.0 GB free"):
        recipe.load_data(config)
    assert not list((tmp_path / "work" / "cache").iterdir())  # refused before generating anything


def test_calibration_cases_follow_the_validation_cases_and_need_phantoms(tmp_path):
    from ichviewer.training import recipe

    config = recipe.RecipeConfig(out=tmp_path / "out", n_train=4, n_validation=3, calibration_cases=5)
    plans = recipe.phantom_split_plans(config)
    assert [len(plans[k]) for k in ("validation", "calibration")] == [3, 5]
    # the next plans of the validation split: what a larger validation set would hold, none of its cases
    longer = recipe.phantom_split_plans(recipe.RecipeConfig(out=tmp_path / "out", n_train=4, n_validation=8))
    assert [p.seed for p in plans["validation"] + plans["calibration"]] == [p.seed for p in longer["validation"]]
    assert not {p.seed for p in plans["calibration"]} & {p.seed for p in plans["train"]}
    assert "calibration" not in recipe.phantom_split_plans(recipe.RecipeConfig(out=tmp_path / "out"))
    with pytest.raises(ValueError, match="calibration cases are planned phantoms"):
        recipe.RecipeConfig(out=tmp_path / "o", source="dicom", data_dir=tmp_path, labels_csv=tmp_path / "l.csv",
                            calibration_cases=10)
    with pytest.raises(ValueError, match="calibration cases must be >= 0"):
        recipe.RecipeConfig(out=tmp_path / "o", calibration_cases=-1)


def test_recipe_refuses_the_lesion_map_loss_without_phantoms(tmp_path):
    from ichviewer.training.recipe import RecipeConfig

    with pytest.raises(ValueError, match="needs phantoms"):
        RecipeConfig(out=tmp_path, source="dicom", data_dir=tmp_path, labels_csv=tmp_path / "l.csv", lesion_map_weight=1.0)
    with pytest.raises(ValueError, match="--ignore-invisible-positives needs phantoms"):
        RecipeConfig(out=tmp_path, source="dicom", data_dir=tmp_path, labels_csv=tmp_path / "l.csv", ignore_invisible=True)


def test_specialist_member_and_study_level_mil_training_run(phantom_caches):
    train, val = phantom_caches
    r = train_member(_config(specialist="SDH", epochs=1, steps_per_epoch=2), train, val)
    assert r.steps == 2
    study = replace(train, cases=[replace(c, slice_labelled=False) for c in train.cases])
    r = train_member(_config(epochs=1, steps_per_epoch=2), study, val)
    assert r.steps == 2 and np.isfinite(r.history[0].train_loss)


def test_cli_trains_an_ensemble_that_the_inference_engine_loads_and_runs(tmp_path):
    from ichviewer.cli import main
    from ichviewer.inference.ensemble import load_ensemble
    from ichviewer.inference.interpolation import combine, interpolated_images, neighbours
    from ichviewer.inference.manifest import file_sha256
    from ichviewer.core.windowing import BRAIN_SUBDURAL_BONE_WINDOWS
    from ichviewer.inference.preprocessing import geometry_for, preprocess_slices, slab_slices
    from ichviewer.inference.study import run_study

    out = tmp_path / "ens"
    argv = [
        "train", "--out", str(out), "--n-cases", "4", "3", "--epochs", "1", "--steps-per-epoch", "2",
        "--input-size", str(SIZE), "--matrix", "64", "--width", "4", "--batch-size", "4", "--workers", "1",
        "--threads", "1", "--ensemble", "weighted", "--seed", "2", "--any-rule", "noisy-or",
        "--calibration-cases", "3",
    ]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["vgg", "resnet", "inception", "mobilenet"]
    total = sum((out / m["file"]).stat().st_size for m in manifest["models"])
    assert total < 40e6
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    for m in manifest["models"]:
        assert sums[m["file"]] == file_sha256(out / m["file"]) == m["sha256"]
        tail = m["block_outputs"][0]["tail"]
        assert sums[tail["file"]] == tail["sha256"]
    # the explaining member is chosen as Lee et al. chose theirs: by how often its maps find the
    # validation phantoms' lesions (ties: the tighter map, then member order), and the choice is logged
    log_choice = json.loads((out / "training_log.json").read_text())["explaining_model_choice"]
    figs = log_choice["members"]
    assert set(figs) == {"vgg", "resnet", "inception", "mobilenet"} and log_choice["previous"] == "resnet"
    best = max(f["found"] for f in figs.values())
    assert figs[log_choice["chosen"]]["found"] == best and all(f["n"] == figs["vgg"]["n"] > 0 for f in figs.values())
    assert manifest["explaining_model"] == manifest["attention_model"] == log_choice["chosen"]
    assert sums["manifest.json"] == file_sha256(out / "manifest.json")
    assert sums["training_log.json"] == file_sha256(out / "training_log.json")
    # the recipe's input: a square around the head, brain/subdural/bone windows, thin slices in 5 mm slabs
    inp = manifest["models"][0]["input"]
    assert inp["crop"] == "head" and inp["slab_mm"] == 5.0
    assert [(w["width"], w["level"]) for w in inp["windows"]] == [(w.width, w.level) for w in BRAIN_SUBDURAL_BONE_WINDOWS]
    log = json.loads((out / "training_log.json").read_text())
    assert set(log["ensemble"]["validation_ap"]) == set(LABELS)
    assert log["ensemble"]["method"] == "weighted" and abs(sum(log["ensemble"]["weights"]) - 1) < 1e-9
    assert log["seconds_total"] > 0 and all(m["train_seconds"] > 0 for m in log["members"])
    # which code trained it: this package, and its git commit when it runs from a checkout
    src = log["source_code"]
    import ichviewer

    assert Path(src["package_dir"]) == Path(ichviewer.__file__).resolve().parent
    assert src["commit"] is None or (len(src["commit"]) == 40 and isinstance(src["dirty"], bool))
    from ichviewer.training.recipe import package_digest

    assert src["package_sha256"] == package_digest()
    # `ichviewer train` keeps freed memory in the process (allocator.py) and says so in its log
    assert log["hardware"]["allocator"]["applied"] is (platform.libc_ver()[0] == "glibc")
    # ANY from the subtypes (noisy-OR): in the manifest, so the engine computes what the thresholds were chosen on
    assert manifest["aggregation"] == {"method": "max", "any": "noisy-or"} and manifest["schema_version"] == 2
    ops = manifest["operating_points"]
    assert set(ops["thresholds"]) == set(LABELS)
    assert 0 <= ops["triage"]["negative_below"] <= ops["triage"]["positive_above"] <= 1
    # each subtype with validation positives gets its "positive" tier, never below its own threshold
    chosen = log["operating_points"]["specific"]
    assert set(ops.get("specific_thresholds", {})) == set(chosen) <= set(LABELS[:5])
    assert all(ops["thresholds"][lab] <= t == chosen[lab]["threshold"] for lab, t in ops.get("specific_thresholds", {}).items())
    # the operating points were placed on the validation and the calibration cases together
    assert log["operating_points"]["fitted_on"]["calibration_cases"] == 3 == log["data"]["calibration"]["cases"]
    assert log["operating_points"]["n_validation_cases"] == 6

    ensemble = load_ensemble(out, providers="cpu")  # checks checksums, signatures and the CAM head
    volume = generate_case(4242, subtype="IPH", matrix=64, slice_mm=1.0).volume  # thin: exercises the slabs
    result = run_study(volume, ensemble)
    assert result.complete and result.slice_probabilities.shape == (volume.n_slices, len(LABELS))
    sp = result.slice_probabilities
    np.testing.assert_allclose(sp[:, LABELS.index("ANY")], 1 - np.prod(1 - sp[:, :5], axis=1), rtol=1e-9)
    # the atlas extension: block activations come out of the same run, with the tail's gradient weights
    resnet = ensemble.model("resnet")
    spec = ensemble.manifest.models[0]
    geom = geometry_for(volume, (SIZE, SIZE), spec.crop)
    x1 = preprocess_slices(slab_slices(volume, [0, 1], spec.slab_mm), geom, spec.windows)
    logits, blocks = resnet.block_features(x1, ["block_penultimate"])
    assert blocks["block_penultimate"].ndim == 4 and logits.shape == (2, len(LABELS))

    # The engine's member probabilities equal the PyTorch model on the same inputs.
    import ichviewer.training.networks as nets

    vgg_spec = ensemble.manifest.models[0]
    net = nets.build_network("vgg", width=4)
    state = torch.load(out / "work" / "checkpoints" / "vgg.pt", weights_only=False)["best_state"]
    net.load_state_dict(state)
    net.eval()
    x = preprocess_slices(slab_slices(volume, np.arange(volume.n_slices), spec.slab_mm), geom, spec.windows)
    idx = np.arange(volume.n_slices)
    lo, hi = neighbours(idx, volume.n_slices)
    imgs = interpolated_images(x, x[lo], x[hi], vgg_spec.interpolation_degree)
    with torch.no_grad():
        logits = net(torch.from_numpy(imgs.reshape((-1,) + x.shape[1:])))[0]
    p = torch.sigmoid(logits.double()).numpy().reshape(imgs.shape[0], volume.n_slices, len(LABELS))
    np.testing.assert_allclose(result.member_probabilities[0], combine(p, vgg_spec.interpolation_degree), atol=1e-4)

    # --resume on a finished run retrains nothing and rewrites the same models.
    before = {m["file"]: m["sha256"] for m in manifest["models"]}
    assert main(argv + ["--resume"]) == 0
    again = json.loads((out / "manifest.json").read_text())
    assert {m["file"]: m["sha256"] for m in again["models"]} == before

    # Operating points chosen again without retraining (ichviewer.training.recalibrate): the rebuilt
    # validation and calibration cases, scored through ONNX, reproduce the training run's figures.
    import shutil

    from ichviewer.inference.manifest import load_manifest
    from ichviewer.training.recalibrate import RecalibrationError, main as recalibrate_main

    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("work"))
    # as a log written before the subtypes' specific thresholds existed: recalibrating adds them at the default
    old_log = json.loads((copy / "training_log.json").read_text())
    del old_log["command_config"]["min_specificity"]
    (copy / "training_log.json").write_text(json.dumps(old_log))
    assert recalibrate_main([str(copy), "--triage-prevalence", "0.2", "--workers", "1", "--threads", "1"]) == 0
    log2 = json.loads((copy / "training_log.json").read_text())
    rec = log2["operating_points_replaced"][-1]
    assert rec["changed_options"]["triage_prevalence"] == 0.2 and log2["command_config"]["triage_prevalence"] == 0.2
    assert rec["added_options"] == {"min_specificity": 0.95} and log2["command_config"]["min_specificity"] == 0.95
    assert all(abs(d) <= 0.005 for d in rec["reproduction_check"]["threshold_differences"].values())
    assert rec["previous_operating_points"] == json.loads((out / "training_log.json").read_text())["operating_points"]
    assert log2["operating_points"]["fitted_on"]["calibration_cases"] == 3
    m2 = load_manifest(copy / "manifest.json")
    assert m2.operating_points.triage_prevalence == 0.2 and log2["operating_points"]["triage"]["prevalence"] == 0.2
    assert m2.operating_points.thresholds == pytest.approx(load_manifest(out / "manifest.json").operating_points.thresholds, abs=0.005)
    load_ensemble(copy, providers="cpu")  # checksums rewritten and true
    # More calibration cases (--calibration-cases): the run's own choice (validation + its 3) is
    # reproduced first, then the thresholds are chosen on validation + 6 and the log says so.
    more = tmp_path / "more-calibration"
    shutil.copytree(out, more, ignore=shutil.ignore_patterns("work"))
    assert recalibrate_main([str(more), "--calibration-cases", "6", "--workers", "1", "--threads", "1"]) == 0
    log3 = json.loads((more / "training_log.json").read_text())
    rec3 = log3["operating_points_replaced"][-1]
    assert all(abs(d) <= 0.005 for d in rec3["reproduction_check"]["threshold_differences"].values())
    assert log3["operating_points"]["fitted_on"]["calibration_cases"] == 6 and log3["command_config"]["calibration_cases"] == 6
    assert rec3["changed_options"]["calibration_cases"] == 6 and "plus 6 calibration cases" in rec3["reason"]
    load_ensemble(more, providers="cpu")

    # The explaining member chosen again on a folder written before the choice existed
    # (`python -m ichviewer.training.explainer`): the same manifest bytes as the recipe's own step.
    from ichviewer.training.explainer import main as explainer_main

    old = tmp_path / "before-choice"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("work"))
    m_old = json.loads((old / "manifest.json").read_text())
    m_old["attention_model"] = m_old["explaining_model"] = "resnet"
    (old / "manifest.json").write_text(json.dumps(m_old, indent=2) + "\n")
    log_old = json.loads((old / "training_log.json").read_text())
    del log_old["explaining_model_choice"]
    (old / "training_log.json").write_text(json.dumps(log_old, indent=2) + "\n")
    assert explainer_main([str(old)]) == 0
    assert (old / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert json.loads((old / "training_log.json").read_text())["explaining_model_choice"] == log_choice
    load_ensemble(old, providers="cpu")  # SHA256SUMS rewritten for the new manifest and log
    # A log the rebuilt validation does not match: refused, nothing written.
    log2["ensemble"]["validation_case_auc_any"] = 0.123
    (copy / "training_log.json").write_text(json.dumps(log2))
    before_manifest = (copy / "manifest.json").read_bytes()
    with pytest.raises(RecalibrationError, match="does not reproduce"):
        from ichviewer.training.recalibrate import recalibrate

        recalibrate(copy, triage_prevalence=0.1, workers=1, threads=1)
    assert (copy / "manifest.json").read_bytes() == before_manifest


def test_cli_without_torch_says_how_to_install_the_train_extra(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from ichviewer.cli import main\n"
        f"sys.exit(main(['train', '--out', {str(tmp_path / 'x')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "pip install -e '.[train]'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_reports_bad_labels_without_a_traceback(tmp_path, capsys):
    from ichviewer.cli import main

    (tmp_path / "d").mkdir()
    bad = tmp_path / "labels.csv"
    bad.write_text("series_uid,iph\n1.2.3,1\n")
    rc = main(["train", "--out", str(tmp_path / "o"), "--source", "dicom", "--data", str(tmp_path / "d"), "--labels", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "labels.csv" in err and "no 'any' column" in err


def test_a_network_with_the_wide_stem_exports_and_matches_pytorch(tmp_path):
    torch.manual_seed(3)
    net = build_network("mobilenet", width=4, input_stem=True, wide_stem=True).eval()
    images = np.random.default_rng(1).random((3, 3, 2 * SIZE, 2 * SIZE), dtype=np.float32)
    spec, check = export_member(net, tmp_path, "wide", 2 * SIZE, images, interpolation_degree=1)
    assert check.max_logit_diff <= 1e-4 and (tmp_path / spec.file).is_file()


def test_a_network_with_the_input_stem_exports_and_matches_pytorch(tmp_path):
    torch.manual_seed(2)
    net = build_network("resnet", width=4, input_stem=True).eval()
    images = np.random.default_rng(0).random((3, 3, 2 * SIZE, 2 * SIZE), dtype=np.float32)
    spec, check = export_member(net, tmp_path, "stem", 2 * SIZE, images, interpolation_degree=1)
    assert check.max_logit_diff <= 1e-4 and (tmp_path / spec.file).is_file()

    # The atlas block is the network's penultimate block, not the stem: the same shape as
    # without the stem at half the input size, and its tail is the last block only.
    import onnxruntime as ort

    plain = build_network("resnet", width=4).eval()
    plain_spec, _ = export_member(plain, tmp_path / "plain", "plain", SIZE, images[:, :, ::2, ::2].copy(), interpolation_degree=1)

    def block_shape(directory, file):
        sess = ort.InferenceSession(str(directory / file), providers=["CPUExecutionProvider"])
        size = sess.get_inputs()[0].shape[-1]
        out = sess.run(["block_penultimate"], {"image": np.zeros((1, 3, size, size), np.float32)})[0]
        return out.shape

    assert block_shape(tmp_path, spec.file) == block_shape(tmp_path / "plain", plain_spec.file)
    tails = sorted(tmp_path.glob("stem_tail_*.onnx")), sorted((tmp_path / "plain").glob("plain_tail_*.onnx"))
    assert len(tails[0]) == len(tails[1]) == 1
    assert abs(tails[0][0].stat().st_size - tails[1][0].stat().st_size) < 4096


def test_train_cli_defaults_and_choices_are_the_recipes():
    """commands/train.py repeats the recipe's defaults and choices so the CLI imports no training code; keep them equal."""
    from dataclasses import fields

    from ichviewer.cli import build_parser
    from ichviewer.core.windowing import INPUT_WINDOW_SETS
    from ichviewer.inference.manifest import ANY_RULES, HEAD_POOLINGS
    from ichviewer.inference.preprocessing import CROPS
    from ichviewer.training.recipe import RecipeConfig
    from ichviewer.training.trainer import HARD_STRATA, INTERPOLATIONS, POSITIVE_SAMPLINGS, PRECISIONS

    args = build_parser().parse_args(["train", "--out", "x"])
    recipe = RecipeConfig(out="x")
    for name in ("epochs", "seed", "input_size", "windows", "crop", "interpolation", "slab_mm", "width", "batch_size",
                 "steps_per_epoch", "lr", "positive_fraction", "hard_fraction", "precision", "input_stem", "matrix",
                 "thin_every", "thickness_planes", "pair_twins", "positive_sampling", "lesion_map_weight",
                 "lesion_map_stride", "any_rule", "calibration_cases", "noisy_or_any_weight", "twin_rank_weight", "pooling",
                 "hard_stratum"):
        assert name in {f.name for f in fields(RecipeConfig)}
        assert getattr(args, name) == getattr(recipe, name), name
    assert (args.n_cases[0], args.n_cases[1]) == (recipe.n_train, recipe.n_validation)
    assert (not args.no_twins) == recipe.twins
    choices = {a.dest: tuple(a.choices) for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.choices}
    assert choices["precision"] == PRECISIONS and choices["interpolation"] == INTERPOLATIONS
    assert choices["positive_sampling"] == POSITIVE_SAMPLINGS and choices["hard_stratum"] == HARD_STRATA
    assert choices["any_rule"] == ANY_RULES and choices["pooling"] == HEAD_POOLINGS
    assert set(choices["windows"]) == set(INPUT_WINDOW_SETS) and set(choices["crop"]) == set(CROPS)


def test_devset_scores_onnx_members_on_cache_slices_as_pytorch_does(tmp_path, phantom_caches):
    from ichviewer.evaluation.metrics import roc_auc
    from ichviewer.training.devset import ANY, case_scores, dev_figures, format_figures, member_slice_probabilities

    _, val = phantom_caches
    torch.manual_seed(2)
    net = build_network("resnet", width=4).eval()
    spec, _ = export_member(net, tmp_path, "res", SIZE, val.float_images(np.arange(4)))
    probs = member_slice_probabilities(tmp_path / spec.file, val, batch=5, threads=1)
    with torch.inference_mode():
        expected = torch.sigmoid(net(torch.from_numpy(val.float_images(np.arange(val.n_slices))))[0]).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    # the case score is the highest slice; a member twice is the same ensemble as once
    fig = dev_figures(val, {"a": probs, "b": probs})
    # weights combine members as the engine does (normalised weighted mean, then the ANY rule)
    other = probs[::-1].copy()
    weighted = dev_figures(val, {"a": probs, "b": other}, weights={"a": 3.0, "b": 1.0})
    assert weighted["ensemble_weights"] == {"a": 0.75, "b": 0.25}
    mix = 0.75 * probs + 0.25 * other
    assert weighted["ensemble_slice_auc"] == pytest.approx(roc_auc(val.labels[:, ANY], mix[:, ANY]))
    assert "weighted ensemble (a 0.75, b 0.25)" in format_figures(weighted)
    y = val.case_labels()[:, ANY]
    top = np.asarray([probs[c.start : c.stop, ANY].max() for c in val.cases])
    np.testing.assert_allclose(case_scores(val, probs)[:, ANY], top)
    assert fig["members"]["a"] == fig["ensemble_case_auc"] == pytest.approx(roc_auc(y, top))
    assert fig["ensemble_slice_auc"] == pytest.approx(roc_auc(val.labels[:, ANY], probs[:, ANY]))
    assert sum(b["n"] for b in fig["size_bins"].values()) == int(y.sum())
    assert "member a: case AUC" in format_figures(fig)
    # each study's score, and the AUC within the thin studies when they hold both kinds
    assert fig["case_scores"] == {c.case_id: pytest.approx(t) for c, t in zip(val.cases, top)}
    thin = np.asarray([c.slice_mm < 5 for c in val.cases])
    if thin.any() and 0 < y[thin].sum() < thin.sum():
        assert fig["thin_case_auc"] == pytest.approx(roc_auc(y[thin], top[thin]))
    else:
        assert fig["thin_case_auc"] is None


def test_devset_build_makes_a_larger_set_that_starts_with_the_default_one(tmp_path):
    from ichviewer.training.data import SliceCache
    from ichviewer.training.devset import DEV_SEED, DEV_SPLIT, main

    out = tmp_path / "dev.npz"
    assert main(["build", str(out), "--n", "2", "--input-size", "32"]) == 0
    cases = SliceCache.load(out).cases
    planned = plan_phantom_cases(3, DEV_SPLIT, seed=DEV_SEED)[:2]
    assert len(cases) == 2 and [c.kind for c in cases] == [p.kind for p in planned]
    four = tmp_path / "dev4.npz"
    assert main(["build", str(four), "--n", "1", "--input-size", "32", "--windows", "brain-blood-subdural-bone"]) == 0
    cache = SliceCache.load(four)
    assert cache.images.shape[1] == 4 and cache.meta["windows"][1] == [40.0, 60.0]  # the blood window, second


def test_devset_reads_slices_with_eq4_interpolation_as_the_engine_does(tmp_path, phantom_caches):
    from ichviewer.inference.interpolation import interpolation_betas
    from ichviewer.inference.manifest import EnsembleManifest
    from ichviewer.training.devset import main, manifest_members, member_slice_probabilities

    _, val = phantom_caches
    torch.manual_seed(3)
    net = build_network("vgg", width=4).eval()
    with torch.no_grad():  # an untrained head says ~0.5 to everything; make its outputs follow the pixels
        net.classifier.weight.mul_(300.0)
    spec, _ = export_member(net, tmp_path, "v", SIZE, val.float_images(np.arange(4)))
    got = member_slice_probabilities(tmp_path / spec.file, val, batch=7, threads=1, degree=3)
    # Eq. 4 written out slice by slice: the slice (weight 1) and its blends with each neighbour in
    # its own case (weight beta); the first and last slice use their one neighbour on both sides.
    (beta,) = interpolation_betas(3)
    x = torch.from_numpy(val.float_images(np.arange(val.n_slices)))
    with torch.inference_mode():
        p = lambda t: torch.sigmoid(net(t)[0]).numpy()  # noqa: E731
        expected = np.empty((val.n_slices, 6))
        for c in val.cases:
            for s in range(c.start, c.stop):
                lo = s - 1 if s > c.start else s + 1
                up = s + 1 if s < c.stop - 1 else s - 1
                xs = x[s : s + 1]
                mixed = (p(xs) + beta * p(beta * xs + (1 - beta) * x[lo : lo + 1])
                         + beta * p(beta * xs + (1 - beta) * x[up : up + 1])) / (1 + 2 * beta)
                expected[s] = mixed[0]
    plain = member_slice_probabilities(tmp_path / spec.file, val, threads=1)
    change, error = np.abs(expected - plain).max(), np.abs(got - expected).max()
    assert error < 0.05 * change  # matches Eq. 4 far more closely than the slice alone does
    # `score` takes each member's degree from the manifest beside it, and 1 without one
    EnsembleManifest(name="t", models=(replace(spec, interpolation_degree=3, weight=0.4),), directory=tmp_path).write()
    windows = [[w.width, w.level] for w in spec.windows]
    assert manifest_members([tmp_path / spec.file]) == {
        str(tmp_path / spec.file): {"degree": 3, "weight": 0.4, "context_slices": 1, "windows": windows}
    }
    elsewhere = tmp_path / "elsewhere" / "x.onnx"
    assert manifest_members([elsewhere]) == {str(elsewhere): {"degree": 1, "weight": 1.0, "context_slices": 1}}
    cache_path = tmp_path / "dev.npz"
    val.save(cache_path)
    for degree in ("manifest", "1"):
        out = tmp_path / f"fig-{degree}.json"
        assert main(["score", str(cache_path), str(tmp_path / spec.file), "--json", str(out), "--degree", degree]) == 0
        fig = json.loads(out.read_text())
        assert fig["interpolation_degrees"] == {spec.file.removesuffix(".onnx"): 3 if degree == "manifest" else 1}
    # a cache built with other windows than the member's manifest is refused, not scored
    replace(val, meta={**val.meta, "windows": [[80.0, 40.0], [40.0, 60.0], [200.0, 80.0], [2800.0, 600.0]]}).save(cache_path)
    assert main(["score", str(cache_path), str(tmp_path / spec.file)]) == 2


_TRAIN_AND_HASH = """
import hashlib, sys
from ichviewer.training.allocator import tune_allocator_for_training
from ichviewer.training.data import build_phantom_cache, plan_phantom_cases
from ichviewer.training.trainer import TrainConfig, train_member
state = tune_allocator_for_training()
train = build_phantom_cache(plan_phantom_cases(4, "train", seed=3), 32, matrix=64, with_maps=True)
config = TrainConfig(name="t", family="resnet", width=4, input_size=32, epochs=1, batch_size=8, steps_per_epoch=3,
                     seed=5, threads=1, lesion_map_weight=3.0)
model = train_member(config, train, train).model
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.state_dict().values()))
print(state["applied"], digest.hexdigest())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator tuning is glibc's mallopt")
def test_allocator_tuning_is_applied_and_trains_bit_identical_weights():
    runs = {}
    for flag in ("0", "1"):
        env = dict(os.environ, ICHVIEWER_MALLOC_TUNING=flag)
        out = subprocess.run([sys.executable, "-c", _TRAIN_AND_HASH], env=env, capture_output=True, text=True, check=True)
        runs[flag] = out.stdout.split()
    assert runs["0"][0] == "False" and runs["1"][0] == "True"
    assert runs["0"][1] == runs["1"][1]


def test_source_code_revision_names_no_commit_for_a_package_outside_its_checkout(tmp_path, monkeypatch):
    import ichviewer.training.recipe as recipe

    # An installed copy whose folder lies inside some other repository (a venv in a checkout):
    # that repository's commit is not the code's.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "other project"], check=True)
    fake = tmp_path / "venv" / "lib" / "site-packages" / "ichviewer" / "training" / "recipe.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(recipe, "__file__", str(fake))
    (fake.parent / "data.py").write_text("x = 1\n")
    src = recipe.source_code_revision()
    digest = src.pop("package_sha256")
    assert src == {"package_dir": str(fake.parents[1]), "commit": None, "dirty": None}
    # the source digest names the code even so, and changes with any byte of it
    assert digest == recipe.package_digest(fake.parents[1]) and len(digest) == 64
    (fake.parent / "data.py").write_text("x = 2\n")
    assert recipe.package_digest(fake.parents[1]) != digest


@pytest.mark.parametrize("pooling", ["lse", "max"])
def test_a_pooled_head_trains_exports_and_passes_the_inference_contract(tmp_path, phantom_caches, pooling):
    """Departure 26: per-cell logits pooled by LSE or max; the manifest says so and the engine checks it."""
    from ichviewer.inference.ensemble import load_ensemble
    from ichviewer.inference.errors import ModelContractError
    from ichviewer.inference.manifest import EnsembleManifest, pool_cell_logits

    train, val = phantom_caches
    result = train_member(_config(pooling=pooling, epochs=1, steps_per_epoch=2), train, val)
    assert result.model.pooling == pooling and math.isfinite(result.history[-1].train_loss)
    assert _config(pooling=pooling).fingerprint()["pooling"] == pooling and "pooling" not in _config().fingerprint()
    images = val.float_images(np.arange(3))
    with torch.no_grad():  # two steps leave the cells nearly equal; spread them so the poolings differ
        result.model.classifier.weight.mul_(200.0)
    spec, check = export_member(result.model, tmp_path, "pooled", SIZE, images, interpolation_degree=1)
    assert check.max_logit_diff <= 1e-4 and spec.head_pooling == pooling
    # The exported logits are the pooled per-cell logits of the exported features and CAM weights.
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / spec.file), providers=["CPUExecutionProvider"])
    logits, feats = sess.run(["logits", "features"], {"image": images})
    cam = np.load(tmp_path / spec.cam_weights_file)
    cells = np.einsum("nkhw,ck->nchw", feats, cam["weight"]) + cam["bias"][None, :, None, None]
    np.testing.assert_allclose(pool_cell_logits(cells.reshape(3, 6, -1), pooling), logits, atol=1e-4)
    assert not np.allclose(cells.reshape(3, 6, -1).mean(-1), logits, atol=1e-2)  # not what GAP gives
    manifest = EnsembleManifest(name="pooled", models=(spec,), directory=tmp_path)
    path = manifest.write()
    assert json.loads(path.read_text())["models"][0]["cam"]["pooling"] == pooling
    load_ensemble(tmp_path, providers="cpu")  # the head check reproduces the logits with this pooling
    data = json.loads(path.read_text())
    data["models"][0]["cam"]["pooling"] = "avg"  # a manifest that misdescribes the head is refused
    path.write_text(json.dumps(data))
    with pytest.raises(ModelContractError, match="avg pooling"):
        load_ensemble(tmp_path, providers="cpu")


def test_context_slice_members_read_each_slice_with_its_neighbours_everywhere_the_app_runs_them(tmp_path, phantom_caches):
    """`--context-slices 3` (departure 30): the manifest says so, and the engine, the attention map and the
    atlas all give the member the slice with its two neighbours, as it was trained."""
    from ichviewer.atlas import PhantomSource, build_atlas, open_atlas
    from ichviewer.atlas.retrieval import retrieve
    from ichviewer.cli import main
    from ichviewer.inference.cam import attention_map, slice_features
    from ichviewer.inference.ensemble import load_ensemble
    from ichviewer.inference.interpolation import combine, interpolated_images, neighbours
    from ichviewer.inference.preprocessing import geometry_for, model_inputs, preprocess_slices, slab_slices
    from ichviewer.inference.study import run_study

    out = tmp_path / "ens"
    argv = [
        "train", "--out", str(out), "--n-cases", "4", "3", "--epochs", "1", "--steps-per-epoch", "2",
        "--input-size", str(SIZE), "--matrix", "64", "--width", "4", "--batch-size", "4", "--workers", "1",
        "--threads", "1", "--seed", "3", "--families", "resnet", "--context-slices", "3",
    ]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"][0]["input"]["context_slices"] == 3
    log = json.loads((out / "training_log.json").read_text())
    assert log["members"][0]["config"]["context_slices"] == 3 and log["command_config"]["context_slices"] == 3

    ensemble = load_ensemble(out, providers="cpu")
    spec = ensemble.manifest.models[0]
    assert spec.context_slices == 3 and spec.input_channels == 9
    volume = generate_case(77, subtype="SDH", matrix=64, slice_mm=1.0).volume  # thin: slabs as well
    n = volume.n_slices
    # The engine, in chunks that cut between a slice and its neighbours' neighbours
    result = run_study(volume, ensemble, chunk=3)
    geom = geometry_for(volume, spec.input_size, spec.crop)
    x = preprocess_slices(slab_slices(volume, np.arange(n), spec.slab_mm), geom, spec.windows)

    def stack(rows):
        lo, hi = neighbours(rows, n)
        return np.concatenate([x[lo], x[rows], x[hi]], axis=1)

    idx = np.arange(n)
    lo, hi = neighbours(idx, n)
    imgs = interpolated_images(stack(idx), stack(lo), stack(hi), spec.interpolation_degree)
    net = build_network("resnet", width=4, in_channels=9)
    net.load_state_dict(torch.load(out / "work" / "checkpoints" / "resnet.pt", weights_only=False)["best_state"])
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(imgs.reshape((-1,) + imgs.shape[2:])))[0]
    p = torch.sigmoid(logits.double()).numpy().reshape(imgs.shape[0], n, len(LABELS))
    np.testing.assert_allclose(result.member_probabilities[0], combine(p, spec.interpolation_degree), atol=1e-4)
    # The development set's scoring (and recalibration) reads the ONNX member as training predicted it
    from ichviewer.training.devset import manifest_members, member_slice_probabilities
    from ichviewer.training.trainer import predict_slices

    _, val = phantom_caches
    assert manifest_members([out / "resnet.onnx"])[str(out / "resnet.onnx")]["context_slices"] == 3
    np.testing.assert_allclose(
        member_slice_probabilities(out / "resnet.onnx", val, threads=1, degree=3, context_slices=3),
        predict_slices(net, val, degree=3, context_slices=3), atol=1e-4,
    )
    # One slice or a few, as the attention map and the atlas ask for them: the same stacks, ends included
    rows = np.asarray([0, n // 2, n - 1])
    np.testing.assert_allclose(model_inputs(volume, rows, spec), stack(rows), atol=1e-6)
    s = int(np.argmax(result.slice_probabilities[:, LABELS.index("SDH")]))
    member_logits, _, _ = slice_features(volume, s, ensemble.model("resnet"))
    with torch.no_grad():
        np.testing.assert_allclose(member_logits, net(torch.from_numpy(stack(np.asarray([s]))))[0][0].numpy(), atol=1e-4)
    amap = attention_map(volume, s, "SDH", ensemble)
    assert amap.map.shape == volume.hu.shape[1:] and np.isfinite(amap.map).all()
    # The atlas is built from and searched with nine-channel inputs
    summary = build_atlas(ensemble, PhantomSource(range(1, 4), subtypes=("SDH", "none"), matrix=64), out / "resnet.atlas.sqlite",
                          fraction=0.1)
    assert summary.n_training_images > 0
    with open_atlas(summary.path) as atlas:
        found = retrieve(volume, s, "SDH", atlas, ensemble)
    assert found.model == "resnet" and 0.0 <= found.probability <= 1.0


def test_a_manifest_whose_context_slices_do_not_fit_the_model_is_refused_by_name(tmp_path):
    import shutil

    from ichviewer.inference.ensemble import load_ensemble
    from ichviewer.inference.errors import ModelContractError

    default = Path(__file__).resolve().parents[1] / "models" / "default"
    copy = tmp_path / "ens"
    shutil.copytree(default, copy, ignore=shutil.ignore_patterns("*.atlas.sqlite", "other_sets"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["input"]["context_slices"] = 3
    (copy / "manifest.json").write_text(json.dumps(manifest))
    w = len(manifest["models"][0]["input"]["windows"])  # the bundled ensemble's window count (4 since stop 36)
    with pytest.raises(ModelContractError, match=rf"has {w} channels, the manifest lists {w} windows x 3 context slices = {3 * w} channels"):
        load_ensemble(copy, providers="cpu")
    manifest["models"][0]["input"]["context_slices"] = 5
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match=r"context_slices must be one of \[1, 3\], got 5"):
        load_ensemble(copy, providers="cpu")


def test_the_explaining_member_is_the_one_whose_maps_find_the_most_lesions():
    from ichviewer.training.explainer import ExplainerChoiceError, choose_explaining_member

    order = ["vgg", "resnet", "inception", "mobilenet"]
    figs = {"vgg": {"found": 29, "n": 55, "mean_area_fraction": 0.43}, "resnet": {"found": 20, "n": 55, "mean_area_fraction": 0.36},
            "inception": {"found": 40, "n": 55, "mean_area_fraction": 0.38}, "mobilenet": {"found": 28, "n": 55, "mean_area_fraction": 0.30}}
    assert choose_explaining_member(figs, order) == "inception"
    # a tie on lesions found goes to the tighter map, then to the manifest's member order
    figs["mobilenet"]["found"] = 40
    assert choose_explaining_member(figs, order) == "mobilenet"
    figs["mobilenet"]["mean_area_fraction"] = 0.38
    assert choose_explaining_member(figs, order) == "inception"
    with pytest.raises(ExplainerChoiceError):
        choose_explaining_member({}, order)


def test_the_bundled_folder_checksums_cover_every_file_it_runs_and_explains_with():
    import subprocess

    from ichviewer.evaluation.site_operating_points import ensemble_files
    from ichviewer.inference.manifest import checksummed_names

    default = Path(__file__).resolve().parents[1] / "models" / "default"
    listed = set(checksummed_names(default))
    needed = set(ensemble_files(default)) - {"SHA256SUMS"}
    assert needed <= listed, f"not in SHA256SUMS: {sorted(needed - listed)}"
    assert any(n.endswith(".atlas.sqlite") for n in listed)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=default, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from Linux /proc")
def test_peak_resident_memory_is_the_child_process_own_not_its_parents():
    # A parent holding 400 MB starts a small child: ru_maxrss in the child reports the parent's
    # figure (it survives fork and exec); peak_resident_mb, which the benchmarks print, does not.
    from ichviewer.training.allocator import peak_resident_mb

    held = np.ones(400 * 2**20 // 8)  # noqa: F841 (kept alive while the child runs)
    code = ("import json, resource; from ichviewer.training.allocator import peak_resident_mb; "
            "print(json.dumps([peak_resident_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))")
    own, inherited = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert inherited > 400 and own < inherited - 200
    assert peak_resident_mb() > 400  # this process's own peak holds the array

"""Inference arithmetic on tiny real ONNX models: interpolation (Lee et al. Eq. 4), ensembling, aggregation,
triage, progress and cancellation, and CAM (Eqs. 5-7) against analytic maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ichviewer import LABELS
from ichviewer.core.windowing import multi_window
from ichviewer.inference import (
    Aggregation,
    Cancelled,
    attention_map,
    load_ensemble,
    run_study,
)
from ichviewer.inference.preprocessing import SliceGeometry, preprocess_slices
from inference_fixtures import add_member, constant_slices_volume, make_volume, write_manifest

# The paper's inference betas (Lee et al. 2019, Methods), written out independently of the code.
PAPER_BETAS = {3: [0.67], 5: [0.8, 0.6], 7: [0.86, 0.72, 0.58], 9: [0.89, 0.78, 0.67, 0.56]}
# Tissue window W40/L40 maps HU v to (v - 20) / 40 on channel 0.
SLICE_HU = [20.0, 40.0, 60.0, 30.0, 50.0]
SLICE_MEAN = [(v - 20.0) / 40.0 for v in SLICE_HU]  # 0, 0.5, 1, 0.25, 0.75
HEAD_W = np.array([4.0, -3.0, 2.0, 0.5, -1.0, 6.0])
HEAD_B = np.array([-2.0, 1.0, -0.5, 0.0, 0.3, -3.0])


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def mean_model(directory, name="mean", *, degree=3, weight=1.0, output_labels=LABELS, head_w=HEAD_W, head_b=HEAD_B):
    """A model whose logit for label l is head_w[l] * mean(channel 0) + head_b[l] (1x1 conv picks channel 0)."""
    order = [LABELS.index(label) for label in output_labels]
    return add_member(
        directory,
        name,
        degree=degree,
        weight=weight,
        output_labels=output_labels,
        n_features=1,
        conv_weights=[np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 3, 1, 1)],
        conv_biases=[np.zeros(1, np.float32)],
        head_weight=np.asarray(head_w, np.float32)[order].reshape(6, 1),
        head_bias=np.asarray(head_b, np.float32)[order],
    )[0]


def expected_slice(s: int, label: int, degree: int, means=SLICE_MEAN, w=HEAD_W, b=HEAD_B) -> float:
    """Hand formula: original weight 1, each interpolated image weight beta, normalised; mirrored ends."""
    n = len(means)
    lo = s - 1 if s > 0 else s + 1
    hi = s + 1 if s < n - 1 else s - 1

    def p(m: float) -> float:
        return _sigmoid(w[label] * m + b[label])

    betas = PAPER_BETAS.get(degree, [])
    num = p(means[s]) + sum(bt * (p(bt * means[s] + (1 - bt) * means[lo]) + p(bt * means[s] + (1 - bt) * means[hi])) for bt in betas)
    return num / (1 + 2 * sum(betas))


@pytest.mark.parametrize("degree", [3, 5, 7, 9])
def test_interpolation_matches_hand_computed_values_at_every_slice(tmp_path, degree):
    write_manifest(tmp_path, [mean_model(tmp_path, degree=degree)])
    result = run_study(constant_slices_volume(SLICE_HU), load_ensemble(tmp_path), chunk=2)
    assert result.complete and result.slices_done == len(SLICE_HU)
    expected = np.array([[expected_slice(s, j, degree) for j in range(6)] for s in range(len(SLICE_HU))])
    np.testing.assert_allclose(result.slice_probabilities, expected, rtol=1e-5, atol=1e-6)


def test_interpolation_literal_values_for_degree_3_first_slice_and_degree_5_middle(tmp_path):
    # Worked by hand for IPH (w=4, b=-2). Degree 3, slice 0 (mean 0, only neighbour mean 0.5):
    # interpolated mean 0.67*0 + 0.33*0.5 = 0.165 on both sides;
    # p = (s(-2) + 2 * 0.67 * s(4*0.165 - 2)) / 2.34 = 0.169772.
    d3, d5 = tmp_path / "d3", tmp_path / "d5"
    write_manifest(d3, [mean_model(d3, degree=3)])
    write_manifest(d5, [mean_model(d5, degree=5)])
    volume = constant_slices_volume(SLICE_HU[:4])
    r3 = run_study(volume, load_ensemble(d3))
    assert r3.slice_probabilities[0, 0] == pytest.approx(0.169772, abs=2e-6)
    # Degree 5, slice 2 (mean 1.0, neighbours 0.5 and 0.25), betas 0.8 and 0.6: 0.806121.
    r5 = run_study(volume, load_ensemble(d5))
    assert r5.slice_probabilities[2, 0] == pytest.approx(0.806121, abs=2e-6)


def test_degree_1_uses_the_original_image_only(tmp_path):
    write_manifest(tmp_path, [mean_model(tmp_path, degree=1)])
    result = run_study(constant_slices_volume(SLICE_HU), load_ensemble(tmp_path))
    expected = [[_sigmoid(HEAD_W[j] * m + HEAD_B[j]) for j in range(6)] for m in SLICE_MEAN]
    np.testing.assert_allclose(result.slice_probabilities, expected, rtol=1e-5)


def test_model_output_order_is_mapped_to_the_project_labels(tmp_path):
    straight, shuffled = tmp_path / "a", tmp_path / "b"
    write_manifest(straight, [mean_model(straight)])
    write_manifest(shuffled, [mean_model(shuffled, output_labels=("ANY", "SAH", "EDH", "SDH", "IVH", "IPH"))])
    volume = constant_slices_volume(SLICE_HU)
    a = run_study(volume, load_ensemble(straight)).slice_probabilities
    b = run_study(volume, load_ensemble(shuffled)).slice_probabilities
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert a[:, LABELS.index("ANY")].max() != pytest.approx(a[:, LABELS.index("IPH")].max())


def test_ensemble_is_the_weighted_mean_of_members(tmp_path):
    # Constant models: head weights 0, so each outputs sigmoid(bias) everywhere.
    pa = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    pb = np.array([0.9, 0.7, 0.5, 0.3, 0.1, 0.05])
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    a = mean_model(tmp_path, "a", head_w=np.zeros(6), head_b=logit(pa), weight=1.0)
    b = mean_model(tmp_path, "b", head_w=np.zeros(6), head_b=logit(pb), weight=3.0, degree=5)
    write_manifest(tmp_path, [a, b])
    ensemble = load_ensemble(tmp_path)
    result = run_study(constant_slices_volume(SLICE_HU), ensemble)
    expected = (1 * pa + 3 * pb) / 4
    np.testing.assert_allclose(result.slice_probabilities, np.tile(expected, (len(SLICE_HU), 1)), rtol=1e-5)
    np.testing.assert_allclose(result.member_probabilities[0], np.tile(pa, (len(SLICE_HU), 1)), rtol=1e-5)
    assert [m.name for m in result.models] == ["a", "b"]


def test_any_can_be_the_noisy_or_of_the_ensembles_subtypes(tmp_path):
    # aggregation.any = "noisy-or": each slice's ANY is 1 - prod(1 - p_subtype) of the weighted-mean
    # subtype probabilities, not the members' own ANY; the other labels and the members are unchanged.
    pa = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    pb = np.array([0.9, 0.7, 0.5, 0.3, 0.1, 0.05])
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    a = mean_model(tmp_path, "a", head_w=np.zeros(6), head_b=logit(pa), weight=1.0)
    b = mean_model(tmp_path, "b", head_w=np.zeros(6), head_b=logit(pb), weight=3.0)
    write_manifest(tmp_path, [a, b], aggregation={"method": "max", "any": "noisy-or"})
    ensemble = load_ensemble(tmp_path)
    assert ensemble.manifest.aggregation.any_rule == "noisy-or"
    result = run_study(constant_slices_volume(SLICE_HU), ensemble)
    mean = (1 * pa + 3 * pb) / 4
    expected = mean.copy()
    expected[5] = 1 - np.prod(1 - mean[:5])  # 1 - 0.3*0.425*0.55*0.675*0.8
    assert expected[5] == pytest.approx(0.962132, abs=1e-6)
    np.testing.assert_allclose(result.slice_probabilities, np.tile(expected, (len(SLICE_HU), 1)), rtol=1e-5)
    np.testing.assert_allclose(result.member_probabilities[1], np.tile(pb, (len(SLICE_HU), 1)), rtol=1e-5)
    assert result.case["ANY"].probability == pytest.approx(expected[5], rel=1e-5)
    # Written back with schema version 2, so an app without the rule refuses it rather than misreading it.
    data = ensemble.manifest.to_dict()
    assert data["schema_version"] == 2 and data["aggregation"] == {"method": "max", "any": "noisy-or"}
    write_manifest(tmp_path, [a, b])
    assert load_ensemble(tmp_path).manifest.to_dict()["schema_version"] == 1


def test_equal_weights_by_default_and_batched_run_equals_slice_by_slice(tmp_path):
    rng = np.random.default_rng(3)
    a = add_member(tmp_path, "a", degree=3, seed=1, input_size=(16, 16))[0]
    b = add_member(tmp_path, "b", degree=5, seed=2, input_size=(20, 12), strides=(2, 1))[0]
    del a["weight"], b["weight"]
    write_manifest(tmp_path, [a, b])
    ensemble = load_ensemble(tmp_path)
    volume = make_volume(rng.integers(-50, 120, (7, 22, 18)).astype(np.int16), spacing=(5.0, 0.6, 0.5))
    result = run_study(volume, ensemble, chunk=3)
    # Reference: every slice alone, each model alone, preprocessing each call.
    ref = np.zeros((len(ensemble.models), 7, 6))
    for mi, model in enumerate(ensemble.models):
        spec = model.spec
        geom = SliceGeometry(volume.hu.shape[1:], volume.spacing[1:], spec.input_size)
        for s in range(7):
            lo, hi = (s - 1 if s else 1), (s + 1 if s < 6 else 5)
            x, xl, xh = (preprocess_slices(volume.hu[i], geom)[0] for i in (s, lo, hi))
            images, weights = [x], [1.0]
            for bt in PAPER_BETAS[spec.interpolation_degree]:
                images += [bt * x + (1 - bt) * xl, bt * x + (1 - bt) * xh]
                weights += [bt, bt]
            probs = model.probabilities(np.stack(images))
            ref[mi, s] = np.average(probs, axis=0, weights=weights)
    np.testing.assert_allclose(result.member_probabilities, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.slice_probabilities, ref.mean(axis=0), rtol=1e-4, atol=1e-6)


def test_case_level_is_max_over_slices_and_configurable(tmp_path):
    write_manifest(tmp_path / "max", [mean_model(tmp_path / "max", degree=1)])
    write_manifest(tmp_path / "mean", [mean_model(tmp_path / "mean", degree=1)], aggregation={"method": "mean"})
    write_manifest(
        tmp_path / "top2", [mean_model(tmp_path / "top2", degree=1)], aggregation={"method": "top_k_mean", "k": 2}
    )
    volume = constant_slices_volume(SLICE_HU)
    per_slice = run_study(volume, load_ensemble(tmp_path / "max")).slice_probabilities
    r_max = run_study(volume, load_ensemble(tmp_path / "max"))
    r_mean = run_study(volume, load_ensemble(tmp_path / "mean"))
    r_top2 = run_study(volume, load_ensemble(tmp_path / "top2"))
    np.testing.assert_allclose(r_max.case_probabilities, per_slice.max(axis=0))
    np.testing.assert_allclose(r_mean.case_probabilities, per_slice.mean(axis=0))
    np.testing.assert_allclose(r_top2.case_probabilities, np.sort(per_slice, axis=0)[-2:].mean(axis=0))
    assert r_max.aggregation == Aggregation("max")


@pytest.mark.parametrize(
    ("p_any", "triage_class"),
    [(0.01, "confident negative"), (0.5, "refer"), (0.99, "confident positive"), (0.05, "refer")],
)
def test_decisions_and_triage_at_the_manifest_operating_points(tmp_path, p_any, triage_class):
    probs = np.array([0.2, 0.45, 0.46, 0.9, 0.1, p_any])
    thresholds = {"IPH": 0.3, "IVH": 0.45, "SDH": 0.5, "EDH": 0.5, "SAH": 0.05, "ANY": 0.5}
    entry = mean_model(tmp_path, head_w=np.zeros(6), head_b=np.log(probs / (1 - probs)), degree=1)
    write_manifest(tmp_path, [entry], thresholds=thresholds, negative_below=0.05, positive_above=0.95)
    # Constant slices are no head (test_applicability.py): the check is off to test the thresholds alone.
    result = run_study(constant_slices_volume(SLICE_HU[:3]), load_ensemble(tmp_path), check_head=False)
    decisions = {label: f.decision for label, f in result.case.items()}
    own = {label: f.own_threshold_reached for label, f in result.case.items()}
    assert own == {"IPH": False, "IVH": True, "SDH": False, "EDH": True, "SAH": True, "ANY": p_any >= 0.5}
    # 0.45 >= 0.45: at the threshold counts as reached.
    study_positive = p_any >= 0.5
    assert result.study_positive is study_positive
    assert decisions["ANY"] == ("positive" if study_positive else "negative")
    # A subtype is named only in a study positive for haemorrhage (ichviewer.core.decisions).
    for label in ("IVH", "EDH", "SAH"):
        assert decisions[label] == ("positive" if study_positive else "negative")
        assert result.case[label].held_back is (not study_positive)
    assert decisions["IPH"] == decisions["SDH"] == "negative"
    assert not result.case["IPH"].held_back and not result.case["ANY"].held_back
    assert result.case["IVH"].threshold == 0.45
    assert result.triage == triage_class
    assert result.positive_slices("EDH") == ([0, 1, 2] if study_positive else [])
    assert result.positive_slices("ANY") == ([0, 1, 2] if study_positive else [])


def test_progress_reports_each_chunk_in_slice_order_with_immutable_partials(tmp_path):
    write_manifest(tmp_path, [mean_model(tmp_path, degree=3)])
    volume = constant_slices_volume(SLICE_HU + [25.0])
    calls = []
    result = run_study(volume, load_ensemble(tmp_path), progress=lambda d, t, p: calls.append((d, t, p)), chunk=2)
    assert [(d, t) for d, t, _ in calls] == [(1, 6), (3, 6), (5, 6), (6, 6)]
    for done, _, partial in calls:
        filled = ~np.isnan(partial.slice_probabilities).any(axis=1)
        assert filled.tolist() == [i < done for i in range(6)]
        assert partial.slices_done == done and not partial.complete
        np.testing.assert_allclose(partial.slice_probabilities[:done], result.slice_probabilities[:done])
        np.testing.assert_allclose(partial.case_probabilities, result.slice_probabilities[:done].max(axis=0))
        with pytest.raises(ValueError):
            partial.slice_probabilities[0, 0] = 1.0  # snapshots are read-only, safe to hand to another thread
    assert result.complete
    with pytest.raises(ValueError, match="partial"):
        calls[0][2].to_dict()


def test_cancel_after_first_progress_stops_and_keeps_the_finished_slices(tmp_path):
    write_manifest(tmp_path, [mean_model(tmp_path, "a"), mean_model(tmp_path, "b", degree=5)])
    volume = constant_slices_volume(SLICE_HU * 2)
    state = {"cancel": False, "progress": 0}

    def progress(done, total, partial):
        state["progress"] += 1
        state["cancel"] = True

    with pytest.raises(Cancelled) as info:
        run_study(volume, load_ensemble(tmp_path), progress=progress, is_cancelled=lambda: state["cancel"], chunk=4)
    partial = info.value.partial
    assert state["progress"] == 1
    assert partial.slices_done == 1 and not partial.complete
    assert np.isnan(partial.slice_probabilities[1:]).all()
    assert partial.slice_probabilities[0, 0] == pytest.approx(
        (expected_slice(0, 0, 3, SLICE_MEAN * 2) + expected_slice(0, 0, 5, SLICE_MEAN * 2)) / 2, rel=1e-5
    )


# -- attention maps --------------------------------------------------------------------------


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Direct 'same' 2-D cross-correlation, (C, H, W) * (K, C, k, k) -> (K, H, W), zero padding."""
    k = w.shape[-1]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h, wd = x.shape[1:]
    out = np.zeros((w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("kc,chw->khw", w[:, :, i, j], xp[:, i : i + h, j : j + wd])
    return out + b[:, None, None]


def test_cam_equals_the_analytic_map_of_the_linear_head(tmp_path):
    entry, weights = add_member(tmp_path, "cam", n_features=4, seed=7, input_size=(16, 16))
    write_manifest(tmp_path, [entry])
    ensemble = load_ensemble(tmp_path)
    rng = np.random.default_rng(11)
    # 16x16 slices with isotropic pixels onto a 16x16 input: the resampling is the identity.
    volume = make_volume(rng.uniform(0, 100, (3, 16, 16)).astype(np.float32), spacing=(5.0, 0.7, 0.7))
    x = multi_window(volume.hu[1])
    feats = np.maximum(_conv_same(x, weights["conv_weights"][0], weights["conv_biases"][0]), 0)
    for label in ("IPH", "SDH", "ANY"):
        c = LABELS.index(label)
        wc = weights["head_weight"][c].astype(np.float64)
        raw = np.tensordot(wc, feats, axes=(0, 0)) / feats[0].size  # Eq. 5 before the ReLU
        am = attention_map(volume, 1, label, ensemble)
        np.testing.assert_allclose(am.map, np.maximum(raw, 0), atol=1e-5)
        assert am.map.shape == (16, 16) and am.label == label and am.model == "cam"
        # For a GAP + linear head the pre-ReLU map sums to the logit minus the bias.
        assert am.logit == pytest.approx(raw.sum() + weights["head_bias"][c], abs=1e-4)
        # Eq. 6 and Eq. 7.
        per_feature = np.maximum(feats * (wc / feats[0].size)[:, None, None], 0)
        np.testing.assert_allclose(am.feature_maps(), per_feature, atol=1e-6)
        unit = lambda m: m.ravel() / np.linalg.norm(m) if np.linalg.norm(m) > 0 else m.ravel()  # noqa: E731
        expected = [np.linalg.norm(unit(per_feature[k]) - unit(np.maximum(raw, 0))) for k in range(4)]
        np.testing.assert_allclose(am.distances(), expected, atol=1e-5)


def test_any_attention_of_a_noisy_or_ensemble_mixes_the_subtype_maps_by_their_share(tmp_path):
    # With aggregation.any = "noisy-or" the ANY shown is made from the subtypes, so its map is the
    # subtype maps mixed by each one's share of -log(1 - ANY), not the ANY head's own map.
    entry, weights = add_member(tmp_path, "cam", n_features=4, seed=7, input_size=(16, 16))
    write_manifest(tmp_path, [entry], aggregation={"method": "max", "any": "noisy-or"})
    ensemble = load_ensemble(tmp_path)
    rng = np.random.default_rng(11)
    volume = make_volume(rng.uniform(0, 100, (3, 16, 16)).astype(np.float32), spacing=(5.0, 0.7, 0.7))
    x = multi_window(volume.hu[1])
    feats = np.maximum(_conv_same(x, weights["conv_weights"][0], weights["conv_biases"][0]), 0)
    hw, hb = weights["head_weight"].astype(np.float64), weights["head_bias"].astype(np.float64)
    z = hw @ feats.mean(axis=(1, 2)) + hb
    p = 1 / (1 + np.exp(-z[:5]))
    share = -np.log(1 - p) / -np.log(1 - p).sum()
    raw = np.tensordot(share @ hw[:5], feats, axes=(0, 0)) / feats[0].size
    am = attention_map(volume, 1, "ANY", ensemble)
    np.testing.assert_allclose(am.map, np.maximum(raw, 0), atol=1e-5)
    assert am.probability == pytest.approx(1 - np.prod(1 - p), abs=1e-5)
    assert am.logit == pytest.approx(np.log(am.probability / (1 - am.probability)), abs=1e-9)
    own_any = np.maximum(np.tensordot(hw[5], feats, axes=(0, 0)) / feats[0].size, 0)
    assert not np.allclose(am.map, own_any, atol=1e-3)
    # a subtype's map is still its own head's
    sdh = attention_map(volume, 1, "SDH", ensemble)
    np.testing.assert_allclose(sdh.map, np.maximum(np.tensordot(hw[2], feats, axes=(0, 0)) / feats[0].size, 0), atol=1e-5)


def test_attention_lands_on_the_blood_in_the_original_slice_geometry(tmp_path):
    # One feature = the blood window channel (W40/L60): only HU above 40 lights up.
    entry = add_member(
        tmp_path,
        "blood",
        n_features=1,
        input_size=(16, 16),
        conv_weights=[np.array([0.0, 0.0, 1.0], np.float32).reshape(1, 3, 1, 1)],
        conv_biases=[np.zeros(1, np.float32)],
        head_weight=np.ones((6, 1), np.float32),
        head_bias=np.zeros(6, np.float32),
    )[0]
    write_manifest(tmp_path, [entry])
    hu = np.full((2, 40, 24), 30, dtype=np.int16)  # tall, narrow slices: padded left and right
    hu[:, 26:32, 4:9] = 75  # a haemorrhage-like blob
    volume = make_volume(hu, spacing=(5.0, 0.5, 0.5))
    am = attention_map(volume, 0, "ANY", load_ensemble(tmp_path))
    assert am.map.shape == (40, 24)
    peak = np.unravel_index(np.argmax(am.map), am.map.shape)
    assert 25 <= peak[0] <= 32 and 3 <= peak[1] <= 9
    hot = am.normalized() > 0.5
    assert hot[26:32, 4:9].mean() > 0.5 and hot[:15].sum() == 0


def test_geometry_round_trip_puts_model_pixels_back_on_the_slice():
    geom = SliceGeometry((60, 40), (0.5, 0.75), (32, 32))  # 30 mm x 30 mm: no padding needed in mm
    hu = np.full((60, 40), -1000, dtype=np.int16)
    hu[10:30, 5:20] = 60
    x = preprocess_slices(hu, geom)[0, 2]  # blood channel on the 32x32 model grid
    back = geom.to_source(x)
    assert back.shape == (60, 40)
    truth = multi_window(hu.astype(np.float32))[2]
    inner = np.zeros_like(truth, bool)
    inner[13:27, 8:17] = True  # away from the blob's edges
    np.testing.assert_allclose(back[inner], truth[inner], atol=1e-5)
    assert np.abs(back - truth).mean() < 0.05


def test_padding_is_air_and_aspect_is_kept():
    geom = SliceGeometry((20, 40), (1.0, 1.0), (16, 16))  # wide slice: air above and below
    assert geom.padding_mm == pytest.approx((10.0, 0.0))
    hu = np.full((20, 40), 50, dtype=np.int16)
    x = preprocess_slices(hu, geom)[0, 1]  # brain window W100/L50: 50 HU -> 0.5, air -> 0
    assert np.allclose(x[5:11], 0.5, atol=1e-6)
    assert np.allclose(x[:3], 0.0) and np.allclose(x[-3:], 0.0)


def test_attention_model_choice_and_models_without_cam(tmp_path):
    plain = add_member(tmp_path, "plain", seed=1, cam=False)[0]
    cam_a = add_member(tmp_path, "cam-a", seed=2)[0]
    cam_b = add_member(tmp_path, "cam-b", seed=3)[0]
    write_manifest(tmp_path, [plain, cam_a, cam_b], attention_model="cam-b")
    ensemble = load_ensemble(tmp_path)
    volume = make_volume(np.random.default_rng(1).uniform(0, 90, (3, 16, 16)).astype(np.float32))
    assert attention_map(volume, 2, "IVH", ensemble).model == "cam-b"
    assert attention_map(volume, 2, 1, ensemble, model="cam-a").model == "cam-a"
    from ichviewer.inference import ModelContractError

    with pytest.raises(ModelContractError, match="model 'plain'.*no CAM weights"):
        attention_map(volume, 0, "SDH", ensemble, model="plain")
    with pytest.raises(IndexError, match="outside 0..2"):
        attention_map(volume, 3, "SDH", ensemble)


def test_request_id_travels_with_every_snapshot(tmp_path):
    from ichviewer.inference import run_study

    write_manifest(tmp_path, [mean_model(tmp_path)])
    seen = []
    result = run_study(constant_slices_volume(SLICE_HU), load_ensemble(tmp_path), chunk=2, request_id=42,
                       progress=lambda d, t, p: seen.append(p.request_id))
    assert result.request_id == 42 and seen == [42, 42, 42]


def test_head_crop_frames_the_largest_tissue_blob_and_maps_back():
    from ichviewer.inference.preprocessing import head_crop_mm

    hu = np.full((3, 100, 80), -1024, dtype=np.int16)
    hu[:, 20:60, 10:40] = 40  # the "head": 40 x 30 pixels of 1 mm
    hu[:, 95:98, 0:80] = 200  # a table along the bottom, not touching the head
    crop = head_crop_mm(hu, (1.0, 1.0))
    side = 40 * 1.08
    assert crop == pytest.approx((40 - side / 2, 25 - side / 2, 40 + side / 2, 25 + side / 2))
    assert head_crop_mm(np.full((2, 8, 8), -1000), (1.0, 1.0)) is None
    geom = SliceGeometry((100, 80), (1.0, 1.0), (32, 32), crop)
    x = preprocess_slices(hu[0], geom)[0, 1]  # brain window: 40 HU -> 0.4
    # the head now fills the input (40 mm over 43.2 mm), the table is outside it
    assert x[3:29, 6:26].min() == pytest.approx(0.4, abs=1e-5)
    assert x[:, 29:].max() < 0.2 and x[30:].max() < 0.05
    back = geom.to_source(x)  # maps on the model grid land back on the head
    assert back[30:50, 15:35].min() == pytest.approx(0.4, abs=1e-4)


def test_manifest_crop_is_optional_and_checked(tmp_path):
    from ichviewer.inference.manifest import ModelSpec

    spec = ModelSpec(name="m", file="m.onnx", sha256="0" * 64)
    assert spec.crop == "none" and "crop" not in spec.to_dict()["input"]
    head = ModelSpec(name="m", file="m.onnx", sha256="0" * 64, crop="head")
    assert head.to_dict()["input"]["crop"] == "head"
    with pytest.raises(ValueError, match="crop must be one of none, head"):
        ModelSpec(name="m", file="m.onnx", sha256="0" * 64, crop="brain")


def test_thin_slices_are_averaged_into_slabs_and_thick_ones_are_left_alone():
    from ichviewer.inference.preprocessing import slab_half_width, slab_slices

    assert [slab_half_width(mm, 5.0) for mm in (0.625, 1.0, 2.0, 2.5, 5.0)] == [3, 2, 1, 0, 0]
    assert slab_half_width(1.0, None) == 0
    values = [0, 10, 20, 30, 40, 50, -3000]
    thin = constant_slices_volume(values, spacing=(1.0, 0.5, 0.5))
    got = slab_slices(thin, np.arange(7), 5.0)[:, 0, 0]
    # five-slice means, fewer at the ends; -3000 (below air) counts as air (-1024)
    expected = [10, 15, 20, 30, (20 + 30 + 40 + 50 - 1024) / 5, (30 + 40 + 50 - 1024) / 4, (40 + 50 - 1024) / 3]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    thick = constant_slices_volume(values, spacing=(5.0, 0.5, 0.5))
    np.testing.assert_array_equal(slab_slices(thick, [2, 3], 5.0), thick.hu[[2, 3]])

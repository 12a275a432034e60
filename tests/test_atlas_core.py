"""Atlas building and prediction-basis retrieval (Lee et al. 2019, Methods and Eq. 5-7) on tiny real ONNX models and phantoms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from atlas_fixtures import PHANTOM_MATRIX, blood_weights, build_explaining_ensemble
from ichviewer import SUBTYPES
from ichviewer.atlas import (
    AtlasError,
    AtlasMismatchError,
    PhantomSource,
    build_atlas,
    feature_distances,
    filter_relevance,
    open_atlas,
    relevance_counts,
    retrieve,
    select_filters,
)
from ichviewer.atlas.store import write_atlas
from ichviewer.cli import main
from ichviewer.core.phantom import generate_case
from ichviewer.inference import load_ensemble
from ichviewer.inference.manifest import ManifestError, load_manifest
from inference_fixtures import add_member, write_dicom_series, write_manifest

TRAIN = dict(subtypes=("SDH", "none"), matrix=PHANTOM_MATRIX, volume_ml=30.0)


def _flags(*names: str) -> list[bool]:
    return [s in names for s in SUBTYPES]


# -- relevance count (Methods, worked example) ------------------------------------------------


def test_relevance_count_reproduces_the_papers_sah_iph_sdh_example():
    # top: SAH and IPH; second: SAH; third: SDH -> SAH 2, IPH 1, all others 0
    counts = relevance_counts(np.array([_flags("SAH", "IPH"), _flags("SAH"), _flags("SDH")]))
    assert dict(zip(SUBTYPES, counts.tolist(), strict=True)) == {"IPH": 1, "IVH": 0, "SDH": 0, "EDH": 0, "SAH": 2}


def test_filter_relevance_sorts_images_by_maximum_activation_first():
    # the same three images stored in another order; only the activation decides who is on top
    labels = np.array([_flags("SDH"), _flags("SAH", "IPH"), _flags("SAH"), _flags()])
    max_act = np.array([[0.7, 0.0], [2.0, 0.0], [1.1, 0.0], [0.2, 0.0]])  # filter 1 never fires
    counts, tops = filter_relevance(max_act, labels, top=3)
    assert dict(zip(SUBTYPES, counts[0].tolist(), strict=True)) == {"IPH": 1, "IVH": 0, "SDH": 0, "EDH": 0, "SAH": 2}
    assert tops[0].tolist() == [1, 2, 0]
    assert counts[1].tolist() == [0] * 5  # a dead filter is relevant to nothing


def test_top_five_percent_of_filters_per_label_and_never_a_zero_count():
    rng = np.random.default_rng(0)
    counts = np.zeros((60, 5), dtype=int)  # 60 filters over all blocks: 5 % = 3 per label
    counts[:, SUBTYPES.index("SDH")] = rng.permutation(60)
    counts[[4, 9], SUBTYPES.index("EDH")] = [7, 2]
    chosen = select_filters(counts, 0.05)
    sdh = [s for s in chosen if s.label_index == SUBTYPES.index("SDH")]
    assert [s.relevance for s in sdh] == [59, 58, 57] and [s.rank for s in sdh] == [0, 1, 2]
    edh = [(s.filter_index, s.relevance) for s in chosen if s.label_index == SUBTYPES.index("EDH")]
    assert edh == [(4, 7), (9, 2)]  # only two filters are relevant at all
    assert not [s for s in chosen if s.label_index == SUBTYPES.index("IPH")]


# -- Eq. 7 against a hand computation ---------------------------------------------------------


def _hand_atlas(path: Path) -> object:
    images = [dict(study_uid="1", series_uid="2", source="hand", slice_index=0, labels=("SDH",), rows=2, cols=2,
                   pixel_dy=1.0, pixel_dx=1.0, context=np.zeros((2, 2), np.int16), pooled=np.ones(3, np.float32))]
    features = [dict(block="features", channel=c, label=lab, relevance=1, label_rank=0) for c, lab in ((0, "SDH"), (1, "SDH"), (2, "IPH"), (0, "EDH"))]
    entries = [dict(feature=f, image=0, rank=0, max_activation=1.0, box=(0, 0, 1, 1), patch=np.zeros((2, 2), np.int16), heat=np.zeros((2, 2), np.uint8)) for f in range(4)]
    header = dict(model_name="hand", model_sha256="0" * 64, labels=list(SUBTYPES), blocks={"features": [3, 2, 2]})
    return open_atlas(write_atlas(path, header, images, features, entries))


def test_eq7_distances_match_a_hand_computation(tmp_path):
    a = np.array([[[2, 1], [0, 0]], [[0, 1], [0, 1]], [[1, 1], [1, 1]]], dtype=np.float32)  # A_0, A_1, A_2 (2 x 2, S = 4)
    w = np.array([2.0, 1.0, -1.0])
    # Eq. 5: M = ReLU((2 A0 + A1 - A2) / 4) = [[3/4, 2/4], [0, 0]]  -> unit vector (3, 2, 0, 0)/sqrt(13)
    overall = np.maximum(np.tensordot(w, a, axes=(0, 0)) / 4, 0)
    assert overall.tolist() == [[0.75, 0.5], [0.0, 0.0]]
    # Eq. 6: M_0 = [[1, .5], [0, 0]] -> (2, 1, 0, 0)/sqrt(5); M_1 = [[0, .25], [0, .25]] -> (0, 1, 0, 1)/sqrt(2); M_2 = 0
    d0 = math.hypot(2 / math.sqrt(5) - 3 / math.sqrt(13), 1 / math.sqrt(5) - 2 / math.sqrt(13))
    d1 = math.sqrt((3 / math.sqrt(13)) ** 2 + (1 / math.sqrt(2) - 2 / math.sqrt(13)) ** 2 + 0.5)
    with _hand_atlas(tmp_path / "hand.atlas.sqlite") as atlas:
        d = feature_distances(atlas, {"features": a}, {"features": w / 4}, overall)
    assert d[0] == pytest.approx(d0, abs=1e-6) and d0 == pytest.approx(0.124274, abs=1e-6)
    assert d[1] == pytest.approx(d1, abs=1e-6) and d1 == pytest.approx(1.102513, abs=1e-6)
    assert d[2] == math.inf  # a feature whose Eq. 6 map is empty on this slice is not ranked
    assert d[3] == d[0]  # the same filter chosen for two labels has one distance


# -- gradient tail of an intermediate block (Eq. 6 weights) -------------------------------------


def test_intermediate_block_weights_equal_the_analytic_mean_gradient(tmp_path):
    ens_dir = build_explaining_ensemble(tmp_path / "ens", extra_member=False)
    model = load_ensemble(ens_dir).model("explainer")
    w = blood_weights(3)
    rng = np.random.default_rng(5)
    x = rng.random((1, 3, 64, 64), dtype=np.float32)
    _, feats = model.block_features(x)
    a0 = feats["block0"][0].astype(np.float64)
    # analytic: z^c = sum_m head[c, m] mean(relu(conv1(A0)))_m + b, so dz/dA0 is the transposed conv of
    # head[c, m] / S1 on the active outputs; alpha_k = mean over positions of that gradient
    c = SUBTYPES.index("SDH")
    w1, b1 = w["conv_weights"][1].astype(np.float64), w["conv_biases"][1].astype(np.float64)
    pad = np.pad(a0, ((0, 0), (1, 1), (1, 1)))
    pre = np.zeros((8, 32, 32))
    for i in range(3):
        for j in range(3):
            pre += np.tensordot(w1[:, :, i, j], pad[:, i : i + 64 : 2, j : j + 64 : 2], axes=(1, 0))
    active = (pre + b1[:, None, None]) > 0
    g = active * (w["head_weight"][c].astype(np.float64)[:, None, None] / (32 * 32))
    grad = np.zeros((6, 66, 66))
    for i in range(3):
        for j in range(3):
            grad[:, i : i + 64 : 2, j : j + 64 : 2] += np.tensordot(w1[:, :, i, j], g, axes=(0, 0))
    alpha = grad[:, 1:65, 1:65].sum(axis=(1, 2)) / (64 * 64)
    got = model.block_gradient_weights("block0", feats["block0"][0], c)
    np.testing.assert_allclose(got, alpha, rtol=0.02, atol=1e-6)


# -- building and retrieving on phantoms -------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas")
    ens_dir = build_explaining_ensemble(root / "ens")
    ensemble = load_ensemble(ens_dir)
    stages: list[tuple[str, int, int]] = []
    summary = build_atlas(ensemble, PhantomSource(range(1, 7), **TRAIN), ens_dir / "explainer.atlas.sqlite", fraction=0.1,
                          progress=lambda *a: stages.append(a))
    return ens_dir, ensemble, summary, stages


def test_build_selects_the_blood_filter_for_sdh_and_stores_provenance(built):
    ens_dir, ensemble, summary, stages = built
    assert ("activations", 6, 6) in stages and stages[-1] == ("writing", 1, 1)
    assert summary.n_training_images > 100 and summary.n_entries > 0
    with open_atlas(summary.path) as atlas:
        assert atlas.header.model_sha256 == ensemble.model("explainer").spec.sha256
        assert set(atlas.header.blocks) == {"block0", "features"}
        sdh = np.flatnonzero(atlas.feature_label == "SDH")
        # the hand-set blood detector (last block, channel 0) heads the SDH features with a long relevance run
        assert (atlas.feature_block[sdh[0]], atlas.feature_channel[sdh[0]]) == ("features", 0)
        assert atlas.feature_relevance[sdh[0]] >= 10
        entry = atlas.entry(int(atlas.feature_entries(int(sdh[0]))[0]))
        assert entry.labels == ("SDH",) and entry.patch.shape == entry.heat.shape == (48, 48)
        assert entry.provenance.source.startswith("phantom seed") and entry.provenance.model_sha256 == summary.model_sha256
        assert atlas.context(entry.image_id).shape == (64, 64)


def test_retrieval_returns_sdh_examples_whose_heat_sits_on_the_bleed(built):
    ens_dir, ensemble, summary, _ = built
    case = generate_case(50, subtype="SDH", matrix=PHANTOM_MATRIX, volume_ml=30.0)  # held out
    z = int(np.flatnonzero(case.masks["SDH"].sum(axis=(1, 2)))[len(np.flatnonzero(case.masks["SDH"].sum(axis=(1, 2)))) // 2])
    with open_atlas(summary.path) as atlas:
        basis = retrieve(case.volume, z, "SDH", atlas, ensemble, k=4)
    assert basis.examples and basis.pooled_examples
    assert all("SDH" in ex.entry.labels for ex in basis.examples)
    first = basis.examples[0]
    assert (first.entry.block, first.entry.channel) == ("features", 0)
    assert [ex.distance for ex in basis.examples] == sorted(ex.distance for ex in basis.examples)
    # the patch is centred on the feature's strongest activation: on the training slice's SDH
    seed = int(first.entry.provenance.source.split()[2])
    train = generate_case(seed, subtype="SDH", matrix=PHANTOM_MATRIX, volume_ml=30.0)
    y0, x0, y1, x1 = first.entry.box
    cy, cx = int((y0 + y1) / 2 * 64), int((x0 + x1) / 2 * 64)
    near = train.masks["SDH"][first.entry.provenance.slice_index, max(0, cy - 2) : cy + 3, max(0, cx - 2) : cx + 3]
    assert near.any()


def test_any_of_a_noisy_or_ensemble_is_explained_as_the_any_the_reader_sees(built, tmp_path):
    # With aggregation.any = "noisy-or" the ANY on screen is made from the subtypes: the prediction
    # basis must report and explain that ANY (its probability, its map, its Eq. 6 weights), as the
    # attention map does, not the networks' own ANY head (on a real phantom the shipped ResNet's head
    # said 0.08 where the ANY shown was 0.85).
    import shutil

    from ichviewer.inference import attention_map
    from ichviewer.inference.cam import noisy_or_any_mix

    ens_dir, ensemble, summary, _ = built
    noisy_dir = tmp_path / "noisy"
    shutil.copytree(ens_dir, noisy_dir)
    doc = json.loads((noisy_dir / "manifest.json").read_text())
    doc["aggregation"] = {"method": "max", "any": "noisy-or"}
    (noisy_dir / "manifest.json").write_text(json.dumps(doc))
    noisy = load_ensemble(noisy_dir)
    case = generate_case(50, subtype="SDH", matrix=PHANTOM_MATRIX, volume_ml=30.0)
    z = int(np.argmax(case.masks["SDH"].sum(axis=(1, 2))))
    with open_atlas(noisy_dir / summary.path.name) as atlas:
        basis = retrieve(case.volume, z, "ANY", atlas, noisy, k=4)
        head = retrieve(case.volume, z, "ANY", atlas, ensemble, k=4)  # the manifest without the rule: the ANY head
    shown = attention_map(case.volume, z, "ANY", noisy, model="explainer")
    assert basis.probability == pytest.approx(shown.probability, abs=1e-6)
    assert abs(head.probability - shown.probability) > 1e-3  # the test would notice the head being used
    assert basis.examples
    # Eq. 6 weights of the mixed score on an intermediate block are the mix of the subtypes' own.
    model = noisy.model("explainer")
    x = np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)
    logits, feats = model.block_features(x)
    mix, _any = noisy_or_any_mix(logits[0])
    a0 = feats["block0"][0]
    mixed = model.block_gradient_weights("block0", a0, 5, label_mix=mix)
    parts = sum(m * model.block_gradient_weights("block0", a0, c) for c, m in enumerate(mix) if m)
    np.testing.assert_allclose(mixed, parts, rtol=0.02, atol=1e-6)


def test_an_atlas_is_refused_with_a_model_whose_checksum_differs(built, tmp_path):
    _, _, summary, _ = built
    other_dir = build_explaining_ensemble(tmp_path / "retrained", seed=4)  # same shape, other weights
    other = load_ensemble(other_dir)
    case = generate_case(50, subtype="SDH", matrix=PHANTOM_MATRIX, volume_ml=30.0)
    with open_atlas(summary.path) as atlas:
        with pytest.raises(AtlasMismatchError, match="rebuild the atlas"):
            retrieve(case.volume, 12, "SDH", atlas, other)
    with pytest.raises(AtlasMismatchError):
        open_atlas(summary.path, model_sha256=other.model("explainer").spec.sha256)


# -- manifest contract -----------------------------------------------------------------------


def test_manifests_without_block_outputs_still_load_and_the_extension_round_trips(tmp_path):
    old_entry, _ = add_member(tmp_path / "old", "alpha", seed=1)
    write_manifest(tmp_path / "old", [old_entry])
    old = load_manifest(tmp_path / "old")
    assert old.models[0].block_outputs == () and old.explaining is old.cam_model
    new = load_manifest(build_explaining_ensemble(tmp_path / "new"))
    spec = new.model("explainer")
    assert [b.name for b in spec.block_outputs] == ["block0"] and spec.block_outputs[0].tail_file
    assert new.explaining.name == "explainer"
    data = new.to_dict()
    assert data["explaining_model"] == "explainer" and data["models"][0]["block_outputs"][0]["tail"]["input"] == "block"
    raw = json.loads((tmp_path / "new" / "manifest.json").read_text())
    raw["models"][0]["block_outputs"][0]["tail"]["sha256"] = "xyz"
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="tail.sha256"):
        load_manifest(tmp_path / "new")


# -- command line ------------------------------------------------------------------------------


def test_cli_builds_from_dicom_with_labels_csv_and_queries_to_json(tmp_path, capsys):
    ens_dir = build_explaining_ensemble(tmp_path / "ens")
    data = tmp_path / "data"
    rows = ["series,slice,IPH,IVH,SDH,EDH,SAH"]
    for seed, subtype in ((1, "SDH"), (2, "none"), (3, "SDH")):
        case = generate_case(seed, subtype=subtype, matrix=PHANTOM_MATRIX, volume_ml=30.0 if subtype != "none" else None)
        write_dicom_series(case.volume, data / f"case{seed}")
        rows += [f"case{seed},{z},0,0,{row['SDH']},0,0" for z, row in enumerate(case.slice_labels) if row["SDH"]]
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "my.atlas.sqlite"
    assert main(["atlas", "build", "--models", str(ens_dir), "--data", str(data), "--out", str(out), "--fraction", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "activations" in err and f"wrote {out}" in err

    study = tmp_path / "study"
    case = generate_case(50, subtype="SDH", matrix=PHANTOM_MATRIX, volume_ml=30.0)
    write_dicom_series(case.volume, study)
    z = int(np.flatnonzero([r["SDH"] for r in case.slice_labels])[3])
    js = tmp_path / "q.json"
    assert main(["atlas", "query", str(out), "--models", str(ens_dir), "--study", str(study), "--slice", str(z), "--label", "SDH", "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    assert result["label"] == "SDH" and result["examples"] and result["pooled_examples"]
    assert result["examples"][0]["labels"] == ["SDH"]
    assert result["examples"][0]["provenance"]["source"].startswith(str(data))
    assert len(result["examples"][0]["provenance"]["model_sha256"]) == 64

    # bad input: a clear message and exit 1, never a traceback
    capsys.readouterr()
    assert main(["atlas", "query", str(tmp_path / "missing.sqlite"), "--study", str(study), "--slice", "1", "--label", "SDH", "--json", str(js)]) == 1
    assert "atlas file does not exist" in capsys.readouterr().err
    assert main(["atlas", "query", str(out), "--models", str(ens_dir), "--study", str(study), "--slice", "1", "--label", "XYZ", "--json", str(js)]) == 1
    assert "--label must be one of" in capsys.readouterr().err
    not_atlas = tmp_path / "labels.sqlite"
    not_atlas.write_bytes(b"not a database at all" * 10)
    assert main(["atlas", "info", str(not_atlas)]) == 1
    assert "not an ICH Viewer atlas" in capsys.readouterr().err


def test_atlas_error_names_the_file(tmp_path):
    with pytest.raises(AtlasError) as info:
        open_atlas(tmp_path / "nothing.atlas.sqlite")
    assert "nothing.atlas.sqlite" in str(info.value)


def test_bundle_command_builds_next_to_the_model_and_reports_held_out_agreement(tmp_path, capsys):
    import subprocess

    ens_dir = build_explaining_ensemble(tmp_path / "ens")
    subprocess.run("sha256sum manifest.json > SHA256SUMS", shell=True, cwd=ens_dir, check=True)
    code = main(["atlas", "bundle", "--models", str(ens_dir), "--train-seeds", "0-6", "--heldout-seeds", "100-102", "--matrix", str(PHANTOM_MATRIX), "--quiet"])
    assert code == 0
    # the atlas joins the folder's checksums, which still verify
    assert (ens_dir / "SHA256SUMS").read_text().splitlines()[0].endswith("  explainer.atlas.sqlite")
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=ens_dir, capture_output=True).returncode == 0
    report = json.loads(capsys.readouterr().out)
    assert report["atlas"] == str(ens_dir / "explainer.atlas.sqlite") and (ens_dir / "explainer.atlas.sqlite").is_file()
    held = report["heldout"]
    assert held["n_queries"] > 0 and set(held["top1_same_subtype"]) == {"attention_eq7", "attention_eq7_all_features", "pooled_features", "chance"}
    assert all(0.0 <= v <= 1.0 for v in held["top1_same_subtype"].values())
    with open_atlas(ens_dir / "explainer.atlas.sqlite") as atlas:
        assert atlas.header["data"].startswith("phantom seeds 0..6")  # synthetic only: redistributable


def test_dicom_data_accepts_the_training_labels_csv_by_series_uid(tmp_path, capsys):
    ens_dir = build_explaining_ensemble(tmp_path / "ens")
    data = tmp_path / "data"
    rows = ["Series_UID,slice_index,any,sdh"]  # the format `ichviewer train --source dicom` reads
    n_slices = 0
    for seed, subtype in ((1, "SDH"), (2, "none")):
        case = generate_case(seed, subtype=subtype, matrix=PHANTOM_MATRIX, volume_ml=30.0 if subtype != "none" else None)
        write_dicom_series(case.volume, data / "nested" / f"case{seed}")
        n_slices += case.volume.n_slices
        rows += [f"{case.volume.series_uid},{z},{r['ANY']},{r['SDH']}" for z, r in enumerate(case.slice_labels)]
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "uid.atlas.sqlite"
    assert main(["atlas", "build", "--models", str(ens_dir), "--data", str(data), "--out", str(out), "--fraction", "0.1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["atlas", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["training_images"] == n_slices and info["features_per_label"]["SDH"] >= 1
    (data / "labels.csv").write_text("series_uid,any\n1.2.3,1\n")  # case-level labels cannot make an atlas
    assert main(["atlas", "build", "--models", str(ens_dir), "--data", str(data), "--out", str(out)]) == 1
    assert "need a series column" in capsys.readouterr().err


def test_dicom_data_accepts_the_rsna_challenge_csv_by_image(tmp_path, capsys):
    # The RSNA challenge's `ID,Label` file names each image by its SOP Instance UID; the atlas
    # finds the series holding them and labels each slice from its image's rows.
    from ichviewer.atlas.sources import DicomSource
    from ichviewer.io import load_path

    ens_dir = build_explaining_ensemble(tmp_path / "ens")
    data = tmp_path / "data"
    rows, expected = [], {}
    names = (("epidural", "EDH"), ("intraparenchymal", "IPH"), ("intraventricular", "IVH"), ("subarachnoid", "SAH"), ("subdural", "SDH"), ("any", "ANY"))
    for seed, subtype in ((1, "SDH"), (2, "none")):
        case = generate_case(seed, subtype=subtype, matrix=PHANTOM_MATRIX, volume_ml=30.0 if subtype != "none" else None)
        write_dicom_series(case.volume, data / f"case{seed}")
        vol = load_path(data / f"case{seed}").volumes[0]
        for uid, r in zip(vol.metadata["sop_instance_uids"], case.slice_labels):
            rows += [f"{uid}_{n},{r[lab]}" for n, lab in names]
        expected[vol.series_uid] = np.asarray([[r[s] for s in SUBTYPES] for r in case.slice_labels], dtype=bool)
    csv_path = tmp_path / "stage_2_train.csv"
    csv_path.write_text("ID,Label\n" + "\n".join(rows) + "\n")
    source = DicomSource(data, csv_path)
    assert source.keys() == sorted(expected)
    for key, labels in expected.items():
        np.testing.assert_array_equal(source.load(key).labels, labels)
    out = tmp_path / "rsna.atlas.sqlite"
    assert main(["atlas", "build", "--models", str(ens_dir), "--data", str(data), "--labels", str(csv_path), "--out", str(out), "--fraction", "0.1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["atlas", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["training_images"] == sum(len(v) for v in expected.values()) and info["features_per_label"]["SDH"] >= 1
    csv_path.write_text("ID,Label\nID_nowhere_any,1\nID_nowhere_subdural,1\n")
    assert main(["atlas", "build", "--models", str(ens_dir), "--data", str(data), "--labels", str(csv_path), "--out", str(out)]) == 1
    assert "none of its 1 images is under" in capsys.readouterr().err


def test_a_cancelled_build_writes_nothing_and_a_newer_atlas_format_is_refused(tmp_path):
    import sqlite3

    from ichviewer.inference import Cancelled

    ens_dir = build_explaining_ensemble(tmp_path / "ens", extra_member=False)
    ensemble = load_ensemble(ens_dir)
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(Cancelled):
        build_atlas(ensemble, PhantomSource([1, 2, 3], **TRAIN), tmp_path / "c.atlas.sqlite",
                    progress=lambda *a: seen.append(a), is_cancelled=lambda: len(seen) >= 1)
    assert seen == [("activations", 1, 3)] and not list(tmp_path.glob("c.atlas.sqlite*"))

    with _hand_atlas(tmp_path / "hand.atlas.sqlite") as atlas:
        path = atlas.path
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE header SET value = '2' WHERE key = 'format_version'")
    conn.close()
    with pytest.raises(AtlasError, match="newer than this ICH Viewer reads"):
        open_atlas(path)


def test_evaluate_reads_a_phantom_set_with_case_level_csv_and_per_slice_labels_json(built, tmp_path, capsys):
    ens_dir, _, summary, _ = built
    held_out = tmp_path / "held_out"
    assert main(["phantom-set", str(held_out), "--n", "3", "--matrix", str(PHANTOM_MATRIX)]) == 0
    expected = sum(
        sum(row[s] for s in SUBTYPES for row in json.loads(p.read_text())["slices"]) for p in held_out.glob("*/labels.json")
    )
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["atlas", "evaluate", str(summary.path), "--models", str(ens_dir), "--data", str(held_out), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_queries"] == expected > 0
    assert set(report["top1_same_subtype"]) == {"attention_eq7", "attention_eq7_all_features", "pooled_features", "chance"}
    capsys.readouterr()
    bad = tmp_path / "no_such_folder" / "eval.json"
    argv = ["atlas", "evaluate", str(summary.path), "--models", str(ens_dir), "--data", str(held_out), "--every", "50"]
    assert main(argv + ["--json", str(bad)]) == 1
    assert f"cannot write {bad}" in capsys.readouterr().err


def test_planned_phantom_source_gives_the_recipe_cases_with_their_labels():
    from ichviewer.atlas.sources import PlannedPhantomSource
    from ichviewer.core.phantom import generate_case
    from ichviewer.training.data import plan_phantom_cases

    plans = plan_phantom_cases(3, "train", seed=0)
    source = PlannedPhantomSource(plans, matrix=64)
    assert source.keys() == [f"phantom:{p.seed}" for p in plans]
    study = source.load(source.keys()[2])  # the recipe's third case: an SDH
    expected = generate_case(plans[2].seed, subtype=plans[2].subtype, volume_ml=plans[2].volume_ml, mimic=plans[2].mimic,
                             slice_mm=plans[2].slice_mm, age=plans[2].age, matrix=64)
    np.testing.assert_array_equal(study.volume.hu, expected.volume.hu)
    assert study.labels[:, SUBTYPES.index("SDH")].any() and not study.labels[:, SUBTYPES.index("IPH")].any()


def test_retrieval_ranks_only_the_subtypes_own_features_unless_asked_for_all(built):
    ens_dir, ensemble, summary, _ = built
    case = generate_case(51, subtype="SDH", matrix=PHANTOM_MATRIX, volume_ml=30.0)  # held out
    rows = np.flatnonzero(case.masks["SDH"].sum(axis=(1, 2)))
    z = int(rows[len(rows) // 2])
    with open_atlas(summary.path) as atlas:
        own = retrieve(case.volume, z, "IVH", atlas, ensemble, k=4)
        every = retrieve(case.volume, z, "IVH", atlas, ensemble, k=4, label_features=False)
        ivh_features = int((atlas.feature_label == "IVH").sum())
        assert own.n_features_ranked <= ivh_features < atlas.n_features
        assert every.n_features_ranked >= own.n_features_ranked
        for ex in own.examples:  # every example comes from a feature the atlas selected for IVH
            assert ex.entry.feature_label == "IVH"
        # the diagnostic ranking over every feature comes from the same forward pass
        both = retrieve(case.volume, z, "IVH", atlas, ensemble, k=4, also_all_features=True)
        assert [e.entry.entry_id for e in both.examples] == [e.entry.entry_id for e in own.examples]
        assert [e.entry.entry_id for e in both.extras["all_features_examples"]] == [e.entry.entry_id for e in every.examples]

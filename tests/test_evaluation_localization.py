"""Attention-map localisation (Lee et al. 2019, Methods): the 20 % segmentation, the bleeding point, and the
bundled ensemble's maps on phantoms whose lesions are known."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from ichviewer.evaluation.localization import (
    bleeding_point,
    head_mask,
    localize,
    localize_case,
    summarize,
)


def test_the_bleeding_point_is_a_lesion_pixel_even_for_a_crescent() -> None:
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    crescent = (r > 24) & (r < 28) & (xx < 32)  # its centroid lies in the brain it wraps
    y, x = bleeding_point(crescent)
    assert crescent[y, x]
    cy, cx = np.argwhere(crescent).mean(axis=0)
    assert not crescent[int(round(cy)), int(round(cx))]
    with pytest.raises(ValueError, match="no lesion pixel"):
        bleeding_point(np.zeros((4, 4), bool))


def test_the_map_is_cut_at_20_percent_of_its_peak_and_its_area_is_a_share_of_the_head() -> None:
    head = np.zeros((10, 10), bool)
    head[1:9, 1:9] = True  # 64 pixels
    amap = np.zeros((10, 10))
    amap[2:4, 2:6] = 1.0  # 8 pixels at the peak
    amap[5, 5] = 0.19  # below 20 % of the peak: not kept
    amap[6, 6] = 0.2  # exactly 20 %: kept
    assert localize(amap, (3, 3), head) == (True, 9 / 64)
    assert localize(amap, (5, 5), head) == (False, 9 / 64)
    assert localize(np.zeros((10, 10)), (3, 3), head) == (False, 0.0)  # a map with nothing in it finds nothing
    hu = np.full((20, 20), -1000.0)
    hu[2:18, 2:18] = 1000.0
    hu[5:15, 5:15] = 30.0  # brain inside the skull
    hu[8:10, 8:10] = -1000.0  # an air cell inside the head is still head
    assert head_mask(hu).sum() == 16 * 16


def test_the_bundled_maps_find_a_20_ml_haematoma_and_the_command_writes_the_figures(tmp_path: Path, capsys) -> None:
    from ichviewer.commands import evaluate as evaluate_command
    from ichviewer.core.phantom import generate_case
    from ichviewer.inference import load_ensemble
    from ichviewer.inference.manifest import default_models_dir

    ensemble = load_ensemble(default_models_dir())
    case = generate_case(3, subtype="IPH", volume_ml=20.0, matrix=256)
    [res] = localize_case(case, ensemble)
    assert res.model == ensemble.cam_model.name and res.label == "IPH" and res.found
    assert 0.0 < res.area_fraction < 0.6 and 5.0 < res.grid_cell_mm < 30.0
    assert case.masks["IPH"][res.slice_index].sum() == case.masks["IPH"].sum(axis=(1, 2)).max()
    summary = summarize([res])[res.model]
    assert summary["overall"]["found"] == summary["overall"]["n"] == 1 and summary["by_size"]["larger"]["n"] == 1

    parser = argparse.ArgumentParser(prog="ichviewer")
    evaluate_command.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "loc.json"
    args = parser.parse_args(["evaluate-attention", "--n", "2", "--all-members", "--json", str(out)])
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    names = [m.name for m in ensemble.models if m.cam_weight is not None]
    assert list(doc["members"]) == sorted(names, key=lambda n: n != ensemble.cam_model.name)  # explaining member first
    assert doc["explaining_member"] == ensemble.cam_model.name and doc["n_cases"] >= 1
    assert len(doc["results"]) == len(names) * sum(1 for r in doc["results"] if r["model"] == names[0])
    printed = capsys.readouterr().out
    assert f"{ensemble.cam_model.name}: bleed centre inside the map's >= 20 % region in" in printed


def test_the_model_card_shows_the_localisation_with_its_command() -> None:
    from ichviewer.evaluation.model_card import localization_lines

    rate = {"found": 9, "n": 10, "value": 0.9, "ci": [0.555, 0.997], "mean_area_fraction": 0.3}
    loc = {"n_cases": 8, "segment_fraction": 0.2, "explaining_member": "resnet",
           "members": {"resnet": {"grid_cell_mm": 12.6, "overall": rate, "by_label": {"IPH": rate},
                                  "by_size": {"punctate": {"found": 1, "n": 2}, "small": rate, "larger": {"found": 0, "n": 0}}}}}
    text = "\n".join(localization_lines(loc, "ichviewer evaluate-attention --json x.json"))
    assert "| resnet (the workstation's maps) | 9/10 0.900 (0.555–0.997) | 0.30 | 1/2 | 9/10 | – |" in text
    assert "cut at 20 % of its highest value" in text and "Per subtype (resnet): IPH 9/10." in text
    assert "3.4 times the paper's area (its last block's cells are about 13 mm a side)" in text
    assert "```bash\nichviewer evaluate-attention --json x.json\n```" in text
    assert localization_lines({"members": {}}) == []


def test_committed_model_card_quotes_the_committed_localisation() -> None:
    models = Path(__file__).resolve().parents[1] / "models"
    path = models / "default" / "other_sets" / "attention_localization.json"
    doc = json.loads(path.read_text("utf-8"))
    card = (models / "MODEL_CARD.md").read_text("utf-8")
    o = doc["members"][doc["explaining_member"]]["overall"]
    assert f"| {doc['explaining_member']} (the workstation's maps) | {o['found']}/{o['n']} {o['value']:.3f}" in card

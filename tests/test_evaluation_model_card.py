"""The model card quotes the evaluation JSON and the training log, never hand-typed numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ichviewer.evaluation import evaluate_cases
from ichviewer.evaluation.report import write_json


def test_model_card_carries_the_evaluated_figures_and_commands(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.clip(y * 0.6 + rng.normal(0.2, 0.2, 120), 0, 1)
    mimic = ["metal" if (i % 7 == 0 and not y[i]) else "" for i in range(120)]
    result = evaluate_cases({"ANY": y, "SDH": y}, {"ANY": p, "SDH": p}, 0.5, volume_ml=np.where(y, 2.0, 0.0),
                            mimic=mimic, n_boot=200, seed=0)
    write_json(result, tmp_path / "eval.json")
    log = {"members": [{"name": "resnet", "parameters": 1234, "interpolation_degree": 3}],
           "ensemble": {"method": "mean"}, "data": {"train": {"cases": 400}, "validation": {"cases": 100}},
           "hardware": {"processor": "x86_64", "torch": "2.13.0+cpu", "torch_threads": 2}, "seconds_total": 2520.0}
    (tmp_path / "log.json").write_text(json.dumps(log))
    out = subprocess.run([sys.executable, "-m", "ichviewer", "model-card", "--evaluation", str(tmp_path / "eval.json"),
                          "--training-log", str(tmp_path / "log.json"), "--out", str(tmp_path / "CARD.md"),
                          "--command", "train=ichviewer train --out models/default --seed 0",
                          "--command", "evaluate=ichviewer evaluate --predictions p.json --labels l.csv --json e.json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    card = (tmp_path / "CARD.md").read_text()
    auc = result["labels"]["ANY"]["auc"]
    assert f"ROC AUC: **{auc['value']:.3f} ({auc['ci'][0]:.3f}–{auc['ci'][1]:.3f})**" in card
    sens = result["labels"]["ANY"]["operating_point"]["sensitivity"]
    assert f"{sens['k']}/{sens['n']}" in card
    assert "ichviewer train --out models/default --seed 0" in card and "Not for clinical use" in card
    assert "| metal |" in card and "42 minutes" in card
    met = auc["value"] >= 0.97 and sens["value"] >= 0.95
    assert ("**met**" in card) == met and ("NOT met" in card) == (not met)


def test_model_card_input_line_names_the_stem_and_precision() -> None:
    from ichviewer.evaluation.model_card import _input_text

    plain = _input_text({"input_size": 128, "crop": "head", "windows": "brain-subdural-bone", "slab_mm": 5.0})
    assert plain == ("128 x 128 pixels of a square around the head, three channels (brain, subdural and bone windows); "
                     "thin slices averaged into 5 mm slabs")
    stem = _input_text({"input_size": 256, "crop": "head", "windows": "brain-subdural-bone", "slab_mm": 5.0,
                        "input_stem": True, "precision": "bf16"})
    assert "256 x 256 pixels of a square around the head, through a learned 2x downsampling stem" in stem
    assert "128 x 128" in stem and "bfloat16" in stem

"""Evaluation: ROC/AUC with bootstrap CIs, DeLong, exact binomial CIs, AP/mAP, bleed-size, mimic and triage analyses.

Qt-free; numpy and scipy only. The public API, for training code and scripts:

- `evaluate_cases(y_true, y_prob, thresholds, volume_ml=None, mimic=None, n_boot=2000, seed=0,
  triage=None)` -> JSON-ready dict (keys documented in `ichviewer.evaluation.summary`).
- `choose_operating_points(y_true, y_prob, min_sensitivity=0.95)` -> {label: OperatingPoint}.
- `choose_specificity_threshold(y_true, y_prob, min_specificity=0.95, floor=None)` -> SpecificityPoint
  (a subtype's "positive" rather than "possible" tier, `ichviewer.core.decisions`).
- `choose_triage_thresholds(y_any, p_any, target_miss_rate=0.01)` -> TriageThresholds.
- Building blocks: `roc_curve`, `roc_auc`, `precision_recall_curve`, `average_precision`,
  `mean_average_precision`, `clopper_pearson`, `confusion_at`, `bootstrap_ci`, `delong_test`,
  `delong_auc_ci`, `triage_curve`, `triage_operating_point`.
- Files: `evaluate_files(predictions, labels, n_boot, seed, compare_path=None)` (what
  `ichviewer evaluate` runs), `read_predictions`, `read_labels`, `match_cases`, `compare_cases`,
  `write_json`, `write_report`, `render_report`.
"""

from ichviewer.evaluation.delong import DeLongTest, delong_auc_ci, delong_components, delong_test
from ichviewer.evaluation.inputs import (
    EvaluationInputError,
    compare_cases,
    evaluate_files,
    match_cases,
    read_labels,
    read_predictions,
)
from ichviewer.evaluation.metrics import (
    auc_of_resamples,
    ap_of_resamples,
    average_precision,
    bootstrap_ci,
    clopper_pearson,
    confusion_at,
    mean_average_precision,
    precision_recall_curve,
    proportion,
    roc_auc,
    roc_curve,
)
from ichviewer.evaluation.operating_point import (
    OperatingPoint,
    SpecificityPoint,
    choose_operating_points,
    choose_sensitivity_threshold,
    choose_specificity_threshold,
)
from ichviewer.evaluation.report import render_report, write_json, write_report
from ichviewer.evaluation.summary import MIMIC_KINDS, SIZE_BINS, evaluate_cases
from ichviewer.evaluation.triage import (
    TriageThresholds,
    assign_triage,
    choose_triage_thresholds,
    triage_curve,
    triage_operating_point,
)

__all__ = [
    "DeLongTest",
    "EvaluationInputError",
    "MIMIC_KINDS",
    "OperatingPoint",
    "SIZE_BINS",
    "SpecificityPoint",
    "TriageThresholds",
    "ap_of_resamples",
    "assign_triage",
    "auc_of_resamples",
    "average_precision",
    "bootstrap_ci",
    "choose_operating_points",
    "choose_sensitivity_threshold",
    "choose_specificity_threshold",
    "choose_triage_thresholds",
    "clopper_pearson",
    "compare_cases",
    "confusion_at",
    "delong_auc_ci",
    "delong_components",
    "delong_test",
    "evaluate_cases",
    "evaluate_files",
    "match_cases",
    "mean_average_precision",
    "precision_recall_curve",
    "proportion",
    "read_labels",
    "read_predictions",
    "render_report",
    "roc_auc",
    "roc_curve",
    "triage_curve",
    "triage_operating_point",
    "write_json",
    "write_report",
]

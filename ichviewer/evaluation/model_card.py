"""models/MODEL_CARD.md rendered from an evaluation JSON and a training log, so every number has a source."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ichviewer import LABELS
from ichviewer.core.windowing import INPUT_WINDOW_SETS
from ichviewer.evaluation.summary import size_decomposition_text


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(metric: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not metric or metric.get("value") is None:
        return "n/a"
    ci = metric.get("ci") or [None, None]
    return f"{metric['value']:.{digits}f} ({_fmt(ci[0], digits)}–{_fmt(ci[1], digits)})"


def positive_tier_lines(ev: Mapping[str, Any]) -> list[str]:
    """The subtypes' "positive" tier (calls at the specific threshold; `ichviewer.core.decisions`), if scored."""
    labels = ev.get("labels") or {}
    rows = []
    for label in LABELS:
        e = labels.get(label) or {}
        tier = e.get("operating_point_positive_tier")
        if not tier:
            continue
        rows.append(
            f"| {label} | {_fmt(e.get('specific_threshold'))} | {_prop(tier.get('sensitivity'))} | "
            f"{_prop(tier.get('specificity'))} | {_prop(tier.get('ppv'))} | {_prop((e.get('operating_point') or {}).get('ppv'))} |"
        )
    if not rows:
        return []
    return [
        "",
        "#### Subtypes: \"positive\" and \"possible\"",
        "",
        f"The workstation names a called subtype \"positive\" or \"possible\" ({ev.get('settings', {}).get('tier_rule', '')}; "
        "specific thresholds chosen on validation for specificity). Here only the \"positive\" calls count as positive; "
        "the last column is the PPV of every call, as in the table above.",
        "",
        "| subtype | specific threshold | sensitivity | specificity | PPV | PPV of all calls |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _prop(p: Mapping[str, Any] | None) -> str:
    if not p or p.get("value") is None:
        return "n/a"
    ci = p.get("ci") or [None, None]
    return f"{p['value']:.3f} ({_fmt(ci[0])}–{_fmt(ci[1])}; {p['k']}/{p['n']})"


#: The bundled ensemble's acceptance targets on the held-out synthetic test set.
TARGET_AUC = 0.97
TARGET_SENSITIVITY = 0.95


def _target_verdict(any_: Mapping[str, Any]) -> str:
    auc = (any_.get("auc") or {}).get("value")
    sens = ((any_.get("operating_point") or {}).get("sensitivity") or {}).get("value")
    if auc is None or sens is None:
        return "not measured"
    misses = [f"AUC {auc:.3f} < {TARGET_AUC}"] if auc < TARGET_AUC else []
    misses += [f"sensitivity {sens:.3f} < {TARGET_SENSITIVITY}"] if sens < TARGET_SENSITIVITY else []
    return "met" if not misses else "NOT met (" + "; ".join(misses) + ")"


def _explainer_lines(log: Mapping[str, Any]) -> list[str]:
    """The explaining member and how it was chosen (`ichviewer.training.explainer`), when the log records it."""
    rec = log.get("explaining_model_choice")
    if not rec:
        return []
    figs = rec.get("members", {})
    found = ", ".join(f"{name} {f['found']}/{f['n']}" for name, f in figs.items())
    return [f"- Attention maps and prediction basis: {rec['chosen']}, the member whose maps found the most lesions of the "
            f"{rec.get('validation_studies', '?')} validation studies' bleeds (Lee et al.'s criterion; {found})."]


#: Input channel counts the recipe can make (window sets x context slices), in words.
_CHANNEL_WORDS = {3: "three", 4: "four", 9: "nine", 12: "twelve"}


def _input_text(cfg: Mapping[str, Any]) -> str:
    size = cfg.get("input_size", "?")
    crop = "a square around the head" if cfg.get("crop") == "head" else "the whole slice"
    set_name = str(cfg.get("windows", "lee"))
    context = int(cfg.get("context_slices") or 1)
    window_set = INPUT_WINDOW_SETS.get(set_name)
    if window_set is None:  # a set this version does not know: name it, without a count
        windows, count = set_name, "the"
    else:
        names = [w.name for w in window_set]
        windows = ("Lee et al.'s " if set_name == "lee" else "") + ", ".join(names[:-1]) + " and " + names[-1] + " windows"
        n = len(window_set) * context
        count = _CHANNEL_WORDS.get(n, str(n))
    if context > 1:
        windows += " of the slice and its neighbours"
    slab = f"; thin slices averaged into {cfg['slab_mm']:g} mm slabs" if cfg.get("slab_mm") else ""
    stem = ""
    if cfg.get("input_stem") and isinstance(size, int):
        kind = " of 16 channels, all fed to the network" if cfg.get("wide_stem") else ""
        stem = f", through a learned 2x downsampling stem{kind} (every later layer works at {size // 2} x {size // 2})"
    precision = "; trained with bfloat16 autocast (weights and ONNX float32)" if cfg.get("precision") == "bf16" else ""
    return f"{size} x {size} pixels of {crop}{stem}, {count} channels ({windows}){slab}{precision}"


def _thickness_text(cfg: Mapping[str, Any]) -> str:
    """How the 5 mm training phantoms were sampled across their thickness (`--thickness-planes`)."""
    planes = cfg.get("thickness_planes", 1)
    counts = [int(v) for v in planes] if isinstance(planes, (list, tuple)) else [int(planes)]
    def one(k: int) -> str:
        return "sampled at their centre plane" if k == 1 else f"integrated over {k} planes across the slice"
    if len(counts) == 1:
        return f"; 5 mm phantom slices {one(counts[0])}"
    return "; 5 mm phantom slices drawn per case from: " + ", ".join(one(k) for k in counts)


def _loss_text(cfg: Mapping[str, Any]) -> str:
    """The training loss: Eq. 2, plus the auxiliary losses the run was given (lesion and mimic maps, noisy-OR, twins)."""
    text = "class-weighted binary cross-entropy of the slice labels (Lee et al. Eq. 2-3)"
    weight = float(cfg.get("lesion_map_weight") or 0.0)
    if weight > 0:
        text += (
            f", plus {weight:g} x a lesion-map loss: an auxiliary head, not exported, learns where the blood is "
            "from the phantoms' masks (departure 19)"
        )
        stride = cfg.get("lesion_map_stride")
        if stride:
            text += f", read from each network's block at stride {int(stride)} ({int(stride)}-pixel cells)"
    mimic = float(cfg.get("mimic_map_weight") or 0.0)
    if mimic > 0:
        text += (
            f", plus {mimic:g} x a mimic-map loss: the same auxiliary head learns where the mimics' dense or "
            "streaked voxels are (calcification, metal, beam hardening) from the phantoms' mimic masks (departure 33)"
        )
    noisy_or = float(cfg.get("noisy_or_any_weight") or 0.0)
    if noisy_or > 0:
        text += (
            f", plus {noisy_or:g} x the class-weighted cross-entropy of the five subtypes' noisy-OR, "
            "1 - prod(1 - p_s), against the ANY label (departure 22)"
        )
    twin_rank = float(cfg.get("twin_rank_weight") or 0.0)
    if twin_rank > 0:
        text += (
            f", plus {twin_rank:g} x a pairwise loss that ranks each bleeding slice's noisy-OR ANY above its "
            "counterfactual twin's, the twin shown in the same pose (departure 27)"
        )
    if cfg.get("ignore_invisible"):
        text += (
            "; positive slice labels whose blood lies wholly in the skull's partial-volume edge, where no reader "
            "could see it, are left out of the loss (departure 24)"
        )
    return text


def _triage_choice_text(tri: Mapping[str, Any]) -> str:
    """How the shipped triage thresholds were placed on validation (training_log operating_points.triage)."""
    if "negative_below" not in tri:
        return ""
    miss = tri.get("target_miss_rate")
    fpr = tri.get("target_false_positive_rate")
    prev = tri.get("prevalence")
    at = f" at {_fmt(prev, 2)} prevalence" if prev is not None else ""
    if tri.get("negative_reached", True):
        cleared = f"it cleared {_fmt(tri.get('fraction_negative'), 2)} of validation"
        if prev is not None and tri.get("fraction_negative_at_prevalence") is not None:
            cleared += f" and would clear {_fmt(tri.get('fraction_negative_at_prevalence'), 2)} of studies at that prevalence"
        neg = (f"\"confident negative\" below {_fmt(tri.get('negative_below'))} (the highest threshold whose miss rate "
               f"on validation{at} is at most {_fmt(miss, 2)}: {_fmt(tri.get('miss_rate'), 4)}; {cleared})")
    else:
        neg = (f"\"confident negative\" switched off (threshold {_fmt(tri.get('negative_below'))}): on validation no "
               f"threshold clears any study at a miss rate{at} of at most {_fmt(miss, 2)}"
               + (" (every threshold that clears a study clears a haemorrhage with it)" if prev is None else "")
               + ", so every study is referred or called positive")
    pos = (f"\"confident positive\" above {_fmt(tri.get('positive_above'))} (false-positive rate on validation{at} "
           f"at most {_fmt(fpr, 2)}; it called {_fmt(tri.get('fraction_positive'), 2)} of validation)")
    text = f"Thresholds chosen on validation (training log): {neg}; {pos}."
    if prev is not None:
        text += (f" A rate at {_fmt(prev, 2)} prevalence is the one the threshold would have on studies of which that "
                 "share bleed, from its sensitivity and specificity on the balanced validation set by Bayes' rule "
                 "(`ichviewer.evaluation.triage`); neither threshold contradicts the ANY call (a confident negative "
                 "is below the ANY threshold, a confident positive above it).")
    return text


def _replaced_lines(log: Mapping[str, Any]) -> list[str]:
    """Operating points chosen again after training (`ichviewer.training.recalibrate`), from the log's own record."""
    out = []
    for rec in log.get("operating_points_replaced") or []:
        changed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (rec.get("changed_options") or {}).items())
        added = rec.get("added_options") or {}
        if added:
            changed += "; newly chosen: " + ", ".join(
                f"{k.replace('_', ' ')} {v}" + (" (the subtypes' \"positive\" rather than \"possible\" thresholds)"
                                              if k == "min_specificity" else "")
                for k, v in added.items()
            )
        chk = (rec.get("reproduction_check") or {}).get("validation_case_auc_any") or {}
        out += [
            "",
            f"Its operating points were chosen again on {str(rec.get('replaced_on', '?'))[:10]}, on the same validation "
            f"studies and without retraining ({changed}; the rebuilt validation reproduced the training run's case "
            f"AUC(ANY) {_fmt(chk.get('rebuilt'), 4)} against {_fmt(chk.get('training_log'), 4)} and its per-label "
            "thresholds; the previous choice is kept in `training_log.json`, `operating_points_replaced`). The bundled "
            "command above now makes this choice itself:",
            "",
            "```bash",
            " ".join(str(a) for a in rec.get("command", [])),
            "```",
        ]
    return out


def _n_calibration(log: Mapping[str, Any]) -> int:
    return int(((log.get("data") or {}).get("calibration") or {}).get("cases") or 0)


def _calibration_text(log: Mapping[str, Any]) -> str:
    """The calibration studies (`ichviewer train --calibration-cases`), which place only the operating points."""
    n = _n_calibration(log)
    return f", plus {n} calibration studies from the validation split that place only the operating points" if n else ""


def _any_rule_text(cfg: Mapping[str, Any]) -> str:
    """How the ensemble's ANY is made (manifest aggregation.any), from the recipe's config."""
    if cfg.get("any_rule", "model") == "noisy-or":
        return (" (ANY per slice is the noisy-OR of the five subtype probabilities, 1 - (1 - p_IPH) x ... x (1 - p_SAH), "
                "not the networks' own ANY output)")
    return ""


def _twin_text(log: Mapping[str, Any]) -> str:
    cfg, train = log.get("command_config", {}), log.get("data", {}).get("train", {})
    if not cfg.get("twins") or "planned_cases" not in train:
        return ""
    n_twins = int(train.get("cases", 0)) - int(train.get("planned_cases", 0))
    paired = ", each bleeding slice's twin in its batch" if cfg.get("pair_twins") else ""
    return f" ({train['planned_cases']} planned plus {n_twins} counterfactual twins: the same heads without the bleed{paired})"


def _size_auc(ev: Mapping[str, Any], name: str) -> str:
    for b in (ev.get("by_size") or {}).get("bins", []):
        if b.get("name") == name:
            return _ci(b.get("auc_vs_negatives"))
    return "n/a"


def _comparison_row(name: str, ev: Mapping[str, Any]) -> str:
    any_ = (ev.get("labels") or {}).get("ANY", {})
    op = any_.get("operating_point", {})
    return (f"| {name} | {ev.get('n_cases', '?')} | {_ci(any_.get('auc'))} | {_prop(op.get('sensitivity'))} | "
            f"{_prop(op.get('specificity'))} | {_size_auc(ev, 'punctate')} | {_size_auc(ev, 'small')} | {_size_auc(ev, 'larger')} |")


def _other_sets_lines(evaluation: Mapping[str, Any], extra: Sequence[tuple[str, Mapping[str, Any]]],
                      commands: Mapping[str, str]) -> list[str]:
    """The held-out figures beside other test sets' (`extra`: (name, evaluation JSON)), and the commands that made them."""
    lines = [
        "", "### The same ensemble on other test sets", "",
        "Each row is a separate `ichviewer evaluate` run of the same models; AUCs by size are of those positives",
        "against all negatives. These sets were not used to choose the model.", "",
        "| test set | studies | AUC(ANY) | sensitivity | specificity | punctate AUC | 0.1-5 mL AUC | > 5 mL AUC |",
        "|---|---|---|---|---|---|---|---|",
        _comparison_row("held-out test set (above)", evaluation),
    ]
    lines += [_comparison_row(name, ev) for name, ev in extra]
    for name, _ in extra:
        if commands.get(name):
            lines += ["", f"{name}:", "", "```bash", commands[name], "```"]
    return lines


def _head_check_text(check: Mapping[str, Any] | None) -> str:
    if not check:
        return "not run"
    median = check.get("intracranial_median_hu")
    if median is not None:
        where = f"skull encloses {median:.0f} HU"
        return f"fits ({where})" if check.get("applicable") else f"**not a head CT** ({where})"
    # No median: the check stopped before the image (a contrast agent in the header) or found no skull.
    return "**not a head CT** (" + str(check.get("reason") or "no closed skull") + ")"


def _normal_series_lines(infer: Mapping[str, Any], command: str) -> list[str]:
    """Real series known to hold no haemorrhage, as `ichviewer infer` read them: every positive call is a false positive."""
    lines = [
        "", "## Real CT series without haemorrhage", "",
        "The real DICOM series the project tests with (heads or head phantoms) contain no haemorrhage, so any positive",
        "call on them is a false positive. Too few to estimate a rate, they show how far the synthetic",
        "training is from real scanners. The last column is the workstation's check that the series is a head CT",
        "as the ensemble knows it (`ichviewer/core/applicability.py`); a series that fails it is always triaged \"refer\".", "",
        "| series | slices | ANY probability | decision | triage | highest subtype | head-CT check |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in infer.get("studies", []):
        case = st.get("case") or {}
        a = case.get("ANY") or {}
        subtypes = [(k, v.get("probability")) for k, v in case.items() if k != "ANY" and isinstance(v, Mapping)]
        top = max(subtypes, key=lambda kv: kv[1] if kv[1] is not None else -1.0, default=(None, None))
        name = Path(str(st.get("path", "?"))).name
        top_text = f"{top[0]} {_fmt(top[1], 2)}" if top[0] else "n/a"
        lines.append(f"| {name} | {st.get('n_slices', '?')} | {_fmt(a.get('probability'), 2)} | {a.get('decision', '?')} "
                     f"| {st.get('triage', '?')} | {top_text} | {_head_check_text(st.get('head_check'))} |")
    for f in infer.get("failed", []):
        lines.append(f"| {Path(str(f.get('path', '?'))).name} | | failed: {f.get('reason', '?')} | | | | |")
    if command:
        lines += ["", "```bash", command, "```"]
    return lines


#: Lee et al. 2019 (Results, "Localization accuracy of attention maps"): mean segmented area, share of the head.
LEE_MEAN_AREA = 0.089


def localization_lines(loc: Mapping[str, Any], command: str | None = None) -> list[str]:
    """The attention-map localisation section (`ichviewer evaluate-attention` JSON)."""
    members = loc.get("members") or {}
    if not members:
        return []
    lines = ["", "## Attention maps: localisation (Lee et al. 2019, Methods)", "",
             f"On the {loc.get('n_cases', '?')} studies with haemorrhage among the planned test studies, each subtype's "
             "attention map on the slice where its lesion is largest was cut at "
             f"{float(loc.get('segment_fraction', 0.2)) * 100:g} % of its highest value, as in the paper. A lesion counts as found "
             "when the lesion pixel nearest its centroid is inside what is kept; the area is what is kept inside the head, "
             "as a share of the head. The paper reported 78.1 % of its radiologists' bleeding points found, with a "
             f"mean area of {LEE_MEAN_AREA * 100:g} % of the head.", "",
             "| member | lesions found (95 % CI) | mean area | punctate | small | larger |",
             "|---|---|---|---|---|---|"]

    def count(r: Mapping[str, Any]) -> str:
        return f"{r['found']}/{r['n']}" if r.get("n") else "–"

    explaining = loc.get("explaining_member")
    for name, m in members.items():
        o = m["overall"]
        sizes = m.get("by_size") or {}
        shown = f"{name} (the workstation's maps)" if name == explaining else name
        lines.append(f"| {shown} | {count(o)} {_ci(o)} | {_fmt(o.get('mean_area_fraction'), 2)} | "
                     + " | ".join(count(sizes.get(b) or {}) for b in ("punctate", "small", "larger")) + " |")
    name = explaining if explaining in members else next(iter(members))
    by_label = members[name].get("by_label") or {}
    if by_label:
        lines += ["", f"Per subtype ({name}): "
                  + ", ".join(f"{label} {count(r)}" for label, r in by_label.items()) + "."]
    area = members[name]["overall"].get("mean_area_fraction")
    if area:
        cell = members[name].get("grid_cell_mm")
        grid = f" (its last block's cells are about {cell:.0f} mm a side)" if cell else ""
        lines += ["", f"{name}'s maps keep {area * 100:.0f} % of the head on average, {area / LEE_MEAN_AREA:.1f} times the "
                  f"paper's area{grid}: a map says where the network looked, not where the bleed's edge is."]
    if command:
        lines += ["", "```bash", command, "```"]
    return lines


def _chosen_on(op: Mapping[str, Any] | None) -> str:
    """'5 positives: 1.000 (0.478–1.000)': the validation positives a threshold was chosen on (training
    log), the sensitivity it reached there and its exact 95 % interval."""
    if not op or not op.get("n_positive"):
        return "–"
    from ichviewer.evaluation.metrics import clopper_pearson

    n = int(op["n_positive"])
    k = int(round(float(op.get("sensitivity", 0.0)) * n))
    lo, hi = clopper_pearson(k, n)
    return f"{n} positives: {k / n:.3f} ({lo:.3f}–{hi:.3f})"


def _kept_predictions_lines(commands: Mapping[str, str]) -> list[str]:
    """With `commands["again"]`: the held-out predictions and labels kept beside the models, and the
    command that evaluates them again (a test checks that it gives the committed evaluation)."""
    again = commands.get("again")
    if not again:
        return []
    return [
        "The infer output and the labels are kept beside the models (`heldout_infer.json.gz`,",
        "`heldout_labels.csv`), so the figures can be derived again in seconds without the 200 studies:",
        "",
        "```bash",
        again,
        "```",
        "",
    ]


def render_model_card(evaluation: Mapping[str, Any], training_log: Mapping[str, Any], *,
                      commands: Mapping[str, str], atlas: Mapping[str, Any] | None = None,
                      extra_evaluations: Sequence[tuple[str, Mapping[str, Any]]] = (),
                      normal_series: Mapping[str, Any] | None = None,
                      localization: Mapping[str, Any] | None = None) -> str:
    """The model card text. `commands` maps "train", "test set", "infer", "evaluate" (and "atlas") to the exact commands
    run, and optionally "again" to the command that evaluates the kept held-out predictions.

    `extra_evaluations`: (name, evaluation JSON) of the same models on other test sets, shown beside the held-out
    figures with `commands[name]`; `normal_series`: an `ichviewer infer` JSON of real series without haemorrhage,
    shown with `commands["normal series"]`; `localization`: an `ichviewer evaluate-attention` JSON, shown with
    `commands["attention"]`.
    """
    ev, log = evaluation, training_log
    labels = ev.get("labels", {})
    any_ = labels.get("ANY", {})
    op = any_.get("operating_point", {})
    members = log.get("members", [])
    minutes = (log.get("seconds_total") or 0) / 60
    hw = log.get("hardware", {})
    lines = [
        "# Model card: the bundled ICH Viewer ensemble (`models/default`)",
        "",
        "**Not for clinical use.** Trained and tested on synthetic head CT only (the project's",
        "phantom generator). It exists to demonstrate and exercise the workstation's workflow:",
        "findings, attention maps, prediction basis, triage and review. Its figures say how well",
        "it detects the generator's haemorrhages, not real ones.",
        "",
        "## What it is",
        "",
        f"- {len(members)} members trained from scratch by `ichviewer train` (Lee et al. 2019 recipe with the",
        "  departures listed in `ichviewer/training/__init__.py`): "
        + ", ".join(f"{m['name']} ({m.get('parameters', 0):,} parameters, interpolation degree {m.get('interpolation_degree')})" for m in members) + ".",
        f"- Ensemble: {log.get('ensemble', {}).get('method', 'mean')} of member probabilities; outputs IPH, IVH, SDH, EDH, SAH and ANY per slice"
        + _any_rule_text(log.get("command_config", {})) + ";",
        "  case level = maximum over slices.",
        f"- Input: {_input_text(log.get('command_config', {}))}.",
        *([f"- Head: the linear layer applied to every cell of the last features, then "
           f"{log['command_config']['pooling']} pooling (departure 26), instead of global average pooling."]
          if (log.get("command_config") or {}).get("pooling", "avg") != "avg" else []),
        f"- Training loss: {_loss_text(log.get('command_config', {}))}.",
        f"- Training data: {log.get('data', {}).get('train', {}).get('cases', '?')} synthetic training studies"
        + _twin_text(log)
        + f" and {log.get('data', {}).get('validation', {}).get('cases', '?')} validation studies (case-level split by seed)"
        + _calibration_text(log)
        + _thickness_text(log.get("command_config", {})) + ".",
        *_explainer_lines(log),
        f"- Training time: {minutes:.0f} minutes on {hw.get('processor', '?')} CPU, {hw.get('torch_threads', '?')} threads "
        f"(PyTorch {hw.get('torch', '?')}), no GPU.",
        "",
        "Reproduce it:",
        "",
        "```bash",
        commands.get("train", ""),
        "```",
        *_replaced_lines(log),
        "",
        "## Held-out test set",
        "",
        f"{ev.get('n_cases', '?')} synthetic studies never seen in training or validation (the test split's seeds),",
        "balanced: every subtype, mixed bleeds, small and punctate bleeds, mimic-only negatives",
        "(calcification, metal, beam hardening), children, 5 mm and 1 mm slices.",
        "",
        "```bash",
        commands.get("test set", ""),
        commands.get("infer", ""),
        commands.get("evaluate", ""),
        "```",
        "",
        *_kept_predictions_lines(commands),
        "Every figure below is copied by `ichviewer model-card` from the evaluation JSON written by",
        "the last command. AUC and average-precision intervals: case-level percentile bootstrap,",
        f"{ev.get('settings', {}).get('n_boot', 2000)} resamples, seed {ev.get('settings', {}).get('seed', 0)}; "
        "proportions: exact Clopper–Pearson 95 % intervals.",
        "",
        "### Any haemorrhage (ANY), case level",
        "",
        f"- ROC AUC: **{_ci(any_.get('auc'))}**",
        f"- Project target (AUC >= {TARGET_AUC}, sensitivity >= {TARGET_SENSITIVITY} at the shipped operating point): "
        f"**{_target_verdict(any_)}**.",
        f"- At the shipped operating point (threshold {_fmt(any_.get('threshold'))}):",
        f"  sensitivity **{_prop(op.get('sensitivity'))}**, specificity **{_prop(op.get('specificity'))}**,",
        f"  PPV {_prop(op.get('ppv'))}, NPV {_prop(op.get('npv'))}.",
        f"- Average precision: {_ci(any_.get('average_precision'))}; mAP over the five subtypes: "
        f"{_fmt((ev.get('map_subtypes') or {}).get('value'))}.",
        "",
        "### Per label",
        "",
        f"Decisions as the workstation makes them ({ev.get('settings', {}).get('decision_rule', 'positive when probability >= threshold')}). "
        "The last column is each label's probability against its threshold alone, which is what the threshold was chosen "
        "for on validation; for a subtype the two differ where the study's ANY is negative. The column \"chosen on\" is how "
        "many validation positives the threshold was chosen on, with the validation sensitivity it reached and that "
        "figure's exact 95 % interval: a threshold chosen on few positives is uncertain, whatever it reached.",
        "",
        "| label | n positive / negative | AUC (95 % CI) | AP | threshold | sensitivity | specificity | threshold alone: sensitivity / specificity | chosen on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    chosen = (log.get("operating_points") or {}).get("labels") or {}
    for label in LABELS:
        e = labels.get(label)
        if not e:
            continue
        o = e.get("operating_point", {})
        alone = e.get("operating_point_own_threshold")
        alone_text = (
            f"{_fmt((alone.get('sensitivity') or {}).get('value'))} / {_fmt((alone.get('specificity') or {}).get('value'))}"
            if alone else "–"
        )
        lines.append(
            f"| {label} | {e.get('n_positive')} / {e.get('n_negative')} | {_ci(e.get('auc'))} | "
            f"{_fmt((e.get('average_precision') or {}).get('value'))} | {_fmt(e.get('threshold'))} | "
            f"{_prop(o.get('sensitivity'))} | {_prop(o.get('specificity'))} | {alone_text} | {_chosen_on(chosen.get(label))} |"
        )
    lines += positive_tier_lines(ev)
    size = ev.get("by_size")
    if size:
        lines += [
            "", "### Sensitivity by bleed size (ANY)", "",
            "| size | sensitivity | mean probability | AUC of these against all negatives |", "|---|---|---|---|",
        ]
        for b in size.get("bins", []):
            lines.append(
                f"| {b['name']} ({b.get('range', '')}) | {_prop(b.get('sensitivity'))} | {_fmt(b.get('mean_probability'))} "
                f"| {_ci(b.get('auc_vs_negatives'))} |"
            )
        ceiling = size_decomposition_text(size.get("bins", []))
        if ceiling:
            lines += ["", ceiling]
        without = size.get("auc_without_punctate")
        if without:
            lines += [
                "",
                f"AUC(ANY) with the punctate positives left out ({without.get('n_positive', '?')} positives against all "
                f"negatives): {_ci(without)}.",
            ]
    vis = ev.get("by_visibility")
    if vis and vis.get("n_positive_hidden"):
        n = vis["n_positive_hidden"]
        lines += [
            "", "### Haemorrhage that cannot be seen (ANY)", "",
            f"{n} positive {'study has' if n == 1 else 'studies have'} labelled haemorrhage that cannot be seen "
            f"({vis.get('definition', '')}; `visible_voxels` = 0 in labels.csv, "
            "`ichviewer.core.phantom.visible_blood_voxels`). Mean probability "
            f"{_fmt(vis.get('hidden_mean_probability'))}, called positive {_prop(vis.get('hidden_sensitivity'))}. "
            f"AUC(ANY) with {'it' if n == 1 else 'them'} left out ({(vis.get('auc_visible_only') or {}).get('n_positive', '?')} "
            f"positives against all negatives): {_ci(vis.get('auc_visible_only'))}. The headline AUC above keeps them.",
        ]
    mimics = ev.get("mimics")
    if mimics:
        lines += ["", "### False positives on negative studies, by mimic (ANY)", "", "| mimic | false-positive rate | mean probability |", "|---|---|---|"]
        for k in mimics.get("kinds", []):
            lines.append(f"| {k['mimic']} | {_prop(k.get('false_positive_rate'))} | {_fmt(k.get('mean_probability'))} |")
    triage = ev.get("triage") or {}
    observed = triage.get("observed")
    if observed:
        lines += [
            "", "### Triage (DeepRadiologyNet-style)", "",
            f"Counts: {json.dumps(observed.get('counts'))}. Haemorrhage among studies called \"confident negative\": "
            f"{_prop(observed.get('miss_rate'))}; no haemorrhage among \"confident positive\": "
            f"{_prop(observed.get('false_positive_rate'))}; referred: {_fmt(observed.get('fraction_refer'))}.",
        ]
        if observed.get("miss_rate_at_prevalence") is not None:
            m, f = observed["miss_rate_at_prevalence"], observed["false_positive_rate_at_prevalence"]
            lines += [
                "", f"The test set is balanced; were {_fmt(triage.get('prevalence'), 2)} of studies haemorrhages (as on "
                "a clinical worklist), the same calls would give a miss rate among \"confident negative\" of "
                f"{_ci(m, 4)} and a share without haemorrhage among \"confident positive\" of {_ci(f, 4)} "
                "(Bayes' rule on the test set's sensitivity and specificity of each call; intervals combine the exact "
                "intervals of the two, conservatively).",
            ]
        chosen = _triage_choice_text((log.get("operating_points") or {}).get("triage") or {})
        if chosen:
            lines += ["", chosen]
    if extra_evaluations:
        lines += _other_sets_lines(ev, extra_evaluations, commands)
    if normal_series is not None:
        lines += _normal_series_lines(normal_series, commands.get("normal series", ""))
    if atlas:
        lines += ["", "## Bundled atlas (prediction basis, Lee et al. 2019)", ""]
        size = atlas.get("size_bytes")
        lines.append(f"- File `{Path(str(atlas.get('atlas', ''))).name}`"
                     + (f", {size / 1e6:.2f} MB" if size else "")
                     + f": {atlas.get('features', '?')} selected features, {atlas.get('entries', '?')} examples, "
                     "built from synthetic training phantoms only (redistributable).")
        held = atlas.get("heldout") or {}
        top1 = held.get("top1_same_subtype") or {}
        if top1:
            lines += [
                f"- Held-out check ({held.get('n_queries', '?')} positive slices of held-out phantoms): the top retrieved",
                f"  example shares the finding's subtype in {_fmt(top1.get('attention_eq7'))} of queries by the Eq. 7 ranking over",
                "  the subtype's own atlas features (what the workstation shows, as in the paper),",
                f"  {_fmt(top1.get('attention_eq7_all_features'))} by Eq. 7 over every atlas feature (a diagnostic: the distance alone),",
                f"  {_fmt(top1.get('pooled_features'))} by nearest pooled features, against {_fmt(top1.get('chance'))} by chance.",
                "",
                "| subtype | queries | Eq. 7 (subtype features) | Eq. 7 (all features) | pooled | chance |",
                "|---|---|---|---|---|---|",
            ]
            for label, row in (held.get("per_label") or {}).items():
                lines.append(
                    f"| {label} | {row.get('n')} | {_fmt(row.get('attention'))} | {_fmt(row.get('all_features'))} "
                    f"| {_fmt(row.get('pooled'))} | {_fmt(row.get('chance'))} |"
                )
        if commands.get("atlas"):
            lines += ["", "```bash", commands["atlas"], "```"]
    if localization:
        lines += localization_lines(localization, commands.get("attention"))
    lines += [
        "",
        "## Limits",
        "",
        "- Synthetic anatomy and lesions only: real scanners, real bleeds (subacute, chronic,",
        "  along the falx or tentorium), post-operative heads and real mimics will differ.",
        "- Slices are classified in 2-D with neighbour interpolation; very small bleeds on thick",
        "  slices are the weakest point (see the size table), as the seed papers report.",
        "- Operating points were chosen on the synthetic validation split"
        + (f" and its {_n_calibration(log)} calibration studies" if _n_calibration(log) else "")
        + " (sensitivity >= 0.95",
        "  where achievable); a site must re-choose them on its own labelled studies",
        "  (`ichviewer operating-points --models models/default --predictions INFER.json --labels LABELS.csv --out DIR`).",
        "- Unless the test-set command says `--thickness-planes`, its 5 mm slices sample the phantom at",
        "  their centre plane (the generator's default); a real 5 mm slice integrates over its thickness"
        + (" (see \"The same ensemble on other test sets\")." if extra_evaluations else "."),
        "",
    ]
    return "\n".join(lines)


def write_model_card(out: str | Path, evaluation_json: str | Path, training_log_json: str | Path,
                     commands: Mapping[str, str], atlas: Mapping[str, Any] | None = None,
                     extra_evaluations: Sequence[tuple[str, str | Path]] = (),
                     normal_series_json: str | Path | None = None,
                     localization_json: str | Path | None = None) -> Path:
    def read(path: str | Path) -> Any:
        return json.loads(Path(path).read_text("utf-8"))

    text = render_model_card(read(evaluation_json), read(training_log_json), commands=commands, atlas=atlas,
                             extra_evaluations=[(name, read(path)) for name, path in extra_evaluations],
                             normal_series=read(normal_series_json) if normal_series_json else None,
                             localization=read(localization_json) if localization_json else None)
    out = Path(out)
    out.write_text(text, "utf-8")
    return out


"""Case-level evaluation of an ensemble on labelled studies: the metrics dictionary behind the report.

`evaluate_cases` returns a JSON-ready dict (NaN and infinity become null when written by
`ichviewer.evaluation.report.write_json`). Keys, all case level:

``schema``
    ``"ichviewer.evaluate/1"``.
``settings``
    ``n_boot``, ``seed``, ``ci_level`` (0.95), ``auc_ci`` ("percentile bootstrap, case-level
    resampling"), ``binomial_ci`` ("Clopper-Pearson exact"), ``decision_rule`` (the
    workstation's rule, `ichviewer.core.decisions`: with ANY evaluated, a subtype is positive
    only when its probability reaches its threshold and ANY is positive; without ANY,
    "positive when probability >= threshold").
``n_cases``
    Number of evaluated studies.
``labels``
    One entry per evaluated label (``ichviewer.LABELS`` order) with: ``n`` (cases with this
    label known), ``n_unlabelled`` (cases left out because the label is unknown), ``n_positive``,
    ``n_negative``; ``auc`` {``value``, ``ci`` [low, high], ``n_boot``, ``n_valid``} (bootstrap),
    ``auc_se_delong``; ``average_precision`` {same shape as ``auc``}; ``threshold`` (a number,
    or null when thresholds differ between studies); ``operating_point`` {``tp``, ``fp``,
    ``tn``, ``fn``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``}, each proportion being
    {``k``, ``n``, ``value``, ``ci``}, of the decisions under ``decision_rule``;
    ``operating_point_own_threshold`` (same shape) of the label's probability against its
    threshold alone (what the threshold was chosen for); for a subtype whose predictions carry a
    specific threshold (`ichviewer.core.decisions`' two tiers), ``specific_threshold`` (a number or
    null as ``threshold``) and ``operating_point_positive_tier`` (same shape as ``operating_point``:
    only the calls that reach the specific threshold count as positive, "possible" ones as
    negative); ``roc`` {``fpr``, ``tpr``, ``thresholds``} (first
    threshold is null = +inf); ``pr`` {``precision``, ``recall``, ``thresholds``}; ``prevalence``.
    Undefined values (e.g. AUC with one class) are null.
``map``
    {``value``, ``labels``}: mean of the defined average precisions over all evaluated labels;
    ``map_subtypes`` the same over the five subtypes only (Lee et al. 2019's mAP).
``by_size``
    null without a ``volume_ml`` column; else {``label`` "ANY", ``bins``: [{``name``
    (punctate/small/larger), ``range``, ``low_ml``, ``high_ml``, ``sensitivity`` (proportion),
    ``mean_probability``, ``auc_vs_negatives`` {``value``, ``ci``}: the bin's positives ranked
    against every negative study}], ``auc_without_punctate`` {``value``, ``ci``, ``n_positive``}
    (ANY with punctate positives left out), ``n_positive_unknown_volume``}.
``by_visibility``
    null without a ``visible_voxels`` column (`ichviewer phantom-set` writes it); else
    {``label`` "ANY", ``definition``, ``n_positive_hidden`` (positives whose blood has no voxel
    clear of the bone's partial-volume edge), ``n_positive_unknown``, ``hidden_sensitivity``
    (proportion), ``hidden_mean_probability``, ``auc_visible_only`` {``value``, ``ci``,
    ``n_positive``} (ANY with the hidden positives left out)}.
``mimics``
    null without a ``mimic`` column; else {``label`` "ANY", ``kinds``: [{``mimic``,
    ``false_positive_rate`` (proportion), ``mean_probability``}] for negative studies with each
    mimic kind, plus ``"none"`` for negatives without a mimic}.
``triage``
    null without ANY; else {``curve`` (see `TriageCurve.to_dict`), ``operating_points``:
    [`TriagePoint.to_dict`] for each target miss rate, ``observed``: null or, from the triage
    category stored with each prediction, {``counts`` {category: n}, ``miss_rate`` (proportion:
    haemorrhage among confident negatives), ``false_positive_rate`` (proportion: no
    haemorrhage among confident positives), ``fraction_refer``, and with a prevalence
    ``miss_rate_at_prevalence`` and ``false_positive_rate_at_prevalence`` {``value``, ``ci``}},
    ``prevalence`` (null or the `triage_prevalence` given), and with it ``operating_points_at_prevalence``
    (as ``operating_points``, the miss rates at that prevalence) and the curve's
    ``miss_rate_at_prevalence`` and ``fraction_auto_at_prevalence``}.

`ichviewer.evaluation.inputs.evaluate_files` (and so `ichviewer evaluate`) adds ``inputs``
{``predictions``, ``labels``, ``match_key``, ``n_matched``, ``unmatched_labels``,
``unmatched_predictions``, ``merged_series``, ``failed``} and ``cases`` (matched ids, in the
order of the label file); with ``--compare`` also ``comparison`` {``predictions_b``,
``n_cases``, ``only_in_a``, ``only_in_b``, ``labels``: {label: {``auc_a``, ``auc_b``,
``difference``, ``se_difference``, ``ci``, ``z``, ``p_value``, ``correlation``, ``n_positive``,
``n_negative``} or null}} (DeLong's test; difference = these predictions minus the others).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ichviewer import LABELS, SUBTYPES
from ichviewer.core.decisions import DECISION_RULE, POSITIVE_TIER, TIER_RULE, case_calls, subtype_tier
from ichviewer.evaluation.delong import delong_components
from ichviewer.evaluation.metrics import (
    CI_LEVEL,
    ap_of_resamples,
    as_binary,
    as_scores,
    auc_of_resamples,
    average_precision,
    bootstrap_indices,
    confusion_at,
    percentile_interval,
    precision_recall_curve,
    proportion,
    roc_auc,
    roc_curve,
)
from ichviewer.evaluation.triage import (
    TRIAGE_CATEGORIES,
    TRIAGE_NEGATIVE,
    TRIAGE_POSITIVE,
    TRIAGE_REFER,
    check_prevalence,
    share_at_prevalence,
    triage_curve,
    triage_operating_point,
)

SCHEMA = "ichviewer.evaluate/1"

#: Bleed-size strata in mL of total haemorrhage, upper bound inclusive (REFERENCE.md: punctate
#: <= 0.1 mL; "small" in the seed papers means <= 5 mL).
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("punctate", 0.0, 0.1),
    ("small", 0.1, 5.0),
    ("larger", 5.0, math.inf),
)

#: Haemorrhage mimics tracked on negative studies (REFERENCE.md "Mimics of blood").
MIMIC_KINDS: tuple[str, ...] = ("calcification", "metal", "beam-hardening")

#: Miss rates at which the triage operating points are reported (DeepRadiologyNet Table 1
#: compares with a radiologists' clinically significant miss rate of 0.83 %).
DEFAULT_TRIAGE_TARGETS: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.05)


def _label_order(labels: Sequence[str]) -> list[str]:
    known = [lab for lab in LABELS if lab in labels]
    return known + sorted(set(labels) - set(known))


def _thresholds_array(label: str, thr: float | ArrayLike, n: int) -> NDArray[np.float64]:
    t = np.asarray(thr, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(n, float(t))
    if t.shape != (n,) or not np.all(np.isfinite(t)):
        raise ValueError(f"threshold for {label} must be a finite number or {n} finite numbers")
    return t


def _range_text(low: float, high: float) -> str:
    if low <= 0.0:
        return f"<= {high:g} mL"
    if math.isinf(high):
        return f"> {low:g} mL"
    return f"> {low:g} and <= {high:g} mL"


def _positive_tier(
    lab: str, y: NDArray[np.int8], known: NDArray[np.bool_],
    spec: Mapping[str, NDArray[np.float64]], sure: Mapping[str, NDArray[np.bool_]],
) -> dict:
    """The specific-tier keys of a label's entry (none when its predictions carry no specific threshold)."""
    if lab not in spec:
        return {}
    t = spec[lab][known]
    return {
        "specific_threshold": float(t[0]) if t.size and np.all(t == t[0]) else None,
        "operating_point_positive_tier": confusion_at(y, sure[lab][known]).to_dict(),
    }


def evaluate_cases(
    y_true: Mapping[str, ArrayLike],
    y_prob: Mapping[str, ArrayLike],
    thresholds: Mapping[str, float | ArrayLike] | float,
    volume_ml: ArrayLike | None = None,
    mimic: Sequence[str | None] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    triage: Sequence[str] | None = None,
    visible_voxels: ArrayLike | None = None,
    triage_targets: Sequence[float] = DEFAULT_TRIAGE_TARGETS,
    triage_prevalence: float | None = None,
    specific_thresholds: Mapping[str, float | ArrayLike] | None = None,
) -> dict:
    """Evaluate case-level probabilities against case-level labels (see the module docstring).

    `y_true` and `y_prob` map label names (e.g. "ANY", "SDH") to arrays over the same cases;
    `thresholds` maps each label to one threshold or one per case (a single number applies to
    every label), e.g. the `threshold` of `choose_operating_points` on validation data. `volume_ml` (NaN where
    unknown) and `mimic` (None/"" or a kind in MIMIC_KINDS) describe each case; `triage` is
    the category each case was given at inference, if any; `triage_prevalence` states triage miss
    rates also at that share of studies with haemorrhage (`ichviewer.evaluation.triage`);
    `visible_voxels` (NaN where unknown)
    counts each case's blood voxels a reader could see (`ichviewer.core.phantom.visible_blood_voxels`).
    `specific_thresholds` maps subtypes to their specific threshold (one or one per case): the
    "positive" tier of a call (`ichviewer.core.decisions.subtype_tier`) is scored too.
    A y_true value of NaN means the
    label is unknown for that case (allowed except for ANY); the case is then left out of that
    label's figures.
    """
    labels = _label_order(list(y_true))
    if not labels:
        raise ValueError("no labels to evaluate")
    if set(y_true) != set(y_prob):
        raise ValueError(f"y_true and y_prob must have the same labels; got {sorted(y_true)} and {sorted(y_prob)}")
    if isinstance(thresholds, (int, float)):
        thresholds = dict.fromkeys(labels, float(thresholds))
    missing_thr = [lab for lab in labels if lab not in thresholds]
    if missing_thr:
        raise ValueError(f"no threshold given for {missing_thr}")
    n = len(np.asarray(y_prob[labels[0]]))
    if n == 0:
        raise ValueError("no cases to evaluate")
    ys: dict[str, NDArray[np.int8]] = {}
    ps: dict[str, NDArray[np.float64]] = {}
    thr: dict[str, NDArray[np.float64]] = {}
    calls: dict[str, NDArray[np.bool_]] = {}  # the workstation's decisions (ichviewer.core.decisions)
    unlabelled: dict[str, int] = {}
    known_rows: dict[str, NDArray[np.bool_]] = {}
    all_p = {lab: as_scores(y_prob[lab], n, f"y_prob[{lab}]") for lab in labels}
    all_t = {lab: _thresholds_array(lab, thresholds[lab], n) for lab in labels}
    all_calls = case_calls(all_p, all_t)
    all_spec = {lab: _thresholds_array(lab, t, n) for lab, t in (specific_thresholds or {}).items() if lab in all_p}
    all_sure = {lab: subtype_tier(all_calls[lab], all_p[lab], t) == POSITIVE_TIER for lab, t in all_spec.items()}
    for lab in labels:
        raw = np.asarray(y_true[lab], dtype=np.float64)
        if raw.shape != (n,):
            raise ValueError(f"y_true[{lab}] has shape {raw.shape}, expected ({n},)")
        # NaN = this label was not assessed for this case (e.g. an empty subtype cell): the
        # case counts for the other labels only.
        known = np.isfinite(raw)
        if lab == "ANY" and not known.all():
            raise ValueError("y_true['ANY'] must be known for every case")
        unlabelled[lab] = int((~known).sum())
        ys[lab] = as_binary(raw[known], f"y_true[{lab}]")
        ps[lab] = all_p[lab][known]
        thr[lab] = all_t[lab][known]
        calls[lab] = all_calls[lab][known]
        known_rows[lab] = known
        if ys[lab].size == 0:
            raise ValueError(f"no case has a known {lab} label")

    # Every label is resampled with the same seed; labels known for every case therefore see
    # the very same case-level resamples (Lee et al. 2019, Statistical analyses).
    boot_auc: dict[str, list[NDArray]] = {lab: [] for lab in labels}
    boot_ap: dict[str, list[NDArray]] = {lab: [] for lab in labels}
    for lab in labels:
        for idx in bootstrap_indices(ys[lab].size, n_boot, seed):
            boot_auc[lab].append(auc_of_resamples(ys[lab], ps[lab], idx))
            boot_ap[lab].append(ap_of_resamples(ys[lab], ps[lab], idx))

    per_label: dict[str, dict] = {}
    for lab in labels:
        y, p, t = ys[lab], ps[lab], thr[lab]
        n_lab = int(y.size)
        n_pos = int(y.sum())
        auc = roc_auc(y, p)
        ap = average_precision(y, p)
        aucs = np.concatenate(boot_auc[lab])
        aps = np.concatenate(boot_ap[lab])
        auc_lo, auc_hi = percentile_interval(aucs) if math.isfinite(auc) else (math.nan, math.nan)
        ap_lo, ap_hi = percentile_interval(aps) if math.isfinite(ap) else (math.nan, math.nan)
        se = math.nan
        if 0 < n_pos < n_lab:
            se = math.sqrt(max(float(delong_components(y, p).covariance[0, 0]), 0.0))
        roc = roc_curve(y, p)
        pr = precision_recall_curve(y, p)
        per_label[lab] = {
            "n": n_lab,
            "n_unlabelled": unlabelled[lab],
            "n_positive": n_pos,
            "n_negative": n_lab - n_pos,
            "prevalence": n_pos / n_lab,
            "auc": {"value": auc, "ci": [auc_lo, auc_hi], "n_boot": n_boot, "n_valid": int(np.isfinite(aucs).sum())},
            "auc_se_delong": se,
            "average_precision": {
                "value": ap,
                "ci": [ap_lo, ap_hi],
                "n_boot": n_boot,
                "n_valid": int(np.isfinite(aps).sum()),
            },
            "threshold": float(t[0]) if np.all(t == t[0]) else None,
            "operating_point": confusion_at(y, calls[lab]).to_dict(),
            # The label's threshold read alone (what the threshold was chosen for on validation);
            # differs from operating_point for a subtype only when ANY is evaluated too.
            "operating_point_own_threshold": confusion_at(y, p >= t).to_dict(),
            **_positive_tier(lab, y, known_rows[lab], all_spec, all_sure),
            "roc": {"fpr": roc.fpr.tolist(), "tpr": roc.tpr.tolist(), "thresholds": roc.thresholds.tolist()},
            "pr": {"precision": pr.precision.tolist(), "recall": pr.recall.tolist(), "thresholds": pr.thresholds.tolist()},
        }

    def _map(over: Sequence[str]) -> dict:
        vals = [per_label[lab]["average_precision"]["value"] for lab in over if lab in per_label]
        used = [lab for lab in over if lab in per_label and math.isfinite(per_label[lab]["average_precision"]["value"])]
        finite = [v for v in vals if math.isfinite(v)]
        return {"value": float(np.mean(finite)) if finite else math.nan, "labels": used}

    result: dict = {
        "schema": SCHEMA,
        "settings": {
            "n_boot": n_boot,
            "seed": seed,
            "ci_level": CI_LEVEL,
            "auc_ci": "percentile bootstrap, case-level resampling",
            "binomial_ci": "Clopper-Pearson exact",
            "decision_rule": DECISION_RULE if "ANY" in labels else "positive when probability >= threshold",
            **({"tier_rule": TIER_RULE} if all_spec else {}),
        },
        "n_cases": n,
        "labels": per_label,
        "map": _map(labels),
        "map_subtypes": _map(SUBTYPES),
        "by_size": None,
        "by_visibility": None,
        "mimics": None,
        "triage": None,
    }
    if "ANY" not in ys:
        return result
    y_any, p_any = ys["ANY"], ps["ANY"]
    called_any = p_any >= thr["ANY"]
    if volume_ml is not None:
        result["by_size"] = _by_size(y_any, p_any, called_any, volume_ml, n_boot, seed)
    if visible_voxels is not None:
        result["by_visibility"] = _by_visibility(y_any, p_any, called_any, visible_voxels, n_boot, seed)
    if mimic is not None:
        result["mimics"] = _by_mimic(y_any, p_any, called_any, mimic)
    curve = triage_curve(y_any, p_any)
    prevalence = check_prevalence(triage_prevalence)
    curve_dict = curve.to_dict()
    if prevalence is not None:
        curve_dict["miss_rate_at_prevalence"] = curve.miss_rate_at(prevalence).tolist()
        curve_dict["fraction_auto_at_prevalence"] = curve.fraction_at(prevalence).tolist()
    result["triage"] = {
        "label": "ANY",
        "prevalence": prevalence,
        "curve": curve_dict,
        "operating_points": [triage_operating_point(curve, float(t)).to_dict() for t in triage_targets],
        "operating_points_at_prevalence": (
            [triage_operating_point(curve, float(t), prevalence=prevalence).to_dict() for t in triage_targets]
            if prevalence is not None else None
        ),
        "observed": _observed_triage(y_any, triage, prevalence) if triage is not None else None,
    }
    return result


def _subset_auc(y: NDArray, p: NDArray, keep: NDArray, n_boot: int, seed: int) -> dict:
    """AUC (with a case-level percentile-bootstrap CI) of the cases in `keep`; null when one class is missing."""
    yk, pk = y[keep], p[keep]
    if yk.size == 0 or yk.min() == yk.max():
        return {"value": math.nan, "ci": [math.nan, math.nan], "n_positive": int(yk.sum())}
    auc = roc_auc(yk, pk)
    boots = np.concatenate([auc_of_resamples(yk, pk, idx) for idx in bootstrap_indices(yk.size, n_boot, seed)])
    lo, hi = percentile_interval(boots)
    return {"value": auc, "ci": [lo, hi], "n_positive": int(yk.sum())}


def _per_case_amount(values: ArrayLike, name: str, n: int) -> NDArray[np.float64]:
    """One non-negative number per case (NaN = unknown), e.g. volume_ml or visible_voxels."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"{name} has {v.size} values, expected {n}")
    if np.any(v[np.isfinite(v)] < 0):
        raise ValueError(f"{name} must not be negative")
    return v


def _by_size(y: NDArray, p: NDArray, called: NDArray, volume_ml: ArrayLike, n_boot: int = 2000, seed: int = 0) -> dict:
    v = _per_case_amount(volume_ml, "volume_ml", y.size)
    pos = (y == 1) & np.isfinite(v)
    n_pos = max(int(pos.sum()), 1)
    bins = []
    for name, low, high in SIZE_BINS:
        in_bin = pos & (v <= high) & ((v > low) if low > 0 else True)
        bins.append(
            {
                "name": name,
                "range": _range_text(low, high),
                "low_ml": low,
                "high_ml": high,
                "sensitivity": proportion(int(called[in_bin].sum()), int(in_bin.sum())).to_dict(),
                "mean_probability": float(p[in_bin].mean()) if in_bin.any() else math.nan,
                "auc_vs_negatives": _subset_auc(y, p, in_bin | (y == 0), n_boot, seed),
                # AUC(ANY) = sum over bins of share x the bin's AUC against all negatives (exactly,
                # when every positive has a volume): the weight each bin carries in the headline AUC
                "share_of_positives": int(in_bin.sum()) / n_pos,
            }
        )
    name, low, high = SIZE_BINS[0]
    punctate = pos & (v <= high)
    return {
        "label": "ANY",
        "bins": bins,
        "auc_without_punctate": _subset_auc(y, p, ~punctate, n_boot, seed),
        "n_positive_unknown_volume": int(((y == 1) & ~np.isfinite(v)).sum()),
    }


#: What `by_visibility` calls a hidden positive (the text goes into the JSON, report and model card).
HIDDEN_DEFINITION = (
    "no blood voxel at least two pixels from bone, calcification or metal (> 300 HU) on its slice: "
    "all of it lies in the partial-volume edge, where it looks like the skull's own edge"
)


def _by_visibility(y: NDArray, p: NDArray, called: NDArray, visible_voxels: ArrayLike, n_boot: int = 2000, seed: int = 0) -> dict:
    v = _per_case_amount(visible_voxels, "visible_voxels", y.size)
    hidden = (y == 1) & (v == 0)
    return {
        "label": "ANY",
        "definition": HIDDEN_DEFINITION,
        "n_positive_hidden": int(hidden.sum()),
        "n_positive_unknown": int(((y == 1) & ~np.isfinite(v)).sum()),
        "hidden_sensitivity": proportion(int(called[hidden].sum()), int(hidden.sum())).to_dict(),
        "hidden_mean_probability": float(p[hidden].mean()) if hidden.any() else math.nan,
        "auc_visible_only": _subset_auc(y, p, ~hidden, n_boot, seed),
    }


def size_decomposition_text(bins: list[dict]) -> str:
    """A sentence: AUC(ANY) as the share-weighted mean of the size bins' AUCs, and its ceiling set by the punctate bin."""
    try:
        parts = [(b["name"], float(b["share_of_positives"]), float(b["auc_vs_negatives"]["value"])) for b in bins]
    except (KeyError, TypeError, ValueError):
        return ""
    parts = [x for x in parts if x[1] > 0 and math.isfinite(x[2])]
    if not parts or parts[0][0] != "punctate":
        return ""
    name, share, auc = parts[0]
    total = sum(sh * a for _, sh, a in parts)
    ceiling = 1.0 - share * (1.0 - auc)
    terms = " + ".join(f"{sh:.2f} x {a:.3f}" for _, sh, a in parts)
    return (
        f"AUC(ANY) is the positives-weighted mean of these AUCs: {terms} = {total:.3f}. With every larger bleed "
        f"ranked above every negative, the punctate bin ({share:.0%} of positives at {auc:.3f}) would still cap "
        f"AUC(ANY) at {ceiling:.3f}."
    )


def normalise_mimic(value: str | None) -> str | None:
    """Canonical mimic kind ("beam hardening" and "beam_hardening" -> "beam-hardening"); None if empty.

    Raises ValueError for an unknown kind.
    """
    if value is None:
        return None
    s = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    if s in ("", "none", "nan"):
        return None
    if s == "calcifications":
        s = "calcification"
    if s not in MIMIC_KINDS:
        raise ValueError(f"unknown mimic {value!r}; expected empty or one of {', '.join(MIMIC_KINDS)}")
    return s


def _by_mimic(y: NDArray, p: NDArray, called: NDArray, mimic: Sequence[str | None]) -> dict:
    if len(mimic) != y.size:
        raise ValueError(f"mimic has {len(mimic)} values, expected {y.size}")
    kinds = np.array([normalise_mimic(m) or "none" for m in mimic], dtype=object)
    neg = y == 0
    rows = []
    for kind in (*MIMIC_KINDS, "none"):
        sel = neg & (kinds == kind)
        rows.append(
            {
                "mimic": kind,
                "false_positive_rate": proportion(int(called[sel].sum()), int(sel.sum())).to_dict(),
                "mean_probability": float(p[sel].mean()) if sel.any() else math.nan,
            }
        )
    return {"label": "ANY", "kinds": rows}


def _observed_triage(y: NDArray, triage: Sequence[str], prevalence: float | None = None) -> dict:
    if len(triage) != y.size:
        raise ValueError(f"triage has {len(triage)} values, expected {y.size}")
    cats = np.array(list(triage), dtype=object)
    unknown = sorted(set(cats.tolist()) - set(TRIAGE_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown triage categories {unknown}; expected {list(TRIAGE_CATEGORIES)}")
    neg, pos = cats == TRIAGE_NEGATIVE, cats == TRIAGE_POSITIVE
    return {
        "counts": {c: int((cats == c).sum()) for c in TRIAGE_CATEGORIES},
        "miss_rate": proportion(int(y[neg].sum()), int(neg.sum())).to_dict(),
        "false_positive_rate": proportion(int((1 - y[pos]).sum()), int(pos.sum())).to_dict(),
        "fraction_refer": float((cats == TRIAGE_REFER).mean()),
        **(_observed_at_prevalence(y, neg, pos, prevalence) if prevalence is not None else {}),
    }


def _observed_at_prevalence(y: NDArray, neg: NDArray, pos: NDArray, prevalence: float) -> dict:
    """The observed triage's miss and false-positive shares were haemorrhage `prevalence` of the studies."""
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    miss, miss_ci = share_at_prevalence(int(y[neg].sum()), int((1 - y[neg]).sum()), n_pos, n_neg, prevalence)
    fp, fp_ci = share_at_prevalence(int((1 - y[pos]).sum()), int(y[pos].sum()), n_neg, n_pos, 1.0 - prevalence)
    return {
        "miss_rate_at_prevalence": {"value": miss, "ci": list(miss_ci)},  # NaN when none was called
        "false_positive_rate_at_prevalence": {"value": fp, "ci": list(fp_ci)},
    }

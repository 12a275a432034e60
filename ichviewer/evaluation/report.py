"""The evaluation report: metrics JSON on disk and a self-contained HTML page with inline SVG plots."""

from __future__ import annotations

import datetime as _dt
import json
import math
from html import escape
from pathlib import Path
from typing import Any

from ichviewer import __version__
from ichviewer.evaluation.summary import size_decomposition_text
from ichviewer.evaluation.svg import Chart, ci_bar

LABEL_NAMES: dict[str, str] = {
    "IPH": "intraparenchymal",
    "IVH": "intraventricular",
    "SDH": "subdural",
    "EDH": "epidural",
    "SAH": "subarachnoid",
    "ANY": "any haemorrhage",
}

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
LABEL_COLOURS: dict[str, str] = {
    "IPH": "#D55E00",
    "IVH": "#0072B2",
    "SDH": "#009E73",
    "EDH": "#CC79A7",
    "SAH": "#E69F00",
    "ANY": "#1a1a1a",
}


def to_jsonable(obj: Any) -> Any:
    """Replace NaN and infinities by None (JSON has neither) and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(result: dict, path: str | Path) -> None:
    """Write the metrics as strict JSON (null where a value is undefined)."""
    Path(path).write_text(json.dumps(to_jsonable(result), indent=1, allow_nan=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- formatting


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _pct(v: Any, digits: int = 1) -> str:
    v = _num(v)
    return "–" if not math.isfinite(v) else f"{100 * v:.{digits}f} %"


def _ci_text(ci: Any, digits: int, scale: float) -> str:
    """"lo–hi" of a confidence interval times `scale`, or "" when either end is missing."""
    lo, hi = (_num(ci[0]), _num(ci[1])) if ci else (math.nan, math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f"{scale * lo:.{digits}f}–{scale * hi:.{digits}f}"


def _ci_pct(ci: Any, digits: int = 1) -> str:
    return _ci_text(ci, digits, 100.0)


def _dec(v: Any, digits: int = 3) -> str:
    v = _num(v)
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _ci_dec(ci: Any, digits: int = 3) -> str:
    return _ci_text(ci, digits, 1.0)


def _target(v: Any) -> str:
    """A target rate as '1 %', '0.5 %', '0 %'."""
    v = _num(v)
    return "–" if not math.isfinite(v) else f"{100 * v:g} %"


def _value_ci_cell(a: dict | None) -> str:
    """'0.862 <span class="ci">(0.780–0.928)</span>' for a dict with value and ci (an AUC, an AP)."""
    if not a:
        return '<span class="muted">–</span>'
    return f'{_dec(a.get("value"))} <span class="ci">({_ci_dec(a.get("ci"))})</span>'


def _prop_cell(p: dict | None, digits: int = 1) -> str:
    """'96.0 % (89.0–99.0) 48/50' for a proportion dict."""
    if not p or not p.get("n"):
        return '<span class="muted">no cases</span>'
    ci = _ci_pct(p.get("ci"), digits)
    return (
        f'{_pct(p["value"], digits)} <span class="ci">({ci})</span>'
        f' <span class="frac">{p["k"]}/{p["n"]}</span>'
    )


# --------------------------------------------------------------------------- charts


def roc_chart(label: str, entry: dict) -> str:
    colour = LABEL_COLOURS.get(label, "#333")
    auc = entry["auc"]
    chart = Chart(
        title=f"{label} · {LABEL_NAMES.get(label, label)}",
        subtitle=f"{entry['n_positive']} positive, {entry['n_negative']} negative studies",
        x_label="1 − specificity (false-positive rate)",
        y_label="Sensitivity",
    )
    chart.line([0, 1], [0, 1], "#9aa0a6", width=1.0, dash="4 3")
    text = f"AUC {_dec(auc['value'])}"
    ci = _ci_dec(auc.get("ci"))
    chart.line(entry["roc"]["fpr"], entry["roc"]["tpr"], colour, legend=f"{text} (95% CI {ci})" if ci else text)
    op = entry["operating_point"]
    sens, spec = op["sensitivity"], op["specificity"]
    x, y = 1 - _num(spec["value"]), _num(sens["value"])
    if sens["ci"] and spec["ci"]:
        chart.error_bar(x, _num(sens["ci"][0]), x, _num(sens["ci"][1]), colour)
        chart.error_bar(1 - _num(spec["ci"][1]), y, 1 - _num(spec["ci"][0]), y, colour)
    thr = entry.get("threshold")
    at = f" at p ≥ {thr:.3g}" if isinstance(thr, (int, float)) else ""
    chart.marker(x, y, colour, label=f"Sens {_pct(sens['value'], 0)}, spec {_pct(spec['value'], 0)}{at}")
    return chart.render()


def pr_chart(label: str, entry: dict) -> str:
    colour = LABEL_COLOURS.get(label, "#333")
    ap = entry["average_precision"]
    chart = Chart(
        title=f"{label} · {LABEL_NAMES.get(label, label)}",
        subtitle=f"prevalence {_pct(entry['prevalence'])}",
        x_label="Recall (sensitivity)",
        y_label="Precision (PPV)",
    )
    prev = _num(entry["prevalence"])
    chart.hline(prev, legend=f"Chance (prevalence {_pct(prev, 0)})")
    # Step plot: precision P_n holds over the recall interval (R_{n-1}, R_n], so the area under
    # the drawn curve is exactly the average precision reported in the legend.
    rec = [_num(v) for v in reversed(entry["pr"]["recall"])]
    prec = [_num(v) for v in reversed(entry["pr"]["precision"])]
    xs, ys = [rec[0]], [prec[0]]
    for i in range(1, len(rec)):
        xs += [rec[i - 1], rec[i]]
        ys += [prec[i], prec[i]]
    ci = _ci_dec(ap.get("ci"))
    text = f"AP {_dec(ap['value'])}"
    chart.line(xs, ys, colour, legend=f"{text} (95% CI {ci})" if ci else text)
    op = entry["operating_point"]
    sens, ppv = op["sensitivity"], op["ppv"]
    x, y = _num(sens["value"]), _num(ppv["value"])
    if sens["ci"] and ppv["ci"]:
        chart.error_bar(x, _num(ppv["ci"][0]), x, _num(ppv["ci"][1]), colour)
        chart.error_bar(_num(sens["ci"][0]), y, _num(sens["ci"][1]), y, colour)
    chart.marker(x, y, colour, label=f"Operating point: PPV {_pct(ppv['value'], 0)}")
    return chart.render(legend_corner="lower left")


def triage_chart(triage: dict) -> str:
    curve = triage["curve"]
    frac = [_num(v) for v in curve["fraction_auto"]]
    miss = [_num(v) for v in curve["miss_rate"]]
    finite = [m for m in miss if math.isfinite(m)]
    low_end = [m for m in finite if m <= 0.05]
    y_max = 0.05 if low_end else (max(finite) * 1.05 if finite else 1.0)
    step = y_max / 5
    chart = Chart(
        title="Triage: auto-reporting confident negatives",
        subtitle="studies with ANY probability below a threshold are reported as negative without a read"
        + (" (axis cut at 5 % miss)" if low_end and max(finite) > 0.05 else ""),
        x_label="Studies auto-reported as negative",
        y_label="Miss rate among them",
        y_range=(0.0, y_max),
        y_ticks=[step * i for i in range(6)],
        x_tick_format="{:.0%}",
        y_tick_format="{:.1%}",
        width=860,
        height=360,
        margin=(40, 330, 44, 58),
    )
    chart.line([0.0, *frac], [0.0, *miss], "#1a1a1a", legend="Miss rate = missed bleeds / auto-reported")
    prev = triage.get("prevalence")
    if prev is not None and "miss_rate_at_prevalence" in curve:
        # The same thresholds on a worklist where `prev` of studies bleed (Bayes' rule; triage.py).
        frac_p = [_num(v) for v in curve["fraction_auto_at_prevalence"]]
        miss_p = [min(_num(v), y_max) for v in curve["miss_rate_at_prevalence"]]
        chart.line([0.0, *frac_p], [0.0, *miss_p], "#7f7f7f", dash="6 3",
                   legend=f"Miss rate were {prev:.0%} of studies bleeding (Bayes' rule)")
    colours = ["#009E73", "#0072B2", "#E69F00", "#D55E00", "#CC79A7"]
    for i, op in enumerate(triage["operating_points"]):
        target = _num(op["target_miss_rate"])
        c = colours[i % len(colours)]
        if target <= y_max and target > 0:
            chart.hline(target, colour=c, dash="3 3")
        if op.get("negative_below") is not None:
            chart.marker(
                _num(op["fraction_auto"]),
                _num(op["miss_rate"]),
                c,
                label=f"≤ {_target(target)} miss: {_pct(op['fraction_auto'], 0)} auto-reported (p < {op['negative_below']:.3g})",
                r=4.5,
            )
    return chart.render(legend_corner="outside")


# --------------------------------------------------------------------------- page

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2125;background:#f4f5f7}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #e2e5e9;padding-bottom:4px}
p.lead{color:#4a5158;margin:0 0 18px}.muted{color:#8a9199}.ci{color:#4a5158}.frac{color:#8a9199;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{flex:1 1 200px;border:1px solid #dfe3e8;border-radius:6px;padding:10px 14px;background:#fafbfc}
.card .k{font-size:12px;color:#5b636b;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:26px;font-weight:650;margin-top:2px}.card .s{font-size:13px;color:#4a5158}
.grid{display:flex;flex-wrap:wrap;gap:8px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0}
th,td{padding:5px 9px;border-bottom:1px solid #e8ebee;text-align:left;vertical-align:middle}
th{background:#f1f3f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.warn{background:#fff6e0;border:1px solid #f0d48a;border-radius:6px;padding:8px 12px;margin:10px 0}
footer{margin-top:36px;font-size:12.5px;color:#5b636b;line-height:1.5}
"""


def _cards(result: dict) -> str:
    labels = result["labels"]
    cards = []
    if "ANY" in labels:
        e = labels["ANY"]
        op = e["operating_point"]
        cards.append(
            f'<div class="card"><div class="k">Any haemorrhage · AUC</div><div class="v">{_dec(e["auc"]["value"])}</div>'
            f'<div class="s">95 % CI {_ci_dec(e["auc"]["ci"]) or "–"}</div></div>'
        )
        cards.append(
            f'<div class="card"><div class="k">Sensitivity</div><div class="v">{_pct(op["sensitivity"]["value"])}</div>'
            f'<div class="s">{op["sensitivity"]["k"]}/{op["sensitivity"]["n"]} bleeds found · CI {_ci_pct(op["sensitivity"]["ci"])}</div></div>'
        )
        cards.append(
            f'<div class="card"><div class="k">Specificity</div><div class="v">{_pct(op["specificity"]["value"])}</div>'
            f'<div class="s">{op["specificity"]["k"]}/{op["specificity"]["n"]} normals cleared · CI {_ci_pct(op["specificity"]["ci"])}</div></div>'
        )
    tri = result.get("triage")
    if tri:
        ops = [o for o in tri["operating_points"] if o.get("negative_below") is not None and _num(o["target_miss_rate"]) > 0]
        best = next((o for o in ops if abs(_num(o["target_miss_rate"]) - 0.01) < 1e-9), ops[0] if ops else None)
        if best:
            cards.append(
                f'<div class="card"><div class="k">Triage at ≤ {_target(best["target_miss_rate"])} miss</div>'
                f'<div class="v">{_pct(best["fraction_auto"], 0)}</div>'
                f'<div class="s">of studies auto-reported negative ({best["n_missed"]} missed of {best["n_auto"]})</div></div>'
            )
    m = result.get("map", {})
    cards.append(
        f'<div class="card"><div class="k">mAP</div><div class="v">{_dec(m.get("value"))}</div>'
        f'<div class="s">mean AP over {", ".join(m.get("labels", [])) or "–"}</div></div>'
    )
    return '<div class="cards">' + "".join(cards) + "</div>"


def _operating_table(result: dict) -> str:
    rows = []
    for label, e in result["labels"].items():
        op = e["operating_point"]
        thr = e.get("threshold")
        rows.append(
            "<tr>"
            f'<td><span class="swatch" style="background:{LABEL_COLOURS.get(label, "#333")}"></span><b>{escape(label)}</b>'
            f' <span class="muted">{escape(LABEL_NAMES.get(label, ""))}</span></td>'
            f'<td class="num">{e["n_positive"]} / {e["n_negative"]}</td>'
            f'<td class="num">{_value_ci_cell(e["auc"])}</td>'
            f'<td class="num">{_value_ci_cell(e["average_precision"])}</td>'
            f'<td class="num">{f"{thr:.3g}" if isinstance(thr, (int, float)) else "per study"}</td>'
            f'<td class="num">{_prop_cell(op["sensitivity"])}</td>'
            f'<td class="num">{_prop_cell(op["specificity"])}</td>'
            f'<td class="num">{_prop_cell(op["ppv"])}</td>'
            f'<td class="num">{_prop_cell(op["npv"])}</td>'
            "</tr>"
        )
    prevalence = result["labels"].get("ANY", {}).get("prevalence")
    note = (
        f'<p class="muted">PPV and NPV depend on how common haemorrhage is in this test set (ANY: {_pct(prevalence)}); '
        "they do not carry over to a population with a different prevalence.</p>"
        if prevalence is not None
        else ""
    )
    return note + (
        "<table><thead><tr><th>Label</th><th>Pos / neg</th><th>AUC (95 % CI)</th><th>AP (95 % CI)</th>"
        "<th>Threshold</th><th>Sensitivity</th><th>Specificity</th><th>PPV</th><th>NPV</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    ) + _positive_tier_table(result)


def _positive_tier_table(result: dict) -> str:
    """The subtypes' "positive" tier (calls at the specific threshold; `ichviewer.core.decisions`), if scored."""
    rows = []
    for label, e in result["labels"].items():
        tier = e.get("operating_point_positive_tier")
        if not tier:
            continue
        thr = e.get("specific_threshold")
        rows.append(
            f'<tr><td><b>{escape(label)}</b></td>'
            f'<td class="num">{f"{thr:.3g}" if isinstance(thr, (int, float)) else "per study"}</td>'
            f'<td class="num">{_prop_cell(tier["sensitivity"])}</td>'
            f'<td class="num">{_prop_cell(tier["specificity"])}</td>'
            f'<td class="num">{_prop_cell(tier["ppv"])}</td>'
            f'<td class="num">{_prop_cell(e["operating_point"]["ppv"])}</td></tr>'
        )
    if not rows:
        return ""
    return (
        '<h3>Subtypes: "positive" and "possible"</h3>'
        f'<p>{escape(result.get("settings", {}).get("tier_rule", ""))}. Below, only the "positive" calls count as positive; '
        'the last column is the PPV of every call ("possible" or "positive"), as in the table above.</p>'
        "<table><thead><tr><th>Subtype</th><th>Specific threshold</th><th>Sensitivity</th><th>Specificity</th>"
        "<th>PPV</th><th>PPV of all calls</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _size_table(by_size: dict) -> str:
    rows = []
    for b in by_size["bins"]:
        s = b["sensitivity"]
        rows.append(
            f'<tr><td><b>{escape(b["name"])}</b> <span class="muted">{escape(b["range"].replace("<=", "≤"))}</span></td>'
            f'<td class="num">{s["n"]}</td><td class="num">{_prop_cell(s)}</td>'
            f'<td>{ci_bar(_num(s["value"]), _num((s["ci"] or [None])[0]), _num((s["ci"] or [None, None])[1]), "#0072B2")}</td>'
            f'<td class="num">{_dec(b["mean_probability"], 2)}</td>'
            f'<td class="num">{_value_ci_cell(b.get("auc_vs_negatives"))}</td></tr>'
        )
    extra = ""
    decomposition = size_decomposition_text(by_size["bins"])
    if decomposition:
        extra += f"<p>{escape(decomposition)}</p>"
    if by_size.get("n_positive_unknown_volume"):
        extra += f'<p class="muted">{by_size["n_positive_unknown_volume"]} positive studies have no volume and are not in this table.</p>'
    without = by_size.get("auc_without_punctate")
    if without:
        extra += f"<p>AUC(ANY) with the punctate positives left out: {_value_ci_cell(without)}.</p>"
    return (
        "<table><thead><tr><th>Bleed size (total volume)</th><th>Studies</th><th>Sensitivity (95 % CI)</th>"
        "<th>0 – 100 %</th><th>Mean p(ANY)</th><th>AUC against all negatives (95 % CI)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + extra
    )


def _visibility_text(vis: dict) -> str:
    """Hidden positives (labelled blood that cannot be seen) and AUC(ANY) without them."""
    n = vis.get("n_positive_hidden") or 0
    if not n:
        return "<p>Every positive study has blood a reader could see, clear of the bone's partial-volume edge.</p>"
    hidden_sens = vis.get("hidden_sensitivity") or {}
    return (
        f"<p><b>{n}</b> positive {'study has' if n == 1 else 'studies have'} labelled haemorrhage that cannot be seen "
        f"({escape(vis.get('definition', ''))}). Mean p(ANY) of {'it' if n == 1 else 'them'} {_dec(vis.get('hidden_mean_probability'), 2)}, "
        f"called positive {_prop_cell(hidden_sens) if hidden_sens else '–'}. "
        f"AUC(ANY) with {'it' if n == 1 else 'them'} left out: {_value_ci_cell(vis.get('auc_visible_only'))}.</p>"
    )


def _mimic_table(mimics: dict) -> str:
    rows = []
    for k in mimics["kinds"]:
        f = k["false_positive_rate"]
        name = "no mimic" if k["mimic"] == "none" else k["mimic"]
        rows.append(
            f'<tr><td><b>{escape(name)}</b></td><td class="num">{f["n"]}</td><td class="num">{_prop_cell(f)}</td>'
            f'<td>{ci_bar(_num(f["value"]), _num((f["ci"] or [None])[0]), _num((f["ci"] or [None, None])[1]), "#D55E00")}</td>'
            f'<td class="num">{_dec(k["mean_probability"], 2)}</td></tr>'
        )
    return (
        "<table><thead><tr><th>Negative studies with</th><th>Studies</th><th>False-positive rate (95 % CI)</th>"
        "<th>0 – 100 %</th><th>Mean p(ANY)</th><th>AUC against all negatives (95 % CI)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _triage_section(tri: dict) -> str:
    rows = []
    for op in tri["operating_points"]:
        if op.get("negative_below") is None:
            rows.append(
                f'<tr><td class="num">≤ {_target(op["target_miss_rate"])}</td><td colspan="4" class="muted">'
                "not reachable: even the lowest-scored studies include a bleed</td></tr>"
            )
            continue
        rows.append(
            f'<tr><td class="num">≤ {_target(op["target_miss_rate"])}</td><td class="num">{op["negative_below"]:.4g}</td>'
            f'<td class="num">{_pct(op["fraction_auto"])} <span class="frac">{op["n_auto"]} studies</span></td>'
            f'<td class="num">{_pct(op["miss_rate"], 2)} <span class="ci">({_ci_pct(op["miss_rate_ci"], 2)})</span></td>'
            f'<td class="num">{op["n_missed"]}</td></tr>'
        )
    html = [
        '<div class="grid">' + triage_chart(tri) + "</div>",
        "<table><thead><tr><th>Target miss rate</th><th>Auto-report when p(ANY) &lt;</th><th>Auto-reported</th>"
        "<th>Miss rate (95 % CI)</th><th>Bleeds missed</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>",
        '<p class="muted">Thresholds here are read off this test set, so they flatter it; ship thresholds chosen on '
        "validation data and judge them by the observed triage below.</p>",
    ]
    obs = tri.get("observed")
    if obs:
        c = obs["counts"]
        html.append(
            "<h3>Triage as shipped (categories stored with the predictions)</h3>"
            "<table><thead><tr><th>Category</th><th>Studies</th><th>Error among them (95 % CI)</th></tr></thead><tbody>"
            f'<tr><td>confident negative</td><td class="num">{c["confident negative"]}</td>'
            f'<td class="num">miss rate {_prop_cell(obs["miss_rate"], 2)}</td></tr>'
            f'<tr><td>refer</td><td class="num">{c["refer"]}</td><td class="num">read by a radiologist</td></tr>'
            f'<tr><td>confident positive</td><td class="num">{c["confident positive"]}</td>'
            f'<td class="num">no bleed {_prop_cell(obs["false_positive_rate"], 2)}</td></tr>'
            "</tbody></table>"
        )
        at = obs.get("miss_rate_at_prevalence")
        if at is not None and tri.get("prevalence") is not None:
            fp = obs["false_positive_rate_at_prevalence"]
            html.append(
                f'<p>Were {tri["prevalence"]:.0%} of studies haemorrhages, as on a clinical worklist (this set is '
                f'balanced), the same calls would give a miss rate among confident negatives of {_pct(at["value"], 2)} '
                f'<span class="ci">({_ci_pct(at["ci"], 2)})</span> and no bleed among confident positives '
                f'{_pct(fp["value"], 2)} <span class="ci">({_ci_pct(fp["ci"], 2)})</span> (Bayes\' rule on this set\'s '
                "sensitivity and specificity of each call; the intervals combine the exact ones of the two).</p>"
            )
    return "\n".join(html)


def _comparison_section(comp: dict) -> str:
    rows = []
    for label, test in comp["labels"].items():
        if not test:
            rows.append(f'<tr><td><b>{escape(label)}</b></td><td colspan="5" class="muted">one class only</td></tr>')
            continue
        p = _num(test["p_value"])
        p_text = "< 0.001" if p < 0.001 else f"{p:.3f}"
        rows.append(
            f'<tr><td><b>{escape(label)}</b></td><td class="num">{_dec(test["auc_a"])}</td><td class="num">{_dec(test["auc_b"])}</td>'
            f'<td class="num">{_num(test["difference"]):+.3f} <span class="ci">({_ci_dec(test["ci"])})</span></td>'
            f'<td class="num">{p_text}</td><td class="num">{_dec(test["correlation"], 2)}</td></tr>'
        )
    return (
        f'<p>These predictions (A) against <code>{escape(str(comp["predictions_b"]))}</code> (B) on the '
        f'{comp["n_cases"]} labelled studies both cover. DeLong\'s test for correlated AUCs, two-sided.</p>'
        "<table><thead><tr><th>Label</th><th>AUC A</th><th>AUC B</th><th>A − B (95 % CI)</th><th>p</th>"
        "<th>Correlation</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _inputs_warning(inputs: dict | None) -> str:
    """A banner at the top when studies were left out, so nobody reads the figures without knowing."""
    if not inputs:
        return ""
    ul, up = inputs.get("unmatched_labels", []), inputs.get("unmatched_predictions", [])
    failed = inputs.get("failed", [])
    if not (ul or up or failed):
        return ""
    return (
        f'<div class="warn">Left out: {len(ul)} labelled studies without a prediction, {len(up)} predicted studies '
        f"without a label, {len(failed)} studies inference could not read. They are listed under Data.</div>"
    )


def _inputs_section(inputs: dict | None) -> str:
    if not inputs:
        return ""
    parts = []
    ul, up = inputs.get("unmatched_labels", []), inputs.get("unmatched_predictions", [])
    failed = inputs.get("failed", [])
    merged = inputs.get("merged_series", {})
    summary = (
        f'<p>Matched <b>{inputs.get("n_matched", 0)}</b> studies on <code>{escape(str(inputs.get("match_key")))}</code>'
        f' between <code>{escape(str(inputs.get("predictions", "")))}</code> and <code>{escape(str(inputs.get("labels", "")))}</code>.</p>'
    )
    parts.append(summary)
    if ul or up or failed:
        parts.append(
            f'<div class="warn">{len(ul)} labelled studies had no prediction, {len(up)} predicted studies had no label'
            f" and {len(failed)} studies could not be read by inference; none of them is in the figures above.</div>"
        )
    for title, items in (("Labelled but not predicted", ul), ("Predicted but not labelled", up)):
        if items:
            shown = ", ".join(escape(i) for i in items[:50]) + (" …" if len(items) > 50 else "")
            parts.append(f"<p><b>{title}</b> ({len(items)}): <code>{shown}</code></p>")
    if failed:
        rows = "".join(f"<tr><td><code>{escape(f['path'])}</code></td><td>{escape(f['reason'])}</td></tr>" for f in failed[:100])
        parts.append(f"<table><thead><tr><th>Not read by inference</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>")
    if merged:
        parts.append(f"<p>{len(merged)} studies had several series; the highest probability per label was used.</p>")
    return "<h2>Data</h2>" + "\n".join(parts)


def render_report(result: dict, title: str = "ICH Viewer evaluation") -> str:
    """The whole report as one HTML string: no external assets and no JavaScript."""
    settings = result.get("settings", {})
    labels = result["labels"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="lead">{result["n_cases"]} studies, case-level. Decision: '
        f'{escape(settings.get("decision_rule", "positive when probability >= threshold"))}. Intervals are 95 %.</p>',
        _cards(result),
        _inputs_warning(result.get("inputs")),
        "<h2>Operating point</h2>",
        _operating_table(result),
        "<h2>ROC curves</h2>",
        '<p class="muted">Circle: the operating point, with its 95 % confidence interval for sensitivity (vertical) and '
        "specificity (horizontal). Dashed: chance.</p>",
        '<div class="grid">' + "".join(roc_chart(lab, e) for lab, e in labels.items()) + "</div>",
        "<h2>Precision–recall curves</h2>",
        '<p class="muted">Area under each step curve = average precision. Dashed: a test with no skill (the prevalence).</p>',
        '<div class="grid">' + "".join(pr_chart(lab, e) for lab, e in labels.items()) + "</div>",
    ]
    if result.get("by_size"):
        parts += ["<h2>Sensitivity by bleed size (ANY)</h2>", _size_table(result["by_size"])]
    if result.get("by_visibility"):
        parts += ["<h2>Haemorrhage that cannot be seen</h2>", _visibility_text(result["by_visibility"])]
    if result.get("mimics"):
        parts += ["<h2>False positives on mimics (ANY, studies without haemorrhage)</h2>", _mimic_table(result["mimics"])]
    if result.get("triage"):
        parts += ["<h2>Triage</h2>", _triage_section(result["triage"])]
    if result.get("comparison"):
        parts += ["<h2>Comparison (DeLong)</h2>", _comparison_section(result["comparison"])]
    parts.append(_inputs_section(result.get("inputs")))
    parts.append(
        "<footer><b>Methods.</b> AUC: area under the empirical ROC curve (ties count one half). AUC and AP intervals: "
        f"percentile bootstrap over studies, {settings.get('n_boot', '?')} resamples, seed {settings.get('seed', '?')} "
        "(Lee et al. 2019). Sensitivity, specificity, PPV, NPV, miss and false-positive rates: exact Clopper–Pearson "
        "binomial intervals. AP: Σ (R<sub>n</sub> − R<sub>n−1</sub>) P<sub>n</sub>; mAP: mean AP over labels. "
        "Triage miss rate: bleeds among studies auto-reported negative, divided by those studies (DeepRadiologyNet). "
        f"Generated by ichviewer {escape(__version__)} on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</footer>"
    )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(result: dict, path: str | Path, title: str = "ICH Viewer evaluation") -> None:
    """Write `render_report` to `path` (UTF-8)."""
    Path(path).write_text(render_report(to_jsonable(result), title), encoding="utf-8")

"""FindingsPanel: the AI's case-level findings per label, decision, triage badge, models, provider and progress."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ichviewer import LABELS, SUBTYPES
from ichviewer.core.decisions import POSITIVE_TIER, POSSIBLE_TIER, probability_and_threshold_text, probability_decimals
from ichviewer.qt.browser import SeriesAI
from ichviewer.qt.inference_controller import provider_display_name

#: What the label abbreviations mean, for tooltips.
LABEL_NAMES = {
    "IPH": "intraparenchymal haemorrhage",
    "IVH": "intraventricular haemorrhage",
    "SDH": "subdural haemorrhage",
    "EDH": "epidural haemorrhage",
    "SAH": "subarachnoid haemorrhage",
    "ANY": "any intracranial haemorrhage",
}

#: Triage badge colours (background, text), as DeepRadiologyNet's three outcomes read at a glance.
TRIAGE_STYLE = {
    "confident negative": ("#2e7d32", "#ffffff"),
    "confident positive": ("#c62828", "#ffffff"),
    "refer": ("#ffb300", "#000000"),
}
_IDLE_BADGE = ("#3a3a3a", "#bbbbbb")
#: Text colour of each call (the tiers of `ichviewer.core.decisions`), here and in the adjudication form.
CALL_COLOURS = {"positive": "#ff6b6b", "possible": "#ffab70", "negative": "#9ccc9c"}
_POSITIVE_TEXT = QColor(CALL_COLOURS["positive"])
_NEGATIVE_TEXT = QColor(CALL_COLOURS["negative"])
# Amber: a subtype's probability over its own threshold in a study negative for haemorrhage (the
# number is marked; the call stays "negative" in the negative colour, an amber call read as
# "possible"), and the warnings put before the verdict.
_HELD_BACK_TEXT = QColor("#e0b050")
_POSSIBLE_TEXT = QColor(CALL_COLOURS["possible"])  # a subtype called below its specific threshold


def decision_tooltip(finding: Any, any_finding: Any) -> str:
    """Why a label's decision is what it is (the case rule of `ichviewer.core.decisions`)."""
    d = probability_decimals(finding.probability, finding.threshold, finding.specific_threshold)
    p, t = f"{finding.probability:.{d}f}", f"{finding.threshold:.{d}f}"
    own = f"{p}: positive when probability \u2265 {t} (manifest operating point)"
    if finding.label == "ANY":
        return own + "; decides whether the study is positive for haemorrhage"
    if finding.held_back:
        ap, at = probability_and_threshold_text(any_finding.probability, any_finding.threshold)
        return (
            f"{finding.label} {p} reaches its own threshold {t}, but a subtype "
            f"is named only in a study positive for haemorrhage, and ANY {ap} is below its threshold {at}"
        )
    if finding.specific_threshold is None:
        return own + ", and only in a study positive for haemorrhage (ANY)"
    return (
        f"{p}: called when probability \u2265 {t} (manifest operating point, chosen for sensitivity), "
        "and only in a study positive for haemorrhage (ANY);\n"
        f"a call is \"positive\" from {finding.specific_threshold:.{d}f} (chosen on validation for specificity), "
        "\"possible\" below it"
    )


def verdict_text(case: dict[str, Any]) -> str:
    """The one-line verdict under the findings table, consistent with the table's decisions."""
    if not case["ANY"].positive:
        held = [label for label in LABELS if case[label].held_back]
        if held:
            verb = "reaches its own threshold" if len(held) == 1 else "reach their own thresholds"
            return f"No haemorrhage found by the AI ({', '.join(held)} {verb}, ANY does not)"
        return "No haemorrhage found by the AI"
    named = [label for label in SUBTYPES if case[label].tier == POSITIVE_TIER]
    possible = [label for label in SUBTYPES if case[label].tier == POSSIBLE_TIER]
    if not named and not possible:
        return "Positive for haemorrhage (no subtype reaches its threshold)"
    parts = ([", ".join(named)] if named else []) + (["possible " + ", ".join(possible)] if possible else [])
    return "Positive for haemorrhage: " + "; ".join(parts)


def incomplete_text(result: Any) -> str:
    """What the panel, the summary and the Series list say of a series with part of it missing."""
    return (f"Series incomplete ({result.incomplete}): the AI has not seen the whole head; "
            "triage withheld (refer).")


def triage_line(result: Any) -> str:
    """The triage as the summary and the Series list state it, with why it is withheld when it is."""
    if not result.applicable:
        return f"Does not look like a head CT: {result.head_check.reason}; triage withheld (refer)."
    if result.incomplete:
        return incomplete_text(result)
    return f"Triage: {result.triage}."


def series_ai(result: Any) -> SeriesAI:
    """A finished study's verdict for its row in the series browser: "ICH" or "no ICH" over the ANY
    probability, on the triage badge's colour (`TRIAGE_STYLE`: an incomplete series is on "refer"),
    the verdict and triage lines as its tooltip."""
    any_finding = result.case["ANY"]
    ap, at = probability_and_threshold_text(any_finding.probability, any_finding.threshold)
    if not result.applicable:
        text = "not head\nCT?"
    else:
        text = ("ICH" if any_finding.positive else "no ICH") + f"\n{ap}"
    bg, fg = TRIAGE_STYLE.get(result.triage, _IDLE_BADGE)
    tooltip = f"AI: {verdict_text(result.case)}.\n{triage_line(result)}\nANY {ap} (threshold {at})."
    return SeriesAI(text=text, tooltip=tooltip, background=bg, foreground=fg, priority=float(any_finding.probability))


def run_text(result: Any, *, provider: bool = False) -> str:
    """How the findings were made: "140 slices in 1.2 s" ("140 slices on CPU in 1.2 s" with
    `provider`), or for findings kept from an earlier run of the same models on the same voxels
    "140 slices, analysed 2026-12-07 11:40 in 1.2 s (kept, not run again)", so kept numbers are
    never shown as if the models had just run."""
    text = f"{result.n_slices} slices"
    if provider:
        text += f" on {provider_display_name(result.provider)}"
    if result.restored:
        return f"{text}, analysed {result.restored} in {result.seconds:.1f} s (kept, not run again)"
    return f"{text} in {result.seconds:.1f} s"


def findings_summary(result: Any, about: str = "") -> str:
    """A finished study's findings as plain text for a report: the verdict and triage as the panel
    shows them, each label's probability and call (a threshold-reaching subtype that is not named
    says so), the models and where they ran, and `about` (the ensemble's own statement, e.g. "Not
    for clinical use. ...")."""
    lines = [f"AI findings (ICH Viewer): {verdict_text(result.case)}.", triage_line(result)]
    calls = []
    for label in LABELS:
        f = result.case[label]
        note = " (reaches its own threshold; not named, ANY is below its threshold)" if f.held_back else ""
        calls.append(f"{label} {probability_and_threshold_text(f.probability, f.threshold)[0]} {f.tier}{note}")
    any_ = result.case["ANY"]
    lines.append("; ".join(calls) + f" (ANY threshold {probability_and_threshold_text(any_.probability, any_.threshold)[1]}).")
    lines.append(f"{models_text(result.models)}; {run_text(result, provider=True)}.")
    if about.strip():
        lines.append(about.strip())
    return "\n".join(lines)


def _badge_css(bg: str, fg: str) -> str:
    return f"QLabel {{ background: {bg}; color: {fg}; border-radius: 4px; padding: 4px 8px; font-weight: bold; }}"


def triage_tooltip(ops: Any) -> str:
    """What the triage badge means, with the loaded ensemble's thresholds (`OperatingPoints`) when known."""
    head = "Triage of the study on the ensemble's ANY probability (DeepRadiologyNet):\n"
    if ops is None:
        return head + "confident negative / confident positive: the ensemble is sure;\nrefer: a radiologist must decide."
    at = (f" (placed on validation for the rates they would have were {ops.triage_prevalence:.0%} of studies "
          "haemorrhages; see the model card)") if ops.triage_prevalence is not None else " (placed on validation)"
    neg = (f"confident negative: ANY below {ops.negative_below:.2f}" if ops.negative_below > 0.0
           else "confident negative: switched off for this ensemble")
    pos = (f"confident positive: ANY above {ops.positive_above:.2f}" if ops.positive_above < 1.0
           else "confident positive: switched off for this ensemble")
    return (head + f"{neg};\n{pos}{at};\nrefer: anything else, a radiologist must decide.\n"
            "A series that fails the head-CT check is always referred.")


class ElidedLabel(QLabel):
    """One line of text cut with an ellipsis to the width it has; `text()` and the tooltip keep all of it."""

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(20, self.fontMetrics().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(super().sizeHint().width(), self.fontMetrics().height())

    def paintEvent(self, _event: Any) -> None:  # noqa: N802
        painter = QPainter(self)
        try:
            painter.setPen(self.palette().color(self.foregroundRole()))
            shown = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.contentsRect().width())
            painter.drawText(self.contentsRect(), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), shown)
        finally:
            painter.end()


#: A manifest's safety statement, shown first so a line cut to the panel's width keeps it.
NOT_FOR_CLINICAL_USE = "Not for clinical use."


def about_text(name: str, description: str) -> str:
    """'Not for clinical use. NAME: the rest of the description' (the statement moved to the front when there)."""
    about = description.strip()
    first = ""
    if NOT_FOR_CLINICAL_USE.lower() in about.lower():
        i = about.lower().index(NOT_FOR_CLINICAL_USE.lower())
        about = (about[:i] + about[i + len(NOT_FOR_CLINICAL_USE):]).strip()
        first = NOT_FOR_CLINICAL_USE + " "
    return first + (f"{name}: {about}" if name and about else about)


def models_text(models: Any) -> str:
    """'Models: vgg, resnet, inception, mobilenet (0.1.0+seed0)', or each with its own version when they differ."""
    models = list(models)
    versions = {m.version for m in models}
    if len(models) > 1 and len(versions) == 1:
        return f"Models: {', '.join(m.name for m in models)} ({versions.pop()})"
    return "Models: " + ", ".join(f"{m.name} {m.version}" for m in models)


class FindingsPanel(QWidget):
    """Per label (IPH ... ANY): case probability and decision at the manifest's operating point; the study's triage class.

    Fills in while the ensemble runs (probabilities of the slices done so far, a
    progress bar); the triage badge is given only once every slice is done, since a
    study cannot be "confidently negative" on half its slices. Selecting a row
    selects that label for the slice plot and the attention overlay.
    """

    sig_label_selected = Signal(str)
    #: A row double-clicked: go to the slice where that finding is most likely.
    sig_label_activated = Signal(str)
    sig_run_requested = Signal()
    sig_auto_infer_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.status = QLabel("No study open.")
        self.status.setWordWrap(True)
        self.triage_badge = QLabel("")
        self.triage_badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.triage_badge.setToolTip(triage_tooltip(None))
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("%v / %m slices")
        self.progress.setVisible(False)

        self.table = QTableWidget(len(LABELS), 3)
        self.table.setHorizontalHeaderLabels(["Finding", "Probability", "Decision"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrow keys stay with slice scrolling
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for row, label in enumerate(LABELS):
            item = QTableWidgetItem(label)
            item.setToolTip(LABEL_NAMES[label])
            item.setData(Qt.ItemDataRole.UserRole, label)
            self.table.setItem(row, 0, item)
            self.table.setItem(row, 1, QTableWidgetItem("\u2013"))
            self.table.setItem(row, 2, QTableWidgetItem(""))
            self.table.item(row, 1).setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # All six rows always in view (ANY, the study's decision, is the last): the table never
        # scrolls and the layout cannot squeeze it (at stop 20 the ANY row was hidden under the
        # model list in a 1000-pixel-high window).
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._fit_table_height()

        self.models_label = QLabel("")
        self.models_label.setWordWrap(True)
        self.provider_label = QLabel("")
        self.elapsed_label = QLabel("")
        # The ensemble's own description from its manifest (the bundled one says what it was
        # trained on and "Not for clinical use"): a reader sees where the findings come from. One
        # line, all of it in the tooltip, so the panel's buttons stay in view in a 1000-pixel window.
        self.about_label = ElidedLabel("")
        self.about_label.setStyleSheet("color: #a0a0a0; font-size: 11px;")
        self.about_label.setVisible(False)

        self.auto_infer_check = QCheckBox("Analyse studies when opened")
        self.auto_infer_check.setChecked(True)
        self.run_button = QPushButton("Analyse this study")
        self.run_button.setEnabled(False)
        # The finished study's findings as text for the report (no key: a blinded reader, whose
        # findings dock is hidden, cannot copy what is withheld)
        self.copy_button = QPushButton("Copy summary")
        self.copy_button.setToolTip("Copy the verdict, triage, each finding's probability and the models, as text for a report")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_summary)
        self.summary = ""
        # "Copied" for a moment; the timer is the panel's, so it dies with it
        self._copied_timer = QTimer(self)
        self._copied_timer.setSingleShot(True)
        self._copied_timer.setInterval(1500)
        self._copied_timer.timeout.connect(lambda: self.copy_button.setText("Copy summary"))

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Triage:"))
        top.addWidget(self.triage_badge, 1)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(self.table)
        layout.addWidget(self.models_label)
        # one line for where and how long: the panel fits a 1000-pixel-high window without scrolling
        run_row = QHBoxLayout()
        run_row.addWidget(self.provider_label)
        run_row.addSpacing(16)
        run_row.addWidget(self.elapsed_label)
        run_row.addStretch(1)
        run_row.addWidget(self.copy_button)  # beside where and how long: the dock keeps its width
        layout.addLayout(run_row)
        layout.addWidget(self.about_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.auto_infer_check)
        buttons.addStretch(1)
        buttons.addWidget(self.run_button)
        layout.addLayout(buttons)
        layout.addStretch(1)

        self._thresholds: dict[str, float] = {}
        self.provider = ""
        self._selected: str | None = None
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.sig_label_activated.emit(LABELS[row]))
        self.run_button.clicked.connect(self.sig_run_requested)
        self.auto_infer_check.toggled.connect(self.sig_auto_infer_changed)
        self._set_badge(None)

    # -- what the panel shows -------------------------------------------------------------
    def show_unavailable(self, reason: str) -> None:
        """No models to run (e.g. "No AI models installed (models/default missing)"); the viewer works without AI."""
        self.clear_results()
        self.status.setText(f"{reason}. The images can be read as usual.")
        self.run_button.setEnabled(False)
        self.auto_infer_check.setEnabled(False)

    def show_idle(self, can_run: bool) -> None:
        """A study is open and not analysed (automatic analysis is off)."""
        self.clear_results()
        self.status.setText("Not analysed. Press \u201cAnalyse this study\u201d to run the AI models.")
        self.run_button.setEnabled(can_run)

    def begin(self, n_slices: int) -> None:
        """A new analysis started: forget the previous study's results."""
        self.clear_results()
        self.status.setText(f"Analysing {n_slices} slices\u2026")
        self.progress.setRange(0, max(1, n_slices))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.run_button.setEnabled(False)

    def set_ensemble(self, ensemble: Any) -> None:
        """The models that are running, with their versions, and the provider ONNX Runtime really chose."""
        infos = getattr(ensemble, "infos", ())
        self.models_label.setText(models_text(infos))
        self.models_label.setToolTip("\n".join(f"{m.name} {m.version}  SHA-256 {m.sha256[:16]}\u2026" for m in infos))
        self.set_provider(getattr(ensemble, "provider", ""))
        manifest = ensemble.manifest
        self._thresholds = dict(manifest.operating_points.thresholds)
        self.triage_badge.setToolTip(triage_tooltip(manifest.operating_points))
        self.about_label.setText(about_text(manifest.name, manifest.description))
        self.about_label.setVisible(bool(manifest.description.strip()))

    def set_provider(self, provider: str) -> None:
        self.provider_label.setText(f"Ran on: {provider_display_name(provider)}")
        self.provider_label.setToolTip(f"ONNX Runtime execution provider: {provider}")
        self.provider = provider

    def update_result(self, result: Any) -> None:
        """A partial (or final) StudyResult: case probabilities and decisions over the slices done so far."""
        self._thresholds = dict(result.operating_points.thresholds)
        for row, label in enumerate(LABELS):
            finding = result.case[label]
            p = finding.probability
            prob_item, dec_item = self.table.item(row, 1), self.table.item(row, 2)
            if math.isnan(p):
                prob_item.setText("\u2013")
                dec_item.setText("")
                continue
            d = probability_decimals(p, finding.threshold, finding.specific_threshold)
            prob_item.setText(f"{p:.{d}f}" + (" \u25b4" if finding.held_back else ""))
            prob_item.setToolTip(f"{p:.4f} (threshold {finding.threshold:.{d}f})" + (
                "; reaches its own threshold, but ANY does not, so the study is negative and it is not named"
                if finding.held_back else ""))
            prob_item.setForeground(_HELD_BACK_TEXT if finding.held_back else self.table.palette().text())
            dec_item.setText(finding.tier)  # "positive" / "possible" / "negative" (decision refined by tier)
            dec_item.setForeground(
                _POSSIBLE_TEXT if finding.possible else _POSITIVE_TEXT if finding.positive else _NEGATIVE_TEXT
            )
            dec_item.setToolTip(decision_tooltip(finding, result.case["ANY"]))
        done, total = result.slices_done, result.n_slices
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        if result.restored:
            self.elapsed_label.setText(f"Kept from {result.restored}")
            self.elapsed_label.setToolTip(
                f"These findings were computed on {result.restored} ({result.seconds:.1f} s) by the same models on "
                "the same images, and kept; the models did not run again. Analyse runs them again.")
        else:
            self.elapsed_label.setText(f"Elapsed: {result.seconds:.1f} s")
            self.elapsed_label.setToolTip("")
        self.set_provider(result.provider)
        self.models_label.setText(models_text(result.models))
        if not result.complete:
            self.status.setText(f"Analysing\u2026 {done} of {total} slices done")

    def finish(self, result: Any) -> None:
        """All slices done: final values and the triage badge."""
        self.update_result(result)
        self.progress.setVisible(False)
        self._set_badge(result.triage)
        text = f"{verdict_text(result.case)}. {run_text(result)}."
        if not result.applicable:
            # Shown before the verdict, in amber: the numbers are outside what the ensemble was made for.
            text = f"\u26a0 Does not look like a head CT: {result.head_check.reason}. Triage withheld (refer). " + text
            self.status.setStyleSheet(f"color: {_HELD_BACK_TEXT.name()};")
        elif result.incomplete:
            text = f"\u26a0 {incomplete_text(result)} " + text
            self.status.setStyleSheet(f"color: {_HELD_BACK_TEXT.name()};")
        else:
            self.status.setStyleSheet("")
        self.status.setText(text)
        self.run_button.setEnabled(True)
        self.summary = findings_summary(result, self.about_label.text())
        self.copy_button.setEnabled(True)

    def copy_summary(self) -> str:
        """Put the finished study's summary on the clipboard; returns it ("" before a study is finished)."""
        if self.summary:
            QApplication.clipboard().setText(self.summary)
            self.copy_button.setText("Copied")
            self._copied_timer.start()
        return self.summary

    def show_cancelled(self) -> None:
        self.progress.setVisible(False)
        self.status.setText("Analysis stopped.")
        self.run_button.setEnabled(True)

    def show_error(self, message: str) -> None:
        self.status.setStyleSheet("")
        self.progress.setVisible(False)
        self._set_badge(None)
        self.status.setText(message)
        self.run_button.setEnabled(True)

    def clear_results(self) -> None:
        self.summary = ""
        self.copy_button.setEnabled(False)
        self.status.setStyleSheet("")
        for row in range(len(LABELS)):
            self.table.item(row, 1).setText("\u2013")
            self.table.item(row, 1).setToolTip("")
            self.table.item(row, 1).setForeground(self.table.palette().text())
            self.table.item(row, 2).setText("")
        self.progress.setVisible(False)
        self.models_label.setText("")
        self.provider_label.setText("")
        self.elapsed_label.setText("")
        self.elapsed_label.setToolTip("")
        self._set_badge(None)

    def _fit_table_height(self) -> None:
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setFixedHeight(rows + header + 2 * self.table.frameWidth())

    def changeEvent(self, event: Any) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange) and hasattr(self, "table"):
            self._fit_table_height()

    def set_auto_infer(self, on: bool) -> None:
        self.auto_infer_check.blockSignals(True)
        self.auto_infer_check.setChecked(bool(on))
        self.auto_infer_check.blockSignals(False)

    # -- selection ------------------------------------------------------------------------
    @property
    def selected_label(self) -> str | None:
        return self._selected

    def set_selected_label(self, label: str | None) -> None:
        """Show `label` as selected without emitting `sig_label_selected` (the change came from elsewhere)."""
        self._selected = label if label in LABELS else None
        self.table.blockSignals(True)
        try:
            self.table.clearSelection()
            if self._selected is not None:
                self.table.selectRow(LABELS.index(self._selected))
        finally:
            self.table.blockSignals(False)

    def select_label(self, label: str) -> None:
        """Select a row as the reader would (emits `sig_label_selected`)."""
        self.table.selectRow(LABELS.index(label))

    def _on_selection_changed(self) -> None:
        rows = {i.row() for i in self.table.selectedItems()}
        if len(rows) != 1:
            return
        label = LABELS[rows.pop()]
        if label != self._selected:
            self._selected = label
            self.sig_label_selected.emit(label)

    # -- read-back for tests and linked panels ---------------------------------------------------
    def probability_text(self, label: str) -> str:
        return self.table.item(LABELS.index(label), 1).text()

    def decision_text(self, label: str) -> str:
        return self.table.item(LABELS.index(label), 2).text()

    @property
    def triage_text(self) -> str:
        return self.triage_badge.text()

    def _set_badge(self, triage: str | None) -> None:
        if triage is None:
            self.triage_badge.setText("\u2013")
            self.triage_badge.setStyleSheet(_badge_css(*_IDLE_BADGE))
            return
        bg, fg = TRIAGE_STYLE.get(triage, _IDLE_BADGE)
        self.triage_badge.setText(triage)
        self.triage_badge.setStyleSheet(_badge_css(bg, fg))

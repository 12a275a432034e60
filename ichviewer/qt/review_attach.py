"""attach_review: the reader's adjudication panel, the worklist, panel voting and the statistics dashboard in a MainWindow."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
)

from ichviewer import LABELS
from ichviewer.core import measurements as meas
from ichviewer.core.measurements import MeasurementError
from ichviewer.qt.review_widgets import (
    AdjudicationPanel,
    PanelVotePanel,
    ReviewDashboard,
    WorklistPanel,
    choose_reader,
)
from ichviewer.qt.settings import write_json_atomic
from ichviewer.qt.workers import WorkerJob, emit_safely

log = logging.getLogger(__name__)

#: The review database in the settings folder unless the settings or `--db` say otherwise.
DEFAULT_DB_NAME = "review.sqlite"
#: Remembers the last reader so a restart does not ask again (name and role only).
READER_FILE = "reader.json"
#: Adjudications entered and not saved (per reader and series), kept across a restart.
DRAFTS_FILE = "adjudication_drafts.json"
#: Panel votes chosen and not cast (per reader, panel and case), kept across a restart.
VOTE_DRAFTS_FILE = "panel_vote_drafts.json"
#: Review preferences kept in the settings folder (the teaching feedback switch).
REVIEW_SETTINGS_FILE = "review.json"
#: How long after the last keystroke or choice the drafts are written to the settings folder, so a
#: crash or a power cut loses at most this much of an entry not yet saved.
DRAFT_SAVE_DELAY_MS = 1000


def _case_description(volume: Any) -> str:
    """How the adjudication names a series: as the viewer's corner, title and Series list do (its
    description, else the study description and scanner; the GE head has no series description)."""
    from ichviewer.qt.display import series_label

    return series_label(volume)


def series_folder(volume: Any) -> str:
    files = tuple(getattr(volume, "source_files", ()) or ())
    if not files:
        return ""
    return os.path.dirname(files[0]) if len(files) == 1 else os.path.commonpath(files)


class ReviewUI(QObject):
    """Everything the review database adds to one main window.

    Attributes: `store` (ReviewStore), `reader`, `adjudication` (AdjudicationPanel),
    `worklist` (WorklistPanel), `vote_panel` (PanelVotePanel or None),
    `dashboard` (ReviewDashboard or None).
    """

    # A background series' pixel hash, computed on a pool thread: (volume, result, sha256 or exception).
    _sig_hash_done = Signal(object, object, object)

    def __init__(self, main_window: Any, db_path: str | os.PathLike[str] | None = None, *,
                 reader: tuple[str, str] | None = None, ask_reader: bool = True) -> None:
        super().__init__(main_window)
        from ichviewer.review import ReviewStore

        self.main_window = main_window
        self.settings_folder = Path(getattr(main_window, "settings_dir", "."))
        self.db_path = Path(db_path) if db_path else self.settings_folder / DEFAULT_DB_NAME
        self.store = ReviewStore(self.db_path)
        self.reader = None
        self.vote_panel: PanelVotePanel | None = None
        self.vote_dock = None
        self.dashboard: ReviewDashboard | None = None
        # Hashing a 1 mm series' pixels takes about 0.1 s: for series analysed in the background it is
        # done off the GUI thread, so the reader's scrolling does not stall while the folder is triaged.
        self._hash_pool = QThreadPool(self)
        self._hash_pool.setMaxThreadCount(1)
        self._closed = False
        self._sig_hash_done.connect(self._on_hash_done)
        #: Series UID -> (the StudyResult recorded, its model run id): a result shown again is not a new run.
        self._recorded_runs: dict[str, tuple[Any, int]] = {}
        self._current_series: str | None = None

        self.adjudication = AdjudicationPanel(self.store)
        self.worklist = WorklistPanel(self.store)
        self.adjudication_dock = main_window.add_panel(self.adjudication, "Adjudication")
        self.worklist_dock = main_window.add_panel(self.worklist, "Worklist", Qt.DockWidgetArea.LeftDockWidgetArea)
        studies_dock = getattr(main_window, "browser_dock", None)
        if studies_dock is not None:
            main_window.tabifyDockWidget(studies_dock, self.worklist_dock)
            studies_dock.raise_()

        self.adjudication.set_drafts(self._load_drafts())
        # Drafts go to disk shortly after each edit, not only on a change of series or at closing.
        self._draft_timer = QTimer(self)
        self._draft_timer.setSingleShot(True)
        self._draft_timer.setInterval(DRAFT_SAVE_DELAY_MS)
        self._draft_timer.timeout.connect(self._save_all_drafts)
        self.adjudication.sig_form_changed.connect(self._draft_timer.start)
        self.adjudication.sig_read_saved.connect(self._on_read_saved)
        self.adjudication.sig_read_saved.connect(lambda _id: self.save_drafts())
        self.adjudication.sig_save_failed.connect(self._on_save_failed)
        self.worklist.sig_open_study.connect(self._on_open_study)
        main_window.sig_volume_opened.connect(self._on_volume_opened)
        if hasattr(main_window, "sig_study_loaded"):
            main_window.sig_study_loaded.connect(self._on_study_loaded)
        inference = getattr(main_window, "inference", None)
        if inference is not None:
            inference.controller.sig_finished.connect(self._on_inference_finished)
            inference.controller.sig_background_finished.connect(self._on_background_finished)
        main_window.add_shutdown_hook(self.shutdown)
        #: The window's rulers and ROIs (`ichviewer.qt.measure`): saved here as the reader draws them.
        self.measurement_layer = getattr(main_window, "measurements", None)
        if self.measurement_layer is not None:
            self.measurement_layer.sig_added.connect(lambda _m, _text: self.save_unsaved_measurements())
            self.measurement_layer.sig_removed.connect(self._on_measurement_removed)
        self._build_menu()

        if reader is not None:
            self.set_reader(self.store.add_reader(*reader))
        else:
            remembered = self._remembered_reader()
            if remembered is not None:
                self.set_reader(remembered)
            elif ask_reader:
                self.change_reader()
        if getattr(main_window, "volume", None) is not None:
            self._on_volume_opened(main_window.volume)

    # -- drafts ----------------------------------------------------------------------------
    def _read_drafts(self, name: str, what: str, entry: Callable[[dict[str, Any]], tuple[Any, Any]]) -> dict[Any, Any]:
        """A drafts file in the settings folder as {key: value}, each row through `entry` ({} when there
        is none, or it is damaged: logged)."""
        path = self.settings_folder / name
        if not path.is_file():
            return {}
        try:
            return dict(entry(row) for row in json.loads(path.read_text("utf-8"))["drafts"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: %s could not be read back (%s)", path, what, exc)
            return {}

    def _write_draft_rows(self, name: str, rows: list[dict[str, Any]], what: str) -> None:
        """Keep the rows in the settings folder (a crash or a restart does not lose them); remove the file
        when there is none."""
        path = self.settings_folder / name
        try:
            if rows:
                write_json_atomic(path, {"drafts": rows}, indent=1)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not keep the %s in %s: %s", what, path, exc)

    def _load_drafts(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self._read_drafts(DRAFTS_FILE, "unsaved adjudications",
                                 lambda r: ((str(r["reader"]), str(r["series_uid"])), dict(r["values"])))

    def save_drafts(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Keep every adjudication entered and not saved in the settings folder; return them."""
        drafts = self.adjudication.drafts()
        self._write_draft_rows(DRAFTS_FILE, [{"reader": r, "series_uid": uid, "values": v}
                                             for (r, uid), v in drafts.items()], "unsaved adjudications")
        return drafts

    def _load_vote_drafts(self) -> dict[tuple[str, int, str], dict[str, Any]]:
        return self._read_drafts(VOTE_DRAFTS_FILE, "uncast panel votes",
                                 lambda r: ((str(r["reader"]), int(r["panel_id"]), str(r["series_uid"])),
                                            {"votes": dict(r["votes"]), "note": str(r["note"])}))

    def _save_all_drafts(self) -> None:
        self.save_drafts()
        self.save_vote_drafts()

    def save_vote_drafts(self) -> None:
        """Keep the open panel's votes chosen and not cast in the settings folder, beside other
        readers' and panels'."""
        panel = self.vote_panel
        if panel is None:
            return
        kept = {k: v for k, v in self._load_vote_drafts().items() if (k[0], k[1]) != (panel.reader_name, panel.panel_id)}
        kept.update({(panel.reader_name, panel.panel_id, uid): d for uid, d in panel.drafts().items()})
        self._write_draft_rows(VOTE_DRAFTS_FILE, [{"reader": r, "panel_id": p, "series_uid": uid, **d}
                                                  for (r, p, uid), d in kept.items()], "uncast panel votes")

    # -- reader ----------------------------------------------------------------------------
    def _remembered_reader(self):
        try:
            data = json.loads((self.settings_folder / READER_FILE).read_text("utf-8"))
            return self.store.reader(str(data["name"])) or self.store.add_reader(str(data["name"]), str(data["role"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set_reader(self, reader) -> None:
        if self.reader is not None and self.measurement_layer is not None:
            # A volume click still counting was the previous reader's: finish it and save it as theirs.
            self.measurement_layer.settle_growths()
            self.save_unsaved_measurements()
        self.reader = reader
        self.adjudication.set_reader(reader)
        self.save_drafts()  # an entry made under the previous reader stays theirs
        self.worklist.set_reader(reader)
        self._mark_read_series()
        # Measurements drawn before anyone was reading are the new reader's; then show theirs.
        self.save_unsaved_measurements()
        volume = getattr(self.main_window, "volume", None)
        if volume is not None and reader is not None:
            self._load_measurements(volume)
        self.main_window.statusBar().showMessage(f"Reading as {reader.name} ({reader.role})" if reader else "", 5000)
        if reader is not None:
            try:
                write_json_atomic(self.settings_folder / READER_FILE, {"name": reader.name, "role": reader.role})
            except OSError as exc:
                log.warning("could not remember the reader: %s", exc)

    def change_reader(self) -> None:
        current = self.reader
        chosen = choose_reader(self.store, self.main_window,
                               name=current.name if current else "", role=current.role if current else "resident")
        if chosen is not None:
            self.set_reader(chosen)

    # -- menu --------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        menu = self.main_window.menuBar().addMenu("&Review")
        self.change_reader_action = QAction("Change reader\u2026", self.main_window)
        self.change_reader_action.triggered.connect(self.change_reader)
        self.dashboard_action = QAction("Statistics dashboard", self.main_window)
        self.dashboard_action.triggered.connect(self.show_dashboard)
        self.vote_action = QAction("Vote on a panel\u2026", self.main_window)
        self.vote_action.triggered.connect(self.choose_panel)
        self.create_panel_action = QAction("Create a panel from the worklist queue\u2026", self.main_window)
        self.create_panel_action.triggered.connect(self.ask_create_panel)
        self.close_panel_action = QAction("Close a panel and apply consensus\u2026", self.main_window)
        self.close_panel_action.triggered.connect(self.ask_close_panel)
        self.import_labels_action = QAction("Import reference labels\u2026", self.main_window)
        self.import_labels_action.triggered.connect(self.ask_import_labels)
        for act in (self.change_reader_action, self.dashboard_action, self.vote_action,
                    self.create_panel_action, self.close_panel_action, self.import_labels_action):
            menu.addAction(act)
        menu.addSeparator()
        # Off by default: feedback after each case would teach a reader during a reader study.
        self.teaching_action = QAction("Show the reference label after each saved read (teaching)", self.main_window)
        self.teaching_action.setCheckable(True)
        self.teaching_action.setChecked(self._load_review_settings().get("show_reference_after_read") is True)
        self.teaching_action.toggled.connect(self._on_teaching_changed)
        menu.addAction(self.teaching_action)
        menu.addSeparator()
        menu.addAction(self.adjudication_dock.toggleViewAction())
        menu.addAction(self.worklist_dock.toggleViewAction())

    def show_dashboard(self) -> ReviewDashboard:
        if self.dashboard is None:
            self.dashboard = ReviewDashboard(self.store)
            self.dashboard_dock = self.main_window.add_panel(self.dashboard, "Review statistics", Qt.DockWidgetArea.BottomDockWidgetArea)
            # Opened floating over the window: docked at the bottom it took half the height and left
            # the image at a third of its size. The reader can still dock it (double-click its title).
            self.dashboard_dock.setFloating(True)
            mw = self.main_window.geometry()
            w, h = min(1000, int(mw.width() * 0.7)), min(650, int(mw.height() * 0.7))
            self.dashboard_dock.setGeometry(mw.x() + (mw.width() - w) // 2, mw.y() + (mw.height() - h) // 2, w, h)
        else:
            self.dashboard.refresh()
        self.dashboard_dock.show()
        self.dashboard_dock.raise_()
        return self.dashboard

    def create_panel_from_queue(self, name: str, members: list[str], *, blinded: bool = True) -> Any:
        """A panel holding the cases of the worklist's current queue and label (Kang et al.: difficult cases)."""
        from ichviewer.review import add_member, create_panel

        kind = self.worklist.current_kind()
        label = self.worklist.label_filter.currentText()
        panel = create_panel(self.store, name, queue=kind, queue_label=label,
                             reader=self.reader.name if self.reader and kind == "discordant" else None,
                             blinded=blinded)
        for member in members:
            add_member(self.store, panel.id, member)
        return panel

    def ask_create_panel(self) -> None:
        self.worklist.refresh()  # the count stated is the queue the panel will be made from
        dialog = QDialog(self.main_window)
        dialog.setWindowTitle("Create a review panel")
        form = QFormLayout(dialog)
        name = QLineEdit(f"{self.worklist.current_kind()} queue review")
        members = QLineEdit()
        members.setPlaceholderText("names separated by commas, e.g. Dr A, Dr B, Dr C")
        blinded = QCheckBox("Blinded: members see no AI output or other votes until they vote")
        blinded.setChecked(True)
        error = QLabel("")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        form.addRow(QLabel(f"Cases: the worklist's current queue ({self.worklist.current_kind()}, "
                           f"label {self.worklist.label_filter.currentText()}): {self.worklist.queue_size()} case(s)"))
        form.addRow("Name", name)
        form.addRow("Members", members)
        form.addRow(blinded)
        form.addRow(error)
        form.addRow(buttons)

        def accept() -> None:
            names = [m.strip() for m in members.text().split(",") if m.strip()]
            try:
                panel = self.create_panel_from_queue(name.text(), names, blinded=blinded.isChecked())
            except Exception as exc:
                error.setText(f"Not created: {exc}")
                return
            self.main_window.statusBar().showMessage(f"Panel {panel.id} ({panel.name}) created with {len(names)} member(s)", 8000)
            dialog.accept()

        buttons.accepted.connect(accept)
        buttons.rejected.connect(dialog.reject)
        dialog.exec()

    def import_labels(self, path: str | os.PathLike[str]) -> Any:
        """Reference labels from a labels CSV, as `ichviewer review import-labels` imports them (one
        transaction: a bad file changes nothing); the worklist and the dashboard are brought up to date."""
        from ichviewer.review import import_labels_csv

        result = import_labels_csv(self.store, path)
        self.worklist.refresh()
        if self.dashboard is not None:
            self.dashboard.refresh()
        return result

    def ask_import_labels(self) -> None:
        """Review › Import reference labels…: the CSV the evaluation reads (study_uid or series_uid, any, subtypes)."""
        start = getattr(self.main_window, "study_path", None) or str(Path.home())  # a phantom set's labels.csv is there
        path, _ = QFileDialog.getOpenFileName(
            self.main_window, "Import reference labels", start, "Labels CSV (*.csv);;All files (*)")
        if not path:
            return
        try:
            res = self.import_labels(path)
        except Exception as exc:  # ReviewError naming the row or column; OSError
            self.main_window.notify_error(f"Reference labels not imported from {path}: {exc}")
            return
        message = (f"{Path(path).name}: {res.series} series labelled, {res.versions_added} label version(s) added, "
                   f"{res.unchanged} unchanged")
        if res.unknown_studies:
            message += (f"; {len(res.unknown_studies)} study UID(s) match no series here yet (open and analyse those "
                        "studies first, or key the CSV by series_uid)")
        self.main_window.statusBar().showMessage(message, 15000)

    def ask_close_panel(self) -> None:
        from ichviewer.review import close_panel, evaluate_consensus, list_panels

        panels = [p for p in list_panels(self.store) if p.status == "open"]
        if not panels:
            self.main_window.notify_error("There is no open panel to close.")
            return
        names = [f"{p.id}: {p.name}" for p in panels]
        choice, ok = QInputDialog.getItem(self.main_window, "Close panel", "Close panel and apply its consensus rule:", names, 0, False)
        if not ok:
            return
        panel = panels[names.index(choice)]
        outcomes = evaluate_consensus(self.store, panel.id)
        amend = [o for o in outcomes if getattr(o, "amend", False)]
        answer = QMessageBox.question(
            self.main_window, "Close panel",
            f"Panel {panel.id} ({panel.name}): {len(outcomes)} case-label(s) voted, {len(amend)} label(s) would be amended "
            "by the consensus rule. Old labels, votes and the reason are kept. Close the panel now?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        changed = close_panel(self.store, panel.id, reason=f"consensus of panel {panel.id} ({panel.name})")
        self.main_window.statusBar().showMessage(f"Panel {panel.id} closed: {len(changed)} label(s) amended", 8000)
        self.worklist.refresh()
        if self.dashboard is not None:
            self.dashboard.refresh()

    def choose_panel(self) -> None:
        from ichviewer.review import list_panels

        panels = list_panels(self.store)
        if not panels:
            self.main_window.notify_error(
                "There are no panels in the review database yet: create one from the worklist queue "
                "(Review > Create a panel from the worklist queue\u2026) or with `ichviewer review panel create`.")
            return
        names = [f"{p.id}: {p.name}" for p in panels]
        choice, ok = QInputDialog.getItem(self.main_window, "Panel", "Vote on panel:", names, 0, False)
        if ok:
            self.open_panel(panels[names.index(choice)].id)

    def open_panel(self, panel_id: int) -> PanelVotePanel:
        """Show the voting panel for `panel_id`; a blinded panel hides the AI until the member's vote is in."""
        if self.reader is None:
            raise RuntimeError("choose a reader before voting")
        if self.vote_dock is not None:
            self.save_vote_drafts()
            self.vote_dock.close()
            self.vote_dock.deleteLater()
        self.vote_panel = PanelVotePanel(self.store, panel_id, self.reader)
        self.vote_panel.set_drafts({uid: d for (r, p, uid), d in self._load_vote_drafts().items()
                                    if r == self.reader.name and p == panel_id})
        self.vote_dock = self.main_window.add_panel(self.vote_panel, "Panel vote")
        # A tab beside the adjudication (a member votes rather than adjudicates): a fourth dock in the
        # right column squeezed every panel, and once the vote revealed the AI, the vote's own
        # buttons were scrolled out of sight.
        if not self.adjudication_dock.isFloating():
            self.main_window.tabifyDockWidget(self.adjudication_dock, self.vote_dock)
        self.vote_dock.show()  # docks added to a window already on screen start hidden
        self.vote_dock.raise_()
        self.vote_panel.sig_open_study.connect(self._on_open_study)
        self.vote_panel.sig_open_study.connect(lambda _uid, _path: self.save_vote_drafts())
        self.vote_panel.sig_vote_saved.connect(self._on_vote_saved)
        self.vote_panel.sig_vote_saved.connect(lambda _uid: self.save_vote_drafts())
        self.vote_panel.sig_form_changed.connect(self._draft_timer.start)
        self._follow_open_series()
        self._apply_blinding()
        return self.vote_panel

    def _follow_open_series(self) -> None:
        """The vote panel votes on the series on screen: that case when it is on the panel, else none."""
        if self.vote_panel is None:
            return
        if self._current_series in self.vote_panel.case_uids():
            self.vote_panel.open_case(self._current_series)
        else:
            self.vote_panel.clear_case()

    def _apply_blinding(self) -> None:
        """Blind the AI outputs when a blinded panel's member has not voted on the open case yet, and
        the lists that show other cases' AI outputs (the worklist, the series browser's verdicts and
        AI order) while any case of that panel still waits for the member's vote."""
        blind = lists_blind = False
        panel = self.vote_panel
        if panel is not None:
            from ichviewer.review import cases_hidden_from

            waiting = cases_hidden_from(self.store, panel.panel_id, self.reader.name)
            blind = self._current_series in waiting
            lists_blind = bool(waiting)
        inference = getattr(self.main_window, "inference", None)
        if inference is not None:
            inference.set_blinded(blind)
        self.adjudication.set_ai_hidden(blind)
        self.worklist.set_ai_hidden(lists_blind)  # its P(model), reasons and reference labels would tell
        browser = getattr(self.main_window, "browser", None)
        if browser is not None and hasattr(browser, "set_ai_hidden"):
            browser.set_ai_hidden(lists_blind)

    # -- events ------------------------------------------------------------------------------
    def _on_volume_opened(self, volume: Any) -> None:
        self._current_series = volume.series_uid or None
        self.adjudication.set_case(volume.series_uid, study_uid=volume.study_uid or None,
                                   description=f"{_case_description(volume)} \u2014 {volume.n_slices} images")
        self._follow_open_series()
        self._apply_blinding()
        # Findings kept from before (analysed in the background, or a series opened again) reached the
        # AI panel before this form was set to the series: give them to the form too.
        inference = getattr(self.main_window, "inference", None)
        kept = inference.controller.result_for(volume) if inference is not None else None
        if kept is not None:
            self._on_inference_finished(0, kept)
        self._load_measurements(volume)
        self.save_unsaved_measurements()
        self._save_all_drafts()  # the series left may have left an entry not saved

    # -- measurements ------------------------------------------------------------------------
    def _load_measurements(self, volume: Any) -> None:
        """Put the reader's saved measurements of this series back on screen (kept unsaved ones stay).

        One that names its image (SOP Instance UID) goes back on that image wherever it is in this copy,
        and is not shown when the copy lacks it. One stored without (before the column, or from a series
        without UIDs) goes back by slice index, unless this copy's pixels differ from the series' recorded
        hash (a copy with a slice missing: the index could point at other anatomy)."""
        layer = self.measurement_layer
        if layer is None or self.reader is None or not volume.series_uid or layer.volume is not volume:
            return
        try:
            stored = self.store.measurements(volume.series_uid, self.reader)
            recorded = (self.store.study(volume.series_uid) or {}).get("pixel_sha256") if stored else None
        except Exception as exc:
            self.main_window.notify_error(f"Saved measurements could not be read from {self.db_path}: {exc}")
            return
        image_index = {uid: i for i, uid in enumerate(volume.metadata.get("sop_instance_uids") or ()) if uid}
        not_shown: list[str] = []
        placed: list[tuple[Any, str, bool]] = []  # (measurement, text, placed by slice index only), oldest first
        for m, text in stored:
            if m.sop_instance_uid and image_index:
                if m.sop_instance_uid in image_index:
                    placed.append((dataclasses.replace(m, slice_index=image_index[m.sop_instance_uid]), text, False))
                else:
                    not_shown.append(f"{m.kind} made on image {m.slice_index + 1} ({text.splitlines()[0]}): that "
                                     f"image (SOP Instance UID {m.sop_instance_uid}) is not in this copy of the series")
            else:
                placed.append((m, text, True))
        by_index_only = [p for p in placed if p[2]]
        other_pixels = bool(recorded) and bool(placed) and volume.pixel_sha256() != recorded
        if by_index_only and other_pixels:
            # Same series UID, other pixels (a copy with a slice missing, a re-export): slice indices
            # and voxels may not match, so a ruler or volume would land on other anatomy.
            self.main_window.notify_error(
                f"{len(by_index_only)} saved measurement(s) of series {volume.series_uid} are not shown: they "
                f"were made on different pixel data (the hash recorded in {self.db_path} differs from this "
                "copy's) and do not name their image, so they could land on other anatomy. They stay in the "
                "database.")
            placed = [p for p in placed if not p[2]]
        for m in [m for m in layer.measurements() if layer.is_saved(m)]:
            layer.remove(m, emit=False)
        for m, text, _by_index in placed:
            try:
                # A volume on a copy with other pixels is counted again on this copy: its list entry says
                # what is counted here (the saved figure stays in the database), as its label on the image does.
                layer.add(m, emit=False, text=None if other_pixels and m.kind == meas.VOLUME else text)
            except MeasurementError as exc:  # a slice the series no longer has, a seed no longer in range
                log.warning("measurement %s of %s not shown: %s", m.id, volume.series_uid, exc)
                not_shown.append(f"{m.kind} on image {m.slice_index + 1} ({text.splitlines()[0]}): {exc}")
        if not_shown:
            self.main_window.notify_error(
                f"{len(not_shown)} saved measurement(s) of this series could not be shown (they stay in "
                f"{self.db_path}):\n" + "\n".join(not_shown))

    def save_unsaved_measurements(self) -> int:
        """Write every measurement the database has not confirmed, on screen or waiting from another
        series; return how many were saved.

        Runs after each new one, on every series opened and when a reader is chosen, so one that
        failed (a locked or unreachable file, no reader yet) is tried again.
        """
        layer = self.measurement_layer
        if layer is None or not (layer.unsaved() or layer.pending()):
            return 0
        if self.reader is None:
            self.main_window.statusBar().showMessage(
                "Measurement not saved yet: choose who is reading (Review > Change reader) to keep it.", 8000)
            return 0
        volume = getattr(self.main_window, "volume", None)
        saved = 0
        try:
            if volume is not None and layer.unsaved():
                if not volume.series_uid:
                    self.main_window.statusBar().showMessage("Measurement not saved: the series has no UID.", 8000)
                else:
                    self._ensure_study(volume)
                    for m in layer.unsaved():
                        row_id = self.store.add_measurement(self.reader, volume.series_uid, m, layer.text_of(m),
                                                           study_uid=volume.study_uid or None)
                        layer.mark_saved(m, row_id)
                        saved += 1
            for p in layer.pending():
                if p.series_uid:
                    self.store.add_measurement(self.reader, p.series_uid, p.measurement, p.text,
                                               study_uid=p.study_uid or None)
                    layer.drop_pending(p)
                    saved += 1
        except Exception as exc:  # the database is on another disk, locked, full...
            self.main_window.notify_error(
                f"A measurement could not be saved in the review database {self.db_path}: {exc}. "
                "It is kept (marked \"not saved\") and tried again with the next one.")
        return saved

    def _on_measurement_removed(self, m: Any) -> None:
        if m.id is None or self.reader is None:
            return
        try:
            self.store.withdraw_measurement(m.id, self.reader)
        except Exception as exc:
            self.main_window.notify_error(f"The deletion of a measurement could not be saved in {self.db_path}: {exc}")

    def _ensure_study(self, volume: Any) -> None:
        # The volume computes its pixel hash once (the AI worker usually has already, for its kept results).
        self.store.add_study(volume.series_uid, volume.study_uid or None, pixel_sha256=volume.pixel_sha256(),
                             path=series_folder(volume))

    def _on_inference_finished(self, _request_id: int, result: Any) -> None:
        volume = getattr(self.main_window, "volume", None)
        if volume is None or volume.series_uid != getattr(result, "series_uid", volume.series_uid):
            return
        run_id = self._record_run(volume, result)
        if run_id is not None and volume.series_uid == self._current_series:
            case = result.case
            self.adjudication.set_ai_findings({label: case[label].probability for label in LABELS}, run_id,
                                              calls={label: case[label].tier for label in LABELS},
                                              thresholds={label: case[label].threshold for label in LABELS})

    def _on_background_finished(self, volume: Any, result: Any) -> None:
        """A series of the folder analysed in the background: its run is recorded like any other, so
        the difficult-case queues see the whole folder, not only the series the reader opened. Its
        pixel hash (which the database checks a series against) is computed on a pool thread first,
        unless the volume has it already (then the job returns at once)."""
        uid = getattr(volume, "series_uid", None)
        if not uid or uid != getattr(result, "series_uid", uid) or self._closed:
            return
        self._hash_pool.start(WorkerJob(
            volume.pixel_sha256,
            lambda sha: emit_safely(self._sig_hash_done.emit, volume, result, sha),
            lambda exc: emit_safely(self._sig_hash_done.emit, volume, result, exc),
        ))

    def _on_hash_done(self, volume: Any, result: Any, sha: Any) -> None:
        if self._closed:
            return
        if not isinstance(sha, str):  # cannot happen short of memory trouble; the GUI thread tries again in _record_run
            log.warning("pixel hash of %s failed off the GUI thread: %s", volume.series_uid, sha)
        self._record_run(volume, result)

    def _record_run(self, volume: Any, result: Any) -> int | None:
        """The model run id of `result` on `volume`, recorded once (None: the database refused; said)."""
        from ichviewer.review import record_study_result

        recorded = self._recorded_runs.get(volume.series_uid)
        if recorded is not None and recorded[0] is result:
            return recorded[1]  # the kept findings of a series opened again: the same run, not a new one
        try:
            self._ensure_study(volume)
            entry = {"path": series_folder(volume), **result.to_dict()}
            # Findings kept from an earlier session cite that session's run, not a new one.
            run_id = record_study_result(self.store, entry, same_as_newest=bool(result.restored))
        except Exception as exc:  # the database is on another disk, locked, full...
            self.main_window.notify_error(
                f"The AI result could not be recorded in the review database {self.db_path}: {exc}")
            return None
        self._recorded_runs[volume.series_uid] = (result, run_id)
        return run_id

    def _load_review_settings(self) -> dict[str, Any]:
        try:
            data = json.loads((self.settings_folder / REVIEW_SETTINGS_FILE).read_text("utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _on_teaching_changed(self, on: bool) -> None:
        if not on:
            self.adjudication.show_last_read_feedback("", None)
        try:
            write_json_atomic(self.settings_folder / REVIEW_SETTINGS_FILE,
                              {**self._load_review_settings(), "show_reference_after_read": bool(on)})
        except OSError as exc:
            log.warning("could not remember the teaching switch: %s", exc)

    def read_feedback(self, read_id: int) -> tuple[str, bool | None]:
        """What the teaching switch shows after a saved read: the reference labels and whether the read agrees
        (None when there is no reference, or the read was uncertain where there is one)."""
        from ichviewer.review import compare_read_with_reference, describe_comparison

        try:
            comparison = compare_read_with_reference(self.store, read_id)
        except Exception as exc:  # the database went away between the save and this look-up
            log.warning("no reference comparison for read %s: %s", read_id, exc)
            return "", None
        return describe_comparison(comparison) or "No reference label for this series yet.", comparison["agrees"]

    def _on_read_saved(self, read_id: int) -> None:
        saved_on = self._current_series
        self.main_window.statusBar().showMessage(f"Read {read_id} saved to {self.db_path.name}", 5000)
        have_read = self._series_read()  # one look-up for the ticks and the next series
        self._mark_read_series(have_read)
        if self.teaching_action.isChecked():
            text, agrees = self.read_feedback(read_id)
            volume = getattr(self.main_window, "volume", None)  # the series the read was saved on
            where = _case_description(volume) if volume is not None else "this series"
            self.adjudication.show_last_read_feedback(f"Last read ({where}): {text}", agrees)
        self.worklist.refresh()
        if saved_on is not None and self.worklist.current_series() == saved_on:
            self.worklist.open_next()  # reading the queue: its next case
        else:
            self._open_next_unread_series(saved_on, read_id, have_read)

    def _series_read(self) -> set[str] | None:
        """The series the reader has a saved read of (None: the database could not say)."""
        if self.reader is None:
            return set()
        try:
            return self.store.series_read_by(self.reader.name)
        except Exception as exc:  # the database went away (another disk, locked)
            log.warning("could not look up which series have reads: %s", exc)
            return None

    def _on_study_loaded(self, _path: str, _result: Any) -> None:
        self._mark_read_series()  # the browser now lists the folder's series

    def _mark_read_series(self, have_read: set[str] | None = None) -> None:
        """Tick the Series list's rows this reader has read (after a listing, a saved read, a change of
        reader); `have_read` when the caller has just looked them up."""
        browser = getattr(self.main_window, "browser", None)
        if have_read is None:
            have_read = self._series_read()
        if browser is not None and hasattr(browser, "set_read") and have_read is not None:
            browser.set_read(have_read)

    def _open_next_unread_series(self, after: str | None, read_id: int, have_read: set[str] | None) -> None:
        """After a read saved on a series of the opened folder: the next series in the browser's order
        (the folder's, or the AI's priority) that has no read by this reader, as a reading list advances;
        after the last, round again from the top (in AI order the list may have moved above the reader)."""
        window = self.main_window
        browser, volumes = getattr(window, "browser", None), getattr(window, "volumes", None) or {}
        if browser is None or self.reader is None:
            return
        order = [uid for uid in browser.series_uids() if uid in volumes]
        if after not in order or len(order) < 2:
            return  # one series open: the reader stays on it
        if have_read is None:  # the database could not say
            return
        i = order.index(after)
        later = [uid for uid in order[i + 1:] + order[:i] if uid not in have_read]
        if not later:
            window.statusBar().showMessage(
                f"Read {read_id} saved to {self.db_path.name}; every series in the list has your read", 8000)
            return
        window.show_volume(volumes[later[0]])
        window.statusBar().showMessage(
            f"Read {read_id} saved to {self.db_path.name}; next series without your read "
            f"({len(later)} left in the list)", 8000)

    def _on_save_failed(self, message: str) -> None:
        self.main_window.notify_error(f"The read was NOT saved (your entries are kept): {message}")

    def _on_vote_saved(self, _series_uid: str) -> None:
        self._apply_blinding()

    def _on_open_study(self, series_uid: str, path: str) -> None:
        window = self.main_window
        if series_uid in getattr(window, "volumes", {}):
            window.show_volume(window.volumes[series_uid])
        elif path:
            window.open_path(path)
        else:
            window.notify_error(f"Series {series_uid} has no known location on this machine; open its folder with File \u203a Open.")

    def shutdown(self, timeout_ms: int = 10000) -> None:
        self._closed = True
        self._hash_pool.clear()
        if not self._hash_pool.waitForDone(timeout_ms):
            log.warning("a pixel hash was still running %d ms after shutdown was requested", timeout_ms)
        self._draft_timer.stop()
        drafts = self.save_drafts()
        self.save_vote_drafts()
        if drafts:
            log.warning("%d adjudication(s) entered and not saved are kept in %s and come back with their series",
                        len(drafts), self.settings_folder / DRAFTS_FILE)
        # A last try for measurements not yet on disk; what still fails is named in the log.
        layer = self.measurement_layer
        if layer is not None and (layer.unsaved() or layer.pending()):
            self.save_unsaved_measurements()
            left = len(layer.unsaved()) + len(layer.pending())
            if left:
                log.warning("%d measurement(s) were not saved in %s (no reader chosen, or the file was not writable)",
                            left, self.db_path)
        self.store.close()


def attach_review(main_window: Any, db_path: str | os.PathLike[str] | None = None, *,
                  reader: tuple[str, str] | None = None, ask_reader: bool = True) -> ReviewUI | None:
    """Install the review database panels in `main_window`; None (with a message) if the database cannot be opened.

    `reader` (name, role) skips the identity dialog; otherwise the last reader of
    this settings folder is reused, or the dialog asks when `ask_reader`.
    """
    try:
        ui = ReviewUI(main_window, db_path, reader=reader, ask_reader=ask_reader)
    except Exception as exc:
        main_window.notify_error(f"The review database could not be opened ({exc}). Reading works; reads cannot be saved.")
        return None
    main_window.review = ui
    return ui
